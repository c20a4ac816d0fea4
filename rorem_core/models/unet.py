"""Shared helpers of the 9-channel SDXL-inpainting UNet, used by every stage that runs it: the dtype
table, the prediction target of the scheduler config, the 9-channel forward, and LoRA add/save.

The UNet input is RORem's channel concat: [noisy latent (4) | mask (1) | masked-source latent (4)].
"""

from __future__ import annotations

from pathlib import Path

import torch

from rorem_core.config.presets import ATTN_TARGETS, LCM_TARGETS  # noqa: F401  (re-exported)
from rorem_core.models.conditioning import PromptEmbeds

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


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


def add_lora(unet, rank: int, targets: list[str] | None = None, *, seed: int = 0) -> list[torch.nn.Parameter]:
    """Inject a LoRA adapter; its gaussian init is drawn from ``seed`` (global RNG untouched), so two
    runs of the same config start, and therefore end, with the same weights."""
    from peft import LoraConfig

    unet.requires_grad_(False)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        unet.add_adapter(LoraConfig(r=rank, lora_alpha=rank, init_lora_weights="gaussian",
                                    target_modules=targets or ATTN_TARGETS))
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
