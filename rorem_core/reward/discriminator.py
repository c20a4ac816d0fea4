"""The discriminator (reward model): the inpainting UNet's encoder plus a classification head (RORem §2).

Input, as RORem (``view: rorem``): x = [result latent (4) | mask (1) | source latent (4)] -> (B, 9, h, w),
where ``result`` is the removal being judged, ``mask`` the binary mask max-pooled to the latent size and
``source`` the latent of the UNMASKED source. ``view: residual`` feeds the same UNet
x = [result - filled (4) | mask (1) | filled (4)] instead, where ``filled`` is the latent of the source with
its hole filled in PIXELS by Laplace's equation (``data/fill.harmonic_fill``: the smoothest continuation of
the surroundings; no ground truth): the first 4 channels are then ~0 outside the hole and, inside it, how
the removal departs from its surroundings, which is what tells a smudge from a clean fill of the same input
(docs/discriminator.md, "Ordering an input's candidates"). ``encode_triples`` makes every latent from
images; training reads ``filled`` from a latent cache whose masked fill is harmonic.
Output: one logit per sample, [B]. The score is
``sigmoid(logit + logit_offset)`` (a calibrated probability, loss "bce") or ``softplus(logit)``
(RORem's unbounded score, loss "softplus_mse"); "good" iff score > threshold.

What differs from RORem's released code (docs/rorem.md, docs/discriminator.md):
- timestep 0 and NO noise: RORem passes the result latent through DDPM ``add_noise`` at t=0, which
  still adds noise of std sqrt(beta_0) ~ 0.029; a judge should see the result as it is, and a
  noiseless input makes every score deterministic (the same file always gets the same score);
- the head pools the mid-block map to RORem's 16x16 grid (adaptive average pooling; replication
  when the map is smaller), so it works at any resolution and equals RORem's head exactly at 512 px;
  width C = block_out_channels[-1] (1280 for SDXL), GroupNorm groups = the UNet's norm_num_groups;
- the head is explicitly initialised (``from_pretrained`` leaves RORem's uninitialised -> NaN) and
  is made trainable after the LoRA injection (peft freezes every non-LoRA parameter);
- time_ids come from the actual pixel size (RORem hard-codes 512); the up blocks are dropped.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict
from safetensors.torch import load_file, save_file
from torch import nn

from rorem_core.config.presets import ATTN_TARGETS
from rorem_core.data.fill import masked_source
from rorem_core.data.latents import encode_images, mask_to_latent
from rorem_core.io import atomic_path, load_torch_state, write_json_atomic
from rorem_core.models.conditioning import PromptEmbeds, load_prompt_embeds
from rorem_core.models.folders import check_local_weights
from rorem_core.models.loading import load_unet_fused, resolve_ref
from rorem_core.training.losses import DISCRIMINATOR_SCORES

INFO_FILE = "discriminator.json"
LORA_FILE = "pytorch_lora_weights.safetensors"
HEAD_FILE = "head.safetensors"
ENCODER_FILE = "encoder.safetensors"        # mode "full": the fine-tuned encoder weights
RORem_HEAD_FILE = "cls_pred_branch.pt"      # RORem: torch state dict, keys "cls_pred_branch.<i>.<w|b>"
RORem_PREFIX = "cls_pred_branch."
NONE_FILE = "no_discriminator.json"         # round 0 (bootstrap): no labels yet, so no discriminator


def write_no_discriminator(out_dir: str | Path) -> None:
    """Round 0's explicit "no discriminator": round 1's select depends on it (random selection), so the
    same dvc.yaml stage works for every round without a conditional dependency."""
    write_json_atomic(Path(out_dir) / NONE_FILE, {"round": 0, "discriminator": None,
                                                  "why": "no human labels before round 1: selection is random"})


def is_no_discriminator(path: str | Path | None) -> bool:
    """``None``, ``"none"``, or a folder holding only round 0's marker."""
    if path is None or str(path).strip().lower() in ("", "none"):
        return True
    p = Path(path)
    return (p / NONE_FILE).is_file() and not (p / INFO_FILE).is_file()


class DiscriminatorInfo(BaseModel):
    """``discriminator.json``: everything needed to rebuild and use a saved discriminator."""

    model_config = ConfigDict(extra="forbid")
    format: Literal["rorem-loop-discriminator"] = "rorem-loop-discriminator"
    version: int = 1
    base: str                                 # init UNet ref (remover or base); relative to this dir if local
    mode: Literal["lora", "full"] = "lora"    # LoRA on attention, or the whole encoder fine-tuned
    lora_rank: int | None = 4
    loss: Literal["bce", "softplus_mse"] = "bce"
    threshold: float = 0.5                    # "good" iff score > threshold
    resolution: int = 512                     # px the model was trained at (scoring resizes to it)
    logit_offset: float = 0.0                 # added before the score fn (prior-shift correction, bce)
    head_channels: int = 1280
    head_groups: int = 32
    view: Literal["rorem", "residual"] = "rorem"   # what the 9 input channels hold (module docstring)


RESIDUAL_FILL = "harmonic"     # the masked fill whose latent is the residual view's ``filled``


def encoder_input(view: str, result: torch.Tensor, mask: torch.Tensor, source: torch.Tensor,
                  filled: torch.Tensor | None = None) -> torch.Tensor:
    """Latents (B, 4, h, w), (B, 1, h, w), (B, 4, h, w), (B, 4, h, w) -> the (B, 9, h, w) input of ``view``."""
    if view == "rorem":
        return torch.cat([result, mask, source], dim=1)
    if view != "residual":
        raise ValueError(f"discriminator view {view!r} is not rorem or residual; set train_discriminator.view")
    if filled is None:
        raise ValueError("a view=residual discriminator needs the latent of the harmonically filled source "
                         "(filled=); make the latents with reward.discriminator.encode_triples")
    return torch.cat([result - filled, mask, filled], dim=1)


@torch.no_grad()
def encode_triples(vae, results: torch.Tensor, sources: torch.Tensor, masks: torch.Tensor, view: str,
                   vae_factor: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Images (B, 3, R, R) in [-1, 1] and masks (B, 1, R, R) -> the discriminator's latents (result, mask,
    source, filled; filled None for view rorem), in one VAE call."""
    n = len(results)
    images = [results, sources] + ([masked_source(sources, masks, RESIDUAL_FILL)] if view == "residual" else [])
    z = encode_images(vae, torch.cat(images))
    return z[:n], mask_to_latent(masks.float(), vae_factor), z[n:2 * n], (z[2 * n:] if view == "residual" else None)


class DiscriminatorHead(nn.Sequential):
    """RORem's ``cls_pred_branch`` with its layer indices (so ``cls_pred_branch.pt`` loads as is):

    0 Conv(C,C,k4,s2,p1) 1 GN 2 SiLU 3 Conv(C,C,k4,s2,p1) 4 GN 5 SiLU 6 Conv(C,C,k4,s4) 7 GN 8 SiLU
    9 Conv(C,1,k1); spatially 16 -> 8 -> 4 -> 1. Any input map is first pooled to 16x16.
    """

    GRID = 16

    def __init__(self, channels: int, groups: int):
        if channels % groups:
            raise ValueError(f"head channels {channels} must be divisible by GroupNorm groups {groups}")
        super().__init__(
            nn.Conv2d(channels, channels, 4, 2, 1), nn.GroupNorm(groups, channels), nn.SiLU(),
            nn.Conv2d(channels, channels, 4, 2, 1), nn.GroupNorm(groups, channels), nn.SiLU(),
            nn.Conv2d(channels, channels, 4, 4, 0), nn.GroupNorm(groups, channels), nn.SiLU(),
            nn.Conv2d(channels, 1, 1))
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self, last_std: float = 0.01) -> None:
        """Explicit init: PyTorch's default (Kaiming-uniform) for the hidden convs, unit GroupNorm, and
        a small last layer (N(0, last_std), bias 0) so every initial logit is ~0 (p ~ 0.5)."""
        for m in self:
            if isinstance(m, (nn.Conv2d, nn.GroupNorm)):
                m.reset_parameters()
        nn.init.normal_(self[9].weight, 0.0, last_std)
        nn.init.zeros_(self[9].bias)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        """(B, C, h, w) mid-block map -> (B,) logits."""
        if tuple(h.shape[-2:]) != (self.GRID, self.GRID):
            h = F.adaptive_avg_pool2d(h, self.GRID)  # (B, C, 16, 16); identity for SDXL at 512 px
        return super().forward(h).flatten(1)[:, 0]    # (B, 1, 1, 1) -> (B,)


class Discriminator(nn.Module):
    """Encoder-only inpainting UNet (conv_in, time/add embeddings, down blocks, mid block) + head."""

    def __init__(self, unet, head: DiscriminatorHead, cond: PromptEmbeds, vae_factor: int,
                 info: DiscriminatorInfo):
        super().__init__()
        if unet.config.class_embed_type is not None or unet.config.center_input_sample:
            raise ValueError("discriminator: UNets with class embeddings / centred input are not supported")
        self.unet, self.head, self.vae_factor, self.info = unet, head, vae_factor, info
        # buffers follow .to(device) and accelerate.prepare; not saved (recomputed from the base)
        self.register_buffer("prompt_hidden", cond.hidden.float(), persistent=False)
        self.register_buffer("prompt_pooled", cond.pooled.float(), persistent=False)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 9, h, w) -> mid-block map (B, C, h / 2^(n_blocks-1), ...): diffusers' UNet forward up to
        the mid block, at timestep 0, with the empty prompt and time_ids of the actual size."""
        u, n = self.unet, len(x)
        dtype = next(u.parameters()).dtype
        size = (x.shape[-2] * self.vae_factor, x.shape[-1] * self.vae_factor)
        hidden, added = PromptEmbeds(self.prompt_hidden, self.prompt_pooled).batch(n, size, x.device, dtype)
        t = torch.zeros(n, dtype=torch.long, device=x.device)
        emb = u.time_embedding(u.get_time_embed(sample=x.to(dtype), timestep=t), None)
        aug = u.get_aug_embed(emb=emb, encoder_hidden_states=hidden, added_cond_kwargs=added)
        emb = emb + aug if aug is not None else emb
        if u.time_embed_act is not None:
            emb = u.time_embed_act(emb)
        hidden = u.process_encoder_hidden_states(encoder_hidden_states=hidden, added_cond_kwargs=added)
        h = u.conv_in(x.to(dtype))
        for block in u.down_blocks:
            if getattr(block, "has_cross_attention", False):
                h, _ = block(hidden_states=h, temb=emb, encoder_hidden_states=hidden)
            else:
                h, _ = block(hidden_states=h, temb=emb)
        if getattr(u.mid_block, "has_cross_attention", False):
            return u.mid_block(h, emb, encoder_hidden_states=hidden)
        return u.mid_block(h, emb)

    def forward(self, result: torch.Tensor, mask: torch.Tensor, source: torch.Tensor,
                filled: torch.Tensor | None = None) -> torch.Tensor:
        """Latents (B, 4, h, w), (B, 1, h, w), (B, 4, h, w)[, (B, 4, h, w)] -> logits (B,) in fp32."""
        h = self.encode(encoder_input(self.info.view, result, mask, source, filled))
        return self.head(h.to(self.head[0].weight.dtype)).float()

    @torch.no_grad()
    def score_images(self, vae, results: torch.Tensor, sources: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
        """Scores [B] of images (B, 3, R, R) in [-1, 1] with masks (B, 1, R, R): encode_triples, then score."""
        lat = encode_triples(vae, results, sources, masks, self.info.view, self.vae_factor)
        return self.score(self(*(x if x is None else x.to(self.device) for x in lat)))

    def score(self, logits: torch.Tensor) -> torch.Tensor:
        """logits [B] -> scores [B]: calibrated probability (bce) or RORem's softplus score."""
        return DISCRIMINATOR_SCORES[self.info.loss](logits.float() + self.info.logit_offset)

    @property
    def device(self) -> torch.device:
        return self.prompt_hidden.device


# ------------------------------------------------------------------------------ building


def strip_decoder(unet) -> None:
    """Drop the up blocks and output layers (about half of SDXL's UNet); only the mid block is read."""
    unet.up_blocks = nn.ModuleList()
    unet.conv_norm_out = unet.conv_act = unet.conv_out = None


def load_encoder(ref: str | Path, dtype: torch.dtype = torch.float32):
    """The init UNet (base or remover; a LoRA remover's adapters are fused in), up blocks dropped."""
    unet = load_unet_fused(ref, dtype=dtype)
    strip_decoder(unet)
    unet.requires_grad_(False)
    return unet


def vae_factor(ref: str | Path) -> int:
    """Pixel-to-latent factor from the base's VAE config (2 ** (len(block_out_channels) - 1))."""
    from diffusers import AutoencoderKL

    cfg = AutoencoderKL.load_config(resolve_ref(ref).base, subfolder="vae")
    return 2 ** (len(cfg["block_out_channels"]) - 1)


def build_discriminator(init_ref: str | Path, *, cache_dir: str | Path, info: DiscriminatorInfo,
                        dtype: torch.dtype = torch.float32, seed: int = 0) -> Discriminator:
    """A fresh discriminator on ``init_ref``'s encoder; the head is initialised from ``seed``."""
    unet = load_encoder(init_ref, dtype)
    channels, groups = unet.config.block_out_channels[-1], unet.config.norm_num_groups
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        head = DiscriminatorHead(channels, groups)
    info = info.model_copy(update={"head_channels": channels, "head_groups": groups})
    return Discriminator(unet, head, load_prompt_embeds(init_ref, cache_dir), vae_factor(init_ref), info)


def make_trainable(disc: Discriminator, seed: int = 0) -> list[nn.Parameter]:
    """LoRA on the encoder's attention (mode lora) or the whole encoder (full), plus the head.

    The head is switched on AFTER the adapter injection: peft's ``inject_adapter`` marks only LoRA
    parameters trainable, which is why RORem's head never trained (rorem.md §2)."""
    from peft import LoraConfig

    if disc.info.mode == "lora":
        disc.unet.requires_grad_(False)
        r = disc.info.lora_rank
        with torch.random.fork_rng(devices=[]):  # the LoRA init is drawn from the seed: reruns are identical
            torch.manual_seed(seed)
            disc.unet.add_adapter(LoraConfig(r=r, lora_alpha=r, init_lora_weights="gaussian",
                                             target_modules=ATTN_TARGETS))
    else:
        disc.unet.requires_grad_(True)
    disc.head.requires_grad_(True)
    trainable = [p for p in disc.parameters() if p.requires_grad]
    for p in trainable:
        p.data = p.data.float()  # fp32 master weights even on a half-precision frozen encoder (RORem upcasts too)
    return trainable


# ------------------------------------------------------------------------------ saving / loading


def _lora_state(unet) -> dict[str, torch.Tensor]:
    """diffusers-format LoRA keys ("unet.<module>.lora.down.weight"), as ``save_lora_weights`` writes."""
    from diffusers.utils import convert_state_dict_to_diffusers
    from peft.utils import get_peft_model_state_dict

    layers = convert_state_dict_to_diffusers(get_peft_model_state_dict(unet))
    return {f"unet.{k}": v.detach().contiguous().cpu() for k, v in layers.items()}


def _save_tensors(path: Path, tensors: dict[str, torch.Tensor], metadata: dict | None = None) -> None:
    with atomic_path(path, suffix=".safetensors") as tmp:
        save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, str(tmp), metadata=metadata)


def save_discriminator(disc: Discriminator, out_dir: Path, init_ref: str | Path) -> None:
    """Our layout: LoRA (diffusers format) or encoder weights, ``head.safetensors``, ``discriminator.json``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    if disc.info.mode == "lora":
        _save_tensors(out_dir / LORA_FILE, _lora_state(disc.unet), {"format": "pt"})
    else:
        _save_tensors(out_dir / ENCODER_FILE, disc.unet.state_dict())
    _save_tensors(out_dir / HEAD_FILE, disc.head.state_dict())
    local = Path(init_ref).exists()
    base = os.path.relpath(Path(init_ref).resolve(), out_dir.resolve()) if local else str(init_ref)
    write_json_atomic(out_dir / INFO_FILE, disc.info.model_copy(update={"base": base}).model_dump())


def save_rorem_layout(disc: Discriminator, out_dir: Path) -> None:
    """RORem's checkpoint layout: ``pytorch_lora_weights.safetensors`` + ``cls_pred_branch.pt``."""
    if disc.info.mode != "lora":
        raise ValueError("RORem's layout holds a LoRA; a mode=full discriminator cannot be written in it")
    out_dir.mkdir(parents=True, exist_ok=True)
    _save_tensors(out_dir / LORA_FILE, _lora_state(disc.unet), {"format": "pt"})
    head = {RORem_PREFIX + k: v.detach().cpu() for k, v in disc.head.state_dict().items()}
    with atomic_path(out_dir / RORem_HEAD_FILE, suffix=".pt") as tmp:
        torch.save(head, tmp)


def _load_lora(unet, path: Path, rank: int) -> None:
    """Inject a rank-``rank`` adapter and load a diffusers-format LoRA into it (peft state dict);
    every LoRA key must match (a wrong base or rank fails here, not silently)."""
    from diffusers.utils import convert_unet_state_dict_to_peft
    from peft import LoraConfig, set_peft_model_state_dict
    from peft.utils import get_peft_model_state_dict

    sd = {k.removeprefix("unet."): v for k, v in load_file(str(path)).items() if k.startswith("unet.")}
    sd = convert_unet_state_dict_to_peft(sd)
    unet.add_adapter(LoraConfig(r=rank, lora_alpha=rank, init_lora_weights="gaussian", target_modules=ATTN_TARGETS))
    try:
        res = set_peft_model_state_dict(unet, sd, adapter_name="default")
    except RuntimeError as e:   # same names, other shapes: a LoRA of another UNet
        raise ValueError(f"{path}: LoRA shapes do not match the encoder of this base ({str(e)[:300]}); "
                         "pass the base model the discriminator was trained on (RORem's: SDXL-inpainting)") from e
    expected = set(get_peft_model_state_dict(unet))
    missing = expected - set(sd)
    if getattr(res, "unexpected_keys", None) or missing:
        raise ValueError(f"{path}: LoRA keys do not match the encoder of this base (unexpected "
                         f"{list(getattr(res, 'unexpected_keys', []))[:3]}, missing {sorted(missing)[:3]}); "
                         "pass the base model the discriminator was trained on")
    unet.requires_grad_(False)


def _lora_rank(path: Path) -> int:
    """Rank from the first ``lora.down`` (or ``lora_A``) weight: shape (r, in_features)."""
    for k, v in load_file(str(path)).items():
        if "lora.down" in k or "lora_A" in k:
            return int(v.shape[0])
    raise ValueError(f"{path}: no LoRA down/A weights found; not a LoRA file")


def read_info(path: str | Path, *, base: str | Path | None = None, resolution: int = 512) -> DiscriminatorInfo:
    """Our ``discriminator.json`` (base resolved to a usable ref), or a RORem checkpoint's implied info."""
    p = Path(path)
    if (p / INFO_FILE).is_file():
        info = DiscriminatorInfo.model_validate(json.loads((p / INFO_FILE).read_text()))
        local = p / info.base
        return info.model_copy(update={"base": str(local.resolve()) if local.exists() else info.base})
    if (p / RORem_HEAD_FILE).is_file() and (p / LORA_FILE).is_file():
        if base is None:
            raise ValueError(f"{p}: a RORem discriminator checkpoint names no base model; pass base=<the "
                             "SDXL-inpainting dir it was trained on> (base.model_dir)")
        # the LoRA belongs on the pipeline's own UNet (RORem's: SDXL-inpainting), never on a remover UNet
        # that models/base swapped in (bootstrap.sdxl_unet), which has the same keys and would load silently
        return DiscriminatorInfo(base=str(resolve_ref(base).base), mode="lora", lora_rank=_lora_rank(p / LORA_FILE),
                                 loss="softplus_mse", threshold=0.5, resolution=resolution)
    raise FileNotFoundError(f"{p}: no {INFO_FILE} (ours) and no {RORem_HEAD_FILE} + {LORA_FILE} (RORem's); "
                            "run the train_discriminator stage or point to a RORem discriminator dir")


def load_discriminator(path: str | Path, *, cache_dir: str | Path, base: str | Path | None = None,
                       resolution: int = 512, dtype: torch.dtype = torch.float32) -> Discriminator:
    """Load ours or RORem's layout (``base``/``resolution`` are only used for RORem's, which lacks them)."""
    p = Path(path)
    info = read_info(p, base=base, resolution=resolution)
    check_local_weights(p)  # a truncated weight file fails here, named, not deep in torch
    unet = load_encoder(info.base, dtype)
    if info.mode == "full":
        unet.load_state_dict(load_file(str(p / ENCODER_FILE)))
    else:
        _load_lora(unet, p / LORA_FILE, info.lora_rank)
    head = DiscriminatorHead(unet.config.block_out_channels[-1], unet.config.norm_num_groups)
    if (p / HEAD_FILE).is_file():
        head.load_state_dict(load_file(str(p / HEAD_FILE)))
    else:
        sd = load_torch_state(p / RORem_HEAD_FILE)  # weights_only: no pickle code runs
        head.load_state_dict({k.removeprefix(RORem_PREFIX): v for k, v in sd.items() if k.startswith(RORem_PREFIX)})
    info = info.model_copy(update={"head_channels": head[0].in_channels, "head_groups": head[1].num_groups})
    disc = Discriminator(unet, head, load_prompt_embeds(info.base, cache_dir), vae_factor(info.base), info)
    return disc.eval().requires_grad_(False)


def adopt(src: str | Path, base: str | Path, out_dir: Path, *, cache_dir: str | Path, resolution: int) -> DiscriminatorInfo:
    """Use a ready discriminator (ours, or RORem's LoRA + ``cls_pred_branch.pt``) as a round's: it is
    loaded once on ``base``'s pipeline UNet (a key or shape mismatch fails here, named), then copied to
    ``out_dir`` with a ``discriminator.json`` naming that base, so later stages need no extra argument."""
    import shutil

    from rorem_core.io import atomic_dir

    src = Path(src)
    info = read_info(src, base=base, resolution=resolution)
    load_discriminator(src, cache_dir=cache_dir, base=base, resolution=resolution)   # fail early and clearly
    with atomic_dir(out_dir) as tmp:
        for f in (LORA_FILE, HEAD_FILE, ENCODER_FILE, RORem_HEAD_FILE):
            if (src / f).is_file():
                shutil.copyfile(src / f, tmp / f)
        local = Path(info.base)
        rel = os.path.relpath(local.resolve(), Path(out_dir).resolve()) if local.exists() else info.base
        write_json_atomic(tmp / INFO_FILE, info.model_copy(update={"base": rel}).model_dump())
    return info
