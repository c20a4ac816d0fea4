"""Pure agreement metrics of a discriminator against human (or simulated) labels, numpy only.

Inputs are aligned 1-D arrays: ``labels`` in [0, 1] (1 = good removal; soft labels, e.g. the mean of
several annotators, are thresholded at 0.5 where a class is needed) and ``scores`` (probabilities
for the "bce" discriminator, RORem's softplus score otherwise). RORem reports that the success rate
its discriminator estimates deviates from the human one by less than 3 points.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence

import numpy as np

from rorem_core.evaluation.metrics import wilson_ci95


def _arrays(labels, scores) -> tuple[np.ndarray, np.ndarray]:
    y, s = np.asarray(labels, np.float64).ravel(), np.asarray(scores, np.float64).ravel()
    if y.shape != s.shape:
        raise ValueError(f"labels {y.shape} and scores {s.shape} must be aligned 1-D arrays")
    return y, s


def accuracy(labels, scores, threshold: float = 0.5) -> float:
    """mean( [score > threshold] == [label > 0.5] )."""
    y, s = _arrays(labels, scores)
    return float(np.mean((s > threshold) == (y > 0.5))) if len(y) else float("nan")


def average_ranks(x: np.ndarray) -> np.ndarray:
    """1-based ranks of ``x`` with ties given their average rank (as scipy.stats.rankdata)."""
    order = np.argsort(x, kind="mergesort")
    xs = x[order]
    # boundaries of runs of equal values in the sorted array
    starts = np.flatnonzero(np.r_[True, xs[1:] != xs[:-1]])
    ends = np.r_[starts[1:], len(xs)]
    ranks = np.empty(len(x), np.float64)
    for a, b in zip(starts, ends):
        ranks[order[a:b]] = (a + 1 + b) / 2.0   # mean of ranks a+1 .. b
    return ranks


def roc_auc(labels, scores) -> float | None:
    """Area under the ROC curve by the rank (Mann-Whitney U) formula, ties counted 1/2:

        AUC = (sum_{i: y_i = 1} rank_i - n_pos (n_pos + 1) / 2) / (n_pos n_neg)

    None when only one class is present (AUC undefined)."""
    y, s = _arrays(labels, scores)
    pos = y > 0.5
    n_pos, n_neg = int(pos.sum()), int((~pos).sum())
    if n_pos == 0 or n_neg == 0:
        return None
    r = average_ranks(s)
    return float((r[pos].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def within_group_auc(labels, scores, groups) -> dict:
    """ROC-AUC over pairs of the SAME group only (a stratified AUC): for every group holding both
    classes, every (good i, bad j) pair of its members counts psi(s_i, s_j) = 1 if s_i > s_j, 1/2 if
    equal, 0 else, and

        AUC_within = sum of psi over those pairs / their number      (None when there is no such pair)

    With groups = inputs (the K candidates of one input) it says whether the discriminator tells a clean
    candidate from a failed one of the same input, which is what best-of-K selection, auto-acceptance
    among siblings and RL's group baseline need; the plain AUC also rewards telling easy inputs from
    hard ones. Returns {auc, n_pairs, n_groups (groups with both classes)}."""
    y, s = _arrays(labels, scores)
    groups = list(groups)
    if len(groups) != len(y):
        raise ValueError(f"within_group_auc: {len(groups)} groups for {len(y)} samples")
    members: dict = defaultdict(list)
    for i, g in enumerate(groups):
        members[g].append(i)
    wins, pairs, n_groups = 0.0, 0, 0
    for idx in members.values():
        good = s[idx][y[idx] > 0.5]
        bad = s[idx][y[idx] <= 0.5]
        if len(good) and len(bad):
            d = good[:, None] - bad[None, :]
            wins += float((d > 0).sum() + 0.5 * (d == 0).sum())
            pairs, n_groups = pairs + d.size, n_groups + 1
    return {"auc": wins / pairs if pairs else None, "n_pairs": pairs, "n_groups": n_groups}


def roc_auc_ci95(labels, scores, z: float = 1.959963984540054) -> tuple[float, float] | None:
    """DeLong's 95 % interval of the ROC-AUC (normal approximation, clipped to [0, 1]). With
    psi(x, y) = 1 if x > y, 1/2 if equal, 0 else, over m positives x_i and n negatives y_j:

        V10_i = mean_j psi(x_i, y_j),  V01_j = mean_i psi(x_i, y_j),  AUC = mean(V10)
        var(AUC) = var(V10) / m + var(V01) / n          (sample variances, ddof 1)

    None when a class has fewer than 2 samples (no variance to estimate)."""
    y, s = _arrays(labels, scores)
    pos, neg = s[y > 0.5], s[y <= 0.5]
    if len(pos) < 2 or len(neg) < 2:
        return None
    psi = (pos[:, None] > neg[None, :]) + 0.5 * (pos[:, None] == neg[None, :])   # (m, n)
    v10, v01 = psi.mean(axis=1), psi.mean(axis=0)
    auc = float(v10.mean())
    half = z * float(np.sqrt(v10.var(ddof=1) / len(pos) + v01.var(ddof=1) / len(neg)))
    return (max(0.0, auc - half), min(1.0, auc + half))


def expected_calibration_error(labels, probs, bins: int = 10) -> float:
    """ECE with ``bins`` equal-width bins on [0, 1] (probabilities clipped into it):

        ECE = sum_b (n_b / n) | mean_{i in b} y_i - mean_{i in b} p_i |

    Bin b holds p in [b/B, (b+1)/B), the last bin also p = 1. Labels may be soft."""
    y, p = _arrays(labels, probs)
    if not len(y):
        return float("nan")
    p = np.clip(p, 0.0, 1.0)
    idx = np.minimum((p * bins).astype(int), bins - 1)
    ece = 0.0
    for b in range(bins):
        sel = idx == b
        if sel.any():
            ece += sel.mean() * abs(y[sel].mean() - p[sel].mean())
    return float(ece)


def agreement(labels, scores, *, threshold: float = 0.5, bins: int = 10) -> dict:
    """All metrics of one group: n, accuracy, roc_auc (+ DeLong ``roc_auc_ci95``), ece, and success rates:
    ``human_success_rate`` = mean label, ``est_success_rate`` = fraction scored > threshold (RORem's
    estimate), ``est_success_rate_mean`` = mean clipped score (the calibrated expectation),
    ``success_rate_deviation`` = |est - human| (RORem: < 0.03)."""
    y, s = _arrays(labels, scores)
    human, est = float(y.mean()) if len(y) else float("nan"), float((s > threshold).mean()) if len(y) else float("nan")
    return {"n": int(len(y)), "n_good": int((y > 0.5).sum()), "accuracy": accuracy(y, s, threshold),
            "roc_auc": roc_auc(y, s), "roc_auc_ci95": _listed(roc_auc_ci95(y, s)),
            "ece": expected_calibration_error(y, s, bins),
            "human_success_rate": human, "est_success_rate": est,
            "est_success_rate_mean": float(np.clip(s, 0, 1).mean()) if len(y) else float("nan"),
            "success_rate_deviation": abs(est - human)}


def wilson_lower95(good, n):
    """Lower end of the Wilson 95 % interval of good / n, elementwise; 0 where n = 0: the interval every
    success rate of the project is printed with (evaluation/metrics.wilson_ci95, formula there)."""
    return wilson_ci95(good, n)[0]


def precision_threshold(labels, scores, min_precision: float, min_support: int = 10, bound: str = "estimate") -> dict:
    """The threshold that auto-accepts as much as it can while held-out labels say it stays precise.

    Cuts lie just below each distinct score ``s`` (``t = nextafter(s, -inf)``, so ``score > t`` keeps
    every item scoring >= s). For a cut, ``n(t) = #{score > t}`` and ``precision(t) = #{good, score > t}
    / n(t)`` (good: label >= 0.5). The result is the LOWEST cut with ``n(t) >= min_support`` and
    ``precision(t) >= min_precision`` (most accepted); when no cut qualifies, ``threshold`` is +inf:
    accept nothing. ``bound="lower95"`` asks it of the lower end of precision(t)'s Wilson 95 % interval
    instead of the estimate: the lowest qualifying cut of many noisy estimates is biased high (26 held-out
    labels at 92 % gave 77 % on the unreviewed candidates, docs/judge.md). Returns {threshold, precision,
    precision_lower95, n_above, n_heldout, min_precision, min_support, bound}."""
    if bound not in ("estimate", "lower95"):
        raise ValueError(f"precision_threshold: bound={bound!r}; use 'estimate' or 'lower95'")
    y, s = _arrays(labels, scores)
    order = np.argsort(-s, kind="stable")              # highest score first: n(t) grows down the list
    ss, good = s[order], np.cumsum(y[order] >= 0.5)
    ends = np.flatnonzero(np.r_[ss[1:] != ss[:-1], True])   # last item of each distinct score: ties together
    n, prec, lower = ends + 1, good[ends] / (ends + 1), wilson_lower95(good[ends], ends + 1)
    ok = np.flatnonzero((n >= min_support) & ((prec if bound == "estimate" else lower) >= min_precision))
    best = {"threshold": float("inf"), "precision": None, "precision_lower95": None, "n_above": 0}
    if len(ok):
        i = ok[-1]                                      # the lowest qualifying cut
        best = {"threshold": float(np.nextafter(ss[ends[i]], -np.inf)), "precision": float(prec[i]),
                "precision_lower95": float(lower[i]), "n_above": int(n[i])}
    return {**best, "n_heldout": int(len(y)), "min_precision": min_precision, "min_support": min_support,
            "bound": bound}


def _listed(ci: tuple[float, float] | None) -> list[float] | None:
    return None if ci is None else [ci[0], ci[1]]   # JSON-friendly, as success_ci95


def grouped_agreement(labels, scores, groups: Mapping[str, Sequence[str | None]] | None = None, *,
                      threshold: float = 0.5, bins: int = 10) -> dict[str, dict]:
    """``agreement`` overall ("all") and per value of each grouping, e.g. groups={"band": [...]} gives
    "band_easy", "band_hard"; samples whose value is None are only counted in "all"."""
    y, s = _arrays(labels, scores)
    out = {"all": agreement(y, s, threshold=threshold, bins=bins)}
    for name, values in (groups or {}).items():
        if len(values) != len(y):
            raise ValueError(f"group {name!r} has {len(values)} values for {len(y)} samples")
        members: dict[str, list[int]] = defaultdict(list)
        for i, v in enumerate(values):
            if v is not None:
                members[f"{name}_{v}"].append(i)
        for key in sorted(members):
            sel = np.array(members[key])
            out[key] = agreement(y[sel], s[sel], threshold=threshold, bins=bins)
    return out
