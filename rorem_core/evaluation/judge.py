"""The judge: was the object removed cleanly, as a person looking at source | result would say?

Full-reference pixel metrics (masked PSNR) reward blur: a flat or blurred patch is close to the GT in
mean square but a person sees it at once (ReMOVE, arXiv 2409.00707; PROVE's RC-S, arXiv 2605.14534).
This judge compares the fill *locally* with the GT and with its surroundings, from three statistics
(images float (H, W, 3) in [0, 1], mask bool (H, W), True = removed region):

- ``remains``: on the object's footprint (hole pixels where source and GT differ by > 0.15 in some
  channel), the fraction of pixels where the result is closer to the source than to the GT.
- ``smudge``: 95th percentile, over the hole grown by 1 px (the seam counts), of the colour length of
  the *low-pass* residual ``G_1.5 * (result - GT)`` (Gaussian, sigma 1.5 px): a ghost, a tone shift.
- ``texture``: RMS, over the same pixels, of the colour length of the *high-pass* residual
  ``(result - GT) - G_1 * (result - GT)``: stripes / dots / checker that do not continue, or speckle.

Both residual measures are divided by ``activity + FLOOR``, where ``activity`` is the RMS high-pass
contrast of the source on the 4-px ring around the hole: a busy surrounding hides an error that a
smooth one shows (contrast masking). Each measure over its threshold makes the result bad; the
reason is ``object_remains`` when that measure is over, else the measure furthest over.
``score = 1 - max(badness)`` (> 0 exactly when good) grades results for pairwise preference.
``REMAINS_MAX`` = 0.5 is fixed (closer to the source on most of the object); ``SMUDGE_MAX``,
``TEXTURE_MAX`` and ``FLOOR`` are fitted by ``python -m rorem_core.evaluation.judge_calibration`` on
the fit half of the human-judged calibration set ``tests/fixtures/judge_calibration`` (never on its
held-out half, where docs/judge.md reports the agreement).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from rorem_core.data.masks import dilate

REASONS = ("object_remains", "smudge", "texture_broken", "artifacts")
FOOTPRINT_DIFF = 0.15   # a hole pixel belongs to the object when source and GT differ by more than this
RING_PX = 4             # width of the surrounding ring whose texture masks errors, px
REMAINS_MAX = 0.5       # fixed a priori: the object remains when most of its footprint is kept
# fitted by `python -m rorem_core.evaluation.judge_calibration` on the calibration set's fit half (see docs/judge.md)
FLOOR = 0.003           # visibility floor of the masking denominator (colour-length units)
SMUDGE_MAX = 1.748      # low-pass residual / (activity + FLOOR)
TEXTURE_MAX = 0.558     # high-pass residual / (activity + FLOOR)


@dataclass(frozen=True)
class Verdict:
    good: bool
    reason: str | None          # one of REASONS when bad, None when good
    score: float                # 1 - max badness; > 0 exactly when good; higher = cleaner
    features: dict[str, float]  # remains, smudge, texture (normalised), activity


def _blur(x: np.ndarray, sigma: float) -> np.ndarray:
    return cv2.GaussianBlur(x.astype(np.float32), (0, 0), sigma, borderType=cv2.BORDER_REFLECT)


def _highpass(x: np.ndarray) -> np.ndarray:
    return x - _blur(x, 1.0)


def _rms(x: np.ndarray, where: np.ndarray) -> float:
    return float(np.sqrt(np.mean(x[where] ** 2))) if where.any() else 0.0


def check_inputs(source, mask, result, gt, where: str = "judge") -> tuple[np.ndarray, ...]:
    """Shapes and an empty mask, with one message naming ``where`` (the item) and the fix."""
    m = np.asarray(mask).astype(bool)
    arrs = [np.asarray(a, dtype=np.float32) for a in (source, result, gt)]
    for name, a in zip(("source", "result", "GT"), arrs):
        if a.ndim != 3 or a.shape[2] != 3:
            raise ValueError(f"{where}: {name} must be an RGB image (H, W, 3), got shape {a.shape}")
        if a.shape[:2] != m.shape:
            raise ValueError(f"{where}: mask is {m.shape[1]}x{m.shape[0]} px but {name} is "
                             f"{a.shape[1]}x{a.shape[0]} px; give a mask of the image's size")
    if not m.any():
        raise ValueError(f"{where}: the mask is empty (no pixel to remove); give the object's mask")
    return arrs[0], m, arrs[1], arrs[2]


def features(source, mask, result, gt, floor: float = FLOOR) -> dict[str, float]:
    """The judge's statistics (see the module docstring); inputs as in :func:`judge`."""
    src, m, res, gt = check_inputs(source, mask, result, gt)
    near, ring = dilate(m, 1), dilate(m, RING_PX) & ~m
    footprint = m & (np.abs(src - gt).max(-1) > FOOTPRINT_DIFF)
    closer_src = np.abs(res - src).max(-1) < np.abs(res - gt).max(-1)
    remains = float(closer_src[footprint].mean()) if footprint.any() else 0.0
    resid = res - gt
    activity = _rms(np.linalg.norm(_highpass(src), axis=-1), ring)
    low = np.linalg.norm(_blur(resid, 1.5), axis=-1)
    high = np.linalg.norm(_highpass(resid), axis=-1)
    denom = activity + floor
    return {"remains": remains, "smudge": float(np.percentile(low[near], 95)) / denom,
            "texture": _rms(high, near) / denom, "activity": activity,
            "fill_contrast": _rms(np.linalg.norm(_highpass(res), axis=-1), m),
            "gt_contrast": _rms(np.linalg.norm(_highpass(gt), axis=-1), m)}


def verdict(f: dict[str, float], smudge_max: float = SMUDGE_MAX, texture_max: float = TEXTURE_MAX) -> Verdict:
    """The decision from :func:`features` (thresholds overridable for fitting)."""
    texture_reason = "texture_broken" if f["fill_contrast"] < f["gt_contrast"] else "artifacts"
    badness = {"object_remains": f["remains"] / REMAINS_MAX, "smudge": f["smudge"] / smudge_max,
               texture_reason: f["texture"] / texture_max}
    worst = max(badness, key=badness.get)
    good = badness[worst] < 1.0
    # a kept object is what a person names first, whatever else is wrong around it
    reason = None if good else ("object_remains" if badness["object_remains"] >= 1.0 else worst)
    return Verdict(good=good, reason=reason, score=1.0 - badness[worst], features=f)


def judge(source, mask, result, gt) -> Verdict:
    """Good / bad with a reason and a graded score for one removal (arrays as in the module docstring)."""
    return verdict(features(source, mask, result, gt))


__all__ = ["REASONS", "Verdict", "check_inputs", "features", "judge", "verdict"]
