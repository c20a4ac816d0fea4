"""The rounds table (issue 13, parts 2-4 and 6) from small hand-made metrics dicts: paired changes by
hand, the bars, the figures that did not improve. Pure and fast (no rounds, no models)."""

from __future__ import annotations

import math

import pytest

from rorem_core.evaluation.metrics import Z95
from rorem_core.evaluation.rounds_table import band_success, paired_change, render, rounds_table


def _images(easy: str, hard: str) -> list[dict]:
    """Per-image rows: one char per image, "1" = the judge calls it good (ids e0.., h0..)."""
    return ([{"id": f"e{i}", "band": "easy", "judge_good": c == "1", "success": True} for i, c in enumerate(easy)]
            + [{"id": f"h{i}", "band": "hard", "judge_good": c == "1", "success": True} for i, c in enumerate(hard)])


def _round(n: int, easy: str, hard: str, *, auc=0.9, auc_ci=(0.85, 0.95), precision=0.95, good=6) -> dict:
    ceiling = {f"band_{b}": {"judged_success_rate": 0.97} for b in ("easy", "hard")}
    return {"annotations": {"review": {"labeled": 10, "labels": {"good": good, "bad": 10 - good}}},
            "auto_score": {"n_candidates": 50, "n_excluded": 10, "n_accepted": 20,
                           "auto_precision": {"n": 20, "n_clean": round(20 * precision), "precision": precision,
                                              "ci95": [precision - 0.1, min(1.0, precision + 0.05)]}},
            "trainset": {"n_total": 48 + 26 * n},
            "evaluate": {"remover": {}, "ae_ceiling": ceiling},
            "train_discriminator": {"heldout": {"all": {"n": 120, "roc_auc": auc, "roc_auc_ci95": list(auc_ci)}},
                                    "heldout_within_input": {"auc": 0.5 + 0.01 * n, "n_pairs": 30 * n, "n_groups": 3}},
            "per_image": _images(easy, hard)}


def test_paired_change_by_hand():
    base, new = _images("", "1000"), _images("", "1110")
    c = paired_change(base, new, "hard")      # d = 0, 1, 1, 0: mean 1/2, sd = sqrt(1/3)
    half = Z95 * math.sqrt(1 / 3) / 2
    assert c["n"] == 4 and c["change"] == 0.5 and c["ci95"] == pytest.approx([0.5 - half, 0.5 + half])
    assert paired_change(base, new, "easy") is None                      # no easy image
    assert paired_change(new, new, "hard") == {"n": 4, "change": 0.0, "ci95": [0.0, 0.0]}
    shuffled = list(reversed(new)) + [{"id": "h9", "band": "hard", "judge_good": True}]   # unpaired: ignored
    assert paired_change(base, shuffled, "hard")["change"] == 0.5
    s = band_success(new, "hard")
    assert (s["n"], s["k"], s["rate"]) == (4, 3, 0.75) and s["ci95"][0] < 0.75 < s["ci95"][1]


def test_judge_verdict_wins_over_success_when_recorded():
    rows = [{"id": "a", "band": "hard", "judge_good": False, "success": True},
            {"id": "b", "band": "hard", "success": True}]          # an evaluation without the judge
    assert band_success(rows, "hard")["k"] == 1


def test_table_rows_bars_and_words():
    base = {"per_image": _images("1100", "1000000000"), "evaluate": None}
    r1 = _round(1, "1100", "1110000000")
    r2 = _round(2, "1000", "1111111000", auc=0.78, auc_ci=(0.6, 0.95), precision=0.85, good=4)
    t = rounds_table({0: base, 1: r1, 2: r2})
    one, two = t["rows"]
    assert (one["human_judged"], one["human_accepted"], one["disc_judged"], one["disc_accepted"]) == (10, 6, 40, 20)
    assert one["human_rate"]["rate"] == 0.6 and one["disc_rate"]["rate"] == 0.5 and one["train_total"] == 74
    assert one["hard"]["rate"] == 0.3 and one["hard_vs_base"]["change"] == pytest.approx(0.2)
    assert one["hard_vs_prev"] == one["hard_vs_base"]                    # round 1's previous is the base
    assert two["hard_vs_base"]["change"] == pytest.approx(0.6) and two["easy_vs_prev"]["change"] == -0.25
    missed = {b["bar"] for b in t["missed"]}
    assert any("round 2 discriminator held-out ROC-AUC" in m for m in missed)    # 0.78 and +-0.175
    assert any("round 2 auto-acceptance precision" in m for m in missed)
    assert not any("round 1" in m for m in missed) and not any("ceiling" in m for m in missed)
    assert not any("hard band, paired" in m for m in missed)                     # +60 pts, interval above 0
    words = t["not_improved"]
    assert any(w.startswith("Round 2: easy-band judged success did not improve over round 1 (50.0% -> 25.0%")
               for w in words)
    assert any("Round 2: human acceptance rate" in w for w in words)
    assert any("Round 1: easy-band judged success did not improve over the base" in w for w in words)  # equal
    assert not any("hard-band" in w for w in words)
    md = render(t)
    assert "| base |" in md and "| 2 | 10 | 4 | 40 | 20 | 100 |" in md
    assert "MISSED: part 4: round 2 auto-acceptance precision >= 0.9 — 85.0% of 20" in md
    assert "+60.0 pts" in md and "**Did not improve:**" in md
    assert "| within-input AUC |" in md and "| 0.520 (60 pairs) |" in md       # round 2 beside its ROC-AUC


def test_unmeasured_figures_miss_their_bars():
    t = rounds_table({1: {"per_image": None}})           # no base, no metrics at all
    assert t["base"] is None and t["rows"][0]["hard"] is None
    assert t["missed"] and all(b["seen"].startswith("not measured") for b in t["missed"])
    assert "n/a" in render(t) and t["not_improved"] == []


def test_a_worse_round_beyond_its_interval_misses():
    base = {"per_image": _images("1111", "1111111111")}
    t = rounds_table({0: base, 1: _round(1, "1111", "0000000000")})
    assert any(b["bar"].startswith("part 3: round 1 not below the base on the hard band") for b in t["missed"])


def test_a_round_that_auto_accepted_nothing_under_min_precision_says_why():
    r1 = _round(1, "1111", "0000000000")
    r1["auto_score"] = {"n_candidates": 50, "n_excluded": 10, "n_accepted": 0, "threshold": None,
                        "threshold_rule": {"rule": "min_precision", "precision": None, "n_above": 0, "n_heldout": 336,
                                           "min_precision": 0.9, "min_support": 10},
                        "auto_precision": {"n": 0, "n_clean": 0, "precision": None, "ci95": None, "reasons": {}}}
    t = rounds_table({1: r1})
    why = "nothing auto-accepted: no threshold is 90.0% precise over >= 10 of the discriminator's 336 held-out labels"
    bar = next(b for b in t["missed"] if b["bar"].startswith("part 4: round 1 auto-acceptance precision"))
    assert bar["seen"] == f"not measured ({why})"          # still missed: no precision was measured
    assert why in render(t)
