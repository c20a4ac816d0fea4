"""Reference fills for evaluation: quality bars a trained remover is compared against.

Each baseline maps ``(source float32 (H, W, 3) in [0, 1], mask bool (H, W)) -> (H, W, 3) float32``
and changes only masked pixels (outside the mask the result equals ``source``). Measured on the
synthetic test split (tiny-feasibility §4): TELEA ~27.8 dB, ring fill ~24.8 dB, leave ~14.1 dB
masked PSNR. ``harmonic`` (Laplace's equation with the source as boundary) is the smoothest fill that
meets its surroundings: exact on linear gradients, a blur on textures.
"""

from __future__ import annotations

from typing import Callable

import cv2
import numpy as np

from rorem_core.data.masks import dilate

Baseline = Callable[[np.ndarray, np.ndarray], np.ndarray]


def _check(source: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    src = np.asarray(source, dtype=np.float32)
    m = np.asarray(mask).astype(bool)
    if src.ndim != 3 or src.shape[2] != 3 or m.shape != src.shape[:2]:
        raise ValueError(f"baseline: expected source (H, W, 3) and mask (H, W), got {src.shape} "
                         f"and {m.shape}; load them with rorem_core.data.images.load_rgb / load_mask")
    return src, m


def leave_object(source: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """The do-nothing floor: return the source unchanged (the object stays)."""
    src, _ = _check(source, mask)
    return src.copy()


def telea(source: np.ndarray, mask: np.ndarray, radius: int = 3) -> np.ndarray:
    """OpenCV fast-marching inpainting (Telea 2004), neighbourhood ``radius`` px, on 8-bit RGB."""
    src, m = _check(source, mask)
    if not m.any():
        return src.copy()
    u8 = np.clip(np.rint(src * 255), 0, 255).astype(np.uint8)
    filled = cv2.inpaint(u8, m.astype(np.uint8), radius, cv2.INPAINT_TELEA).astype(np.float32) / 255
    return np.where(m[..., None], filled, src)


def ring_mean(source: np.ndarray, mask: np.ndarray, ring: int = 3) -> np.ndarray:
    """Fill the mask with the mean colour of the ``ring``-px band just outside it.

    ring = dilate(mask, ring) & ~mask; if that band is empty (mask covers the image), the mean of
    all unmasked pixels is used, and 0.5 grey when there are none.
    """
    src, m = _check(source, mask)
    if not m.any():
        return src.copy()
    band = dilate(m, ring) & ~m
    pool = band if band.any() else ~m
    colour = src[pool].mean(axis=0) if pool.any() else np.full(3, 0.5, np.float32)
    return np.where(m[..., None], colour.astype(np.float32), src)


def harmonic(source: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Fill the mask with the solution of Laplace's equation whose boundary values are the source just
    outside it (``rorem_core.data.fill.harmonic_fill``, the tiny remover's conditioning fill); a mask
    covering the whole image is filled grey, as ``ring_mean``."""
    import torch

    from rorem_core.data.fill import harmonic_fill

    src, m = _check(source, mask)
    if not m.any():
        return src.copy()
    x = torch.from_numpy(src).permute(2, 0, 1)[None] * 2 - 1
    y = harmonic_fill(x, torch.from_numpy(m)[None, None].float())
    out = ((y[0].permute(1, 2, 0).numpy() + 1) / 2).clip(0, 1).astype(np.float32)
    return np.where(m[..., None], out, src)


BASELINES: dict[str, Baseline] = {"telea": telea, "harmonic": harmonic, "ring_mean": ring_mean, "leave": leave_object}

__all__ = ["BASELINES", "Baseline", "harmonic", "leave_object", "ring_mean", "telea"]
