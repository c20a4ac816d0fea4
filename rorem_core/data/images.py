"""Image and mask file I/O. Images: float32 (H, W, 3) in [0, 1]. Masks: bool (H, W).

A photo's EXIF orientation is applied on load (what a viewer shows is what a mask is drawn on).
Grayscale, palette and RGBA inputs are converted with PIL's ``convert("RGB")`` (alpha is
dropped), never rejected; 16-bit grayscale is scaled to 8 bits first (``convert`` would clip it to
255, an almost white image). Images over ``MAX_PIXELS`` are refused from their header, before any
pixel is decoded. A mask file is read from its first channel and
binarised at 0.5, as RORem's inference does.
"""

from __future__ import annotations

import io
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from rorem_core.io import write_bytes_atomic

MAX_PIXELS = 64_000_000  # refuse decompression bombs with a clear message instead of a PIL warning


class ImageError(ValueError):
    """An image file is missing, truncated or undecodable; the message names the file."""


class ImageTooLarge(ImageError):
    """The header declares more than ``MAX_PIXELS`` pixels (nothing was decoded)."""


def _open(path: str | Path) -> Image.Image:
    path = Path(path)
    if not path.is_file():
        raise ImageError(f"{path}: file not found; check the path in meta.json or restore the file")
    if path.stat().st_size == 0:
        raise ImageError(f"{path}: file is empty (0 bytes); re-export or remove the entry")
    try:
        with warnings.catch_warnings():  # PIL warns above ~89 M pixels; the limit is checked here
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            im = Image.open(path)
        with im:
            w, h = im.size
            if w * h > MAX_PIXELS:
                raise ImageTooLarge(f"{path}: {w}x{h} exceeds {MAX_PIXELS} pixels; downscale it first")
            im.load()
            # a camera's EXIF orientation is how people see (and draw masks on) the photo
            return ImageOps.exif_transpose(im) if im.getexif().get(0x0112, 1) != 1 else im.copy()
    except Image.DecompressionBombError as e:  # PIL's own header check (> 2x its limit) fired first
        raise ImageTooLarge(f"{path}: {e}; downscale it first") from e
    except (UnidentifiedImageError, OSError, SyntaxError) as e:
        raise ImageError(f"{path}: cannot decode image ({e}); the file is truncated or not an "
                         "image: re-export it or remove the entry") from e


def image_size(path: str | Path) -> tuple[int, int]:
    """(width, height) after a full decode (a header alone would miss truncation)."""
    return _open(path).size


SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N")   # 16-bit grayscale PNG / TIFF


def _to_rgb(im: Image.Image) -> Image.Image:
    if im.mode in SIXTEEN_BIT_MODES:  # 0..65535 -> 0..255; PIL's convert would clip at 255
        im = Image.fromarray(np.rint(np.asarray(im, dtype=np.float64) / 257.0).astype(np.uint8))
    return im if im.mode == "RGB" else im.convert("RGB")


def load_rgb(path: str | Path) -> np.ndarray:
    return np.asarray(_to_rgb(_open(path)), dtype=np.float32) / 255.0


def load_mask(path: str | Path) -> np.ndarray:
    arr = np.asarray(_to_rgb(_open(path)), dtype=np.float32)[..., 0] / 255.0
    return arr >= 0.5


def encode_png(arr: np.ndarray, compress_level: int = 6) -> bytes:
    """uint8 PNG bytes of an (H, W, 3) float image in [0,1] or an (H, W) bool mask.

    ``compress_level`` 0-9 (zlib; PIL's default 6): derived files written by the thousand use 1
    (~half the encoding time, a few % larger)."""
    if arr.dtype == bool:
        im = Image.fromarray(arr.astype(np.uint8) * 255)  # 2-D uint8 -> mode "L"
    else:
        im = Image.fromarray(np.clip(np.rint(arr * 255.0), 0, 255).astype(np.uint8))  # (H,W,3) -> "RGB"
    buf = io.BytesIO()
    im.save(buf, format="PNG", compress_level=compress_level)
    return buf.getvalue()


def save_png(path: str | Path, arr: np.ndarray) -> None:
    write_bytes_atomic(path, encode_png(arr))
