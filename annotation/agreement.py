"""Inter-annotator agreement for nominal labels (pure).

Input everywhere: one list of category labels per item (task), one entry per annotator who gave a
valid label; items may have different numbers of labels. Items with fewer than two labels carry no
agreement information and are left out.
"""

from __future__ import annotations

from collections import Counter
from typing import Sequence


def _pairable(items: Sequence[Sequence[str]]) -> list[Sequence[str]]:
    return [labels for labels in items if len(labels) >= 2]


def percent_agreement(items: Sequence[Sequence[str]]) -> float | None:
    """Mean over items of the fraction of agreeing ordered annotator pairs, P_i below."""
    use = _pairable(items)
    if not use:
        return None
    return sum(_p_item(Counter(labels), len(labels)) for labels in use) / len(use)


def _p_item(counts: Counter, n: int) -> float:
    return (sum(c * c for c in counts.values()) - n) / (n * (n - 1))


def fleiss_kappa(items: Sequence[Sequence[str]]) -> float | None:
    """Fleiss' kappa, generalised to a varying number of raters n_i per item.

    P_i = (sum_j n_ij^2 - n_i) / (n_i (n_i - 1)),  P = mean_i P_i,
    p_j = sum_i n_ij / sum_i n_i,  P_e = sum_j p_j^2,  kappa = (P - P_e) / (1 - P_e).
    None when undefined (no item with two labels, or every label in one category: P_e = 1).
    """
    use = _pairable(items)
    if not use:
        return None
    p_bar = sum(_p_item(Counter(labels), len(labels)) for labels in use) / len(use)
    totals = Counter(label for labels in use for label in labels)
    n_all = sum(totals.values())
    p_e = sum((c / n_all) ** 2 for c in totals.values())
    if p_e >= 1.0 - 1e-12:
        return None
    return (p_bar - p_e) / (1.0 - p_e)


def krippendorff_alpha(items: Sequence[Sequence[str]]) -> float | None:
    """Krippendorff's alpha for nominal data (missing labels allowed).

    Coincidences o_ck = sum_u sum_{i != j in u} [c_i = c][c_j = k] / (m_u - 1), n_c = sum_k o_ck,
    n = sum_c n_c; alpha = 1 - (n - 1) * sum_{c != k} o_ck / sum_{c != k} n_c n_k.
    None when undefined (fewer than two pairable labels, or a single category overall).
    """
    use = _pairable(items)
    if not use:
        return None
    disagree = 0.0                 # sum_{c != k} o_ck
    n_c: Counter = Counter()
    for labels in use:
        m = len(labels)
        counts = Counter(labels)
        for c, cnt in counts.items():
            n_c[c] += cnt          # each value contributes (m - 1) / (m - 1) = 1 to n_c
            disagree += cnt * (m - cnt) / (m - 1)
    n = sum(n_c.values())
    expected = n * n - sum(v * v for v in n_c.values())  # sum_{c != k} n_c n_k
    if expected <= 0:
        return None
    return 1.0 - (n - 1) * disagree / expected


def agreement_summary(items: Sequence[Sequence[str]]) -> dict:
    """All statistics at once, with the number of items that had at least two labels."""
    use = _pairable(items)
    return {
        "items_with_2plus_labels": len(use),
        "labels": sum(len(l) for l in use),
        "percent_agreement": percent_agreement(use),
        "fleiss_kappa": fleiss_kappa(use),
        "krippendorff_alpha": krippendorff_alpha(use),
    }
