"""Image and mask file I/O. Images: float32 (H, W, 3) in [0, 1]. Masks: bool (H, W).

Grayscale, palette and RGBA inputs are converted with PIL's ``convert("RGB")`` (alpha is
dropped), never rejected. A mask file is read from its first channel and
binarised at 0.5, as RORem's inference does.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from rorem_core.io import write_bytes_atomic

MAX_PIXELS = 64_000_000  # refuse decompression bombs with a clear message instead of a PIL warning


class ImageError(ValueError):
    """An image file is missing, truncated or undecodable; the message names the file."""


def _open(path: str | Path) -> Image.Image:
    path = Path(path)
    if not path.is_file():
        raise ImageError(f"{path}: file not found; check the path in meta.json or restore the file")
    if path.stat().st_size == 0:
        raise ImageError(f"{path}: file is empty (0 bytes); re-export or remove the entry")
    try:
        with Image.open(path) as im:
            w, h = im.size
            if w * h > MAX_PIXELS:
                raise ImageError(f"{path}: {w}x{h} exceeds {MAX_PIXELS} pixels; downscale it first")
            im.load()
            return im.copy()
    except (UnidentifiedImageError, OSError, SyntaxError, Image.DecompressionBombError) as e:
        raise ImageError(f"{path}: cannot decode image ({e}); the file is truncated or not an "
                         "image: re-export it or remove the entry") from e


def image_size(path: str | Path) -> tuple[int, int]:
    """(width, height) after a full decode (a header alone would miss truncation)."""
    return _open(path).size


def load_rgb(path: str | Path) -> np.ndarray:
    im = _open(path)
    if im.mode != "RGB":
        im = im.convert("RGB")
    return np.asarray(im, dtype=np.float32) / 255.0


def load_mask(path: str | Path) -> np.ndarray:
    im = _open(path)
    if im.mode in ("RGBA", "LA"):
        im = im.convert("RGB")
    arr = np.asarray(im.convert("RGB"), dtype=np.float32)[..., 0] / 255.0
    return arr >= 0.5


def encode_png(arr: np.ndarray) -> bytes:
    """uint8 PNG bytes of an (H, W, 3) float image in [0,1] or an (H, W) bool mask."""
    if arr.dtype == bool:
        im = Image.fromarray(arr.astype(np.uint8) * 255)  # 2-D uint8 -> mode "L"
    else:
        im = Image.fromarray(np.clip(np.rint(arr * 255.0), 0, 255).astype(np.uint8))  # (H,W,3) -> "RGB"
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    return buf.getvalue()


def save_png(path: str | Path, arr: np.ndarray) -> None:
    write_bytes_atomic(path, encode_png(arr))
