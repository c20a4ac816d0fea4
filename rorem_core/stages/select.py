"""Stage 3, select: which candidates go to the annotators. A mix of random and most-uncertain
(score closest to the threshold) by param; random only when there is no discriminator yet (round 1).
Writes a selection JSON: {"items": [{"id", "input_id", "priority", "reason", "score"}, ...], ...},
most uncertain first; ``priority`` (uncertainty) orders the annotation tasks."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from pydantic import BaseModel

from rorem_core.config import SelectConfig
from rorem_core.data.formats import read_candidates
from rorem_core.io import write_json_atomic
from rorem_core.parallel import shards
from rorem_core.reward.discriminator import is_no_discriminator
from rorem_core.reward.selection import Scorer, n_units, select
from rorem_core.stages import _cli
from rorem_core.stages.auto_score import manifest_path


class SelectResult(BaseModel):
    selection: str
    metrics: dict


def run(cfg: SelectConfig, candidates: Path, out: Path, *, discriminator: Path | None = None,
        round_id: int = 1) -> SelectResult:
    manifest = manifest_path(candidates)
    cands = read_candidates(manifest)
    scores, thr = None, cfg.threshold
    if discriminator is not None:
        scorer = Scorer.load(discriminator, cfg.base, batch_size=cfg.batch_size, dtype=cfg.dtype)
        scores = scorer.score_candidates(manifest, cands)
        thr = scorer.threshold if thr is None else thr
    units = len({c.id if cfg.unit == "candidate" else c.input_id for c in cands})
    n = n_units(units, cfg.n_select, cfg.fraction)
    items = select(cands, scores, n=n, uncertain_fraction=cfg.uncertain_fraction, threshold=thr if thr is not None else 0.5,
                   seed=cfg.base.seed + round_id, unit=cfg.unit)
    reasons = [it.reason for it in items]
    metrics = {"n_candidates": len(cands), "unit": cfg.unit, "n_units": units, "n_selected_units": n,
               "n_selected": len(items), "n_uncertain": reasons.count("uncertain"), "n_random": reasons.count("random"),
               "method": "mixed" if scores is not None else "random", "threshold": thr,
               "mean_priority": float(np.mean([it.priority for it in items])) if items else None}
    if shards().main:       # data-parallel scoring: every process has the scores, the main one writes
        write_json_atomic(out, {"version": 1, "round": round_id,
                                "discriminator": str(discriminator) if discriminator else None,
                                **metrics, "items": [it.model_dump() for it in items]})
    return SelectResult(selection=str(out), metrics=metrics)


def main(argv: list[str] | None = None) -> int:
    p = _cli.parser("select", __doc__)
    p.add_argument("--round", type=int, default=1)
    p.add_argument("--candidates", type=Path, required=True, help="candidates folder or candidates.json")
    p.add_argument("--discriminator", type=Path, help="previous round's discriminator; 'none' or round 0's marker = random")
    p.add_argument("--out", type=Path, required=True, help="selection JSON to write")
    p.add_argument("--metrics", type=Path)
    args = p.parse_args(argv)

    def body(cfg):
        disc = None if is_no_discriminator(args.discriminator) else args.discriminator
        res = run(cfg, args.candidates, args.out, discriminator=disc, round_id=args.round)
        _cli.write_metrics(args.metrics, res.metrics)
        return res

    return _cli.run_main("select", args, body)


if __name__ == "__main__":
    raise SystemExit(main())
