"""Stage 7, train_discriminator: the reward model on ALL human labels so far (scored meta.json of rounds
1..N), with a held-out split by input that is never trained on; writes the discriminator and its
agreement metrics on the held-out labels (accuracy, ROC-AUC, ECE, estimated vs human success rate)."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel

from rorem_core.config import TrainDiscriminatorConfig
from rorem_core.data.datasets import meta_of
from rorem_core.reward.discriminator import is_no_discriminator
from rorem_core.reward.train import train_discriminator
from rorem_core.stages import _cli


class TrainDiscriminatorResult(BaseModel):
    out_dir: str
    metrics: dict


def rounds_labels(root: Path, round_id: int) -> list[Path]:
    """``root/round-1 .. root/round-N``: every human label so far; a missing round is an error."""
    folders = [root / f"round-{k}" for k in range(1, round_id + 1)]
    missing = [str(f) for f in folders if not meta_of(f).is_file()]
    if missing:
        raise FileNotFoundError(f"no labels (scored/meta.json or meta.json) in {missing}; pull the annotations "
                                "of those rounds first, or pass the label folders with --labels")
    return folders


def _optional(p: Path | None) -> Path | None:
    """``--prev none`` or round 0's marker (models/discriminator/round-0) means no previous discriminator."""
    return None if is_no_discriminator(p) else p


def run(cfg: TrainDiscriminatorConfig, init: Path, labels: list[Path], out_dir: Path, *, prev: Path | None = None,
        round_id: int = 1, anchors: Path | None = None) -> TrainDiscriminatorResult:
    if cfg.use:   # a ready discriminator (e.g. RORem's) serves as this round's: nothing is trained
        from rorem_core.reward.discriminator import adopt

        info = adopt(cfg.use, init, out_dir, cache_dir=cfg.base.cache_dir, resolution=cfg.base.resolution)
        return TrainDiscriminatorResult(out_dir=str(out_dir), metrics={
            "adopted": cfg.use, "base": info.base, "loss": info.loss, "threshold": info.threshold,
            "heldout": None, "why": "train_discriminator.use: not trained here, so no held-out agreement figures"})
    metrics = train_discriminator(cfg, init, [meta_of(p) for p in labels], out_dir, prev=prev,
                                  run_name=f"train_discriminator/round-{round_id}", wandb_group=f"round-{round_id}",
                                  anchors=anchors)
    return TrainDiscriminatorResult(out_dir=str(out_dir), metrics=metrics)


def main(argv: list[str] | None = None) -> int:
    p = _cli.parser("train_discriminator", __doc__)
    p.add_argument("--round", type=int, default=1)
    p.add_argument("--init", type=Path, required=True, help="UNet to start from: base model dir or a remover")
    p.add_argument("--labels", type=Path, nargs="*", default=[], help="scored label folders / meta.json files")
    p.add_argument("--labels-root", type=Path, help="read ROOT/round-1..N (N = --round), e.g. data/annotations")
    p.add_argument("--prev", type=Path, help="previous round's discriminator (keeps its held-out split); 'none' = no")
    p.add_argument("--anchors", type=Path, help="triplets with ground truth (e.g. data/seed) for train_discriminator.anchors")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--metrics", type=Path)
    args = p.parse_args(argv)

    def body(cfg):
        labels = list(args.labels) + (rounds_labels(args.labels_root, args.round) if args.labels_root else [])
        if not labels:
            p.error("give --labels and/or --labels-root")
        res = run(cfg, args.init, labels, args.out, prev=_optional(args.prev), round_id=args.round,
                  anchors=args.anchors)
        _cli.write_metrics(args.metrics, res.metrics)
        return res

    return _cli.run_main("train_discriminator", args, body)


if __name__ == "__main__":
    raise SystemExit(main())
