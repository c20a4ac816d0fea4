"""Stage labels@N: every human label so far, as one dataset the discriminator trains on.

    data/labels/round-N = data/labels/round-(N-1) + data/annotations/round-N/scored

Chained round by round (round 0, written by bootstrap, is empty) because a DVC stage cannot depend on a
variable number of folders: this way ``train_discriminator@N`` depends on exactly the labels it reads, and
a new round never invalidates an old one. Good and bad labels are both kept (score 1 / 0, or the mean
of annotators); the same input judged in two rounds stays two labels.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel

from rorem_core.config import LabelsConfig
from rorem_core.data.datasets import Part, merge, require_parts
from rorem_core.stages import _cli


class LabelsResult(BaseModel):
    out_dir: str
    metrics: dict


def run(cfg: LabelsConfig, prev: Path, new: Path, out_dir: Path, *, round_id: int) -> LabelsResult:
    require_parts([prev, new], "labels")
    res = merge([Part(prev, origin="human"), Part(new, origin="human", round=round_id)], out_dir,
                keep_repeats=True, link=cfg.link)
    scores = [float(e.get("score", 0.0)) for e in res.entries]
    new_n = res.n_inputs[str(new)]
    metrics = {"round": round_id, "n_labels": len(res.entries), "n_previous": res.n_inputs[str(prev)],
               "n_new": new_n, "n_good": sum(s >= 0.5 for s in scores), "n_bad": sum(s < 0.5 for s in scores)}
    return LabelsResult(out_dir=str(out_dir), metrics=metrics)


def main(argv: list[str] | None = None) -> int:
    p = _cli.parser("labels", __doc__)
    p.add_argument("--round", type=int, required=True)
    p.add_argument("--prev", type=Path, required=True, help="the previous round's labels (round 0: empty)")
    p.add_argument("--new", type=Path, required=True, help="this round's pulled annotations (scored/meta.json)")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--metrics", type=Path)
    args = p.parse_args(argv)

    def body(cfg):
        res = run(cfg, args.prev, args.new, args.out, round_id=args.round)
        _cli.write_metrics(args.metrics, res.metrics)
        return res

    return _cli.run_main("labels", args, body)


if __name__ == "__main__":
    raise SystemExit(main())
