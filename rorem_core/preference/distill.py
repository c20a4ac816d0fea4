"""Latent-consistency distillation of the remover into a 4-step LoRA student (LCM-LoRA), plain or
reward-weighted (RWD), adapted from diffusers' ``train_lcm_distill_lora_sdxl.py`` and RORem's
``train_RORem_lcm.py`` (rorem.md §3, preference-learning.md §4-5) to the 9-channel inpainting input.

One step, per sample i of a batch (z0 (B, 4, h, w) = a clean latent: a GT triplet or a scored
candidate; condition = mask (B, 1, h, w) + masked-source latent (B, 4, h, w), shared by all calls):

    n ~ U{0..N-1};  t = grid[n] = (n+1)k - 1,  s = max(t - k, 0),  k = T / N  (N = 50 -> k = 20)
    x_t     = add_noise(z0, eps, t)
    student = f_theta(x_t, t) = c_skip(t) x_t + c_out(t) x0_theta(x_t, t)          (LoRA on)
    teacher (adapters disabled, no grad): x0_T, eps_T at (x_t, t); with guidance w > 0:
              x0_T <- x0_c + w (x0_c - x0_u), eps_T likewise (u = zero prompt embeddings)
    x_s     = sqrt(abar_s) x0_T + sqrt(1 - abar_s) eps_T                     (skip-step DDIM)
    target  = f_theta(x_s, s) under no_grad (the student itself, no EMA: LCM-LoRA / RORem)
    l_i     = l2 or pseudo-Huber(student_i, target_i) per sample;  L = mean_i w_i l_i
RWD: w = reward_weights(score) (clamp or batch softmax / temperature, optional threshold, mean 1);
plain distillation is w = None; equal scores give w = 1 exactly (the same loss, bit for bit).
RG-LCD (optional): L += -reward_scale * mean_i r(student_i), r a differentiable latent reward.

What the student sees: z0 is the GT latent of training triplets (score = ``unscored_score``,
default 1: ground truth is good) and/or candidate results with their discriminator scores. The
teacher only needs (mask, masked latent) and x_t; weights change where the student spends its
capacity, not the teacher ODE it learns (preference-learning.md §4, caution).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import torch

from rorem_core.config import DistillConfig
from rorem_core.data.formats import dataset_file, read_triplets, resolve_in_root
from rorem_core.data.latents import LatentCache
from rorem_core.models.conditioning import PromptEmbeds
from rorem_core.models.unet import unet_forward
from rorem_core.preference import lcm
from rorem_core.preference.dpo import Reference, StepContext, adapters_disabled, augment_spatial
from rorem_core.preference.pairs import read_scored
from rorem_core.training.losses import get_loss, reward_term, reward_weights

# RORem LCM LoRA targets (rorem.md §3); module names absent from a UNet are skipped by peft
LCM_TARGETS = ["to_q", "to_k", "to_v", "to_out.0", "proj_in", "proj_out", "ff.net.0.proj", "ff.net.2",
               "conv1", "conv2", "conv_shortcut", "downsamplers.0.conv", "upsamplers.0.conv", "time_emb_proj"]
RewardFn = Callable[[torch.Tensor, dict], torch.Tensor]


@dataclass
class LCMContext:
    """StepContext + the skip-step solver and the (optional) unconditional embeddings."""

    step: StepContext
    solver: lcm.DDIMSolver
    uncond: PromptEmbeds | None = None

    @classmethod
    def build(cls, step: StepContext, num_ddim_timesteps: int, guidance: bool) -> "LCMContext":
        uncond = None
        if guidance:  # diffusers' LCM-LoRA SDXL: zero text embeddings as the unconditional branch
            uncond = PromptEmbeds(hidden=torch.zeros_like(step.cond.hidden), pooled=torch.zeros_like(step.cond.pooled))
        return cls(step=step, solver=lcm.DDIMSolver(step.alphas_cumprod.cpu(), num_ddim_timesteps=num_ddim_timesteps),
                   uncond=uncond)


def _x0_eps(unet, x_t, t, cb, cond, ctx: StepContext) -> tuple[torch.Tensor, torch.Tensor]:
    out = unet_forward(unet, x_t, t, cb, cond, ctx.resolution).float()
    args = (x_t, t, ctx.alphas_cumprod, ctx.prediction_type)
    return lcm.predicted_x0(out, *args), lcm.predicted_eps(out, *args)


def teacher_step(unet, x_t, t, cb, lctx: LCMContext, index, w: torch.Tensor | None, teacher: Reference):
    """x_s: one skip-step DDIM move of the teacher (adapters disabled) from (x_t, t), no grad."""
    ctx = lctx.step
    with torch.no_grad(), teacher(unet) as tnet:
        x0, eps = _x0_eps(tnet, x_t, t, cb, ctx.cond, ctx)
        if w is not None:  # CFG: x0 = x0_c + w (x0_c - x0_u), eps likewise; w (B, 1, 1, 1)
            x0_u, eps_u = _x0_eps(tnet, x_t, t, cb, lctx.uncond, ctx)
            x0, eps = x0 + w * (x0 - x0_u), eps + w * (eps - eps_u)
    return lctx.solver.step(x0, eps, index.cpu()).to(x_t.dtype)


def lcm_step(unet, batch: dict, gen: torch.Generator, lctx: LCMContext, cfg: DistillConfig, *,
             teacher: Reference = adapters_disabled, reward_fn: RewardFn | None = None, student_net=None):
    """(loss, metrics) of one distillation step (module docstring); batch from the latent cache
    (+ ``score`` [B] for RWD). ``student_net``: the module of the gradient forward (the DDP wrapper of
    ``unet``), default ``unet``; teacher and target use ``unet`` itself, without grad."""
    ctx = lctx.step
    z0 = batch["target"].to(ctx.device)
    n = len(z0)
    index = lctx.solver.sample_indices(n, generator=gen)
    t, s = (x.to(ctx.device) for x in lctx.solver.timesteps_for(index))
    noise = torch.randn(z0.shape, generator=gen).to(ctx.device)
    w = None
    if lctx.uncond is not None:
        u = torch.rand(n, generator=gen)
        w = (cfg.guidance_min + (cfg.guidance_max - cfg.guidance_min) * u).to(ctx.device).view(n, 1, 1, 1)
    cb = {k: batch[k].to(ctx.device) for k in ("mask", "masked")}
    x_t = lcm.add_noise(z0, noise, t, ctx.alphas_cumprod)
    x0_student, _ = _x0_eps(student_net or unet, x_t, t, cb, ctx.cond, ctx)
    student = lcm.consistency_output(x0_student, x_t, t)
    x_s = teacher_step(unet, x_t, t, cb, lctx, index, w, teacher)
    with torch.no_grad():
        x0_target, _ = _x0_eps(unet, x_s, s, cb, ctx.cond, ctx)
        target = lcm.consistency_output(x0_target, x_s, s)
    weights, wm = _weights(batch, cfg, ctx.device)
    loss, metrics = get_loss(f"lcm_{cfg.loss_type}")(student, target, weights=weights,
                                                     **({"huber_c": cfg.huber_c} if cfg.loss_type == "huber" else {}))
    metrics = {**metrics, **wm}
    if cfg.reward_scale > 0:
        if reward_fn is None:
            raise ValueError("reward_scale > 0 needs a reward model (distill --reward-model)")
        r_loss, rm = reward_term(reward_fn(student, {**batch, **cb}), scale=cfg.reward_scale)
        loss, metrics = loss + r_loss, {**metrics, **rm}
    return loss, metrics


def _weights(batch: dict, cfg: DistillConfig, device) -> tuple[torch.Tensor | None, dict]:
    if cfg.reward_mode == "none":
        return None, {}
    w, m = reward_weights(batch["score"].to(device), mode=cfg.reward_mode, temperature=cfg.reward_temperature,
                          threshold=cfg.reward_threshold)
    return w, {f"rwd_{k}": v for k, v in m.items()}


def make_distill_loss(unet, lctx: LCMContext, cfg: DistillConfig, *, teacher: Reference = adapters_disabled,
                      reward_fn: RewardFn | None = None):
    """compute_loss(batch, gen) for rorem_core.training.trainer.run_training."""
    def compute_loss(batch: dict, gen: torch.Generator, model=None):   # model: the prepared (DDP) UNet
        if cfg.augment_dihedral:
            batch = augment_spatial(batch, gen)
        loss, metrics = lcm_step(unet, batch, gen, lctx, cfg, teacher=teacher, reward_fn=reward_fn,
                                 student_net=model)
        return loss, metrics
    return compute_loss


def discriminator_reward(disc) -> RewardFn:
    """RG-LCD reward from the project's discriminator (rorem.md §3 "adding a discriminator reward"):

        r_i = min(score(D([c, mask, z_src])), 1),  c = mask * student + (1 - mask) * z_src
    i.e. the student's one-step latent composited into the unmasked source latent (D was trained on
    composited results), no VAE decode; clamped at 1 against reward hacking of an unbounded score.
    ``disc`` is frozen (``load_discriminator`` returns it in eval mode without grads); the gradient
    flows through its input into the student LoRA only.
    """
    def reward(student: torch.Tensor, batch: dict) -> torch.Tensor:
        dev = student.device
        mask, source = batch["mask"].to(dev), batch["source"].to(dev)
        comp = mask * student + (1.0 - mask) * source
        filled = batch["masked"].to(dev) if disc.info.view == "residual" else None   # stages/distill checks the fill
        return disc.score(disc(comp, mask, source, filled)).clamp(max=1.0)
    return reward


def distill_entries(cache: LatentCache, train: Sequence[Path], candidates: Sequence[Path],
                    unscored_score: float) -> tuple[list[tuple[Path, float]], dict]:
    """(entry, score) for GT triplets (``score`` or ``accept_score`` from meta.json, else ``unscored_score``) and scored
    candidates (unscored ones skipped); returns entries and counts."""
    items, counts = [], {"triplets": 0, "candidates": 0, "unscored_candidates": 0}
    for meta in train:
        meta = dataset_file(meta)
        for i, t in enumerate(read_triplets(meta)):
            files = tuple(resolve_in_root(meta.parent, r, where=f"{meta} entry {i}") for r in (t.source, t.mask, t.GT))
            # a grown training set (trainset@N) keeps the acceptance score as ``accept_score``
            score = t.score if t.score is not None else getattr(t, "accept_score", None)
            items.append((files, unscored_score if score is None else float(score)))
            counts["triplets"] += 1
    for path in candidates:
        for s in read_scored(Path(path)):
            if s.score is None:
                counts["unscored_candidates"] += 1
                continue
            items.append(((s.source, s.mask, s.result), float(s.score)))
            counts["candidates"] += 1
    paths = cache.ensure([f for f, _ in items])
    return [(p, score) for p, (_, score) in zip(paths, items)], counts
