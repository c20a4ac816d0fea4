"""Annotation quality without a server: config bounds, gold planning, Cohen's kappa, the vote rule,
instructions vs the labeling config, and the report's quality section."""

from __future__ import annotations

import json
import re
from collections import Counter

import pytest
from pydantic import ValidationError

from annotation.config import AnnotationConfig, GoldConfig, SimulatedConfig
from annotation.convert import Conversion, TaskOutcome
from annotation.gold import n_wanted, plan_gold
from annotation.instructions import REVIEW_HOTKEYS
from annotation.push import build_round_tasks, label_config
from annotation.quality import apply_vote_rule, cohen_kappa, round_quality
from rorem_core.data.formats import read_candidates
from rorem_core.evaluation.report import build_report


@pytest.mark.parametrize("share", [1.0, 1.5, -0.1])
def test_gold_share_outside_zero_one_is_refused(share):
    with pytest.raises(ValidationError, match=r"annotation.gold.share=.*must be in \[0, 1\)"):
        AnnotationConfig(gold={"share": share})
    assert GoldConfig(share=0.0).share == 0.0 and GoldConfig(share=0.99).share == 0.99


def test_simulated_error_rates_one_per_name():
    names = tuple(f"sim-annotator-{k}@simulated.local" for k in range(1, 4))
    assert SimulatedConfig(names=names, error_rates=(0.02, 0.1, 0.3)).rates() == [0.02, 0.1, 0.3]
    with pytest.raises(ValidationError, match="one rate in \\[0, 1\\] per name"):
        SimulatedConfig(names=names, error_rates=(0.1, 0.2))
    with pytest.raises(ValidationError, match="one rate in \\[0, 1\\] per name"):
        SimulatedConfig(names=names, error_rates=(0.1, 0.2, 1.5))


def test_cohen_kappa_by_hand():
    # 10 items: agree on 7 (4 good-good, 3 bad-bad); a says good 6x, b says good 5x
    a = ["good"] * 4 + ["bad"] * 3 + ["good", "good", "bad"]
    b = ["good"] * 4 + ["bad"] * 3 + ["bad", "bad", "good"]
    # p_o = 0.7; p_e = 0.6*0.5 + 0.4*0.5 = 0.5; kappa = (0.7 - 0.5) / 0.5 = 0.4
    assert cohen_kappa(a, b) == pytest.approx(0.4)
    assert cohen_kappa(["good"] * 3, ["good"] * 3) is None and cohen_kappa([], []) is None


def _conv(votes: dict[str, dict[str, str]]) -> Conversion:
    outs = {k: TaskOutcome(k, [i], dict(v)) for i, (k, v) in enumerate(votes.items())}
    per = {}
    for v in votes.values():
        for w in v:
            per.setdefault(w, Counter())["votes"] += 1
    return Conversion("review", outs, [], Counter(), per)


def test_vote_rule_exclude_and_downweight():
    votes = {"t1": {"a": "good", "b": "bad", "c": "bad"}, "t2": {"a": "good", "c": "bad"}}
    ex = _conv(votes)
    assert apply_vote_rule(ex, {"c"}, GoldConfig(flagged_votes="exclude"), min_labels=1) == 2
    assert ex.outcomes["t1"].status == "tie" and ex.outcomes["t2"].label == "good"
    dw = _conv(votes)
    apply_vote_rule(dw, {"c"}, GoldConfig(flagged_votes="downweight", flagged_weight=0.5), min_labels=1)
    # t1: good 1.0 vs bad 1.0 + 0.5 -> bad; t2: good 1.0 vs bad 0.5 -> good
    assert dw.outcomes["t1"].label == "bad" and dw.outcomes["t2"].label == "good"
    keep = _conv(votes)
    assert apply_vote_rule(keep, {"c"}, GoldConfig(flagged_votes="keep"), min_labels=1) == 0


def test_quality_flags_low_gold_accuracy_only_after_enough_answers():
    real = _conv({f"t{i}": {"a": "good", "b": "good"} for i in range(4)})
    answers = {f"g{i}": "good" for i in range(6)}
    gold = _conv({k: {"a": "good", "b": "bad" if i < 3 else "good", "c": "bad"} for i, k in enumerate(answers)})
    gold.outcomes.pop("g5")   # 5 gold answers each: a all right, b 2 of 5, c none
    q = round_quality(real, gold, answers, {"a": [2.0, 4.0, 9.0]}, GoldConfig(min_answers=5), 1,
                      mode="blind", gold_info=None, predictions={})
    rows = q["annotators"]
    assert rows["a"]["gold_accuracy"] == 1.0 and rows["b"]["gold_accuracy"] == pytest.approx(2 / 5)
    assert rows["a"]["median_lead_time_s"] == 4.0
    assert q["flagged"] == ["b", "c"] and q["excluded_votes"] == 4   # b's 4 real votes
    q6 = round_quality(_conv({"t": {"a": "good"}}), gold, answers, {}, GoldConfig(min_answers=6), 1,
                       mode="blind", gold_info=None, predictions={})
    assert q6["flagged"] == []   # 5 gold answers are not enough evidence under min_answers=6


def test_plan_gold_without_gt_or_unanimous_labels_proceeds_without_gold(tmp_path, new_round):
    r = new_round(tmp_path / "data", 7, n_inputs=3)
    cands = read_candidates(r.candidates)
    plan = plan_gold(GoldConfig(share=0.3), 7, cands, r.candidates.parent, hidden_meta=None, prev_labels=None)
    assert plan.items == [] and plan.message.startswith("no gold: no known-good answers")
    built = build_round_tasks(AnnotationConfig(gold={"share": 0.3}), 7, r.candidates, tmp_path / "data")
    assert len(built.tasks["review"][0]) == len(cands) and built.gold.items == []
    assert "Examples" not in built.instructions["review"] and "Hotkeys" in built.instructions["review"]


def test_plan_gold_draws_balanced_known_answers_that_look_like_candidates(tmp_path, new_round):
    r = new_round(tmp_path / "data", 8, n_inputs=5)
    cands = read_candidates(r.candidates)
    plan = plan_gold(GoldConfig(share=0.3), 8, cands, r.candidates.parent, hidden_meta=r.hidden)
    assert n_wanted(0.3, 10) == 4 and len(plan.items) == 4
    assert Counter(g.answer for g in plan.items) == {"good": 2, "bad": 2}
    assert {g.origin for g in plan.items} == {"gt", "source"} and len(plan.examples) == 2
    ids = {c.id for c in cands}
    assert all(re.fullmatch(r"r8-p00\d-k\d+", g.key) and g.key not in ids for g in plan.items)
    assert not {g.key for g in plan.examples} & {g.key for g in plan.items}   # examples are never tasks
    built = build_round_tasks(AnnotationConfig(gold={"share": 0.3}), 8, r.candidates, tmp_path / "data",
                              hidden_meta=r.hidden)
    tasks = built.tasks["review"][0]
    assert len(tasks) == 14 and {tuple(sorted(t["data"])) for t in tasks} == {tuple(sorted(tasks[0]["data"]))}
    urls = [t["data"][k] for t in tasks for k in ("original", "result")]
    assert all("d=annotations/round-8/review/" in u and "hidden" not in u and "GT" not in u for u in urls)
    assert not any("hidden" in d.parts for d in built.dirs)   # the hidden GT folder is never served as such
    again = plan_gold(GoldConfig(share=0.3), 8, cands, r.candidates.parent, hidden_meta=r.hidden)
    assert again.items == plan.items   # deterministic


def test_both_projects_get_instructions_with_the_rounds_gold_examples(tmp_path, new_round):
    """Review and pairwise instructions show the round's two gold examples (good and bad, never tasks)
    and the hotkeys; ``instructions: false`` leaves them out; prefill changes what they promise."""
    r = new_round(tmp_path / "data", 10, n_inputs=5)
    built = build_round_tasks(AnnotationConfig(gold={"share": 0.3}), 10, r.candidates, tmp_path / "data",
                              hidden_meta=r.hidden)
    assert set(built.instructions) == {"review", "pairwise"} and len(built.gold.examples) == 2
    task_urls = {v for t in built.tasks["review"][0] for v in t["data"].values() if isinstance(v, str)}
    for kind, html in built.instructions.items():
        imgs = re.findall(r'<img src="([^"]+)"', html)
        assert len(imgs) == 4 and not set(imgs) & task_urls, kind   # overlay + result per example, no task's image
        assert "good: the object is gone" in html and "bad (object_remains)" in html and "Hotkeys" in html
        assert "no answer is filled in for you" in html or kind == "pairwise"
    assert "<kbd>1</kbd></td><td>good" in built.instructions["review"]
    prefilled = build_round_tasks(AnnotationConfig(gold={"share": 0.3}, prefill=True), 10, r.candidates,
                                  tmp_path / "data", hidden_meta=r.hidden)
    assert "the model's guess is pre-selected" in prefilled.instructions["review"]
    off = build_round_tasks(AnnotationConfig(gold={"share": 0.3}, instructions=False), 10, r.candidates,
                            tmp_path / "data", hidden_meta=r.hidden)
    assert off.instructions == {}


def test_instructions_hotkeys_match_the_review_config():
    xml = label_config("review")
    declared = dict(re.findall(r'<Choice value="(\w+)" hotkey="(\w)"', xml))
    assert declared == REVIEW_HOTKEYS


def test_report_has_an_annotation_quality_section(tmp_path):
    summ = {"review": {"labeled": 3, "labels": {"good": 2}, "agreement": {"fleiss_kappa": 0.5,
                                                                           "krippendorff_alpha": 0.51}},
            "quality": {"mode": "blind", "gold": {"n_gold": 0, "message": "no gold: no known-good answers"},
                        "annotators": {"a@x": {"gold_answers": 0, "gold_accuracy": None, "agreement_with_others": 0.9,
                                               "median_lead_time_s": 3.0, "skips": 1, "votes": 3, "flagged": False}},
                        "pairs": [], "flagged": [], "excluded_votes": 0, "rule": "exclude",
                        "discriminator_vs_humans": {"n": 0, "agreement": None}}}
    (tmp_path / "data/annotations/round-1").mkdir(parents=True)
    (tmp_path / "data/annotations/round-1/summary.json").write_text(json.dumps(summ))
    build_report(tmp_path, tmp_path / "reports", [1])
    md = (tmp_path / "reports/report.md").read_text()
    section = md.split("## Annotation quality")[1]
    assert "blind" in section and "no gold: no known-good answers" in section and "a@x" in section


def test_unanimous_earlier_labels_are_gold_without_gt(tmp_path, new_round):
    r = new_round(tmp_path / "data", 9, n_inputs=4)
    labels = tmp_path / "data" / "labels" / "round-8"
    for sub in ("source", "mask", "GT"):
        (labels / sub).mkdir(parents=True)
    rows = []
    for i, votes in enumerate([{"a": "good", "b": "good"}, {"a": "bad", "b": "bad"}, {"a": "good", "b": "bad"},
                               {"a": "good"}, {"a": "good", "b": "good", "c": "good"}]):
        for sub in ("source", "mask", "GT"):
            (labels / sub / f"x{i}.png").write_bytes((r.candidates.parent / "inputs/source/p000.png").read_bytes())
        rows.append({"source": f"source/x{i}.png", "mask": f"mask/x{i}.png", "GT": f"GT/x{i}.png",
                     "id": f"old{i}", "input_id": f"q{i}", "votes": votes})
    (labels / "meta.json").write_text(json.dumps(rows))
    cands = read_candidates(r.candidates)
    off = plan_gold(GoldConfig(share=0.5), 9, cands, r.candidates.parent, prev_labels=labels)
    assert off.items == [] and "annotation.gold.unanimous is off" in off.message
    on = plan_gold(GoldConfig(share=0.5, unanimous=True, examples=False), 9, cands, r.candidates.parent,
                   prev_labels=labels)
    assert on.available["unanimous"] == 3        # split votes and a single vote are not unanimous
    assert Counter(g.answer for g in on.items) == {"good": 2, "bad": 2}   # balanced: 2 known-good answers only
    assert {g.input_id for g in on.items if g.answer == "good"} == {"q0", "q4"}
    assert all(g.origin == "unanimous" for g in on.items if g.answer == "good")
