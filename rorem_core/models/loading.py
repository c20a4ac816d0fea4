"""Load remover parts from a model dir (diffusers layout) or a hub id, for both presets.

A *model ref* is either a full diffusers dir / hub id (``model_index.json`` + subfolders), or a
remover dir written by training: ``rorem_model.json`` = ``{"base": <parent ref>, "unet": "unet"|null,
"loras": [adapter dirs, in order]}``. Round N's remover therefore stores only its UNet (or LoRA) and
points at the base for the VAE, text encoders and scheduler, as RORem's ``--pretrained_unet`` does;
the base's multi-GB frozen parts are never copied per round.

A LoRA trained on a remover that is itself base + adapters (DPO on a LoRA remover, distillation on the
DPO remover, RL) stores only its own adapter: its ``loras`` names the parent's stack and then its own
dir. Loading fuses the stack in order, in fp32, exactly as the training stage fused its parent before
adding its adapter, so the weights equal the fused UNet that stages used to write (10.3 GB per stage
at SDXL size, docs/sdxl.md). Refs written before stacks (``"lora": dir``) still load: that one adapter
on the ref's UNet (or on the parent's UNet when ``unet`` is null).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import torch

from rorem_core.models.folders import (
    ModelFolderError,
    check_local_weights,
    check_unet_folder,
    config_class,
    weights_variant,
)

log = logging.getLogger(__name__)
REF_FILE = "rorem_model.json"
COND_FILE = "conditioning.json"   # next to a base's model_index.json: {"masked_fill": ...} (rorem_core/data/fill.py)


@dataclass(frozen=True)
class ModelRef:
    """Where each part comes from. ``base`` is a dir or hub id holding vae/ text_encoder*/ scheduler/."""

    base: str
    unet: str          # dir (or hub id + subfolder "unet") of the UNet weights
    unet_subfolder: str | None
    # dirs holding pytorch_lora_weights.safetensors, applied in order over the UNet; () = plain UNet
    loras: tuple[str, ...] = ()

    @property
    def lora(self) -> str | None:
        """The top adapter (the one the ref's own stage trained), or None."""
        return self.loras[-1] if self.loras else None


def resolve_ref(ref: str | Path) -> ModelRef:
    """Follow ``rorem_model.json`` indirections (relative paths are relative to that dir)."""
    p = Path(ref)
    if (p / REF_FILE).is_file():
        meta = json.loads((p / REF_FILE).read_text())
        parent = resolve_ref(_rel(p, meta["base"]))
        own_unet = bool(meta.get("unet"))
        unet = unet_location(_rel(p, meta["unet"])) if own_unet else (parent.unet, parent.unet_subfolder)
        if "loras" in meta:
            # adapters are always local dirs: resolved even when missing, so the check below and
            # load_unet's "missing" error compare and name real paths
            loras = tuple(str((p / d).resolve()) for d in meta["loras"])
            inherited = () if own_unet else parent.loras
            if loras[:len(inherited)] != inherited:
                raise ModelFolderError(f"{p / REF_FILE}: its loras {meta['loras']} do not start with the stack of "
                                       f"its base {meta['base']} ({list(inherited)}): the base was retrained "
                                       "after this model; rerun the stage that wrote it")
        else:   # written before stacks: one adapter on this UNet, or the parent's adapter inherited
            loras = (str((p / meta["lora"]).resolve()),) if meta.get("lora") else () if own_unet else parent.loras
        return ModelRef(base=parent.base, unet=unet[0], unet_subfolder=unet[1], loras=loras)
    if p.exists() and not (p / "model_index.json").is_file() and not (p / "unet").is_dir():
        raise FileNotFoundError(f"{p}: not a model dir (no model_index.json, unet/ or {REF_FILE}); "
                                "run the bootstrap stage or point to a diffusers SDXL-inpainting dir")
    return ModelRef(base=str(ref), unet=str(ref), unet_subfolder="unet")


def masked_fill_of(ref: str | Path) -> str:
    """How ``ref``'s remover was trained to see the hole of its masked-source input (``zero``: diffusers'
    and RORem's grey; ``harmonic``: rorem_core/data/fill.py), read from its base's ``conditioning.json``;
    a base without one (every SDXL / RORem folder) is ``zero``."""
    from rorem_core.data.fill import FILLS

    f = Path(resolve_ref(ref).base) / COND_FILE
    if not f.is_file():
        return "zero"
    try:
        fill = json.loads(f.read_text()).get("masked_fill", "zero")
    except (json.JSONDecodeError, AttributeError) as e:   # not JSON, or not an object
        raise ModelFolderError(f"{f}: not a JSON object {{\"masked_fill\": ...}} ({e}); write the fill the base's "
                               "UNet was pretrained with (bootstrap writes it), or delete the file for zero") from None
    if fill not in FILLS:
        raise ModelFolderError(f"{f}: masked_fill {fill!r} is not one of {FILLS}; write the fill the base's UNet "
                               "was pretrained with (bootstrap writes it), or delete the file for zero")
    return fill


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
    """Write ``rorem_model.json`` for a model trained from ``base``: its own ``unet`` (a full fine-tune)
    or the base's UNet, and its own ``lora`` stacked on the base's adapters (none under an own UNet).
    Local paths are stored relative to ``out_dir`` (clones move; ``out_dir`` may be the atomic temp
    dir next to the final one: same depth, same relative paths)."""
    import os

    from rorem_core.io import write_json_atomic

    out = Path(out_dir).resolve()

    def rel(target: str | Path) -> str:
        return os.path.relpath(Path(target).resolve(), out) if Path(target).exists() else str(target)

    inherited = [] if unet else [rel(d) for d in resolve_ref(base).loras]
    write_json_atomic(out / REF_FILE, {"base": rel(base), "unet": unet, "loras": inherited + ([lora] if lora else [])})


def load_unet(ref: str | Path, *, dtype: torch.dtype = torch.float32, with_lora: bool = True):
    """The 9-channel inpainting UNet with the ref's adapter stack: every adapter under the top one
    fused (in fp32, as the stage that trained the next one fused it, then cast to ``dtype``), the top
    one loaded as peft adapter ``default`` (callers fuse it or train under it). ``with_lora=False``:
    the UNet under the top adapter. A local folder is checked first (config, 9 input channels, every
    weight's shape: ``check_unet_folder``), so a wrong folder fails in a second with the file named."""
    r = resolve_ref(ref)
    stack = r.loras if with_lora else r.loras[:-1]
    lower, top = (stack[:-1], stack[-1:]) if with_lora else (stack, ())
    for d in stack:
        if not Path(d).is_dir():
            raise ModelFolderError(f"{Path(ref) / REF_FILE}: names the LoRA dir {d}, which is missing; check out "
                                   "the stage output that holds it (`dvc checkout` / `dvc pull`) or rerun that stage")
    unet = _load_plain_unet(r, torch.float32 if lower else dtype)
    for d in lower:
        load_lora_into(unet, d)
        unet.fuse_lora()
        unet.unload_lora()   # keep the fused weights, drop the adapter layers before the next one
    if lower and dtype != torch.float32:
        unet = unet.to(dtype)
    if top:
        load_lora_into(unet, top[0])
    return unet


def load_unet_fused(ref: str | Path, *, dtype: torch.dtype = torch.float32):
    """The ref's UNet with its whole adapter stack fused in: a plain UNet (no peft layers) that
    computes what the ref's model computes; what a LoRA stage trains its own adapter on."""
    unet = load_unet(ref, dtype=dtype)
    if resolve_ref(ref).loras:
        unet.fuse_lora()
        unet.unload_lora()
    return unet


def _load_plain_unet(r: ModelRef, dtype: torch.dtype):
    from diffusers import UNet2DConditionModel

    kw = {"subfolder": r.unet_subfolder} if r.unet_subfolder else {}
    folder = Path(r.unet) / (r.unet_subfolder or "")
    if folder.is_dir():
        check_unet_folder(folder)
    variant = weights_variant(folder)
    # from_pretrained(torch_dtype=fp32) on an fp16 file keeps the memory-mapped fp16 file next to the
    # fp32 model (5.1 + 10.3 GB for SDXL: 14.7 GiB peak RSS); read into memory as stored and upcast by
    # .to(), one tensor at a time, the peak is 10.7 GiB (measured, docs/sdxl.md)
    stored = torch.float16 if variant == "fp16" and dtype == torch.float32 else dtype
    try:
        unet = UNet2DConditionModel.from_pretrained(r.unet, torch_dtype=stored, variant=variant,
                                                    disable_mmap=stored != dtype, **kw)
    except OSError:
        if kw or Path(r.unet).exists():
            raise
        # a hub id given as the UNet (bootstrap.sdxl_unet) may name a whole pipeline repo (RORem's
        # "LetsThink/RORem"): its UNet is in unet/
        unet = UNet2DConditionModel.from_pretrained(r.unet, torch_dtype=stored, subfolder="unet")
    if stored != dtype:
        unet = unet.to(dtype)
    if unet.config.in_channels != 9:
        raise ValueError(f"{r.unet}: UNet has in_channels={unet.config.in_channels}; an inpainting "
                         "remover needs 9 (noisy latent 4 + mask 1 + masked-image latent 4)")
    return unet


def load_lora_into(unet, lora_dir: str | Path, adapter_name: str = "default") -> None:
    """Load a diffusers-format ``pytorch_lora_weights.safetensors`` into ``unet`` (peft)."""
    check_local_weights(Path(lora_dir))
    unet.load_lora_adapter(str(lora_dir), weight_name="pytorch_lora_weights.safetensors",
                           prefix="unet", adapter_name=adapter_name)


def load_lora_checked(unet, lora_dir: str | Path, adapter_name: str = "default") -> None:
    """``load_lora_into`` for a LoRA from outside the project (RORem's LCM LoRA): every LoRA tensor of
    the file must land on a module of ``unet``. diffusers only logs the keys it cannot place, so a
    LoRA of another UNet would otherwise load in part, silently; here it is an error naming the file."""
    from peft.utils import get_peft_model_state_dict
    from safetensors import safe_open

    f = Path(lora_dir) / "pytorch_lora_weights.safetensors"
    if not f.is_file():
        raise FileNotFoundError(f"{lora_dir}: no pytorch_lora_weights.safetensors; give the folder of a "
                                "diffusers-format LoRA (what `save_lora_weights` writes)")
    check_local_weights(Path(lora_dir))
    with safe_open(str(f), "pt") as sf:   # lora_A/B (peft) or lora.down/up (older diffusers); alphas aside
        want = [k for k in sf.keys() if k.startswith("unet.") and "lora" in k and k.endswith("weight")]
    fix = ("it was trained for another UNet: use it with the model it was made for (RORem's LCM LoRA: RORem's "
           "UNet as bootstrap.sdxl_unet, SDXL preset)")
    if not want:
        raise ValueError(f"{f}: no UNet LoRA tensors (keys unet.*lora*); give a diffusers-format UNet LoRA")
    try:
        load_lora_into(unet, lora_dir, adapter_name)
        placed = len(get_peft_model_state_dict(unet, adapter_name=adapter_name))
    except (RuntimeError, ValueError, KeyError) as e:   # other shapes, or no module of that name at all
        raise ValueError(f"{f}: LoRA does not fit this UNet ({str(e)[:300]}); {fix}") from e
    if placed < len(want):
        raise ValueError(f"{f}: only {placed} of its {len(want)} LoRA tensors match a module of this UNet "
                         f"(e.g. {want[0]}); {fix}")


def load_vae(ref: str | Path, *, dtype: torch.dtype = torch.float32, device: str | torch.device | None = None):
    """AutoencoderKL (sdxl) or the analytic autoencoder (tiny), chosen by the saved config, on ``device``.

    fp16 is refused for a VAE whose config says ``force_upcast`` (SDXL's overflows to NaN in fp16):
    it runs in fp32, as diffusers' SDXL pipelines upcast it."""
    from diffusers import AutoencoderKL

    from rorem_core.models.analytic_ae import AnalyticAutoencoder

    base = resolve_ref(ref).base
    cls_name = config_class(base, "vae")
    cls = AnalyticAutoencoder if cls_name == "AnalyticAutoencoder" else AutoencoderKL
    if dtype == torch.float16 and cls.load_config(base, subfolder="vae").get("force_upcast", False):
        dtype = torch.float32
    vae = cls.from_pretrained(base, subfolder="vae", torch_dtype=dtype, variant=weights_variant(Path(base) / "vae"))
    vae.requires_grad_(False)
    return vae.eval().to(device) if device is not None else vae.eval()


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
