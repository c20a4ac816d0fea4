"""Stage trainset@N: the remover's training set grows as in RORem.

    data/trainset/round-N = train(N)                         the seed (round 1) or data/trainset/round-(N-1)
                          + human-accepted results of round N  (score >= human_min_score; GT = the result)
                          + auto-accepted results of round N   (discriminator score > its threshold)

Round N+1's remover trains on it (params.yaml rounds: ``train: data/trainset/round-N``). The same
(source, mask, GT) triple is kept once; each entry records its ``origin`` (seed | human | auto) and
``round``. Counts go to the stage metrics (the report's "total training set" column).
"""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel

from rorem_core.config import TrainsetConfig
from rorem_core.data.datasets import Part, merge, require_parts
from rorem_core.stages import _cli


def as_triplet(entry: dict) -> dict:
    """A training triplet, not a scored label: the score it was accepted with is kept as ``accept_score``
    (human 1.0, the discriminator's probability for auto-accepted results; distill's RWD reads it)."""
    e = dict(entry)
    if "score" in e:
        e["accept_score"] = e.pop("score")
    return e


class TrainsetResult(BaseModel):
    out_dir: str
    metrics: dict


def run(cfg: TrainsetConfig, prev: Path, human: Path, auto: Path, out_dir: Path, *, round_id: int) -> TrainsetResult:
    require_parts([prev, human, auto], "trainset")
    good = lambda e: float(e.get("score", 0.0)) >= cfg.human_min_score
    res = merge([Part(prev, origin="seed", edit=as_triplet), Part(human, origin="human", round=round_id, keep=good,
                 edit=as_triplet), Part(auto, origin="auto", round=round_id, edit=as_triplet)], out_dir, link=cfg.link)
    new = [e for e in res.entries if e.get("round") == round_id and e["origin"] in ("human", "auto")]
    metrics = {"round": round_id, "n_total": len(res.entries), "n_previous": len(res.entries) - len(new),
               "n_human": sum(e["origin"] == "human" for e in new), "n_auto": sum(e["origin"] == "auto" for e in new),
               "n_duplicates": res.n_duplicates, "by_origin": res.counts}
    return TrainsetResult(out_dir=str(out_dir), metrics=metrics)


def main(argv: list[str] | None = None) -> int:
    p = _cli.parser("trainset", __doc__)
    p.add_argument("--round", type=int, required=True)
    p.add_argument("--prev", type=Path, required=True, help="the training set so far (data/seed in round 1)")
    p.add_argument("--human", type=Path, required=True, help="this round's pulled annotations (scored/meta.json)")
    p.add_argument("--auto", type=Path, required=True, help="auto_score output (meta.json of accepted results)")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--metrics", type=Path)
    args = p.parse_args(argv)

    def body(cfg):
        res = run(cfg, args.prev, args.human, args.auto, args.out, round_id=args.round)
        _cli.write_metrics(args.metrics, res.metrics)
        return res

    return _cli.run_main("trainset", args, body)


if __name__ == "__main__":
    raise SystemExit(main())
