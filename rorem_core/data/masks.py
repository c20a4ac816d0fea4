"""Pure mask operations. A mask is bool (H, W), True = the region to remove (object + its effects).

Latent-resolution masks: SDXL-inpainting's pipeline resizes the pixel mask to the latent grid with
``F.interpolate(mode="nearest")``, which samples one pixel per latent cell, so a mask thinner than the
VAE factor (8 px for SDXL, 4 for the tiny preset) can vanish entirely. ``resize_mask_to_latent``
therefore defaults to **max-pooling** (a latent cell is masked if any of its pixels is), which keeps
thin masks; ``"area"`` gives the covered fraction per cell (soft, in [0, 1]), and ``"nearest"`` is
kept only to reproduce the diffusers behaviour.
"""

from __future__ import annotations

from typing import Any

import cv2
import numpy as np

LATENT_MODES = ("max", "area", "nearest")


def _as_bool_2d(mask: np.ndarray, name: str = "mask") -> np.ndarray:
    m = np.asarray(mask)
    if m.ndim != 2:
        raise ValueError(f"{name}: expected a 2-D (H, W) mask, got shape {m.shape}; "
                         "take one channel first (mask[..., 0])")
    return m.astype(bool, copy=False)


def dilate(mask: np.ndarray, pixels: int) -> np.ndarray:
    """Grow ``mask`` by ``pixels`` in the Chebyshev (square) metric: a (2p+1)x(2p+1) box kernel.

    The box kernel matches the measured synthetic data (5x5 = 2 px, tiny-feasibility §1). Pixels
    outside the image count as unmasked, so a mask touching the border grows only inwards.

    Returns:
        bool (H, W); ``pixels <= 0`` returns a copy.
    """
    m = _as_bool_2d(mask)
    if pixels <= 0:
        return m.copy()
    kernel = np.ones((2 * pixels + 1, 2 * pixels + 1), np.uint8)
    out = cv2.dilate(m.astype(np.uint8), kernel, borderType=cv2.BORDER_CONSTANT, borderValue=0)
    return out.astype(bool)


def bbox(mask: np.ndarray) -> tuple[int, int, int, int] | None:
    """Tight bounding box ``(y0, x0, y1, x1)``, half-open (``mask[y0:y1, x0:x1]``); None if empty."""
    m = _as_bool_2d(mask)
    rows, cols = np.flatnonzero(m.any(axis=1)), np.flatnonzero(m.any(axis=0))
    if rows.size == 0:
        return None
    return int(rows[0]), int(cols[0]), int(rows[-1]) + 1, int(cols[-1]) + 1


def area_fraction(mask: np.ndarray) -> float:
    """Fraction of pixels in the mask, in [0, 1] (0 for an empty mask, 1 for a full one)."""
    m = _as_bool_2d(mask)
    return float(m.mean()) if m.size else 0.0


def resize_mask_to_latent(mask: Any, size: int | tuple[int, int], mode: str = "max") -> Any:
    """Resize a pixel mask to the latent grid ``size`` (an int for square, or ``(h, w)``).

    Args:
        mask: numpy (H, W) bool/float, or a torch tensor (H, W), (1, H, W) or (B, 1, H, W).
        size: latent height/width, i.e. pixel size // VAE scale factor (from the VAE config).
        mode: ``"max"`` (default; a cell is 1 if any pixel in it is masked, so thin masks survive),
            ``"area"`` (fraction of the cell covered, soft), or ``"nearest"`` (diffusers' behaviour;
            thin masks can disappear).

    Returns:
        Same container and rank as the input, spatial size ``size``; float values in [0, 1]
        (float32 for numpy / bool inputs, the input dtype for float tensors).
    """
    import torch
    import torch.nn.functional as F

    if mode not in LATENT_MODES:
        raise ValueError(f"resize_mask_to_latent: unknown mode {mode!r}; use one of {LATENT_MODES}")
    hw = (size, size) if isinstance(size, int) else tuple(size)
    is_numpy = not isinstance(mask, torch.Tensor)
    t = torch.from_numpy(np.asarray(mask)) if is_numpy else mask
    ndim = t.ndim
    if ndim not in (2, 3, 4):
        raise ValueError(f"resize_mask_to_latent: expected (H,W), (1,H,W) or (B,1,H,W), got {tuple(t.shape)}")
    x = t.reshape((1, 1) + tuple(t.shape[-2:])) if ndim < 4 else t  # (B, 1, H, W)
    x = x.float() if not x.is_floating_point() else x
    if mode == "max":
        y = F.adaptive_max_pool2d(x, hw)
    elif mode == "area":
        y = F.adaptive_avg_pool2d(x, hw)
    else:
        y = F.interpolate(x, size=hw, mode="nearest")
    y = y.reshape(tuple(t.shape[:-2]) + hw) if ndim < 4 else y
    return y.numpy().astype(np.float32) if is_numpy else y


__all__ = ["LATENT_MODES", "area_fraction", "bbox", "dilate", "resize_mask_to_latent"]
