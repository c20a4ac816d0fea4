"""Stage 10, train_dpo: Diffusion-DPO on preference pairs (loss: dpo) or Diffusion-KTO on good/bad
labels (loss: kto), as a LoRA on the remover; the reference is the same UNet with adapters disabled.
Output: a remover dir (lora/ + rorem_model.json) that Remover.load, evaluate and
``pipe.load_lora_weights`` accept."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from pydantic import BaseModel

from rorem_core.config import TrainDPOConfig
from rorem_core.data.latents import latent_cache
from rorem_core.io import atomic_dir
from rorem_core.models.conditioning import load_prompt_embeds
from rorem_core.models.loading import load_scheduler_config
from rorem_core.preference.dpo import (
    LoraPolicy,
    StepContext,
    history_tail,
    implicit_accuracy,
    make_preference_loss,
    save_lora_remover,
)
from rorem_core.preference.pairs import labelled_batch_fn, labelled_entries, load_pair_batch, pair_entries
from rorem_core.stages import _cli
from rorem_core.training.trainer import run_training


class TrainDPOResult(BaseModel):
    out_dir: str
    loss: str
    steps: int
    resumed_from: int
    n_train: int
    n_val: int
    first_loss: float
    last_loss: float
    val_before: dict         # held-out implicit accuracy / reward margin (DPO) at init
    val_after: dict
    train_last: dict         # mean of the last 10 steps' logged metrics


def _entries(cfg: TrainDPOConfig, init: Path, pairs: Sequence[Path], labels: Sequence[Path]):
    cache = latent_cache(init, cfg.base, cfg.frozen_dtype)
    if cfg.loss == "dpo":
        if not pairs:
            raise ValueError("train_dpo with loss=dpo needs --pairs (a build_pairs output)")
        return (*pair_entries(cache, pairs, cfg.val_fraction), load_pair_batch)
    if not (pairs or labels):
        raise ValueError("train_dpo with loss=kto needs --labels (scored results) and/or --pairs")
    return (*labelled_entries(cache, pairs, labels, cfg.label_good_min, cfg.val_fraction),
            labelled_batch_fn("label"))


def _validate(unet, val, ctx, cfg: TrainDPOConfig) -> dict:
    if cfg.loss != "dpo" or not val:
        return {}
    return implicit_accuracy(unet, val, ctx, beta=cfg.beta, draws=cfg.val_draws, seed=cfg.base.seed)


def run(cfg: TrainDPOConfig, init: Path, out_dir: Path, *, pairs: Sequence[Path] = (),
        labels: Sequence[Path] = (), round_id: int = 1) -> TrainDPOResult:
    train, val, batch_fn = _entries(cfg, init, pairs, labels)
    pol = LoraPolicy.setup(cfg, init, f"train_dpo/round-{round_id}", *map(str, pairs), *map(str, labels), str(len(train)))
    unet, device = pol.unet, pol.device
    ctx = StepContext.from_scheduler(load_scheduler_config(init), load_prompt_embeds(init, cfg.base.cache_dir),
                                     cfg.base.resolution, device, masked=cfg.masked)
    before = _validate(unet, val, ctx, cfg)
    loss_fn = make_preference_loss(unet, ctx, cfg)
    result, unet = run_training(base=cfg.base, params=cfg, model=unet, trainable=pol.trainable, entries=train,
                                compute_loss=loss_fn, work_dir=pol.work, run_name=pol.run_name,
                                tracker_config=cfg.model_dump(), wandb_group=f"round-{round_id}",
                                accelerator=pol.acc, batch_fn=batch_fn)
    after = _validate(unet, val, ctx, cfg)
    last = history_tail(result.history)
    res = TrainDPOResult(out_dir=str(out_dir), loss=cfg.loss, steps=result.steps, resumed_from=result.resumed_from,
                         n_train=len(train), n_val=len(val), first_loss=result.first_loss,
                         last_loss=result.last_loss, val_before=before, val_after=after, train_last=last)
    if pol.acc.is_main_process:
        with atomic_dir(out_dir) as tmp:
            save_lora_remover(unet, init, tmp, {**res.model_dump(), "losses": result.losses,
                                                       "config": cfg.model_dump()})
    return res


def main(argv: list[str] | None = None) -> int:
    p = _cli.parser("train_dpo", __doc__)
    p.add_argument("--round", type=int, default=1)
    p.add_argument("--init", type=Path, required=True, help="the remover to improve (reference = it)")
    p.add_argument("--pairs", type=Path, nargs="*", default=[], help="build_pairs outputs (pairs.json or folder)")
    p.add_argument("--labels", type=Path, nargs="*", default=[],
                   help="KTO: scored candidates.json / meta.json (good if score >= label_good_min)")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--metrics", type=Path)
    args = p.parse_args(argv)

    def body(cfg):
        res = run(cfg, args.init, args.out, pairs=args.pairs, labels=args.labels, round_id=args.round)
        _cli.write_metrics(args.metrics, res.model_dump())
        return res

    return _cli.run_main("train_dpo", args, body)


if __name__ == "__main__":
    raise SystemExit(main())
