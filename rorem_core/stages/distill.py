"""Stage 11, distill: a 4-step LCM LoRA student from the remover teacher (adapters disabled =
teacher), plain (reward_mode: none) or reward-weighted by discriminator scores (clamp | softmax).
Output: a remover dir (lora/ + rorem_model.json) to sample with scheduler "lcm", 4 steps.
``distill.use: DIR`` adopts a ready LCM LoRA (RORem's) as that dir instead of training one."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Sequence

from pydantic import BaseModel

from rorem_core.config import DistillConfig
from rorem_core.data.latents import latent_cache
from rorem_core.io import atomic_dir, write_json_atomic
from rorem_core.models.conditioning import load_prompt_embeds
from rorem_core.models.loading import load_lora_checked, load_scheduler_config, load_unet_fused, write_ref
from rorem_core.preference.distill import LCMContext, discriminator_reward, distill_entries, make_distill_loss
from rorem_core.preference.dpo import LoraPolicy, StepContext, history_tail, save_lora_remover
from rorem_core.preference.pairs import labelled_batch_fn
from rorem_core.stages import _cli
from rorem_core.training.trainer import run_training


class DistillResult(BaseModel):
    out_dir: str
    reward_mode: str
    steps: int
    resumed_from: int
    n_train: int
    data: dict               # triplets / scored candidates / skipped unscored candidates
    first_loss: float | None           # None: adopted (distill.use), nothing trained
    last_loss: float | None
    train_last: dict         # mean of the last 10 steps' metrics (distill_unweighted, rwd_* ...)
    sampler: dict = {"scheduler": "lcm", "steps": 4}
    adopted: str | None = None         # distill.use: the LoRA folder this round's LCM model is


def adopt(cfg: DistillConfig, teacher: Path, out_dir: Path) -> DistillResult:
    """``distill.use``: the LoRA must fit the teacher's UNet tensor for tensor (loading.load_lora_checked),
    then it is copied to ``out_dir/lora`` and stacked on the teacher, as a distilled student would be."""
    src = Path(cfg.use)
    load_lora_checked(load_unet_fused(teacher), src, adapter_name="adopted")   # fail here, named, not later
    res = DistillResult(out_dir=str(out_dir), reward_mode="none", steps=0, resumed_from=0, n_train=0, data={},
                        first_loss=None, last_loss=None, train_last={}, adopted=str(src))
    with atomic_dir(out_dir) as tmp:
        (tmp / "lora").mkdir()
        shutil.copyfile(src / "pytorch_lora_weights.safetensors", tmp / "lora" / "pytorch_lora_weights.safetensors")
        write_ref(tmp, teacher, unet=None, lora="lora")
        write_json_atomic(tmp / "train_summary.json", {**res.model_dump(), "config": cfg.model_dump()})
    return res


def load_reward_fn(cfg: DistillConfig, path: Path | None, device, teacher: Path | None = None):
    """The RG-LCD reward r(student latent, batch) -> [B] from a discriminator dir (None: no term). A view=residual
    discriminator reads the batch's masked latent as its filled source: the teacher must condition on that fill."""
    if path is None:
        return None
    from rorem_core.models.loading import masked_fill_of
    from rorem_core.reward.discriminator import RESIDUAL_FILL, load_discriminator

    disc = load_discriminator(path, cache_dir=cfg.base.cache_dir, base=cfg.base.model_dir,
                              resolution=cfg.base.resolution).to(device)
    if disc.info.view == "residual" and teacher is not None and masked_fill_of(teacher) != RESIDUAL_FILL:
        raise ValueError(f"distill: the reward model {path} reads a {RESIDUAL_FILL}-filled source (view residual) but the "
                         f"teacher {teacher} conditions on the {masked_fill_of(teacher)} fill; train the discriminator "
                         "with train_discriminator.view: rorem, or set distill.reward_scale: 0")
    return discriminator_reward(disc)


def run(cfg: DistillConfig, teacher: Path, out_dir: Path, *, train: Sequence[Path] = (),
        candidates: Sequence[Path] = (), reward_model: Path | None = None, round_id: int = 1) -> DistillResult:
    """Distil ``teacher`` into a 4-step LCM LoRA on z0 from ``train`` triplets and scored
    ``candidates``; with reward_scale > 0, ``reward_model`` (a discriminator dir) adds the RG-LCD term."""
    if cfg.use:   # a ready LCM LoRA (e.g. RORem's) is this round's 4-step model: nothing is trained
        return adopt(cfg, teacher, out_dir)
    if not (train or candidates):
        raise ValueError("distill: no data; pass --train (triplets) and/or --candidates (scored)")
    if cfg.reward_scale > 0 and reward_model is None:
        raise ValueError(f"reward_scale={cfg.reward_scale} needs --reward-model (a discriminator dir)")
    cache = latent_cache(teacher, cfg.base, cfg.frozen_dtype)
    entries, counts = distill_entries(cache, train, candidates, cfg.unscored_score)
    del cache
    pol = LoraPolicy.setup(cfg, teacher, f"distill/round-{round_id}", *map(str, train), *map(str, candidates),
                           str(len(entries)))
    unet, device = pol.unet, pol.device
    step_ctx = StepContext.from_scheduler(load_scheduler_config(teacher),
                                          load_prompt_embeds(teacher, cfg.base.cache_dir), cfg.base.resolution, device)
    lctx = LCMContext.build(step_ctx, cfg.num_ddim_timesteps, guidance=cfg.guidance_max > 0)
    loss_fn = make_distill_loss(unet, lctx, cfg, reward_fn=load_reward_fn(cfg, reward_model, device, teacher))
    result, unet = run_training(base=cfg.base, params=cfg, model=unet, trainable=pol.trainable, entries=entries,
                                compute_loss=loss_fn, work_dir=pol.work, run_name=pol.run_name,
                                tracker_config=cfg.model_dump(), wandb_group=f"round-{round_id}",
                                accelerator=pol.acc, batch_fn=labelled_batch_fn("score"))
    last = history_tail(result.history)
    res = DistillResult(out_dir=str(out_dir), reward_mode=cfg.reward_mode, steps=result.steps,
                        resumed_from=result.resumed_from, n_train=len(entries), data=counts,
                        first_loss=result.first_loss, last_loss=result.last_loss, train_last=last)
    if pol.acc.is_main_process:
        with atomic_dir(out_dir) as tmp:
            save_lora_remover(unet, teacher, tmp, {**res.model_dump(), "losses": result.losses,
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
