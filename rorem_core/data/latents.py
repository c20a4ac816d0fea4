"""Latent cache: every image is VAE-encoded once and reused by every training stage.

RORem re-encodes each image with the VAE at every step; here each (source, mask, target) triple is
encoded once into a safetensors entry keyed by the files' content, the resolution and the VAE's
hash, so changing any of them gives a new key and a stale entry can never be read.

Entry tensors (h = w = resolution / vae_scale_factor):
  target (4, h, w)  latent of the GT / removal result, x scaling_factor (posterior mode)
  masked (4, h, w)  latent of the masked source: masked pixels = 0 in [-1, 1] (as the pipeline), or the
                    harmonic fill when the model was trained so (``fill``, rorem_core/data/fill.py)
  source (4, h, w)  latent of the unmasked source (the discriminator's third input, RORem §2)
  mask   (1, h, w)  binary mask max-pooled to latent size (a pixel of object makes the cell masked)
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from rorem_core.data.fill import FILLS, masked_source
from rorem_core.data.fullres import letterbox_image, letterbox_mask
from rorem_core.data.images import load_mask, load_rgb
from rorem_core.io import atomic_path, sha256_bytes
from rorem_core.models.loading import vae_scale_factor
from rorem_core.parallel import shards

KEYS = ("target", "masked", "source", "mask")


class CacheCorrupt(RuntimeError):
    """A cache entry failed its checksum or cannot be parsed."""


def vae_fingerprint(vae) -> str:
    """sha256 of the VAE's config and weights: entries of another VAE are never reused."""
    h = hashlib.sha256(json.dumps(dict(vae.config), sort_keys=True, default=str).encode())
    for name, t in sorted(vae.state_dict().items()):
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().float().numpy().tobytes())
    return h.hexdigest()


def image_to_tensor(img: np.ndarray, resolution: int) -> torch.Tensor:
    """(H, W, 3) float [0,1] -> (3, R, R) in [-1, 1]; resized like RORem (square, bicubic). A
    non-square image is letterboxed first (data/fullres.py), so its aspect ratio is kept."""
    if img.shape[0] != img.shape[1]:
        img = letterbox_image(img)
    if img.shape[:2] != (resolution, resolution):
        pil = Image.fromarray(np.clip(np.rint(img * 255), 0, 255).astype(np.uint8))
        img = np.asarray(pil.resize((resolution, resolution), Image.BICUBIC), np.float32) / 255.0
    return torch.from_numpy(img).permute(2, 0, 1) * 2.0 - 1.0


def mask_to_tensor(mask: np.ndarray, resolution: int) -> torch.Tensor:
    """(H, W) bool -> (1, R, R) float {0, 1}; nearest resize keeps it binary (letterboxed like the image)."""
    if mask.shape[0] != mask.shape[1]:
        mask = letterbox_mask(mask)
    if mask.shape[0] > resolution:   # downscaling a photo's mask: a cell with any object pixel is masked
        pil = Image.fromarray(mask.astype(np.uint8) * 255)
        mask = np.asarray(pil.resize((resolution, resolution), Image.BOX)) > 0
    elif mask.shape != (resolution, resolution):
        pil = Image.fromarray(mask.astype(np.uint8) * 255)
        mask = np.asarray(pil.resize((resolution, resolution), Image.NEAREST)) >= 128
    return torch.from_numpy(mask.astype(np.float32))[None]


def mask_to_latent(mask: torch.Tensor, factor: int) -> torch.Tensor:
    """(B, 1, H, W) pixel mask -> (B, 1, H/f, W/f) by max-pooling (thin parts survive)."""
    return F.max_pool2d(mask, kernel_size=factor)


@torch.no_grad()
def encode_images(vae, x: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) in [-1, 1] -> scaled latents (B, 4, H/f, W/f), posterior mode."""
    z = vae.encode(x.to(vae.device, vae.dtype)).latent_dist.mode()
    shift = getattr(vae.config, "shift_factor", None) or 0.0
    return ((z - shift) * vae.config.scaling_factor).float().cpu()


class LatentCache:
    """Content-addressed latent entries under ``root/<vae-hash>-r<resolution>[-<fill>]/`` (``fill``: what
    the masked entry holds in the hole; the default ``zero`` keeps the folder name of before the option)."""

    def __init__(self, root: str | Path, vae, resolution: int, batch_size: int = 32, fill: str = "zero"):
        if fill not in FILLS:
            raise ValueError(f"LatentCache: masked fill {fill!r} is not one of {FILLS}")
        self.vae, self.resolution, self.batch_size, self.fill = vae, resolution, batch_size, fill
        self.factor = vae_scale_factor(vae)
        self.dir = Path(root) / (f"{vae_fingerprint(vae)[:16]}-r{resolution}" + ("" if fill == "zero" else f"-{fill}"))

    def key(self, source: Path, mask: Path, target: Path) -> str:
        return sha256_bytes(source.read_bytes(), mask.read_bytes(), target.read_bytes(),
                            str(self.resolution).encode())

    def path(self, key: str) -> Path:
        return self.dir / key[:2] / f"{key}.safetensors"

    def ensure(self, items: Sequence[tuple[Path, Path, Path]]) -> list[Path]:
        """Entry paths for (source, mask, target) file triples, encoding the missing ones in batches.

        Under N data-parallel processes (rorem_core.parallel) each encodes only the missing entries whose
        key falls to it (key mod N), so no entry has two writers whatever each process found missing;
        then all wait for each other, so no process reads an entry another one is still writing."""
        sh = shards()
        keys = [self.key(*it) for it in items]
        paths = [self.path(k) for k in keys]
        todo = [(it, p) for it, k, p in zip(items, keys, paths) if int(k[:8], 16) % sh.world == sh.rank
                and not p.is_file()]
        for i in range(0, len(todo), self.batch_size):
            self._encode_batch(todo[i:i + self.batch_size])
        sh.barrier()
        return paths

    def _encode_batch(self, batch) -> None:
        srcs, masks, tgts = [], [], []
        for (s, m, t), _ in batch:
            srcs.append(image_to_tensor(load_rgb(s), self.resolution))
            masks.append(mask_to_tensor(load_mask(m), self.resolution))
            tgts.append(image_to_tensor(load_rgb(t), self.resolution))
        src, mask, tgt = torch.stack(srcs), torch.stack(masks), torch.stack(tgts)
        n = len(batch)
        # one VAE call for all three kinds: (3n, 3, R, R)
        z = encode_images(self.vae, torch.cat([tgt, masked_source(src, mask, self.fill), src]))
        lat_mask = mask_to_latent(mask, self.factor)
        for i, (_, path) in enumerate(batch):
            write_entry(path, {"target": z[i], "masked": z[n + i], "source": z[2 * n + i],
                               "mask": lat_mask[i]})


def _digest(tensors: dict[str, torch.Tensor]) -> str:
    return sha256_bytes(*(tensors[k].contiguous().numpy().tobytes() for k in KEYS))


def write_entry(path: Path, tensors: dict[str, torch.Tensor]) -> None:
    tensors = {k: tensors[k].contiguous().float() for k in KEYS}
    with atomic_path(path, suffix=".safetensors") as tmp:
        save_file(tensors, str(tmp), metadata={"sha256": _digest(tensors)})


def load_entry(path: str | Path) -> dict[str, torch.Tensor]:
    """Load and verify one entry; a truncated or altered file raises ``CacheCorrupt``."""
    from safetensors import safe_open

    fix = f"delete {path} (or the whole cache folder) and re-run; it is recomputed from the images"
    try:
        with safe_open(str(path), framework="pt") as f:
            expected = (f.metadata() or {}).get("sha256")
        tensors = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as e:
        raise CacheCorrupt(f"latent cache entry {path} is unreadable ({e}); {fix}") from e
    if expected is None or set(tensors) != set(KEYS) or _digest(tensors) != expected:
        raise CacheCorrupt(f"latent cache entry {path} fails its checksum; {fix}")
    return tensors


def load_batch(paths: Sequence[Path]) -> dict[str, torch.Tensor]:
    """Stack entries into a batch: each key -> (B, C, h, w)."""
    entries = [load_entry(p) for p in paths]
    return {k: torch.stack([e[k] for e in entries]) for k in KEYS}


def latent_cache(ref, base, dtype: str = "fp32", fill: str | None = None) -> LatentCache:
    """The shared cache of ``base.cache_dir`` with ``ref``'s VAE on the stage's device (``base.device``),
    in ``dtype`` unless its config forces fp32 (SDXL's VAE: ``load_vae``), holding the masked fill ``ref``
    was trained with (``masked_fill_of``) unless ``fill`` names another. ``base``: a BaseConfig."""
    from rorem_core.device import resolve_device
    from rorem_core.models.loading import load_vae, masked_fill_of
    from rorem_core.models.unet import DTYPES

    vae = load_vae(ref, dtype=DTYPES[dtype], device=resolve_device(base.device))
    return LatentCache(Path(base.cache_dir) / "latents", vae, base.resolution, fill=fill or masked_fill_of(ref))
