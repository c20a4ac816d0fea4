"""Remover training: the 9-channel SDXL-inpainting UNet denoises the GT latent given the mask and
the masked-source latent (RORem §1), with everything around it fixed:

- latents come from the cache (encoded once), the empty-prompt conditioning is precomputed;
- time_ids are built per batch, so a smaller last batch works;
- the target follows the scheduler config (epsilon for SDXL, v for the tiny preset);
- full fine-tune or LoRA by param; resumable checkpoints (rorem_core.trainer).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Sequence

import torch

from rorem_core.config import TrainRemoverConfig, config_hash
from rorem_core.io import atomic_dir, write_json_atomic
from rorem_core.latents import LatentCache
from rorem_core.losses import get_loss
from rorem_core.models.conditioning import PromptEmbeds, load_prompt_embeds
from rorem_core.models.loading import (configure_attention, load_scheduler_config, load_unet,
                                       load_vae, write_ref)
from rorem_core.trainer import TrainResult, run_training
from rorem_core.validate import require_valid

log = logging.getLogger(__name__)
LORA_TARGETS = ["to_q", "to_k", "to_v", "to_out.0"]
DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def dihedral(x: torch.Tensor, k: int, flip: bool) -> torch.Tensor:
    """Rotate (B, C, h, w) by k*90 degrees and optionally flip; exact for an area-down autoencoder."""
    x = torch.rot90(x, k, dims=(-2, -1))
    return torch.flip(x, dims=(-1,)) if flip else x


def augment(batch: dict[str, torch.Tensor], gen: torch.Generator) -> dict[str, torch.Tensor]:
    """One random dihedral transform per sample, applied jointly to every spatial tensor."""
    ks = torch.randint(0, 4, (len(batch["target"]),), generator=gen)
    flips = torch.randint(0, 2, (len(batch["target"]),), generator=gen)
    out = {}
    for name, t in batch.items():
        out[name] = torch.stack([dihedral(t[i:i + 1], int(k), bool(f))[0] for i, (k, f) in enumerate(zip(ks, flips))])
    return out


def diffusion_target(sched, z0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """What the UNet predicts: noise (epsilon) or velocity (v), per the scheduler config."""
    kind = sched.config.prediction_type
    if kind == "epsilon":
        return noise
    if kind == "v_prediction":
        return sched.get_velocity(z0, noise, t)
    raise ValueError(f"prediction_type {kind!r} unsupported; use epsilon or v_prediction")


def unet_forward(unet, z_t, t, batch, cond: PromptEmbeds, resolution: int) -> torch.Tensor:
    """UNet call on [noisy latent (4) | mask (1) | masked-source latent (4)] -> (B, 4, h, w)."""
    dtype = next(unet.parameters()).dtype
    hidden, added = cond.batch(len(z_t), (resolution, resolution), device=z_t.device, dtype=dtype)
    x = torch.cat([z_t, batch["mask"], batch["masked"]], dim=1).to(dtype)
    return unet(x, t, encoder_hidden_states=hidden, added_cond_kwargs=added).sample


@torch.no_grad()
def fixed_set_loss(unet, sched, cond: PromptEmbeds, cfg: TrainRemoverConfig, entries, device, n: int = 256) -> float:
    """Training loss on the first ``n`` entries with fixed timesteps and noise (no augmentation).

    The per-step training loss is dominated by the random timestep; this deterministic figure,
    taken before and after training, shows whether training moved the loss on its data."""
    from rorem_core.latents import load_batch

    quiet = cfg.model_copy(update={"augment_dihedral": False})
    loss_fn = make_remover_loss(unet, sched, cond, quiet, device)
    was_training, total, count = unet.training, 0.0, 0
    unet.eval()
    for i in range(0, min(n, len(entries)), cfg.batch_size):
        chunk = entries[i:min(i + cfg.batch_size, n)]
        loss, _ = loss_fn(load_batch(chunk), torch.Generator().manual_seed(10_007 + i))
        total, count = total + float(loss) * len(chunk), count + len(chunk)
    unet.train(was_training)
    return total / count


def make_remover_loss(unet, sched, cond: PromptEmbeds, cfg: TrainRemoverConfig, device):
    mse = get_loss("mse")

    def compute_loss(batch: dict, gen: torch.Generator, model=None):
        """``model``: the accelerate-prepared UNet (DDP wrapper) the trainer passes; default the raw one."""
        if cfg.augment_dihedral:
            batch = augment(batch, gen)
        batch = {k: v.to(device) for k, v in batch.items()}
        z0 = batch["target"]
        noise = torch.randn(z0.shape, generator=gen).to(device)
        t = torch.randint(0, sched.config.num_train_timesteps, (len(z0),), generator=gen).to(device)
        z_t = sched.add_noise(z0, noise, t)
        pred = unet_forward(model or unet, z_t, t, batch, cond, cfg.base.resolution)
        return mse(pred.float(), diffusion_target(sched, z0, noise, t).float())

    return compute_loss


def add_lora(unet, rank: int, targets: list[str] | None = None, *, seed: int = 0) -> list[torch.nn.Parameter]:
    """Inject a LoRA adapter; its gaussian init is drawn from ``seed`` (global RNG untouched), so two
    runs of the same config start, and therefore end, with the same weights."""
    from peft import LoraConfig

    unet.requires_grad_(False)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        unet.add_adapter(LoraConfig(r=rank, lora_alpha=rank, init_lora_weights="gaussian",
                                    target_modules=targets or LORA_TARGETS))
    return [p for p in unet.parameters() if p.requires_grad]


def save_lora(unet, out_dir: Path) -> None:
    """``out_dir/pytorch_lora_weights.safetensors`` in the PEFT key format (``...lora_A/lora_B``, prefix
    ``unet.``), which ``pipe.load_lora_weights`` and ``models.loading.load_lora_into`` read for ANY targets.

    Not ``convert_state_dict_to_diffusers``: it rewrites attention keys only (``to_q.lora.down``) and
    leaves conv / proj keys as ``lora_A``; diffusers' loader then sees the new format and silently drops
    every attention LoRA of a mixed (LCM: attention + conv) adapter. Used by every LoRA we train
    (remover, DPO, LCM student); the discriminator keeps RORem's attention-only layout for compatibility.
    """
    from diffusers import StableDiffusionXLPipeline
    from peft.utils import get_peft_model_state_dict

    StableDiffusionXLPipeline.save_lora_weights(str(out_dir), unet_lora_layers=get_peft_model_state_dict(unet),
                                                safe_serialization=True)


def triplet_files(meta_paths: Sequence[Path]) -> list[tuple[Path, Path, Path]]:
    """(source, mask, GT) absolute paths of every triplet in the given meta.json files."""
    from rorem_core.formats import read_triplets, resolve_in_root

    out = []
    for meta in meta_paths:
        root = Path(meta).parent
        for i, t in enumerate(read_triplets(meta)):
            where = f"{meta} entry {i}"
            out.append(tuple(resolve_in_root(root, r, where=where) for r in (t.source, t.mask, t.GT)))
    return out


def train_remover(cfg: TrainRemoverConfig, init_ref: str | Path, train_metas: Sequence[Path],
                  out_dir: Path, *, run_name: str = "train_remover", wandb_group: str | None = None,
                  work_key: str | None = None) -> TrainResult:
    """Fine-tune the remover at ``init_ref`` on the triplets in ``train_metas``; write ``out_dir``
    (``unet/`` or ``lora/`` + ``rorem_model.json`` pointing at the base) atomically."""
    from diffusers import DDPMScheduler

    for meta in train_metas:      # every problem of a dataset at once, before any compute is spent
        require_valid(meta)
    files = triplet_files(train_metas)
    frozen = DTYPES[cfg.frozen_dtype]
    cache = LatentCache(Path(cfg.base.cache_dir) / "latents", load_vae(init_ref, dtype=frozen), cfg.base.resolution)
    entries = cache.ensure(files)
    del cache  # frees the VAE: only latents are needed from here on
    cond = load_prompt_embeds(init_ref, cfg.base.cache_dir)
    sched = DDPMScheduler.from_config(load_scheduler_config(init_ref))
    unet = load_unet(init_ref)
    if cfg.gradient_checkpointing:
        unet.enable_gradient_checkpointing()
    configure_attention(unet, xformers={"auto": "auto", "on": True, "off": False}[cfg.xformers])
    trainable = add_lora(unet, cfg.lora_rank, seed=cfg.base.seed) if cfg.mode == "lora" else list(unet.parameters())
    # resumable state is keyed by what defines the run (config + init + data), so a changed run never
    # resumes a stale checkpoint; callers training from a temp dir pass a stable ``work_key``
    key = work_key or config_hash(cfg, str(Path(init_ref).resolve()), *map(str, files))[:16]
    work = Path(cfg.base.work_dir) / run_name.replace("/", "_") / key
    device = torch.device("cpu") if cfg.base.device == "cpu" else None
    from rorem_core.trainer import make_accelerator

    acc = make_accelerator(cfg.base, cfg, work)
    loss_fn = make_remover_loss(unet, sched, cond, cfg, device or acc.device)
    loss_before = fixed_set_loss(unet, sched, cond, cfg, entries, device or acc.device)
    result, unet = run_training(base=cfg.base, params=cfg, model=unet, trainable=trainable, entries=entries,
                                compute_loss=loss_fn, work_dir=work, run_name=run_name,
                                tracker_config=cfg.model_dump(), wandb_group=wandb_group, accelerator=acc)
    result.fixed_loss = (loss_before, fixed_set_loss(unet, sched, cond, cfg, entries, device or acc.device))
    if acc.is_main_process:
        save_remover(unet, cfg, init_ref, out_dir, result)
    return result


def save_remover(unet, cfg: TrainRemoverConfig, init_ref, out_dir: Path, result: TrainResult) -> None:
    with atomic_dir(out_dir) as tmp:
        if cfg.mode == "lora":
            save_lora(unet, tmp / "lora")
            write_ref(tmp, init_ref, unet=None, lora="lora")
        else:
            unet.save_pretrained(tmp / "unet")
            write_ref(tmp, init_ref, unet="unet", lora=None)
        write_json_atomic(tmp / "train_summary.json", {
            "steps": result.steps, "resumed_from": result.resumed_from, "first_loss": result.first_loss,
            "last_loss": result.last_loss, "losses": result.losses, "config": cfg.model_dump(),
            # deterministic loss on (up to 256 of) the training entries before and after training
            "fixed_loss_before": result.fixed_loss[0], "fixed_loss_after": result.fixed_loss[1]})
