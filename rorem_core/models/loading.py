"""Load remover parts from a model dir (diffusers layout) or a hub id, for both presets.

A *model ref* is either a full diffusers dir / hub id (``model_index.json`` + subfolders), or a
remover dir written by training: ``rorem_model.json`` = ``{"base": <ref>, "unet": "unet"|null,
"lora": "lora"|null}``. Round N's remover therefore stores only its UNet (or LoRA) and points at
the base for the VAE, text encoders and scheduler, as RORem's ``--pretrained_unet`` does; the
base's multi-GB frozen parts are never copied per round.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import torch

from rorem_core.io import check_safetensors

log = logging.getLogger(__name__)
REF_FILE = "rorem_model.json"


@dataclass(frozen=True)
class ModelRef:
    """Where each part comes from. ``base`` is a dir or hub id holding vae/ text_encoder*/ scheduler/."""

    base: str
    unet: str          # dir (or hub id + subfolder "unet") of the UNet weights
    unet_subfolder: str | None
    lora: str | None   # dir holding pytorch_lora_weights.safetensors, or None


def resolve_ref(ref: str | Path) -> ModelRef:
    """Follow ``rorem_model.json`` indirections (relative paths are relative to that dir)."""
    p = Path(ref)
    if (p / REF_FILE).is_file():
        meta = json.loads((p / REF_FILE).read_text())
        base_ref = resolve_ref(_rel(p, meta["base"]))
        unet = unet_location(_rel(p, meta["unet"])) if meta.get("unet") else (base_ref.unet, base_ref.unet_subfolder)
        lora = _rel(p, meta["lora"]) if meta.get("lora") else base_ref.lora
        return ModelRef(base=base_ref.base, unet=unet[0], unet_subfolder=unet[1], lora=lora)
    if p.exists() and not (p / "model_index.json").is_file() and not (p / "unet").is_dir():
        raise FileNotFoundError(f"{p}: not a model dir (no model_index.json, unet/ or {REF_FILE}); "
                                "run the bootstrap stage or point to a diffusers SDXL-inpainting dir")
    return ModelRef(base=str(ref), unet=str(ref), unet_subfolder="unet", lora=None)


def unet_location(ref: str) -> tuple[str, str | None]:
    """A UNet given on its own (RORem's released UNet, ``bootstrap.sdxl_unet``): a bare UNet folder
    (``config.json`` + weights) or a pipeline folder with ``unet/`` inside; a hub id is taken as a bare UNet."""
    p = Path(ref)
    if not p.is_dir() or (p / "config.json").is_file():
        return ref, None
    if (p / "unet" / "config.json").is_file():
        return ref, "unet"
    raise FileNotFoundError(f"{p}: neither a UNet folder (config.json + weights) nor a pipeline folder with "
                            "unet/ inside; point bootstrap.sdxl_unet at RORem's UNet folder or at the folder "
                            "holding its unet/")


def _rel(base_dir: Path, target: str) -> str:
    """Relative local paths in rorem_model.json are relative to its dir; hub ids pass through."""
    local = base_dir / target
    return str(local.resolve()) if not Path(target).is_absolute() and local.exists() else target


def write_ref(out_dir: str | Path, base: str | Path, *, unet: str | None, lora: str | None) -> None:
    """Write ``rorem_model.json``; a local base is stored relative to ``out_dir`` (clones move)."""
    import os

    from rorem_core.io import write_json_atomic

    out = Path(out_dir)
    base_s = os.path.relpath(Path(base).resolve(), out.resolve()) if Path(base).exists() else str(base)
    write_json_atomic(out / REF_FILE, {"base": base_s, "unet": unet, "lora": lora})


def load_unet(ref: str | Path, *, dtype: torch.dtype = torch.float32, with_lora: bool = True):
    """The 9-channel inpainting UNet (plus its LoRA adapter when the ref has one)."""
    from diffusers import UNet2DConditionModel

    r = resolve_ref(ref)
    kw = {"subfolder": r.unet_subfolder} if r.unet_subfolder else {}
    check_local_weights(Path(r.unet) / (r.unet_subfolder or ""))
    try:
        unet = UNet2DConditionModel.from_pretrained(r.unet, torch_dtype=dtype, **kw)
    except OSError:
        if kw or Path(r.unet).exists():
            raise
        # a hub id given as the UNet (bootstrap.sdxl_unet) may name a whole pipeline repo (RORem's
        # "LetsThink/RORem"): its UNet is in unet/
        unet = UNet2DConditionModel.from_pretrained(r.unet, torch_dtype=dtype, subfolder="unet")
    if unet.config.in_channels != 9:
        raise ValueError(f"{r.unet}: UNet has in_channels={unet.config.in_channels}; an inpainting "
                         "remover needs 9 (noisy latent 4 + mask 1 + masked-image latent 4)")
    if with_lora and r.lora:
        load_lora_into(unet, r.lora)
    return unet


def load_lora_into(unet, lora_dir: str | Path, adapter_name: str = "default") -> None:
    """Load a diffusers-format ``pytorch_lora_weights.safetensors`` into ``unet`` (peft)."""
    check_local_weights(Path(lora_dir))
    unet.load_lora_adapter(str(lora_dir), weight_name="pytorch_lora_weights.safetensors",
                           prefix="unet", adapter_name=adapter_name)


def check_local_weights(folder: Path) -> None:
    """Refuse a truncated ``*.safetensors`` in a local model folder with the file and the fix
    (diffusers would say only "Unable to load weights"); hub ids (no such folder) pass."""
    if folder.is_dir():
        for f in sorted(folder.glob("*.safetensors")):
            check_safetensors(f)


def load_vae(ref: str | Path, *, dtype: torch.dtype = torch.float32):
    """AutoencoderKL (sdxl) or the analytic autoencoder (tiny), chosen by the saved config."""
    from diffusers import AutoencoderKL

    from rorem_core.models.analytic_ae import AnalyticAutoencoder

    base = resolve_ref(ref).base
    cls_name = _config_class(base, "vae")
    cls = AnalyticAutoencoder if cls_name == "AnalyticAutoencoder" else AutoencoderKL
    vae = cls.from_pretrained(base, subfolder="vae", torch_dtype=dtype)
    vae.requires_grad_(False)
    return vae.eval()


def _config_class(base: str, sub: str) -> str | None:
    cfg = Path(base) / sub / "config.json"
    if cfg.is_file():
        return json.loads(cfg.read_text()).get("_class_name")
    return None  # hub id: the real SDXL VAE


def vae_scale_factor(vae) -> int:
    """Pixel-to-latent factor from the VAE config, the same rule diffusers pipelines use."""
    return 2 ** (len(vae.config.block_out_channels) - 1)


def load_scheduler_config(ref: str | Path) -> dict:
    from diffusers import DDPMScheduler

    return dict(DDPMScheduler.load_config(resolve_ref(ref).base, subfolder="scheduler"))


def configure_attention(unet, *, xformers: bool | str = "auto") -> str:
    """xformers when installed and requested, else PyTorch SDPA (diffusers' default processor)."""
    if xformers:
        try:
            import xformers  # noqa: F401

            unet.enable_xformers_memory_efficient_attention()
            return "xformers"
        except Exception as e:  # ImportError, or no CUDA kernels on this machine
            if xformers is True:
                raise RuntimeError(f"xformers requested but unusable ({e}); install the `gpu` extra "
                                   "or set model.xformers: auto") from e
    return "sdpa"
