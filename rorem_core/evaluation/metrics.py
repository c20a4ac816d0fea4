"""Pure image metrics and the oracle success criterion.

Images are float arrays in [0, 1], shape (H, W, 3); masks are boolean (H, W), True = removed region.
The oracle (used by evaluation and by simulated annotators, which see the hidden ground truth):
a removal is a **success** when its masked PSNR against the ground truth is >= ``ORACLE_PSNR_DB``
(20 dB, i.e. RMSE <= 0.1 inside the mask). On the synthetic data this separates methods well
(leave-the-object ~6 %, TELEA / ring fill ~84 %; docs/foundation.md).
"""

from __future__ import annotations

import math

import numpy as np

ORACLE_PSNR_DB = 20.0
PSNR_CAP_DB = 60.0  # identical pixels would give +inf; cap so means stay finite


def _psnr_from_mse(mse: float) -> float:
    if mse <= 10 ** (-PSNR_CAP_DB / 10):
        return PSNR_CAP_DB
    return float(-10.0 * math.log10(mse))


def masked_psnr(pred: np.ndarray, gt: np.ndarray, mask: np.ndarray) -> float:
    """PSNR (dB, peak 1.0) over the pixels where ``mask`` is True, all 3 channels."""
    m = mask.astype(bool)
    if not m.any():
        raise ValueError("masked_psnr: the mask is empty; an empty mask has no removal region")
    diff = (pred.astype(np.float64) - gt.astype(np.float64))[m]
    return _psnr_from_mse(float(np.mean(diff * diff)))


def unmasked_psnr(pred: np.ndarray, gt: np.ndarray, mask: np.ndarray) -> float:
    """PSNR (dB) over the pixels outside the mask: how well the background is preserved."""
    m = ~mask.astype(bool)
    if not m.any():
        return PSNR_CAP_DB
    diff = (pred.astype(np.float64) - gt.astype(np.float64))[m]
    return _psnr_from_mse(float(np.mean(diff * diff)))


def oracle_success(pred: np.ndarray, gt: np.ndarray, mask: np.ndarray,
                   threshold_db: float = ORACLE_PSNR_DB) -> bool:
    """The oracle judgement: masked PSNR >= ``threshold_db``."""
    return masked_psnr(pred, gt, mask) >= threshold_db


Z95 = 1.959963984540054   # two-sided 95 % normal quantile


def wilson_ci95(successes, n) -> tuple[np.ndarray, np.ndarray]:
    """Wilson 95 % interval of successes / n, elementwise over arrays; (0, 1) where n = 0:

        centre +- half = (p + z^2 / 2n +- z sqrt(p (1 - p) / n + z^2 / 4n^2)) / (1 + z^2 / n),  p = k / n"""
    k, n = np.asarray(successes, np.float64), np.asarray(n, np.float64)
    safe, z = np.maximum(n, 1.0), Z95
    p = k / safe
    denom = 1 + z * z / safe
    centre = (p + z * z / (2 * safe)) / denom
    half = z * np.sqrt(p * (1 - p) / safe + z * z / (4 * safe * safe)) / denom
    return np.where(n > 0, np.maximum(0.0, centre - half), 0.0), np.where(n > 0, np.minimum(1.0, centre + half), 1.0)


def proportion_ci95(successes: int, n: int) -> tuple[float, float]:
    """Wilson 95 % interval for a success rate (used wherever a rate is printed)."""
    lo, hi = wilson_ci95(successes, n)
    return (float(lo), float(hi))


def paired_ci95(before, after) -> dict:
    """Mean paired difference (after - before) with a normal-approximation 95 % interval
    (mean +- 1.96 sd / sqrt(n), sd with ddof 1); n is the number of paired items (inputs or test
    images). One pair has no spread to estimate: its interval is infinite."""
    d = np.asarray(after, dtype=np.float64) - np.asarray(before, dtype=np.float64)
    n = len(d)
    if n == 0:
        return {"n": 0, "before": float("nan"), "after": float("nan"), "delta": float("nan"), "ci95": [float("nan")] * 2}
    half = Z95 * d.std(ddof=1) / math.sqrt(n) if n > 1 else float("inf")
    return {"n": n, "before": float(np.mean(before)), "after": float(np.mean(after)), "delta": float(d.mean()),
            "ci95": [float(d.mean() - half), float(d.mean() + half)]}
