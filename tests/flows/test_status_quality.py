"""`rorem status` names the annotators a pulled round flagged for low gold accuracy."""

import json

from flows import cli
from tasks.rounds import Layout, add_round, update_state


def test_status_flags_annotators_below_the_gold_accuracy(project, capsys):
    update_state(Layout(project, 1).state, status="completed", stage=None)
    summary = project / Layout(project, 1).paths.annotations / "summary.json"
    summary.parent.mkdir(parents=True)
    summary.write_text(json.dumps({"quality": {
        "mode": "blind", "gold": {"n_gold": 20}, "rule": "exclude", "min_accuracy": 0.8, "excluded_votes": 12,
        "flagged": ["sim-annotator-3@simulated.local"],
        "annotators": {"sim-annotator-3@simulated.local": {"gold_accuracy": 0.65, "gold_answers": 20},
                       "sim-annotator-1@simulated.local": {"gold_accuracy": 1.0, "gold_answers": 20}}}}))
    assert cli.main(["status", "--root", str(project)]) == 0
    out = capsys.readouterr().out
    assert ("round 1: FLAGGED annotators below 80% gold accuracy: sim-annotator-3@simulated.local (65% of 20 gold); "
            "rule exclude (12 vote(s) excluded)") in out
    assert "sim-annotator-1" not in out
    assert cli.main(["status", "--root", str(project), "--json"]) == 0
    s = json.loads(capsys.readouterr().out)
    assert list(s["annotator_quality"]["1"]["flagged"]) == ["sim-annotator-3@simulated.local"]


def test_status_says_when_a_round_had_no_gold(project, capsys):
    add_round(project / "params.yaml", 2)
    for n, gold in ((1, {"n_gold": 4}), (2, {"n_gold": 0, "message": "no gold: no known-good answers"})):
        summary = project / Layout(project, n).paths.annotations / "summary.json"
        summary.parent.mkdir(parents=True)
        summary.write_text(json.dumps({"quality": {"mode": "blind", "gold": gold, "rule": "exclude", "flagged": [],
                                                   "min_accuracy": 0.8, "excluded_votes": 0, "annotators": {}}}))
    assert cli.main(["status", "--root", str(project)]) == 0
    out = capsys.readouterr().out
    assert "round 2: blind review, no gold tasks (annotator accuracy not measured)" in out
    assert "round 1: blind review, no gold" not in out
