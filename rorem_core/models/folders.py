"""Local model folders, checked before any data is touched: a diffusers SDXL-inpainting pipeline
folder, a bare 9-channel UNet folder (RORem's ``final_unet/``), and weight files whose shapes match
their configs. Each refusal names the file and how to fetch or rebuild it.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from rorem_core.io import check_safetensors

SDXL_PARTS = ("unet", "vae", "text_encoder", "text_encoder_2", "tokenizer", "tokenizer_2", "scheduler")
_VARIANT = re.compile(r"\.(fp16)[.-]")   # diffusion_pytorch_model.fp16.safetensors, model.fp16-00001-of-00002...
_FETCH = ("download the whole repo (`hf download diffusers/stable-diffusion-xl-1.0-inpainting-0.1 --local-dir DIR`, "
          "optionally `--include '*.fp16.*' '*.json' '*.txt'`) or rebuild the stand-in "
          "(`python scripts/build_sdxl_standin.py`)")


class ModelFolderError(ValueError):
    """A local model folder is incomplete or of the wrong architecture; the message names the file and the fix."""


def weights_variant(folder: Path) -> str | None:
    """``"fp16"`` when a local folder holds only fp16-variant weight files (a hub download of the fp16
    variant, or the stand-in), else None (plain files, or a hub id: diffusers resolves it)."""
    files = [f.name for f in folder.glob("*.safetensors")] if folder.is_dir() else []
    variants = {m.group(1) for f in files if (m := _VARIANT.search(f))}
    plain = [f for f in files if not _VARIANT.search(f)]
    return next(iter(variants)) if variants and not plain else None


def check_model_dir(path: str | Path) -> None:
    """A local SDXL-inpainting diffusers folder, checked before any data is touched: every part that
    ``model_index.json`` lists is there with its config, the UNet is a 9-channel inpainting UNet and
    every weight file matches its config's shapes. Hub ids (no such folder) pass unchecked."""
    p = Path(path)
    if not p.exists():
        if str(path).startswith((".", "/")) or p.suffix:
            raise ModelFolderError(f"{p}: no such model folder; {_FETCH}")
        return   # a hub id
    index = p / "model_index.json"
    if not index.is_file():
        raise ModelFolderError(f"{index}: missing, so {p} is not a diffusers pipeline folder; {_FETCH}")
    listed = json.loads(index.read_text())
    for part in SDXL_PARTS:
        entry = listed.get(part)
        if not entry or entry[0] is None:
            raise ModelFolderError(f"{index}: lists no {part!r}; an SDXL-inpainting pipeline needs "
                                   f"{', '.join(SDXL_PARTS)}; {_FETCH}")
        cfg = p / part / ("tokenizer_config.json" if part.startswith("tokenizer") else
                          "scheduler_config.json" if part == "scheduler" else "config.json")
        if not cfg.is_file():
            raise ModelFolderError(f"{cfg}: missing ({p}/{part}/ is incomplete or absent); {_FETCH}")
    check_unet_folder(p / "unet")
    from diffusers import AutoencoderKL

    from rorem_core.models.analytic_ae import AnalyticAutoencoder

    vae_cls = AnalyticAutoencoder if config_class(str(p), "vae") == "AnalyticAutoencoder" else AutoencoderKL
    check_weight_shapes(p / "vae", vae_cls)


def check_unet_folder(folder: Path) -> None:
    """A bare UNet folder (``config.json`` + weights, as the hub's ``unet/`` or RORem's ``final_unet/``):
    a 9-channel ``UNet2DConditionModel`` whose weights match the config's shapes."""
    from diffusers import UNet2DConditionModel

    cfg_file = folder / "config.json"
    if not cfg_file.is_file():
        raise ModelFolderError(f"{cfg_file}: missing; a UNet folder holds config.json and "
                               "diffusion_pytorch_model[.fp16].safetensors (RORem's final_unet/ layout)")
    cfg = json.loads(cfg_file.read_text())
    if cfg.get("_class_name", "UNet2DConditionModel") != "UNet2DConditionModel" or cfg.get("in_channels") != 9:
        raise ModelFolderError(f"{cfg_file}: {cfg.get('_class_name')} with in_channels={cfg.get('in_channels')}; "
                               "the remover needs 9 (noisy latent 4 + mask 1 + masked-image latent 4): use the "
                               "9-channel inpainting UNet of stable-diffusion-xl-1.0-inpainting-0.1 (unet/) or a "
                               "RORem UNet, not a text-to-image SDXL UNet")
    check_weight_shapes(folder, UNet2DConditionModel)


def check_weight_shapes(folder: Path, cls) -> None:
    """Every tensor of the folder's ``*.safetensors`` has the shape the config's model expects, and
    none is missing (read from the file headers; the model is built on the meta device, no memory)."""
    from accelerate import init_empty_weights
    from safetensors import safe_open

    check_local_weights(folder)
    files = sorted(folder.glob("*.safetensors"))
    variant = weights_variant(folder)
    files = [f for f in files if (variant is None) != bool(_VARIANT.search(f.name))]
    if not files:
        raise ModelFolderError(f"{folder}: no *.safetensors weights next to config.json; {_FETCH}")
    with init_empty_weights():
        expected = {k: tuple(v.shape) for k, v in cls.from_config(cls.load_config(folder)).state_dict().items()}
    found: dict[str, tuple[tuple, Path]] = {}
    for f in files:
        with safe_open(str(f), framework="pt") as h:
            for k in h.keys():
                found[k] = (tuple(h.get_slice(k).get_shape()), f)
    for k, shape in expected.items():
        if k not in found:
            raise ModelFolderError(f"{files[0]}: has no weight {k!r} that {folder / 'config.json'} implies; the "
                                   f"weights belong to another architecture than the config; {_FETCH}")
        if found[k][0] != shape:
            raise ModelFolderError(f"{found[k][1]}: weight {k!r} has shape {list(found[k][0])}, "
                                   f"{folder / 'config.json'} implies {list(shape)}; weights and config "
                                   f"come from different models; {_FETCH}")


def check_local_weights(folder: Path) -> None:
    """Refuse a truncated ``*.safetensors`` in a local model folder with the file and the fix
    (diffusers would say only "Unable to load weights"); hub ids (no such folder) pass."""
    if folder.is_dir():
        for f in sorted(folder.glob("*.safetensors")):
            check_safetensors(f)


def config_class(base: str, sub: str) -> str | None:
    """The ``_class_name`` of ``base/sub/config.json``; None for a hub id."""
    cfg = Path(base) / sub / "config.json"
    if cfg.is_file():
        return json.loads(cfg.read_text()).get("_class_name")
    return None  # hub id: the real SDXL VAE
