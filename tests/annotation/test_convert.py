"""Pure converter tests on trimmed real exports (tests/annotation/fixtures, made by make_fixtures.py).

The review fixture holds: three SIMULATED annotators on six tasks, a later annotation by the same
annotator (latest wins), a later cancelled one (a skip), a result that does not fit the config, a
task for an unknown candidate, and one label submitted in the real UI. The pairwise fixture holds a
UI result saved with ``to_name`` equal to the control's own name (``pref``) and API results with
``to_name = left``.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from annotation.convert import ResultMismatch, convert, majority, normalize_export, parse_pairwise, parse_review

FIX = Path(__file__).parent / "fixtures"
S1, S2, S3 = (f"sim-annotator-{k}@simulated.local" for k in (1, 2, 3))
UI = "annotator-ui@rorem.local"
KNOWN = {f"r1-p00{i}-s{s}" for i in range(3) for s in range(2)}


@pytest.fixture(scope="module")
def review():
    tasks = json.loads((FIX / "review_export.json").read_text())
    return convert(tasks, project="review", key_field="candidate_id", known=KNOWN, parse=parse_review, min_labels=2)


@pytest.fixture(scope="module")
def pairwise():
    tasks = json.loads((FIX / "pairwise_export.json").read_text())
    known = {t["data"]["pair_id"] for t in tasks}
    return convert(tasks, project="pairwise", key_field="pair_id", known=known, parse=parse_pairwise, min_labels=2)


def test_review_majority_latest_wins_and_skips(review):
    o = review.outcomes
    assert o["r1-p000-s0"].votes == {S1: "bad", S2: "good", S3: "bad"}      # S1's later "bad" replaced "good"
    assert o["r1-p000-s0"].label == "bad"
    assert o["r1-p001-s0"].skipped == [S2] and S2 not in o["r1-p001-s0"].votes  # a later skip replaces a vote
    assert o["r1-p001-s0"].status == "tie"
    assert o["r1-p001-s1"].label == "good"                                     # admin's "maybe" gave no vote
    assert o["r1-p002-s1"].votes[UI] == "bad" and o["r1-p002-s1"].status == "tie"   # 2 vs 2
    assert o["r1-p000-s1"].reasons["object_remains"] == 2
    assert {k: v.label for k, v in o.items() if v.label} == {
        "r1-p000-s0": "bad", "r1-p000-s1": "bad", "r1-p001-s1": "good", "r1-p002-s0": "bad"}


def test_review_counts_agreement_and_problems(review):
    s = review.summary()
    assert (s["tasks"], s["labeled"], s["tie"]) == (6, 4, 2)
    assert s["ties"] == ["r1-p001-s0", "r1-p002-s1"]
    assert s["annotations"] == {"total": 22, "votes": 18, "superseded": 2, "skipped": 1, "mismatched": 1,
                                "on_unknown_tasks": 1}
    # votes per item: [b g b] [b b g] [g b] [b g g] [g b b] [b b g g]; by hand:
    # P = (4 * 1/3 + 0 + 1/3) / 6 = 5/18;  P_e = (10/18)^2 + (8/18)^2 = 164/324
    p_bar, p_e = 5 / 18, 164 / 324
    assert s["agreement"]["percent_agreement"] == pytest.approx(p_bar)
    assert s["agreement"]["fleiss_kappa"] == pytest.approx((p_bar - p_e) / (1 - p_e))
    kinds = {(p["kind"], p.get("annotator")) for p in s["problems"]}
    assert kinds == {("unknown_task", None), ("result_mismatch", "admin@rorem.local")}
    assert s["per_annotator"][S2] == {"skipped": 1, "votes": 5}


def test_pairwise_ui_result_with_control_name_as_to_name(pairwise):
    raw = json.loads((FIX / "pairwise_export.json").read_text())
    ui = [a for t in raw for a in t["annotations"] if a["completed_by"]["email"] == UI]
    assert ui and ui[0]["result"][0]["to_name"] == "pref"          # what the UI really saves
    o = pairwise.outcomes
    first = "r1-p000-s0__vs__r1-p000-s1"
    assert o[first].votes == {UI: "right", S1: "right", S2: "left", S3: "left"} and o[first].status == "tie"
    assert o["r1-p001-s0__vs__r1-p001-s1"].label == "right"
    assert o["r1-p002-s0__vs__r1-p002-s1"].label == "left"
    assert pairwise.problems == []


def test_unknown_tasks_are_reported_not_dropped():
    tasks = json.loads((FIX / "pairwise_export.json").read_text())
    conv = convert(tasks, project="pairwise", key_field="pair_id", known=set(), parse=parse_pairwise)
    assert conv.outcomes == {} and len(conv.problems) == 3
    assert conv.counts["on_unknown_tasks"] == 10


def test_normalize_drops_clock_fields_and_sorts():
    tasks = json.loads((FIX / "review_export.json").read_text())
    shuffled = copy.deepcopy([dict(t, annotations=list(reversed(t["annotations"]))) for t in reversed(tasks)])
    shuffled[1]["predictions"][0]["created_ago"] = "5 minutes"
    assert normalize_export(shuffled) == normalize_export(tasks) == tasks
    assert "created_ago" not in json.dumps(tasks)


@pytest.mark.parametrize("result, message", [
    ([{"from_name": "quality", "type": "choices", "value": {"choices": ["good", "bad"]}}], "exactly one"),
    ([{"from_name": "reason", "type": "choices", "value": {"choices": ["artifacts"]}}], "no quality"),
    ([{"from_name": "quality", "type": "choices", "value": {"choices": ["bad"]}},
      {"from_name": "reason", "type": "choices", "value": {"choices": ["blurry"]}}], "unknown reason"),
    ([{"from_name": "rating", "type": "rating", "value": {"rating": 3}}], "not a choice"),
])
def test_review_results_that_do_not_match_the_config(result, message):
    with pytest.raises(ResultMismatch, match=message):
        parse_review(result)


def test_pairwise_parse_by_type_not_to_name():
    for to_name in ("left", "pref", "right"):
        item = {"from_name": "pref", "to_name": to_name, "type": "pairwise", "value": {"selected": "left"}}
        assert parse_pairwise([item]) == ("left", ())
    with pytest.raises(ResultMismatch):
        parse_pairwise([{"type": "pairwise", "value": {"selected": "middle"}}])


def test_majority():
    assert majority(["good", "bad", "good"]) == "good"
    assert majority(["good", "bad"]) is None and majority([]) is None
    assert majority(["left"]) == "left"


def test_min_labels_marks_insufficient():
    tasks = json.loads((FIX / "review_export.json").read_text())
    conv = convert(tasks, project="review", key_field="candidate_id", known=KNOWN, parse=parse_review, min_labels=4)
    assert conv.outcomes["r1-p002-s1"].status == "tie"                   # the only task with four votes
    assert conv.outcomes["r1-p000-s0"].status == "insufficient" and conv.outcomes["r1-p000-s0"].label is None
