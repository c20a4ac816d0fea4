"""Stage 1, train_remover: fine-tune the remover of round N from its init (base or round N-1) on
the round's training set (one or more RORem meta.json files)."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel

from rorem_core.config import TrainRemoverConfig
from rorem_core.data.formats import dataset_file
from rorem_core.stages import _cli
from rorem_core.training.sft import train_remover


class TrainRemoverResult(BaseModel):
    out_dir: str
    steps: int
    resumed_from: int
    first_loss: float
    last_loss: float
    n_train: int


def meta_path(p: Path) -> Path:
    """Accept a dataset folder or its meta.json."""
    return dataset_file(p)


def run(cfg: TrainRemoverConfig, init: Path, train: list[Path], out_dir: Path, round_id: int = 1) -> TrainRemoverResult:
    from rorem_core.training.sft import triplet_files

    metas = [meta_path(p) for p in train]
    res = train_remover(cfg, init, metas, out_dir, run_name=f"train_remover/round-{round_id}",
                        wandb_group=f"round-{round_id}")
    return TrainRemoverResult(out_dir=str(out_dir), steps=res.steps, resumed_from=res.resumed_from,
                              first_loss=res.first_loss, last_loss=res.last_loss,
                              n_train=len(triplet_files(metas)))


def main(argv: list[str] | None = None) -> int:
    p = _cli.parser("train_remover", __doc__)
    p.add_argument("--round", type=int, default=1)
    p.add_argument("--init", type=Path, required=True, help="base model dir or previous remover")
    p.add_argument("--train", type=Path, nargs="+", required=True, help="dataset folders / meta.json files")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--metrics", type=Path)
    args = p.parse_args(argv)

    def body(cfg):
        res = run(cfg, args.init, args.train, args.out, args.round)
        _cli.write_metrics(args.metrics, res.model_dump())
        return res

    return _cli.run_main("train_remover", args, body)


if __name__ == "__main__":
    raise SystemExit(main())
