"""Deterministic synthetic removal scenes: seed triplets, per-round pools with hidden GT, test split.

A scene is a background (two-colour linear gradient + one texture) with one anti-aliased object
(4x supersampled, area-downsampled) and optionally its cast shadow. GT = background; source = the
composite; mask = dilate((alpha > 0.02) | (shadow > 0.05)), so the shadow belongs to the object and
``source == GT`` exactly outside the mask. Lengths are given at 64 px and scaled by ``size / 64``.

Scene ``i`` of a split depends only on ``(salt, i, band)``: ``numpy.random.default_rng`` (PCG64, the
same stream on every platform) is seeded from ``[sha256(salt), i]``, so splits with different salts
never share scenes. Pixel values are reproducible; PNG bytes also depend on the zlib version.

Bands give the rounds something to learn (DESIGN §6): ``easy`` (mostly the seed triplets: small
objects, rare shadows, calm textures) and ``hard`` (mostly the pools: larger objects, frequent
shadows, checker and busy textures). The gap is moderate, so an easy-trained remover mostly works.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict

from rorem_core.config.presets import SyntheticConfig
from rorem_core.data.formats import PoolItem, Triplet, write_entries
from rorem_core.data.images import save_png
from rorem_core.data.masks import dilate
from rorem_core.io import atomic_dir, write_json_atomic

SHAPES = ("circle", "ellipse", "rectangle", "triangle", "star", "ring")
TEXTURES = ("none", "stripes", "checker", "noise", "dots", "wood")
SS = 4  # supersampling factor for the object alpha (anti-aliased edges)


class BandSpec(BaseModel):
    """Distribution of one difficulty band; lengths in px at 64 px image size."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    radius: tuple[float, float]       # object radius range, px at 64 px
    shadow_prob: float                # probability of a cast shadow
    textures: dict[str, float]        # texture name -> relative weight (names from TEXTURES)


BANDS: dict[str, BandSpec] = {
    "easy": BandSpec(radius=(6, 12), shadow_prob=0.1,
                     textures={"none": 0.3, "stripes": 0.25, "noise": 0.3, "checker": 0.1, "dots": 0.05}),
    "hard": BandSpec(radius=(10, 16), shadow_prob=0.6,
                     textures={"none": 0.1, "stripes": 0.15, "noise": 0.15, "checker": 0.2,
                               "dots": 0.2, "wood": 0.2}),
}


def band_spec(cfg: SyntheticConfig, band: str) -> BandSpec:
    """The band's scene spec with the config's cast-shadow probability."""
    prob = {"easy": cfg.easy_shadow_prob, "hard": cfg.hard_shadow_prob}[band]
    return BANDS[band].model_copy(update={"shadow_prob": prob})


@dataclass
class Scene:
    """source / gt: float32 (H, W, 3) in [0, 1]; mask: bool (H, W); info: shape, texture, shadow, band."""

    source: np.ndarray
    gt: np.ndarray
    mask: np.ndarray
    info: dict[str, Any] = field(default_factory=dict)


def _salt_int(salt: str) -> int:
    return int.from_bytes(hashlib.sha256(salt.encode("utf-8")).digest()[:8], "little")


def scene_band(index: int, salt: str, hard_fraction: float) -> str:
    """Band of scene ``index``: an independent coin per index, so scene i never depends on n."""
    u = np.random.default_rng([_salt_int(salt), index, 1]).random()
    return "hard" if u < hard_fraction else "easy"


# ---- background -------------------------------------------------------------------------------

@lru_cache(maxsize=32)
def _cubic_matrix(n: int, g: int) -> np.ndarray:
    """(n, g) Keys-cubic (a=-0.5) upsampling weights, pixel-centre aligned, replicated border."""
    x = (np.arange(n) + 0.5) * g / n - 0.5
    base = np.floor(x).astype(int)
    w = np.zeros((n, g))
    for k in range(-1, 3):
        d = np.abs(x - (base + k))
        wk = np.where(d <= 1, 1.5 * d**3 - 2.5 * d**2 + 1,
                      np.where(d < 2, -0.5 * d**3 + 2.5 * d**2 - 4 * d + 2, 0.0))
        np.add.at(w, (np.arange(n), np.clip(base + k, 0, g - 1)), wk)
    return w


def _smooth_noise(rng: np.random.Generator, n: int, g: int) -> np.ndarray:
    """Low-frequency noise: a (g, g) random grid upsampled bicubically to (n, n), max |v| = 1."""
    m = _cubic_matrix(n, g)
    v = m @ rng.standard_normal((g, g)) @ m.T
    return v / max(np.abs(v).max(), 1e-6)


def _soft_square(t: np.ndarray, cell: float, edge: float) -> np.ndarray:
    """Square wave of ``cell``-px half-period in about {-1, 1} along pixel-centre coordinate ``t``,
    its transitions linear over ``edge`` px (centred on the cell boundary)."""
    phase = t / cell
    d = np.minimum(phase % 1.0, 1.0 - phase % 1.0) * cell       # px to the nearest boundary
    sign = np.where(np.floor(phase) % 2 == 0, 1.0, -1.0)
    return sign * np.clip(d / (edge / 2), 0.0, 1.0)


def _texture(rng: np.random.Generator, name: str, n: int, scale: float = 1.0) -> np.ndarray:
    """(n, n) pattern in about [-1, 1]; periods/cells are drawn at 64 px and scaled by ``n / 64``.

    ``scale`` (``SyntheticConfig.texture_scale``) multiplies every texture length (stripe and wood
    periods, wood warp, checker and dot cells, dot radius, noise correlation length) and softens
    edges to ``scale`` px, so that the tiny autoencoder's 16x16 latent (one latent pixel per 4 px)
    can hold the texture at ``scale >= 4`` (docs/judge.md). ``scale == 1`` draws exactly the scenes
    of before the option existed (same random stream, hard checker edges, 1-px dot edges)."""
    s = n / 64 * scale
    y, x = np.mgrid[0:n, 0:n].astype(np.float64) + 0.5
    phi = rng.uniform(0, np.pi)
    u = x * np.cos(phi) + y * np.sin(phi)
    if name == "none":
        return np.zeros((n, n))
    if name == "stripes":
        return np.sin(2 * np.pi * u / (rng.uniform(6, 16) * s) + rng.uniform(0, 2 * np.pi))
    if name == "checker":
        c = max(1, int(round(rng.integers(4, 13) * s)))
        ox, oy = rng.integers(0, c, 2)
        if scale <= 1:
            return (((x.astype(int) + ox) // c + (y.astype(int) + oy) // c) % 2) * 2.0 - 1.0
        edge = 2 * scale      # px; 2x (not 1x) the latent pixel at scale 4: chosen on a probe split (docs/judge.md)
        return _soft_square(x + ox, c, edge) * _soft_square(y + oy, c, edge)
    if name == "noise":
        return _smooth_noise(rng, n, max(2, int(round(int(rng.integers(4, 9)) / scale))))
    if name == "wood":  # fine rings warped by smooth noise: busy, anisotropic
        g = max(2, int(round(5 / scale)))      # warp correlation length x scale (as far as a grid allows) ...
        warp = rng.uniform(3, 7) * (s * 5 / scale / g) * _smooth_noise(rng, n, g)   # ... and its slope kept
        return np.sin(2 * np.pi * (u + warp) / (rng.uniform(3, 5) * s))
    if name == "dots":  # one soft dot per jittered cell: dense, high-frequency
        c = max(3, int(round(rng.uniform(4, 6) * s)))
        g = -(-n // c)
        rad = rng.uniform(1.0, 1.8) * s
        centre = rng.uniform(rad, c - rad, (2, g, g))
        sign = rng.choice([-1.0, 1.0], (g, g)) * rng.uniform(0.5, 1.0, (g, g))
        iy, ix = (y // c).astype(int), (x // c).astype(int)
        d = np.hypot(y - iy * c - centre[0][iy, ix], x - ix * c - centre[1][iy, ix])
        if scale <= 1:
            return sign[iy, ix] * np.clip(rad - d + 0.5, 0, 1)
        bump = 1.3 * rad      # raised-cosine dot (a plateau with linear edges loses its edges in the latent)
        return sign[iy, ix] * np.where(d < bump, 0.5 * (1 + np.cos(np.pi * np.minimum(d / bump, 1.0))), 0.0)
    raise ValueError(f"unknown texture {name!r}; use one of {TEXTURES}")


def _background(rng: np.random.Generator, n: int, texture: str, scale: float = 1.0) -> np.ndarray:
    """Two-colour linear gradient in a random direction plus ``texture``: (n, n, 3) in [0, 1]."""
    c0, c1 = rng.uniform(0.1, 0.9, (2, 3))
    th = rng.uniform(0, 2 * np.pi)
    y, x = np.mgrid[0:n, 0:n] + 0.5
    p = x * np.cos(th) + y * np.sin(th)
    t = (p - p.min()) / max(np.ptp(p), 1e-6)
    bg = c0 + (c1 - c0) * t[..., None]
    amp = rng.uniform(0.05, 0.2)
    tint = rng.uniform(0.7, 1.3, 3)
    return np.clip(bg + amp * _texture(rng, texture, n, scale)[..., None] * tint, 0, 1)


# ---- object and shadow ------------------------------------------------------------------------

def _inside(shape: str, u: np.ndarray, v: np.ndarray, r: float, rng: np.random.Generator) -> np.ndarray:
    """Boolean inside-test in object coordinates (u, v rotated, centred), radius r (px)."""
    rho = np.hypot(u, v)
    if shape == "circle":
        return rho <= r
    if shape == "ellipse":
        return (u / r) ** 2 + (v / (r * rng.uniform(0.45, 0.8))) ** 2 <= 1
    if shape == "rectangle":
        a, b = rng.uniform(0.75, 1.0), rng.uniform(0.45, 0.85)
        return (np.abs(u) <= r * a) & (np.abs(v) <= r * b)
    if shape == "triangle":
        ang = np.arange(3) * 2 * np.pi / 3 + rng.uniform(-0.25, 0.25, 3)
        vx, vy = r * np.cos(ang), r * np.sin(ang)
        cross = [(vx[(k + 1) % 3] - vx[k]) * (v - vy[k]) - (vy[(k + 1) % 3] - vy[k]) * (u - vx[k])
                 for k in range(3)]
        return (cross[0] >= 0) & (cross[1] >= 0) & (cross[2] >= 0)  # vertices counter-clockwise
    if shape == "star":
        k, r_in = int(rng.integers(4, 7)), r * rng.uniform(0.4, 0.55)
        f = (np.arctan2(v, u) * k / (2 * np.pi)) % 1.0
        return rho <= r_in + (r - r_in) * np.abs(2 * f - 1)  # points at f = 0, valleys at f = 0.5
    if shape == "ring":
        return (rho <= r) & (rho >= r * rng.uniform(0.45, 0.65))
    raise ValueError(f"unknown shape {shape!r}; use one of {SHAPES}")


def _alpha(rng: np.random.Generator, n: int, shape: str, cx: float, cy: float, r: float) -> np.ndarray:
    """Object coverage (n, n) in [0, 1]: SS x SS samples per pixel inside a bounding window."""
    theta = rng.uniform(0, 2 * np.pi)
    R = 1.45 * r  # bounds every shape (rectangle half-diagonal <= 1.28 r)
    x0, y0 = max(0, int(cx - R)), max(0, int(cy - R))
    x1, y1 = min(n, int(np.ceil(cx + R)) + 1), min(n, int(np.ceil(cy + R)) + 1)
    ys = y0 + (np.arange((y1 - y0) * SS) + 0.5) / SS - cy
    xs = x0 + (np.arange((x1 - x0) * SS) + 0.5) / SS - cx
    dx, dy = np.meshgrid(xs, ys)
    u = dx * np.cos(theta) + dy * np.sin(theta)
    v = -dx * np.sin(theta) + dy * np.cos(theta)
    cov = _inside(shape, u, v, r, rng).reshape(y1 - y0, SS, x1 - x0, SS).mean(axis=(1, 3))
    alpha = np.zeros((n, n))
    alpha[y0:y1, x0:x1] = cov
    return alpha


@lru_cache(maxsize=32)
def _gauss_matrix(n: int, sigma: float) -> np.ndarray:
    """(n, n) 1-D Gaussian blur operator, zero outside the image (shadow fades off the edge)."""
    i = np.arange(n)
    g = np.exp(-((i[:, None] - i[None, :]) ** 2) / (2 * sigma**2))
    return g / (sigma * np.sqrt(2 * np.pi))


def _shadow(rng: np.random.Generator, alpha: np.ndarray, s: float) -> np.ndarray:
    """Alpha shifted 2-5 px (x s) in a random direction, Gaussian-blurred (sigma 1.5 s): (n, n)."""
    n = alpha.shape[0]
    ang, dist = rng.uniform(0, 2 * np.pi), rng.uniform(2, 5) * s
    dx, dy = int(round(dist * np.cos(ang))), int(round(dist * np.sin(ang)))
    shifted = np.zeros_like(alpha)
    shifted[max(dy, 0):n + min(dy, 0), max(dx, 0):n + min(dx, 0)] = \
        alpha[max(-dy, 0):n - max(dy, 0), max(-dx, 0):n - max(dx, 0)]
    g = _gauss_matrix(n, 1.5 * s)
    return np.clip(g @ shifted @ g.T, 0, 1)


def _pick(rng: np.random.Generator, weights: dict[str, float]) -> str:
    names = list(weights)
    p = np.array([weights[k] for k in names], dtype=np.float64)
    return names[int(rng.choice(len(names), p=p / p.sum()))]


def make_scene(index: int, *, size: int = 64, band: str = "easy", salt: str = "0:seed",
               spec: BandSpec | None = None, texture_scale: float = 1.0) -> Scene:
    """Scene ``index`` of the split named by ``salt`` (see module docstring); ``spec`` overrides BANDS;
    ``texture_scale``: see :func:`_texture`."""
    if band not in BANDS:
        raise ValueError(f"unknown band {band!r}; use one of {sorted(BANDS)}")
    spec = spec or BANDS[band]
    rng = np.random.default_rng([_salt_int(salt), index, 0])
    n, s = size, size / 64
    texture, shape = _pick(rng, spec.textures), SHAPES[int(rng.integers(len(SHAPES)))]
    bg = _background(rng, n, texture, texture_scale)
    r = rng.uniform(*spec.radius) * s
    margin = r + 2 * s
    cx, cy = rng.uniform(margin, n - margin, 2) if n > 2 * margin else (n / 2, n / 2)
    alpha = _alpha(rng, n, shape, cx, cy, r)
    colour = rng.uniform(0, 1, 3)
    for _ in range(8):  # keep the object visible against the local background
        if np.linalg.norm(colour - bg[int(cy), int(cx)]) >= 0.3:
            break
        colour = rng.uniform(0, 1, 3)
    y = np.arange(n)[:, None] + 0.5
    shade = 1 + rng.uniform(-0.25, 0.25) * (y - cy) / r if rng.random() < 0.5 else np.ones((n, 1))
    obj = np.clip(colour * shade[..., None], 0, 1)  # (n, 1, 3) -> broadcast over columns
    has_shadow = bool(rng.random() < spec.shadow_prob)
    shadow = _shadow(rng, alpha, s) if has_shadow else np.zeros_like(alpha)
    shadowed = bg * (1 - shadow * (1 - rng.uniform(0.4, 0.7)))[..., None]  # bg x 0.4-0.7 at full shadow
    comp = shadowed * (1 - alpha[..., None]) + obj * alpha[..., None]
    mask = dilate((alpha > 0.02) | (shadow > 0.05), max(1, round(2 * s)))
    source = np.where(mask[..., None], comp, bg)  # exact GT outside the mask
    info = {"shape": shape, "texture": texture, "shadow": has_shadow, "band": band,
            "radius": round(float(r), 3), "mask_fraction": round(float(mask.mean()), 5)}
    return Scene(source.astype(np.float32), bg.astype(np.float32), mask, info)


# ---- writers ------------------------------------------------------------------------------------

def _scenes(cfg: SyntheticConfig, split: str, n: int, hard_fraction: float):
    salt = cfg.salt(split)
    for i in range(n):
        band = scene_band(i, salt, hard_fraction)
        yield i, make_scene(i, size=cfg.size, band=band, salt=salt, spec=band_spec(cfg, band),
                            texture_scale=cfg.texture_scale)


def write_triplets(out_dir: str | Path, cfg: SyntheticConfig, split: str, n: int,
                   hard_fraction: float) -> list[Triplet]:
    """Write ``n`` triplets in RORem layout (source/, mask/, GT/, meta.json); the folder is swapped in
    atomically. Entries carry extra keys ``id``, ``band``, ``shape``, ``texture``, ``shadow``."""
    entries = []
    with atomic_dir(out_dir) as tmp:
        for i, sc in _scenes(cfg, split, n, hard_fraction):
            sid = f"{split}-{i:05d}"
            rel = {k: f"{k}/{sid}.png" for k in ("source", "mask", "GT")}
            for key, arr in (("source", sc.source), ("mask", sc.mask), ("GT", sc.gt)):
                save_png(tmp / rel[key], arr)
            entries.append(Triplet(**rel, id=sid, band=sc.info["band"], shape=sc.info["shape"],
                                   texture=sc.info["texture"], shadow=sc.info["shadow"]))
        write_entries(tmp / "meta.json", entries)
    return entries


def write_pool(pool_dir: str | Path, hidden_dir: str | Path, cfg: SyntheticConfig,
               round_id: int) -> list[PoolItem]:
    """Write pool ``round_id`` (meta.json [{id, source, mask, band}], source/, mask/) and its hidden
    ground truth (meta.json [{id, GT, band, shape, texture, shadow}], GT/), each folder atomically."""
    split, items, hidden = f"pool-{round_id}", [], []
    with atomic_dir(pool_dir) as ptmp, atomic_dir(hidden_dir) as htmp:
        for i, sc in _scenes(cfg, split, cfg.pool_size, cfg.pool_hard_fraction):
            pid = f"r{round_id}-p{i:04d}"
            save_png(ptmp / "source" / f"{pid}.png", sc.source)
            save_png(ptmp / "mask" / f"{pid}.png", sc.mask)
            save_png(htmp / "GT" / f"{pid}.png", sc.gt)
            items.append(PoolItem(id=pid, source=f"source/{pid}.png", mask=f"mask/{pid}.png",
                                  band=sc.info["band"]))
            hidden.append({"id": pid, "GT": f"GT/{pid}.png", **{k: sc.info[k] for k in
                                                               ("band", "shape", "texture", "shadow")}})
        write_entries(ptmp / "meta.json", items)
        write_json_atomic(htmp / "meta.json", hidden)
    return items


def write_all(cfg: SyntheticConfig, data_root: str | Path) -> dict[str, Any]:
    """Write data_root/{seed, test, pools/round-N, hidden/round-N}; returns per-split counts."""
    root = Path(data_root)
    summary: dict[str, Any] = {}
    for split, n, frac in (("seed", cfg.n_seed, cfg.seed_hard_fraction),
                           ("test", cfg.n_test, cfg.test_hard_fraction)):
        summary[split] = _counts(write_triplets(root / split, cfg, split, n, frac))
    for k in range(1, cfg.n_pools + 1):
        items = write_pool(root / "pools" / f"round-{k}", root / "hidden" / f"round-{k}", cfg, k)
        summary[f"pool-{k}"] = _counts(items)
    return summary


def _counts(entries: list[Any]) -> dict[str, int]:
    bands = [getattr(e, "band", None) for e in entries]
    return {"n": len(entries), "n_hard": bands.count("hard"), "n_easy": bands.count("easy")}


__all__ = ["BANDS", "SHAPES", "TEXTURES", "BandSpec", "Scene", "SyntheticConfig", "make_scene",
           "scene_band", "write_all", "write_pool", "write_triplets"]
