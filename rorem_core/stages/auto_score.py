"""Stage 8, auto_score: score every candidate with the discriminator (batched) and turn the accepted
ones (score > threshold) into training triplets in RORem's format, the result image as GT.

Output folder (a training dataset on its own; the input manifest is never edited):
  candidates.json   every candidate with ``score`` and ``score_model``
  meta.json         accepted triplets: source, mask, GT = result, score, id, input_id, round
  inputs/ results/  the candidates' images, hard-linked (copied across filesystems), so every path in
                    both JSON files stays inside the folder (``resolve_in_root`` refuses escaping paths)

With ``--pool`` of a synthetic pool (data/pools/round-K, hidden GT in data/hidden/round-K) the metrics
also hold ``auto_precision``: the share of accepted candidates the judge calls clean (issue 13, part 4).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from pydantic import BaseModel

from rorem_core import contract
from rorem_core.config import AutoScoreConfig
from rorem_core.data.formats import (
    Triplet,
    dataset_file,
    read_candidates,
    read_json_list,
    resolve_in_root,
    write_candidates,
    write_entries,
)
from rorem_core.evaluation.acceptance import judge_accepted
from rorem_core.io import atomic_dir, link_or_copy
from rorem_core.parallel import shards
from rorem_core.reward.metrics import precision_threshold
from rorem_core.reward.selection import Scorer, accepted, read_selection_ids
from rorem_core.stages import _cli


class AutoScoreResult(BaseModel):
    out_dir: str
    metrics: dict


def manifest_path(p: Path) -> Path:
    return dataset_file(p, "candidates.json")


def run(cfg: AutoScoreConfig, discriminator: Path, candidates: Path, out_dir: Path, *,
        exclude: Path | None = None, hidden: Path | None = None) -> AutoScoreResult:
    """Score, accept, write ``out_dir``. With the pool's ``hidden`` GT (synthetic pools), metrics also
    hold ``auto_precision``: the share of accepted candidates the judge calls clean (evaluation/acceptance.py)."""
    manifest = manifest_path(candidates)
    cands = read_candidates(manifest)
    scorer = Scorer.load(discriminator, cfg.base, batch_size=cfg.batch_size, dtype=cfg.dtype)
    scores = scorer.score_candidates(manifest, cands)
    thr, rule = threshold(cfg, scorer, discriminator)
    skip = read_selection_ids(exclude) if exclude else set()
    good = accepted(cands, scores, thr, skip)
    by_id = dict(zip((c.id for c in cands), scores))
    sh = shards()     # every process has every score; the main one writes
    if sh.main:
        _write(cfg, manifest, cands, scores, good, str(discriminator), out_dir)
    sh.barrier()
    n = len(cands)
    metrics = {"n_candidates": n, "n_excluded": len(skip & set(by_id)), "n_accepted": len(good),
               "threshold": thr if np.isfinite(thr) else None, "threshold_rule": rule,
               "acceptance_rate": len(good) / n if n else 0.0,
               "score_mean": float(np.mean(scores)) if n else None,
               "score_quantiles": [float(q) for q in np.quantile(scores, [0.1, 0.5, 0.9])] if n else None,
               "auto_precision": judge_accepted(out_dir / "meta.json", hidden) if hidden and sh.main else None}
    return AutoScoreResult(out_dir=str(out_dir), metrics=metrics)


def threshold(cfg: AutoScoreConfig, scorer: Scorer, discriminator: Path) -> tuple[float, dict]:
    """(accept iff score > this, how it was set). ``min_precision``: from the discriminator's held-out
    human labels (heldout_scores.json); +inf, i.e. nothing accepted, when no threshold is that precise."""
    if cfg.min_precision is None:
        return (scorer.threshold if cfg.threshold is None else cfg.threshold), {"rule": "fixed"}
    f = Path(discriminator) / "heldout_scores.json"
    if not f.is_file():
        raise ValueError(f"auto_score.min_precision={cfg.min_precision} sets the threshold from the discriminator's "
                         f"held-out labels, but {f} does not exist (a discriminator adopted with "
                         "train_discriminator.use has none); set auto_score.min_precision: null (and a threshold)")
    rows = read_json_list(f)
    r = precision_threshold([x["label"] for x in rows], [x["score"] for x in rows], cfg.min_precision,
                            cfg.min_support, bound=cfg.precision_bound)
    return r["threshold"], {"rule": "min_precision", **{k: v for k, v in r.items() if k != "threshold"}}


def _write(cfg: AutoScoreConfig, manifest: Path, cands, scores, good, disc_name: str, out_dir: Path) -> None:
    with atomic_dir(out_dir) as tmp:
        for c in cands:
            for rel in (c.source, c.mask, c.result):
                link_or_copy(resolve_in_root(manifest.parent, rel, where=f"{manifest} {c.id}"), tmp / rel, cfg.link)
        write_candidates(tmp / "candidates.json", [c.model_copy(update={"score": float(s), "score_model": disc_name})
                                                   for c, s in zip(cands, scores)])
        by_id = dict(zip((c.id for c in cands), scores))
        write_entries(tmp / "meta.json", [Triplet(source=c.source, mask=c.mask, GT=c.result, score=float(by_id[c.id]),
                                                  id=c.id, input_id=c.input_id, round=c.round) for c in good])


def main(argv: list[str] | None = None) -> int:
    p = _cli.parser("auto_score", __doc__)
    p.add_argument("--discriminator", type=Path, required=True, help="our discriminator dir or RORem's checkpoint")
    p.add_argument("--candidates", type=Path, required=True, help="candidates folder or candidates.json")
    p.add_argument("--exclude", type=Path, help="selection JSON: candidates sent to humans are not auto-accepted")
    p.add_argument("--pool", help="the round's pool: its hidden GT (data/hidden/round-K, synthetic pools only) "
                                  "gives the auto-acceptance precision")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--metrics", type=Path)
    args = p.parse_args(argv)

    def body(cfg):
        try:    # a pool of photos (no data/pools/... path, or no hidden GT): precision unknown
            hidden = Path(contract.hidden_for_pool(args.pool)) if args.pool else None
        except ValueError:
            hidden = None
        res = run(cfg, args.discriminator, args.candidates, args.out, exclude=args.exclude, hidden=hidden)
        _cli.write_metrics(args.metrics, res.metrics)
        return res

    return _cli.run_main("auto_score", args, body)


if __name__ == "__main__":
    raise SystemExit(main())
