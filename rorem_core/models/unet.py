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


def save_unet_without_lora(unet, folder: Path, shard_bytes: int = 2 * 2**30) -> None:
    """Save ``unet``'s own weights, without its LoRA adapter, in diffusers' layout (config.json +
    ``diffusion_pytorch_model[-0000k-of-0000n].safetensors`` + index), read by ``from_pretrained``.

    Why not ``load_unet(...).save_pretrained``: that holds a second copy of the UNet (10.4 GB for SDXL in
    fp32) next to the one being trained. Here peft's ``<module>.base_layer.weight`` is the original
    weight, written under its plain name, in shards of ``shard_bytes`` so serialising adds one shard."""
    import json

    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    unet.save_config(folder)
    sd = {k.replace(".base_layer", ""): v for k, v in unet.state_dict().items() if "lora_" not in k}
    shards, cur, size = [], {}, 0
    for k, v in sd.items():
        if cur and size + v.nbytes > shard_bytes:
            shards.append(cur)
            cur, size = {}, 0
        cur[k], size = v, size + v.nbytes
    shards.append(cur)
    name = "diffusion_pytorch_model.safetensors"
    if len(shards) == 1:
        save_file({k: v.detach().contiguous().cpu() for k, v in shards[0].items()}, str(folder / name), {"format": "pt"})
        return
    weight_map = {}
    for i, shard in enumerate(shards, 1):
        fname = f"diffusion_pytorch_model-{i:05d}-of-{len(shards):05d}.safetensors"
        save_file({k: v.detach().contiguous().cpu() for k, v in shard.items()}, str(folder / fname), {"format": "pt"})
        weight_map.update(dict.fromkeys(shard, fname))
    (folder / f"{name}.index.json").write_text(json.dumps(
        {"metadata": {"total_size": sum(v.nbytes for v in sd.values())}, "weight_map": weight_map}, indent=1))
