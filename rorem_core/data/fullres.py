"""Any resolution in, full resolution out.

The models work on a square of ``resolution`` px (as RORem). A photo of another size is
**letterboxed**: padded to a square of side ``max(H, W)`` (edge pixels repeated for an image, zeros
for a mask, centred), then resized, so its aspect ratio is kept (RORem's plain square resize would
stretch it). A result is brought back by the inverse: resized to the padded square, the padding cut
off, and **pasted into the original image** with a feathered mask edge:

    region = dilate(mask, dilation)                 # what the remover was asked to fill
    outer  = dilate(region, feather)                # the only pixels that may change
    alpha  = clip(dist_to_outside(outer) / (feather + 1), 0, 1)   # 1 on region, ramps to 0 at outer's edge
    out    = alpha * result + (1 - alpha) * original

so the output has the original size and equals the original bit for bit outside ``outer``
(``changed_region``). A square input of exactly ``resolution`` px is left as it is (no resize).
"""

from __future__ import annotations

import cv2
import numpy as np
from PIL import Image

from rorem_core.data.masks import dilate


def pad_box(h: int, w: int) -> tuple[int, int, int]:
    """(side, top, left): the centred square an (h, w) image is padded to."""
    side = max(h, w)
    return side, (side - h) // 2, (side - w) // 2


def letterbox_image(img: np.ndarray) -> np.ndarray:
    """(H, W, 3) -> (S, S, 3), S = max(H, W), edge pixels repeated into the padding."""
    h, w = img.shape[:2]
    side, top, left = pad_box(h, w)
    return np.pad(img, ((top, side - h - top), (left, side - w - left), (0, 0)), mode="edge")


def letterbox_mask(mask: np.ndarray) -> np.ndarray:
    """(H, W) bool -> (S, S) bool, the padding unmasked (nothing to remove there)."""
    h, w = mask.shape
    side, top, left = pad_box(h, w)
    return np.pad(mask, ((top, side - h - top), (left, side - w - left)), constant_values=False)


def unletterbox(square: np.ndarray, h: int, w: int) -> np.ndarray:
    """A working-resolution (R, R, 3) float result -> (h, w, 3): resize to the padded square, cut the pad."""
    side, top, left = pad_box(h, w)
    if square.shape[0] != side:
        pil = Image.fromarray(np.clip(np.rint(square * 255), 0, 255).astype(np.uint8))
        square = np.asarray(pil.resize((side, side), Image.BICUBIC), np.float32) / 255.0
    return square[top:top + h, left:left + w]


def default_feather(h: int, w: int, resolution: int) -> int:
    """Two working-resolution pixels, in original pixels (the result is blurrier than that below)."""
    return max(1, int(np.ceil(2 * max(h, w) / resolution)))


def changed_region(mask: np.ndarray, dilation: int, feather: int) -> np.ndarray:
    """The pixels ``paste_back`` may change: ``dilate(mask, dilation + feather)``."""
    return dilate(dilate(mask, dilation), feather)


def feather_alpha(mask: np.ndarray, dilation: int, feather: int) -> np.ndarray:
    """(H, W) float in [0, 1]: 1 on dilate(mask, dilation), 0 outside changed_region, a ramp between."""
    outer = changed_region(mask, dilation, feather).astype(np.uint8)
    if feather <= 0:
        return outer.astype(np.float32)
    # L2 distance to the nearest unmasked pixel; >= feather + 1 on the inner region (L2 >= box distance)
    dist = cv2.distanceTransform(outer, cv2.DIST_L2, 5)
    return np.clip(dist / (feather + 1), 0.0, 1.0).astype(np.float32)


def paste_back(original: np.ndarray, result_square: np.ndarray, mask: np.ndarray, *, dilation: int = 0,
               feather: int = 0) -> np.ndarray:
    """Full-size output: ``result_square`` (R, R, 3) float [0, 1] brought back onto ``original``
    (H, W, 3) float [0, 1] inside the feathered, dilated ``mask`` (H, W) bool; the original elsewhere."""
    h, w = original.shape[:2]
    if mask.shape != (h, w):
        raise ValueError(f"mask is {mask.shape[1]}x{mask.shape[0]} but the image is {w}x{h}; "
                         "give a mask of the image's size")
    result = unletterbox(result_square, h, w)
    alpha = feather_alpha(mask, dilation, feather)[..., None]
    out = original.astype(np.float32).copy()
    inside = alpha[..., 0] > 0
    out[inside] = (alpha * result + (1.0 - alpha) * original)[inside]
    return out


__all__ = ["changed_region", "default_feather", "feather_alpha", "letterbox_image", "letterbox_mask",
           "pad_box", "paste_back", "unletterbox"]
