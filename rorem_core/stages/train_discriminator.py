"""Stage 7, train_discriminator: the reward model on ALL human labels so far (scored meta.json of rounds
1..N), with a held-out split by input that is never trained on; writes the discriminator and its
agreement metrics on the held-out labels (accuracy, ROC-AUC, ECE, estimated vs human success rate)."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel

from rorem_core.discriminator_train import TrainDiscriminatorConfig, train_discriminator
from rorem_core.stages import _cli


class TrainDiscriminatorResult(BaseModel):
    out_dir: str
    metrics: dict


def meta_path(p: Path) -> Path:
    """Accept a label folder or its meta.json."""
    return p / "meta.json" if p.is_dir() else p


def run(cfg: TrainDiscriminatorConfig, init: Path, labels: list[Path], out_dir: Path, *, prev: Path | None = None,
        round_id: int = 1) -> TrainDiscriminatorResult:
    metrics = train_discriminator(cfg, init, [meta_path(p) for p in labels], out_dir, prev=prev,
                                  run_name=f"train_discriminator/round-{round_id}", wandb_group=f"round-{round_id}")
    return TrainDiscriminatorResult(out_dir=str(out_dir), metrics=metrics)


def main(argv: list[str] | None = None) -> int:
    p = _cli.parser("train_discriminator", __doc__)
    p.add_argument("--round", type=int, default=1)
    p.add_argument("--init", type=Path, required=True, help="UNet to start from: base model dir or a remover")
    p.add_argument("--labels", type=Path, nargs="+", required=True, help="scored label folders / meta.json, rounds 1..N")
    p.add_argument("--prev", type=Path, help="previous round's discriminator (keeps its held-out split)")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--metrics", type=Path)
    args = p.parse_args(argv)

    def body(cfg):
        res = run(cfg, args.init, args.labels, args.out, prev=args.prev, round_id=args.round)
        _cli.write_metrics(args.metrics, res.metrics)
        return res

    return _cli.run_main("train_discriminator", args, body)


if __name__ == "__main__":
    raise SystemExit(main())
