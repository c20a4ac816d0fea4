"""A local SDXL-inpainting stand-in: the real architecture of
``diffusers/stable-diffusion-xl-1.0-inpainting-0.1`` with random weights, built offline.

Same folder layout as the hub repo (``model_index.json``, ``unet/``, ``vae/``, ``text_encoder(_2)/``,
``tokenizer(_2)/``, ``scheduler/``) and the same configurations (values below, as published by that
repo), stored like its fp16 variant (``*.fp16.safetensors``, half the bytes). Only the tokenizers
differ: an offline character vocabulary (the real BPE vocabulary is a download); the empty prompt
every stage uses tokenizes to the same ``[BOS, EOS, PAD...]`` shape either way.

It lets the SDXL preset run end to end without a download or a GPU (the CPU rehearsal,
docs/sdxl.md), and its ``unet/`` doubles as a RORem-style bare UNet folder (``bootstrap.sdxl_unet``).
Build cost on one CPU thread: ~1 min for the UNet (2,567,478,084 parameters, 10.3 GB in fp32),
peak RSS ~11 GB (one fp32 part at a time, halved before the next is built).
"""

from __future__ import annotations

import gc
import json
from pathlib import Path

import torch

from rorem_core.io import atomic_dir, write_json_atomic
from rorem_core.models.tiny import scheduler_config, write_tokenizer

VARIANT = "fp16"
UNET_PARAMS = 2_567_478_084          # diffusers 0.42 count for UNET_CONFIG (checked by the build)

UNET_CONFIG = dict(                  # stable-diffusion-xl-1.0-inpainting-0.1 unet/config.json
    sample_size=128, in_channels=9, out_channels=4, center_input_sample=False, flip_sin_to_cos=True,
    freq_shift=0, down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
    mid_block_type="UNetMidBlock2DCrossAttn", up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
    only_cross_attention=False, block_out_channels=(320, 640, 1280), layers_per_block=2, downsample_padding=1,
    mid_block_scale_factor=1, act_fn="silu", norm_num_groups=32, norm_eps=1e-5, cross_attention_dim=2048,
    transformer_layers_per_block=(1, 2, 10), attention_head_dim=(5, 10, 20), use_linear_projection=True,
    addition_embed_type="text_time", addition_time_embed_dim=256, projection_class_embeddings_input_dim=2816,
    upcast_attention=None, resnet_time_scale_shift="default", conv_in_kernel=3, conv_out_kernel=3,
)
VAE_CONFIG = dict(                   # SDXL's AutoencoderKL (vae/config.json)
    in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 4,
    up_block_types=("UpDecoderBlock2D",) * 4, block_out_channels=(128, 256, 512, 512), layers_per_block=2,
    act_fn="silu", latent_channels=4, norm_num_groups=32, sample_size=1024, scaling_factor=0.13025,
    force_upcast=True,
)
# CLIP ViT-L/14 text tower and OpenCLIP ViT-bigG/14 text tower (with projection), as SDXL's configs
TEXT_COMMON = dict(vocab_size=49408, max_position_embeddings=77, bos_token_id=0, eos_token_id=2,
                   pad_token_id=1, layer_norm_eps=1e-5)
TEXT1_CONFIG = dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
                    projection_dim=768, hidden_act="quick_gelu", **TEXT_COMMON)
TEXT2_CONFIG = dict(hidden_size=1280, intermediate_size=5120, num_hidden_layers=32, num_attention_heads=20,
                    projection_dim=1280, hidden_act="gelu", **TEXT_COMMON)
SCHEDULER_EXTRA = dict(interpolation_type="linear", use_karras_sigmas=False)
MODEL_INDEX = {
    "_class_name": "StableDiffusionXLInpaintPipeline", "_diffusers_version": "0.42.1",
    "force_zeros_for_empty_prompt": True, "requires_aesthetics_score": False,
    "scheduler": ["diffusers", "EulerDiscreteScheduler"],
    "text_encoder": ["transformers", "CLIPTextModel"], "text_encoder_2": ["transformers", "CLIPTextModelWithProjection"],
    "tokenizer": ["transformers", "CLIPTokenizer"], "tokenizer_2": ["transformers", "CLIPTokenizer"],
    "unet": ["diffusers", "UNet2DConditionModel"], "vae": ["diffusers", "AutoencoderKL"],
}
CARD = "standin.json"   # marks a finished build: {"seed", "unet_params", "variant"}


def _save_half(model, folder: Path) -> int:
    """Halve ``model`` in place (no second fp32 copy) and save it as the fp16 variant; returns #params."""
    n = sum(p.numel() for p in model.parameters())
    model.half().save_pretrained(folder, variant=VARIANT, safe_serialization=True)
    return n


def build_standin(out_dir: str | Path, *, seed: int = 0, log=print) -> Path:
    """Write the stand-in folder atomically (complete or absent); reuse a finished one."""
    from diffusers import AutoencoderKL, EulerDiscreteScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    out = Path(out_dir)
    if is_standin(out, seed):
        log(f"{out}: stand-in already built (seed {seed})")
        return out
    counts = {}
    with atomic_dir(out) as tmp:
        torch.manual_seed(seed)
        for name, make in (
                ("unet", lambda: UNet2DConditionModel(**UNET_CONFIG)),
                ("vae", lambda: AutoencoderKL(**VAE_CONFIG)),
                ("text_encoder", lambda: CLIPTextModel(CLIPTextConfig(**TEXT1_CONFIG))),
                ("text_encoder_2", lambda: CLIPTextModelWithProjection(CLIPTextConfig(**TEXT2_CONFIG)))):
            model = make()
            counts[name] = _save_half(model, tmp / name)
            log(f"  {name}: {counts[name]:,} parameters")
            del model
            gc.collect()
        if counts["unet"] != UNET_PARAMS:
            raise RuntimeError(f"stand-in UNet has {counts['unet']:,} parameters, SDXL-inpainting has "
                               f"{UNET_PARAMS:,}: this diffusers version builds another architecture")
        write_tokenizer(tmp / "tokenizer")
        write_tokenizer(tmp / "tokenizer_2")
        EulerDiscreteScheduler(**scheduler_config("epsilon"), **SCHEDULER_EXTRA).save_pretrained(tmp / "scheduler")
        write_json_atomic(tmp / "model_index.json", MODEL_INDEX)
        write_json_atomic(tmp / CARD, {"seed": seed, "variant": VARIANT, "parameters": counts,
                                       "what": "random weights, real SDXL-inpainting configs"})
    return out


def is_standin(path: str | Path, seed: int | None = None) -> bool:
    card = Path(path) / CARD
    if not card.is_file():
        return False
    return seed is None or json.loads(card.read_text()).get("seed") == seed
