"""Build the ``tiny`` preset: SDXL-architecture parts from small configs, with a fixed seed.

Everything is written in the diffusers layout (``unet/``, ``vae/``, ``text_encoder(_2)/``,
``tokenizer(_2)/``, ``scheduler/``, ``model_index.json``) and loaded back with ``from_pretrained``
exactly like SDXL-inpainting weights. Field values follow docs/rorem.md and the
measured tiny-feasibility.md §6 (GroupNorm 8 groups, v-prediction, analytic autoencoder).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from rorem_core.config.presets import TinyPresetConfig
from rorem_core.io import write_json_atomic

# Single characters the offline tokenizer knows (with and without the word-end marker).
_CHARS = "abcdefghijklmnopqrstuvwxyz0123456789,.!?-'"


def _unet_config(cfg: TinyPresetConfig, sample_size: int) -> dict:
    n = len(cfg.unet_channels)
    down = ["DownBlock2D"] + ["CrossAttnDownBlock2D"] * (n - 1)
    up = ["CrossAttnUpBlock2D"] * (n - 1) + ["UpBlock2D"]
    return dict(
        sample_size=sample_size, in_channels=9, out_channels=4,
        down_block_types=tuple(down), up_block_types=tuple(up),
        block_out_channels=tuple(cfg.unet_channels), layers_per_block=cfg.layers_per_block,
        norm_num_groups=cfg.norm_num_groups, attention_head_dim=cfg.attention_head_dim,
        use_linear_projection=True, transformer_layers_per_block=1,
        cross_attention_dim=2 * cfg.text_hidden,              # = te1.hidden + te2.hidden
        addition_embed_type="text_time", addition_time_embed_dim=cfg.addition_time_embed_dim,
        # text_embeds (te2 projection) + 6 time ids, each embedded to addition_time_embed_dim
        projection_class_embeddings_input_dim=cfg.text_hidden + 6 * cfg.addition_time_embed_dim,
    )


def write_tokenizer(path: Path) -> None:
    """An offline CLIP tokenizer: special tokens plus single characters; no merges."""
    path.mkdir(parents=True, exist_ok=True)
    vocab = {"<|startoftext|>": 0, "!": 1, "<|endoftext|>": 2}
    for ch in _CHARS:
        for tok in (ch, ch + "</w>"):
            vocab.setdefault(tok, len(vocab))
    write_json_atomic(path / "vocab.json", vocab)
    (path / "merges.txt").write_text("#version: 0.2\n")
    from transformers import CLIPTokenizer

    tok = CLIPTokenizer(vocab_file=str(path / "vocab.json"), merges_file=str(path / "merges.txt"),
                        pad_token="!", model_max_length=77)
    tok.save_pretrained(path)


def _text_config(cfg: TinyPresetConfig):
    from transformers import CLIPTextConfig

    return CLIPTextConfig(hidden_size=cfg.text_hidden, intermediate_size=37, num_attention_heads=4,
                          num_hidden_layers=cfg.text_layers, vocab_size=1000, bos_token_id=0,
                          eos_token_id=2, pad_token_id=1, max_position_embeddings=77,
                          projection_dim=cfg.text_hidden)


def scheduler_config(prediction_type: str) -> dict:
    """SDXL's scheduler settings (1000 steps, scaled_linear 0.00085..0.012, leading spacing)."""
    return dict(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012,
                beta_schedule="scaled_linear", prediction_type=prediction_type, steps_offset=1,
                timestep_spacing="leading")


def build_tiny_model(out_dir: str | Path, cfg: TinyPresetConfig, resolution: int) -> Path:
    """Write a complete tiny SDXL-inpainting model dir (random UNet and text encoders)."""
    from diffusers import EulerDiscreteScheduler, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTextModelWithProjection

    from rorem_core.models.analytic_ae import AnalyticAutoencoder

    out = Path(out_dir)
    if resolution % cfg.ae_factor:
        raise ValueError(f"resolution {resolution} must be a multiple of ae_factor {cfg.ae_factor}")
    torch.manual_seed(cfg.seed)
    UNet2DConditionModel(**_unet_config(cfg, resolution // cfg.ae_factor)).save_pretrained(out / "unet")
    n_blocks = cfg.ae_factor.bit_length()           # 2**(n_blocks-1) == ae_factor
    AnalyticAutoencoder(block_out_channels=(4,) * n_blocks, scaling_factor=cfg.ae_scaling_factor,
                        sample_size=resolution).save_pretrained(out / "vae")
    CLIPTextModel(_text_config(cfg)).save_pretrained(out / "text_encoder")
    CLIPTextModelWithProjection(_text_config(cfg)).save_pretrained(out / "text_encoder_2")
    write_tokenizer(out / "tokenizer")
    write_tokenizer(out / "tokenizer_2")
    EulerDiscreteScheduler(**scheduler_config(cfg.prediction_type)).save_pretrained(out / "scheduler")
    write_json_atomic(out / "model_index.json", {
        "_class_name": "StableDiffusionXLInpaintPipeline", "_diffusers_version": "0.42.1",
        "force_zeros_for_empty_prompt": True, "requires_aesthetics_score": False,
        "feature_extractor": [None, None], "image_encoder": [None, None],
        "scheduler": ["diffusers", "EulerDiscreteScheduler"],
        "text_encoder": ["transformers", "CLIPTextModel"],
        "text_encoder_2": ["transformers", "CLIPTextModelWithProjection"],
        "tokenizer": ["transformers", "CLIPTokenizer"], "tokenizer_2": ["transformers", "CLIPTokenizer"],
        "unet": ["diffusers", "UNet2DConditionModel"],
        "vae": ["rorem_core.models.analytic_ae", "AnalyticAutoencoder"],
    })
    return out


def is_model_dir(path: str | Path) -> bool:
    p = Path(path)
    return (p / "model_index.json").is_file() and (p / "unet" / "config.json").is_file()


def read_model_index(path: str | Path) -> dict:
    return json.loads((Path(path) / "model_index.json").read_text())
