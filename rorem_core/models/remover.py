"""Batched removal: K seeds per input in one UNet batch, Euler (50 steps) or LCM (4 steps, LoRA).

Shapes: images (B, 3, R, R) in [-1, 1]; masks (B, 1, R, R) in {0, 1}; latents (B, 4, R/f, R/f).
Each output's initial noise comes from its own seed, so a candidate is reproducible whatever batch
it was generated in. Strength < 1 starts from the noised source latent (diffusers' img2img rule).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch

from rorem_core.data.fill import masked_source
from rorem_core.data.latents import encode_images, mask_to_latent
from rorem_core.models.conditioning import PromptEmbeds, load_prompt_embeds
from rorem_core.models.loading import (
    load_scheduler_config,
    load_unet,
    load_vae,
    masked_fill_of,
    resolve_ref,
    vae_scale_factor,
)
from rorem_core.models.unet import DTYPES, unet_forward

SCHEDULERS = {"euler": "EulerDiscreteScheduler", "lcm": "LCMScheduler"}


@dataclass
class Remover:
    unet: torch.nn.Module
    vae: torch.nn.Module
    cond: PromptEmbeds
    scheduler_config: dict
    resolution: int
    name: str
    uncond: PromptEmbeds | None = None   # the negative prompt's embeddings when CFG is on
    guidance_scale: float = 1.0          # 1 = no CFG (RORem's inference); > 1: uncond + g * (cond - uncond)
    masked_fill: str = "zero"            # what the UNet sees in the hole (rorem_core/data/fill.py), from its base

    @classmethod
    def load(cls, ref: str | Path, *, cache_dir: str, resolution: int, dtype: str = "fp32",
             device: str = "cpu", prompt: str = "", negative_prompt: str = "", guidance_scale: float = 1.0,
             lora: str | Path | None = None) -> "Remover":
        """``lora``: an extra LoRA dir (e.g. RORem's LCM LoRA) fused on top of the ref's UNet."""
        from rorem_core.models.loading import load_lora_checked

        dt = DTYPES[dtype]
        unet = load_unet(ref, dtype=dt).to(device).eval()
        if resolve_ref(ref).lora:
            unet.fuse_lora()  # merge a DPO / LCM LoRA into the weights: no adapter cost per step (RORem 4S)
        if lora:
            if resolve_ref(ref).lora:
                unet.unload_lora()   # keep the fused weights, drop the adapter modules before the next LoRA
            load_lora_checked(unet, lora, adapter_name="extra")   # a LoRA of another UNet: an error
            unet.fuse_lora()
        vae = load_vae(ref, dtype=torch.float32 if dtype == "fp16" else dt).to(device)
        cfg = guidance_scale > 1.0
        return cls(unet=unet, vae=vae, cond=load_prompt_embeds(ref, cache_dir, prompt),
                   scheduler_config=load_scheduler_config(ref), resolution=resolution, name=str(ref),
                   uncond=load_prompt_embeds(ref, cache_dir, negative_prompt) if cfg else None,
                   guidance_scale=guidance_scale, masked_fill=masked_fill_of(ref))

    @property
    def device(self) -> torch.device:
        return next(self.unet.parameters()).device

    def make_scheduler(self, kind: str):
        import diffusers

        return getattr(diffusers, SCHEDULERS[kind]).from_config(self.scheduler_config)

    @torch.no_grad()
    def remove(self, images: torch.Tensor, masks: torch.Tensor, seeds: Sequence[int], *, steps: int,
               scheduler: str = "euler", strength: float = 1.0, batch_size: int = 32) -> torch.Tensor:
        """Run removal on aligned (image, mask, seed) rows, ``batch_size`` rows per UNet call."""
        outs = [self._remove_batch(images[i:i + batch_size], masks[i:i + batch_size],
                                   seeds[i:i + batch_size], steps, scheduler, strength)
                for i in range(0, len(images), batch_size)]
        return torch.cat(outs)

    def _remove_batch(self, images, masks, seeds, steps, scheduler, strength) -> torch.Tensor:
        dev = self.device
        sched = self.make_scheduler(scheduler)
        sched.set_timesteps(steps, device=dev)
        timesteps, t_start = _strength_timesteps(sched, steps, strength)
        masked = encode_images(self.vae, masked_source(images, masks, self.masked_fill)).to(dev)
        lat_mask = mask_to_latent(masks, vae_scale_factor(self.vae)).to(dev)
        noise = torch.stack([torch.randn(masked.shape[1:], generator=torch.Generator().manual_seed(int(s)))
                             for s in seeds]).to(dev)
        if strength >= 1.0:
            z = noise * sched.init_noise_sigma
        else:
            src = encode_images(self.vae, images).to(dev)
            z = sched.add_noise(src, noise, timesteps[:1].repeat(len(src)))
        batch = {"mask": lat_mask, "masked": masked}
        # one generator per row: a stochastic step (LCM re-noises between its steps) depends on the
        # row's own seed only, not on which batch the row landed in
        gens = [torch.Generator().manual_seed(int(s) + 1) for s in seeds]
        for t in timesteps:
            model_in = sched.scale_model_input(z, t)
            pred = unet_forward(self.unet, model_in, t, batch, self.cond, self.resolution)
            if self.uncond is not None:   # classifier-free guidance (diffusers' rule)
                pred_u = unet_forward(self.unet, model_in, t, batch, self.uncond, self.resolution)
                pred = pred_u + self.guidance_scale * (pred - pred_u)
            z = sched.step(pred.float(), t, z, generator=gens).prev_sample
        shift = getattr(self.vae.config, "shift_factor", None) or 0.0
        z = z / self.vae.config.scaling_factor + shift
        return self.vae.decode(z.to(self.vae.dtype)).sample.float().clamp(-1, 1).cpu()


def _strength_timesteps(sched, steps: int, strength: float):
    """diffusers' img2img rule: skip the first (1 - strength) of the schedule."""
    init = min(int(steps * strength), steps)
    start = max(steps - init, 0) * sched.order
    if hasattr(sched, "set_begin_index"):
        sched.set_begin_index(start)
    ts = sched.timesteps[start:]
    if len(ts) == 0:
        raise ValueError(f"strength={strength} with steps={steps} leaves no denoising step; raise either")
    return ts, start


def composite(result: torch.Tensor, source: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Keep the source outside the mask: mask * result + (1 - mask) * source."""
    return mask * result + (1.0 - mask) * source


@torch.no_grad()
def ae_ceiling(vae, gt: torch.Tensor, source: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The autoencoder ceiling: the GT through the VAE, composited into the source (B, 3, R, R) in
    [-1, 1]: the best fill a remover working in this latent space can produce."""
    z = encode_images(vae, gt).to(vae.device) / vae.config.scaling_factor
    return composite(vae.decode(z.to(vae.dtype)).sample.float().clamp(-1, 1).cpu(), source, mask)
