"""Agreement metrics against hand-computed values."""

from __future__ import annotations

import numpy as np
import pytest

from rorem_core.reward.metrics import (
    accuracy,
    agreement,
    average_ranks,
    expected_calibration_error,
    grouped_agreement,
    precision_threshold,
    roc_auc,
    roc_auc_ci95,
    wilson_lower95,
    within_group_auc,
)


def test_average_ranks_ties():
    np.testing.assert_allclose(average_ranks(np.array([0.3, 0.1, 0.3, 0.9])), [2.5, 1.0, 2.5, 4.0])


def test_roc_auc_hand_values():
    # positives 0.8, 0.4; negatives 0.6, 0.2: pairs (0.8>0.6, 0.8>0.2, 0.4<0.6, 0.4>0.2) -> 3/4
    assert roc_auc([1, 1, 0, 0], [0.8, 0.4, 0.6, 0.2]) == pytest.approx(0.75)
    assert roc_auc([1, 0], [0.5, 0.5]) == pytest.approx(0.5)          # a tie counts 1/2
    assert roc_auc([1, 1, 0], [0.9, 0.8, 0.1]) == pytest.approx(1.0)
    assert roc_auc([0, 0, 1], [0.9, 0.8, 0.1]) == pytest.approx(0.0)
    assert roc_auc([1, 1], [0.2, 0.3]) is None                          # one class: undefined


def test_roc_auc_ci95_delong_hand_value():
    # positives 0.9, 0.4; negatives 0.5, 0.1: psi rows (1, 1), (0, 1) -> AUC 3/4,
    # V10 = (1, 0.5), V01 = (0.5, 1); sample variances 0.125 each -> var = 0.125/2 + 0.125/2 = 0.125
    lo, hi = roc_auc_ci95([1, 1, 0, 0], [0.9, 0.4, 0.5, 0.1])
    assert lo == pytest.approx(0.75 - 1.959963984540054 * 0.125 ** 0.5) and hi == 1.0   # 1.44 clipped
    # perfect separation: every V is 1, no variance -> a zero-width interval at 1
    assert roc_auc_ci95([1, 1, 0, 0], [0.9, 0.8, 0.2, 0.1]) == (1.0, 1.0)
    assert roc_auc_ci95([1, 0, 0], [0.9, 0.2, 0.1]) is None          # one positive: no variance
    rng = np.random.default_rng(0)   # overlapping classes: 20x the labels, about 1/sqrt(20) the width
    widths = []
    for n in (40, 800):
        y = np.arange(n) % 2
        s = y + 1.5 * rng.random(n)
        lo, hi = roc_auc_ci95(y, s)
        assert lo < roc_auc(y, s) < hi
        widths.append(hi - lo)
    assert 2.5 < widths[0] / widths[1] < 8


def test_roc_auc_matches_pairwise_count():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 60)
    s = np.round(rng.random(60), 1)                                     # many ties
    pos, neg = s[y == 1], s[y == 0]
    naive = np.mean([(p > n) + 0.5 * (p == n) for p in pos for n in neg])
    assert roc_auc(y, s) == pytest.approx(naive)


def test_ece_hand_value():
    # bin [0.2,0.3): p=0.2,0.2 labels 0,1 -> |0.5-0.2| * 2/4; bin [0.9,1]: p=0.9,1.0 labels 1,1 -> |1-0.95| * 2/4
    assert expected_calibration_error([0, 1, 1, 1], [0.2, 0.2, 0.9, 1.0]) == pytest.approx(0.15 + 0.025)
    assert expected_calibration_error([1, 0], [1.0, 0.0]) == pytest.approx(0.0)


def test_accuracy_and_success_rates():
    y, s = [1, 0, 1, 0], [0.9, 0.6, 0.4, 0.1]
    assert accuracy(y, s, 0.5) == pytest.approx(0.5)
    a = agreement(y, s, threshold=0.5)
    assert a["human_success_rate"] == pytest.approx(0.5)
    assert a["est_success_rate"] == pytest.approx(0.5)                  # 0.9 and 0.6 above 0.5
    assert a["est_success_rate_mean"] == pytest.approx(0.5)
    assert a["success_rate_deviation"] == pytest.approx(0.0)
    assert a["n"] == 4 and a["n_good"] == 2


def test_grouped_agreement_splits_by_value():
    g = grouped_agreement([1, 0, 1, 0], [0.9, 0.1, 0.2, 0.8], {"band": ["easy", "easy", "hard", None]})
    assert set(g) == {"all", "band_easy", "band_hard"}
    assert g["band_easy"]["accuracy"] == 1.0 and g["band_easy"]["n"] == 2
    assert g["band_hard"]["accuracy"] == 0.0 and g["band_hard"]["n"] == 1
    assert g["all"]["n"] == 4
    with pytest.raises(ValueError, match="group"):
        grouped_agreement([1, 0], [0.5, 0.5], {"band": ["x"]})


def test_within_group_auc_hand_values():
    # a: good 0.9 vs bad 0.8 (win) and bad 0.95 (loss); b: good 0.3 vs bad 0.3 (tie, 1/2); c: one class only
    r = within_group_auc([1, 0, 0, 1, 0, 1, 1], [0.9, 0.8, 0.95, 0.3, 0.3, 0.5, 0.6], list("aaabbcc"))
    assert r == {"auc": 1.5 / 3, "n_pairs": 3, "n_groups": 2}
    assert within_group_auc([1, 1], [0.2, 0.3], ["a", "b"]) == {"auc": None, "n_pairs": 0, "n_groups": 0}
    with pytest.raises(ValueError, match="2 groups for 3 samples"):
        within_group_auc([1, 0, 1], [0.1, 0.2, 0.3], ["a", "b"])


def test_within_group_auc_sees_what_the_plain_auc_hides():
    # an easy input (6 good at 0.80-0.85, its one bad at 0.86) and a hard one (1 good at 0.10, 6 bad at
    # 0.11-0.16): scores that only say which input is easy. Plain AUC 36/49: the 6 easy goods beat the 6
    # hard bads; within each input every good loses to its siblings: 0
    y = [1] * 6 + [0] + [1] + [0] * 6
    s = [0.80, 0.81, 0.82, 0.83, 0.84, 0.85, 0.86, 0.10, 0.11, 0.12, 0.13, 0.14, 0.15, 0.16]
    assert roc_auc(y, s) == pytest.approx(36 / 49)
    assert within_group_auc(y, s, ["easy"] * 7 + ["hard"] * 7) == {"auc": 0.0, "n_pairs": 12, "n_groups": 2}


def test_precision_threshold_hand_values():
    y = [1, 1, 0, 1, 0, 0]
    s = [0.9, 0.8, 0.7, 0.6, 0.5, 0.4]
    # cuts (n, precision): 0.9 (1, 1.0) 0.8 (2, 1.0) 0.7 (3, 2/3) 0.6 (4, 3/4) 0.5 (5, 3/5) 0.4 (6, 1/2)
    r = precision_threshold(y, s, 0.75, min_support=2)
    assert r["n_above"] == 4 and r["precision"] == 0.75 and 0.5 < r["threshold"] < 0.6   # keeps 0.6, drops 0.5
    assert precision_threshold(y, s, 0.8, min_support=2)["n_above"] == 2                 # 0.6's 3/4 < 0.8
    none = precision_threshold(y, s, 0.9, min_support=3)                                  # n >= 3 never 90 % good
    assert none["threshold"] == float("inf") and none["n_above"] == 0 and none["precision"] is None
    # tied scores are kept or dropped together: cuts 0.9 (1, 1.0) 0.7 (3, 2/3) 0.2 (4, 1/2)
    tie = precision_threshold([1, 1, 0, 0], [0.9, 0.7, 0.7, 0.2], 0.6, min_support=1)
    assert tie["n_above"] == 3 and abs(tie["precision"] - 2 / 3) < 1e-12 and 0.2 < tie["threshold"] < 0.7


def test_wilson_lower95_hand_values():
    # 24 of 26: p = 0.923077, z^2 = 3.8415; (p + 0.073874 - 1.96 sqrt(0.0027310 + 0.0014207)) / 1.147750
    assert wilson_lower95(24, 26) == pytest.approx(0.758584, abs=1e-6)
    # 5 of 5: the square root is z / 2n, so (1 + z^2/10 - z^2/10) / (1 + z^2/5) = 1 / 1.76829
    assert wilson_lower95(5, 5) == pytest.approx(0.565518, abs=1e-6)
    np.testing.assert_allclose(wilson_lower95([0, 24], [0, 26]), [0.0, 0.758584], atol=1e-6)   # n = 0: no evidence


def test_precision_threshold_lower95_asks_the_interval_not_the_estimate():
    # the top 34 good, then 1 bad per 5 below: the estimate is >= 0.9 at every cut, down to 46 of 50 (0.92);
    # the interval's lower end peaks at 34 of 34 (1 / (1 + 1.96^2 / 34) = 0.8985), then falls (34 of 35: 0.855)
    y = [1] * 30 + [1, 1, 1, 1, 0] * 4
    s = list(np.linspace(1.0, 0.01, len(y)))
    est = precision_threshold(y, s, 0.9, min_support=10)
    assert est["n_above"] == 50 and est["precision"] == 0.92 and est["bound"] == "estimate"
    low = precision_threshold(y, s, 0.88, min_support=10, bound="lower95")
    assert low["n_above"] == 34 and low["precision"] == 1.0 and low["precision_lower95"] == pytest.approx(0.8985, abs=1e-4)
    none = precision_threshold(y, s, 0.9, min_support=10, bound="lower95")   # 34 of 34 is not enough
    assert none["threshold"] == float("inf") and none["precision_lower95"] is None
    with pytest.raises(ValueError, match="bound='wilson'"):
        precision_threshold(y, s, 0.9, bound="wilson")


def test_precision_threshold_matches_a_brute_force_over_every_cut():
    rng = np.random.default_rng(0)
    for _ in range(200):
        n = int(rng.integers(1, 40))
        s = np.round(rng.random(n), 1)                     # rounded: many ties
        y = (rng.random(n) < s).astype(float)
        want, support = float(rng.choice([0.5, 0.7, 0.9])), int(rng.integers(1, 6))
        best = None
        for cut in np.unique(s)[::-1]:
            above = s >= cut
            if above.sum() >= support and (y[above] >= 0.5).mean() >= want:
                best = (cut, int(above.sum()), float((y[above] >= 0.5).mean()))
        r = precision_threshold(y, s, want, support)
        if best is None:
            assert r["n_above"] == 0 and r["threshold"] == float("inf")
        else:
            assert (r["n_above"], r["precision"]) == best[1:]
            assert np.max(s[s < best[0]], initial=-1.0) <= r["threshold"] < best[0]
