"""Stage 11, distill: a 4-step LCM LoRA student from the remover teacher (adapters disabled =
teacher), plain (reward_mode: none) or reward-weighted by discriminator scores (clamp | softmax).
Output: a remover dir (lora/ + rorem_model.json) to sample with scheduler "lcm", 4 steps."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import torch
from pydantic import BaseModel

from rorem_core.config import config_hash
from rorem_core.distill import DistillConfig, LCMContext, distill_entries, make_distill_loss
from rorem_core.io import atomic_dir
from rorem_core.latents import LatentCache
from rorem_core.models.conditioning import load_prompt_embeds
from rorem_core.models.loading import configure_attention, load_scheduler_config, load_vae
from rorem_core.pairs import labelled_batch_fn
from rorem_core.preference import StepContext, load_policy_unet, save_lora_remover
from rorem_core.remover import DTYPES
from rorem_core.stages import _cli
from rorem_core.trainer import make_accelerator, run_training


class DistillResult(BaseModel):
    out_dir: str
    reward_mode: str
    steps: int
    resumed_from: int
    n_train: int
    data: dict               # triplets / scored candidates / skipped unscored candidates
    first_loss: float
    last_loss: float
    train_last: dict         # mean of the last 10 steps' metrics (distill_unweighted, rwd_* ...)
    sampler: dict = {"scheduler": "lcm", "steps": 4}


def load_reward_fn(path: Path | None, device):
    """A differentiable latent reward r(student latent (B,4,h,w), batch) -> [B] for RG-LCD.

    Uses the discriminator module's ``latent_reward(path, device)`` when it provides one.
    """
    if path is None:
        return None
    import importlib

    disc = importlib.import_module("rorem_core.discriminator")
    if not hasattr(disc, "latent_reward"):
        raise NotImplementedError("reward_scale > 0 needs rorem_core.discriminator.latent_reward(path, device) "
                                  "returning r(latent, batch) -> [B]; set reward_scale: 0 until it exists")
    return disc.latent_reward(path, device)


def run(cfg: DistillConfig, teacher: Path, out_dir: Path, *, train: Sequence[Path] = (),
        candidates: Sequence[Path] = (), reward_model: Path | None = None, round_id: int = 1) -> DistillResult:
    if not (train or candidates):
        raise ValueError("distill: no data; pass --train (triplets) and/or --candidates (scored)")
    if cfg.reward_scale > 0 and reward_model is None:
        raise ValueError(f"reward_scale={cfg.reward_scale} needs --reward-model (a discriminator dir)")
    cache = LatentCache(Path(cfg.base.cache_dir) / "latents", load_vae(teacher, dtype=DTYPES[cfg.frozen_dtype]),
                        cfg.base.resolution)
    entries, counts = distill_entries(cache, train, candidates, cfg.unscored_score)
    del cache
    unet, trainable, fused = load_policy_unet(teacher, cfg.lora_rank, cfg.lora_targets)
    if cfg.gradient_checkpointing:
        unet.enable_gradient_checkpointing()
    configure_attention(unet, xformers={"auto": "auto", "on": True, "off": False}[cfg.xformers])
    run_name = f"distill/round-{round_id}"
    work = Path(cfg.base.work_dir) / run_name.replace("/", "_") / config_hash(
        cfg, str(teacher), *map(str, train), *map(str, candidates), str(len(entries)))[:16]
    acc = make_accelerator(cfg.base, cfg, work)
    device = torch.device("cpu") if cfg.base.device == "cpu" else acc.device
    unet.to(device)
    step_ctx = StepContext.from_scheduler(load_scheduler_config(teacher),
                                          load_prompt_embeds(teacher, cfg.base.cache_dir), cfg.base.resolution, device)
    lctx = LCMContext.build(step_ctx, cfg.num_ddim_timesteps, guidance=cfg.guidance_max > 0)
    history: list[dict] = []
    loss_fn = make_distill_loss(unet, lctx, cfg, reward_fn=load_reward_fn(reward_model, device), history=history)
    result, unet = run_training(base=cfg.base, params=cfg, model=unet, trainable=trainable, entries=entries,
                                compute_loss=loss_fn, work_dir=work, run_name=run_name,
                                tracker_config=cfg.model_dump(), wandb_group=f"round-{round_id}",
                                accelerator=acc, batch_fn=labelled_batch_fn("score"))
    tail = history[-10:]
    last = {k: sum(h[k] for h in tail) / len(tail) for k in tail[0]} if tail else {}
    res = DistillResult(out_dir=str(out_dir), reward_mode=cfg.reward_mode, steps=result.steps,
                        resumed_from=result.resumed_from, n_train=len(entries), data=counts,
                        first_loss=result.first_loss, last_loss=result.last_loss, train_last=last)
    if acc.is_main_process:
        with atomic_dir(out_dir) as tmp:
            save_lora_remover(unet, teacher, tmp, fused, {**res.model_dump(), "losses": result.losses,
                                                          "config": cfg.model_dump()})
    return res


def main(argv: list[str] | None = None) -> int:
    p = _cli.parser("distill", __doc__)
    p.add_argument("--round", type=int, default=1)
    p.add_argument("--teacher", type=Path, required=True, help="the remover to distil (e.g. the DPO remover)")
    p.add_argument("--train", type=Path, nargs="*", default=[], help="triplet folders / meta.json (z0 = GT)")
    p.add_argument("--candidates", type=Path, nargs="*", default=[],
                   help="scored candidates.json (z0 = result, weight from score)")
    p.add_argument("--reward-model", type=Path, help="discriminator for the RG-LCD term (reward_scale > 0)")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--metrics", type=Path)
    args = p.parse_args(argv)

    def body(cfg):
        res = run(cfg, args.teacher, args.out, train=args.train, candidates=args.candidates,
                  reward_model=args.reward_model, round_id=args.round)
        _cli.write_metrics(args.metrics, res.model_dump())
        return res

    return _cli.run_main("distill", args, body)


if __name__ == "__main__":
    raise SystemExit(main())
