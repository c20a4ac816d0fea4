"""Remover training: the 9-channel SDXL-inpainting UNet denoises the GT latent given the mask and
the masked-source latent (RORem §1), with everything around it fixed:

- latents come from the cache (encoded once), the empty-prompt conditioning is precomputed;
- time_ids are built per batch, so a smaller last batch works;
- the target follows the scheduler config (epsilon for SDXL, v for the tiny preset);
- full fine-tune or LoRA by param; resumable checkpoints (rorem_core.training.trainer).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Sequence

import torch

from rorem_core.config import TrainRemoverConfig, config_hash
from rorem_core.data.augment import augment
from rorem_core.data.latents import latent_cache
from rorem_core.data.validate import require_valid
from rorem_core.io import atomic_dir, write_json_atomic
from rorem_core.models.conditioning import PromptEmbeds, load_prompt_embeds
from rorem_core.models.loading import configure_attention, load_scheduler_config, load_unet_fused, write_ref
from rorem_core.models.unet import add_lora, diffusion_target, save_lora, unet_forward
from rorem_core.training.losses import get_loss
from rorem_core.training.trainer import TrainResult, run_training

log = logging.getLogger(__name__)


@torch.no_grad()
def fixed_set_loss(unet, sched, cond: PromptEmbeds, cfg: TrainRemoverConfig, entries, device, n: int = 256) -> float:
    """Training loss on the first ``n`` entries with fixed timesteps and noise (no augmentation).

    The per-step training loss is dominated by the random timestep; this deterministic figure,
    taken before and after training, shows whether training moved the loss on its data."""
    from rorem_core.data.latents import load_batch

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


def triplet_files(meta_paths: Sequence[Path]) -> list[tuple[Path, Path, Path]]:
    """(source, mask, GT) absolute paths of every triplet in the given meta.json files."""
    from rorem_core.data.formats import read_triplets, resolve_in_root

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
    cache = latent_cache(init_ref, cfg.base, cfg.frozen_dtype)
    entries = cache.ensure(files)
    del cache  # frees the VAE: only latents are needed from here on
    cond = load_prompt_embeds(init_ref, cfg.base.cache_dir)
    sched = DDPMScheduler.from_config(load_scheduler_config(init_ref))
    # a LoRA init (the previous round's LoRA remover) is fused first: a LoRA run trains a new adapter
    # on it and stores only that adapter (stacked on the init's in rorem_model.json); a full run trains
    # and stores the fused UNet
    unet = load_unet_fused(init_ref)
    if cfg.gradient_checkpointing:
        unet.enable_gradient_checkpointing()
    configure_attention(unet, xformers={"auto": "auto", "on": True, "off": False}[cfg.xformers])
    trainable = add_lora(unet, cfg.lora_rank, seed=cfg.base.seed) if cfg.mode == "lora" else list(unet.parameters())
    # resumable state is keyed by what defines the run (config + init + data), so a changed run never
    # resumes a stale checkpoint; callers training from a temp dir pass a stable ``work_key``
    key = work_key or config_hash(cfg, str(Path(init_ref).resolve()), *map(str, files))[:16]
    work = Path(cfg.base.work_dir) / run_name.replace("/", "_") / key
    from rorem_core.training.trainer import make_accelerator

    acc = make_accelerator(cfg.base, cfg, work)
    loss_fn = make_remover_loss(unet, sched, cond, cfg, acc.device)
    loss_before = fixed_set_loss(unet, sched, cond, cfg, entries, acc.device)
    result, unet = run_training(base=cfg.base, params=cfg, model=unet, trainable=trainable, entries=entries,
                                compute_loss=loss_fn, work_dir=work, run_name=run_name,
                                tracker_config=cfg.model_dump(), wandb_group=wandb_group, accelerator=acc)
    result.fixed_loss = (loss_before, fixed_set_loss(unet, sched, cond, cfg, entries, acc.device))
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
