"""Agreement statistics against published worked examples."""

import pytest

from annotation.agreement import agreement_summary, fleiss_kappa, krippendorff_alpha, percent_agreement


def test_fleiss_kappa_wikipedia_example():
    # 10 subjects, 14 raters, 5 categories (Fleiss 1971 / Wikipedia "Fleiss' kappa"): kappa = 0.210
    rows = [[0, 0, 0, 0, 14], [0, 2, 6, 4, 2], [0, 0, 3, 5, 6], [0, 3, 9, 2, 0], [2, 2, 8, 1, 1],
            [7, 7, 0, 0, 0], [3, 2, 6, 3, 0], [2, 5, 3, 2, 2], [6, 5, 2, 1, 0], [0, 2, 2, 3, 7]]
    items = [[str(j) for j, c in enumerate(r) for _ in range(c)] for r in rows]
    assert fleiss_kappa(items) == pytest.approx(0.20993, abs=1e-5)


def test_krippendorff_alpha_nominal_with_missing_data():
    # Krippendorff (2011) "Computing Krippendorff's alpha-reliability", 4 coders x 12 units: alpha = 0.743
    coders = ["1 2 3 3 2 1 4 1 2 . . .", "1 2 3 3 2 2 4 1 2 5 . 3",
              ". 3 3 3 2 3 4 2 2 5 1 .", "1 2 3 3 2 4 4 1 2 5 1 ."]
    items = [[v for v in unit if v != "."] for unit in zip(*(c.split() for c in coders))]
    assert krippendorff_alpha(items) == pytest.approx(0.743, abs=5e-4)


def test_perfect_and_opposite_raters():
    same = [["good", "good"], ["bad", "bad"], ["good", "good"], ["bad", "bad"]]
    opposite = [["good", "bad"], ["bad", "good"], ["good", "bad"], ["bad", "good"]]
    assert fleiss_kappa(same) == pytest.approx(1.0) and krippendorff_alpha(same) == pytest.approx(1.0)
    assert fleiss_kappa(opposite) == pytest.approx(-1.0)
    assert krippendorff_alpha(opposite) == pytest.approx((1 - 4) / 4)   # alpha = 1 - (n-1) D_o / D_e, n = 8
    assert percent_agreement(opposite) == 0.0


def test_undefined_cases_give_none():
    assert fleiss_kappa([["good"], ["bad"]]) is None                   # no item has two labels
    assert fleiss_kappa([["good", "good"], ["good", "good"]]) is None  # one category: P_e = 1
    assert krippendorff_alpha([["good", "good"]]) is None
    s = agreement_summary([["good"], ["good", "bad", "good"]])
    assert s["items_with_2plus_labels"] == 1 and s["labels"] == 3
