"""Diffusion-DPO and Diffusion-KTO on the 9-channel inpainting UNet, as a LoRA on the remover.

The reference model is the SAME UNet with its adapters disabled (``adapters_disabled``), never a
second copy (DESIGN §10); at step 0 the LoRA is the identity, so policy == reference, the DPO loss
is ln 2 and the implicit accuracy 0.5. One DPO step (preference-learning.md §0):

    batch: w, l (B, 4, h, w) latents of the preferred / rejected result; mask (B, 1, h, w) and
           masked (B, 4, h, w) = the shared condition (same source and mask)
    t ~ U{0..T-1} [B], eps ~ N(0, I) (B, 4, h, w): ONE per pair, reused for w, l, policy and ref
    x_t = add_noise([w; l], [eps; eps], [t; t])        (2B, 4, h, w), batch = [all w ; all l]
    e = per_sample_error(unet(x_t), target)            [2B], fp32, target = eps or v by the
                                                       scheduler's prediction_type; masked variant:
                                                       mean inside the hole / hole area
    loss = dpo_loss(e_w, e_l, e_ref_w, e_ref_l, beta)  -logsigmoid(-(beta/2)(dpolicy - dref))

KTO uses single results with good/bad labels: ``kto_loss(e, e_ref, label)`` at one (t, eps) each.
Data helpers (pair / labelled latent entries on top of ``LatentCache``) and the LoRA-remover
output (``lora/`` + ``rorem_model.json``) are shared with ``rorem_core.preference.distill``.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, ContextManager, Sequence

import torch

from rorem_core.config import TrainDPOConfig
from rorem_core.data.augment import dihedral
from rorem_core.io import write_json_atomic
from rorem_core.models.conditioning import PromptEmbeds
from rorem_core.models.loading import load_unet_fused, resolve_ref, write_ref
from rorem_core.models.unet import add_lora, save_lora, unet_forward
from rorem_core.preference import lcm
from rorem_core.preference.pairs import load_pair_batch
from rorem_core.training.losses import get_loss, per_sample_error
from rorem_core.training.trainer import mean_dicts


@dataclass
class StepContext:
    """What a step needs besides the model and the batch."""

    cond: PromptEmbeds
    alphas_cumprod: torch.Tensor   # [T] fp32
    prediction_type: str           # epsilon (SDXL) | v_prediction (tiny)
    resolution: int
    device: torch.device
    masked: bool = False

    @classmethod
    def from_scheduler(cls, scheduler_config: dict, cond, resolution: int, device, masked: bool = False):
        from diffusers import DDPMScheduler

        sched = DDPMScheduler.from_config(scheduler_config)
        return cls(cond=cond, alphas_cumprod=sched.alphas_cumprod.float().to(device),
                   prediction_type=sched.config.prediction_type, resolution=resolution,
                   device=torch.device(device), masked=masked)


Reference = Callable[[torch.nn.Module], ContextManager[torch.nn.Module]]


@contextlib.contextmanager
def adapters_disabled(unet):
    """The reference model: the policy UNet with its LoRA switched off (no copy, no extra memory)."""
    unet.disable_adapters()
    try:
        yield unet
    finally:
        unet.enable_adapters()


def frozen_copy(model: torch.nn.Module) -> Reference:
    """A separate frozen reference UNet (tests and the memory benchmark only)."""
    @contextlib.contextmanager
    def ctx(_policy):
        yield model
    return ctx


# ---------------------------------------------------------------- one step


def augment_spatial(batch: dict, gen: torch.Generator) -> dict:
    """One random dihedral transform per sample (``remover.dihedral``), applied jointly to every
    (B, C, h, w) tensor of the batch (w, l, mask, masked, ...); [B] tensors (labels) pass unchanged."""
    n = len(next(iter(batch.values())))
    ks = torch.randint(0, 4, (n,), generator=gen).tolist()
    flips = torch.randint(0, 2, (n,), generator=gen).tolist()
    out = dict(batch)
    for name, x in batch.items():
        if x.ndim == 4:
            out[name] = torch.stack([dihedral(x[i:i + 1], k, bool(f))[0] for i, (k, f) in enumerate(zip(ks, flips))])
    return out


def _errors(unet, z0, noise, t, cond_batch, ctx: StepContext) -> torch.Tensor:
    """Per-sample fp32 error [N] of ``unet`` at x_t = add_noise(z0, noise, t)."""
    z_t = lcm.add_noise(z0, noise, t, ctx.alphas_cumprod)
    target = lcm.training_target(z0, noise, t, ctx.alphas_cumprod, ctx.prediction_type)
    pred = unet_forward(unet, z_t, t, cond_batch, ctx.cond, ctx.resolution)
    return per_sample_error(pred, target, mask=cond_batch["mask"] if ctx.masked else None)


def pair_errors(unet, batch: dict, gen: torch.Generator, ctx: StepContext,
                reference: Reference = adapters_disabled, policy=None) -> tuple[torch.Tensor, ...]:
    """(policy_w, policy_l, ref_w, ref_l) [B] each, at ONE (t, eps) per pair shared by all four.
    ``policy``: the module the gradient forward goes through (the DDP wrapper of ``unet``), default ``unet``."""
    w, l = batch["w"].to(ctx.device), batch["l"].to(ctx.device)
    n = len(w)
    t = torch.randint(0, len(ctx.alphas_cumprod), (n,), generator=gen).to(ctx.device)
    noise = torch.randn(w.shape, generator=gen).to(ctx.device)
    # (2B, ...) = [all w ; all l], the same t, eps and condition repeated
    z0, noise2, t2 = torch.cat([w, l]), noise.repeat(2, 1, 1, 1), t.repeat(2)
    cond_batch = {k: batch[k].to(ctx.device).repeat(2, 1, 1, 1) for k in ("mask", "masked")}
    pol = _errors(policy or unet, z0, noise2, t2, cond_batch, ctx)
    with torch.no_grad(), reference(unet) as ref_unet:
        ref = _errors(ref_unet, z0, noise2, t2, cond_batch, ctx)
    return (*pol.chunk(2), *ref.chunk(2))


def single_errors(unet, batch: dict, gen: torch.Generator, ctx: StepContext,
                  reference: Reference = adapters_disabled, policy=None) -> tuple[torch.Tensor, torch.Tensor]:
    """(policy, ref) errors [B] of single results ``batch["target"]`` at one (t, eps) each."""
    z0 = batch["target"].to(ctx.device)
    t = torch.randint(0, len(ctx.alphas_cumprod), (len(z0),), generator=gen).to(ctx.device)
    noise = torch.randn(z0.shape, generator=gen).to(ctx.device)
    cond_batch = {k: batch[k].to(ctx.device) for k in ("mask", "masked")}
    policy = _errors(policy or unet, z0, noise, t, cond_batch, ctx)
    with torch.no_grad(), reference(unet) as ref_unet:
        ref = _errors(ref_unet, z0, noise, t, cond_batch, ctx)
    return policy, ref


def make_preference_loss(unet, ctx: StepContext, cfg: TrainDPOConfig, reference: Reference = adapters_disabled):
    """compute_loss(batch, gen) -> (loss, metrics) for rorem_core.training.trainer.run_training."""
    loss_fn = get_loss(cfg.loss)

    def compute_loss(batch: dict, gen: torch.Generator, model=None):   # model: the prepared (DDP) UNet
        if cfg.augment_dihedral:
            batch = augment_spatial(batch, gen)
        if cfg.loss == "dpo":
            loss, metrics = loss_fn(*pair_errors(unet, batch, gen, ctx, reference, policy=model), beta=cfg.beta)
        else:
            policy, ref = single_errors(unet, batch, gen, ctx, reference, policy=model)
            loss, metrics = loss_fn(policy, ref, batch["label"].to(ctx.device), beta=cfg.kto_beta,
                                    desirable_weight=cfg.kto_desirable_weight,
                                    undesirable_weight=cfg.kto_undesirable_weight)
        return loss, metrics

    return compute_loss


@torch.no_grad()
def implicit_accuracy(unet, entries: Sequence, ctx: StepContext, *, beta: float, draws: int = 4,
                      seed: int = 0, batch_size: int = 64, reference: Reference = adapters_disabled) -> dict:
    """Held-out DPO metrics over ``draws`` fixed (t, eps) per pair: implicit_acc = mean(z > 0) +
    0.5 mean(z == 0) (0.5 at init) and reward_margin = mean z, z = -(beta/2)(dpolicy - dref)."""
    zs = []
    for lo in range(0, len(entries), batch_size):
        batch = load_pair_batch(entries[lo:lo + batch_size])
        for d in range(draws):
            gen = torch.Generator().manual_seed(seed * 1_000_003 + lo * 131 + d)
            pw, pl, rw, rl = pair_errors(unet, batch, gen, ctx, reference)
            zs.append(-0.5 * beta * ((pw - pl) - (rw - rl)))
    z = torch.cat(zs) if zs else torch.zeros(0)
    acc = float((z > 0).float().mean() + 0.5 * (z == 0).float().mean()) if len(z) else float("nan")
    return {"implicit_acc": acc, "reward_margin": float(z.mean()) if len(z) else float("nan"),
            "n_pairs": len(entries), "n_draws": len(z)}


# ---------------------------------------------------------------- the LoRA remover


def load_policy_unet(init_ref: str | Path, rank: int, targets: Sequence[str], *,
                     dtype: torch.dtype = torch.float32, seed: int = 0) -> tuple[torch.nn.Module, list, bool]:
    """(unet with a fresh identity LoRA, its trainable parameters, whether an init LoRA was fused).

    A remover that already is a LoRA stack (e.g. a DPO output used as a distillation teacher) has
    its stack fused into the UNet first, so "adapters disabled" is exactly the init remover; the
    saved remover stores only the new adapter and names that stack (``save_lora_remover``).
    """
    unet = load_unet_fused(init_ref, dtype=dtype)
    fused = bool(resolve_ref(init_ref).loras)
    return unet, add_lora(unet, rank, list(targets), seed=seed), fused


@dataclass
class LoraPolicy:
    """A LoRA training run on a remover (DPO, distillation): the UNet with its fresh adapter, the
    accelerator, the device and the resumable work dir (keyed by config + inputs)."""

    unet: torch.nn.Module
    trainable: list
    acc: object
    device: torch.device
    work: Path
    run_name: str

    @classmethod
    def setup(cls, cfg, init_ref: str | Path, run_name: str, *key_parts: str) -> "LoraPolicy":
        from rorem_core.config import config_hash
        from rorem_core.models.loading import configure_attention
        from rorem_core.training.trainer import make_accelerator

        unet, trainable, _ = load_policy_unet(init_ref, cfg.lora_rank, cfg.lora_targets, seed=cfg.base.seed)
        if cfg.gradient_checkpointing:
            unet.enable_gradient_checkpointing()
        configure_attention(unet, xformers={"auto": "auto", "on": True, "off": False}[cfg.xformers])
        work = Path(cfg.base.work_dir) / run_name.replace("/", "_") / config_hash(cfg, str(init_ref), *key_parts)[:16]
        acc = make_accelerator(cfg.base, cfg, work)
        device = acc.device   # base.device, resolved by make_accelerator
        return cls(unet.to(device), trainable, acc, device, work, run_name)


def history_tail(history: list[dict], n: int = 10) -> dict[str, float]:
    """Mean of each metric over the last ``n`` steps of a TrainResult's history ({} before any step)."""
    return mean_dicts(history[-n:])


def save_lora_remover(unet, init_ref: str | Path, out_dir: Path, summary: dict) -> None:
    """Write a remover dir into ``out_dir`` (already a temp dir): ``lora/pytorch_lora_weights.safetensors``
    (diffusers format) + ``rorem_model.json`` naming the init's adapter stack + this adapter. No UNet
    weights: a LoRA init is re-fused from its stack at load (loading.py), not stored again (a fused
    SDXL UNet is 10.3 GB per stage and per DVC copy)."""
    save_lora(unet, out_dir / "lora")
    write_ref(out_dir, init_ref, unet=None, lora="lora")
    write_json_atomic(out_dir / "train_summary.json", summary)
