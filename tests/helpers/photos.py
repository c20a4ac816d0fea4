"""Photo-like test inputs the way people have them: mixed sizes, JPEG and PNG, an RGBA PNG, a 16-bit
gray PNG and a JPEG whose EXIF orientation rotates it; masks drawn on what a viewer shows."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image


def scene(w: int, h: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(source, GT, mask): a smooth gradient background (GT) with a coloured box (the object)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    base = np.stack([xx / w, yy / h, 0.5 + 0.3 * np.sin((xx + yy) / (w + h) * 6)], -1)
    gt = (np.clip(base * 0.8 + 0.1, 0, 1) * 255).astype(np.uint8)
    x0, y0 = int(rng.integers(w // 8, w // 2)), int(rng.integers(h // 8, h // 2))
    x1, y1 = x0 + w // 4, y0 + h // 4
    src = gt.copy()
    src[y0:y1, x0:x1] = rng.integers(0, 255, 3).astype(np.uint8)
    mask = np.zeros((h, w), np.uint8)
    mask[max(0, y0 - 2):y1 + 2, max(0, x0 - 2):x1 + 2] = 255
    return src, gt, mask


def write_folder(root: Path, *, gt: bool = True, n_plain: int = 2) -> Path:
    """``root/images|masks|gt``: plain PNGs/JPEG of mixed sizes + the awkward cases. Returns root."""
    for d in ("images", "masks") + (("gt",) if gt else ()):
        (root / d).mkdir(parents=True, exist_ok=True)
    sizes = [(96, 64), (80, 80), (120, 72), (64, 100)]
    for i in range(n_plain):
        w, h = sizes[i % len(sizes)]
        src, g, m = scene(w, h, i)
        ext = "jpg" if i % 2 else "png"
        Image.fromarray(src).save(root / "images" / f"plain{i}.{ext}", quality=95)
        Image.fromarray(m).save(root / "masks" / f"plain{i}.png")
        if gt:
            Image.fromarray(g).save(root / "gt" / f"plain{i}.png")
    src, g, m = scene(72, 56, 10)                       # RGBA source
    Image.fromarray(np.dstack([src, np.full(src.shape[:2], 200, np.uint8)])).save(root / "images" / "rgba.png")
    Image.fromarray(m).save(root / "masks" / "rgba.png")
    if gt:
        Image.fromarray(g).save(root / "gt" / "rgba.png")
    src, g, m = scene(64, 48, 11)                       # 16-bit gray source
    gray16 = (src.mean(-1).astype(np.uint16) * 257)
    Image.fromarray(gray16).save(root / "images" / "gray16.png")
    Image.fromarray(m).save(root / "masks" / "gray16.png")
    if gt:
        Image.fromarray(g).save(root / "gt" / "gray16.png")
    src, g, m = scene(48, 64, 12)                       # shown 48x64; stored 64x48 with EXIF "rotate 90 CW"
    stored = Image.fromarray(src).transpose(Image.Transpose.ROTATE_90)   # undone by orientation 6
    exif = Image.Exif()
    exif[0x0112] = 6
    stored.save(root / "images" / "rotated.jpg", quality=95, exif=exif)
    Image.fromarray(m).save(root / "masks" / "rotated.png")
    if gt:
        Image.fromarray(g).save(root / "gt" / "rotated.png")
    return root
