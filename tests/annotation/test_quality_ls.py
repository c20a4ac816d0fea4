"""Annotation quality against a real Label Studio: gold tasks, per-annotator accuracy, the vote rule.

Three SIMULATED annotators with error rates 0.02, 0.1 and 0.3 label every task of a round that has
gold tasks; the pull must rank them by gold accuracy in that order, flag the worst (below the default
0.8), exclude its votes (the default rule), and keep every gold task out of the scored labels.
"""

from __future__ import annotations

import json

import pytest

from annotation.config import GoldConfig, SimulatedConfig
from annotation.pull import pull_round
from annotation.push import push_round
from annotation.simulated import simulate_round
from rorem_core.data.formats import read_candidates, read_triplets
from rorem_core.evaluation.report import build_report

pytestmark = pytest.mark.integration

NAMES = ("sim-annotator-1@simulated.local", "sim-annotator-2@simulated.local", "sim-annotator-3@simulated.local")
RATES = (0.02, 0.1, 0.3)


def test_three_simulated_annotators_ranked_by_gold_accuracy(ls, new_round):
    # 82 real tasks, 80 gold (2 more kept as instruction examples). Sizing: over 200 simulation seeds, 80 gold
    # tasks recover this order and flag only the worst in 95% of seeds (40 gold: 83%); seed 0 is the default.
    r = new_round(ls.data, 30, n_inputs=41)
    cfg = ls.cfg(overlap=3, min_labels=1, pairwise=False, gold=GoldConfig(share=0.5),
                 simulated=SimulatedConfig(names=NAMES, error_rates=RATES))
    push = push_round(ls.client, cfg, 30, r.candidates, ls.data, hidden_meta=r.hidden)
    setup = json.loads((ls.data / "annotations" / "round-30" / "push.json").read_text())
    gold_keys = set(setup["gold"]["tasks"])
    assert setup["mode"] == "blind" and len(gold_keys) == 80 and push.created["review"] == 162
    simulate_round(ls.client, cfg, 30, r.candidates, r.hidden)
    out = ls.data / "annotations" / "round-30"
    res = pull_round(ls.client, cfg, 30, r.candidates, out)
    q = res.summary["quality"]
    acc = {w: row["gold_accuracy"] for w, row in q["annotators"].items()}
    assert all(q["annotators"][w]["gold_answers"] == 80 for w in NAMES)
    assert sorted(NAMES, key=lambda w: -acc[w]) == list(NAMES), acc      # best to worst = by error rate
    assert q["flagged"] == [NAMES[2]] and q["rule"] == "exclude"
    scored = read_triplets(out / "scored" / "meta.json")
    real = {c.id for c in read_candidates(r.candidates)}
    assert {t.id for t in scored} <= real and not {t.id for t in scored} & gold_keys   # gold never becomes a label
    assert res.summary["review"]["tasks"] == 82 and not res.summary["review"]["problems"]
    assert all(NAMES[2] not in t.votes for t in scored)                  # the flagged annotator's votes excluded
    assert q["excluded_votes"] == q["annotators"][NAMES[2]]["votes"] == 82
    assert {(p["a"], p["b"]) for p in q["pairs"]} == {(NAMES[0], NAMES[1]), (NAMES[0], NAMES[2]), (NAMES[1], NAMES[2])}
    assert q["annotators"][NAMES[0]]["median_lead_time_s"] == 1.0   # simulated labels record 1 s
    assert q["discriminator_vs_humans"]["n"] > 0                      # verdicts from push.json, not Label Studio

    build_report(ls.root, ls.root / "reports", [30])
    md = (ls.root / "reports" / "report.md").read_text()
    section = md.split("## Annotation quality")[1]
    assert "**blind** review" in section and "80 gold task(s)" in section and NAMES[2] in section


def test_round_without_gt_or_unanimous_labels_proceeds_without_gold(ls, new_round):
    r = new_round(ls.data, 31, n_inputs=2)
    cfg = ls.cfg(overlap=1, min_labels=1, pairwise=False, gold=GoldConfig(share=0.3, unanimous=True))
    push = push_round(ls.client, cfg, 31, r.candidates, ls.data, hidden_meta=None,
                      prev_labels=ls.data / "labels" / "round-30")   # no such labels: nothing unanimous
    assert push.gold.startswith("no gold: no known-good answers") and push.created["review"] == 4
    simulate_round(ls.client, cfg, 31, r.candidates, r.hidden)
    res = pull_round(ls.client, cfg, 31, r.candidates, ls.data / "annotations" / "round-31")
    q = res.summary["quality"]
    assert q["gold"]["n_gold"] == 0 and q["gold"]["message"].startswith("no gold")
    assert res.scored == 4 and q["flagged"] == []
    assert all(row["gold_accuracy"] is None for row in q["annotators"].values())
    build_report(ls.root, ls.root / "reports-31", [31])
    section = (ls.root / "reports-31" / "report.md").read_text().split("## Annotation quality")[1]
    assert "Round 31: **blind** review; gold: no gold: no known-good answers" in section


def test_the_round_tasks_draw_gold_from_the_pools_hidden_gt(ls, new_round):
    """The flow's gate tasks (push_selection -> simulate_labels -> pull_annotations) on the round layout:
    gold comes from data/hidden/round-N, the simulated annotators answer it, the pull keeps it apart."""
    from tasks.annotation import pull_annotations, push_selection, simulate_labels

    r = new_round(ls.data, 32, n_inputs=5)   # data/candidates/round-32, data/hidden/round-32 (the layout's)
    pool, root = "data/pools/round-32", str(ls.root)
    pushed = push_selection.fn(root, 32, pool)
    assert pushed["gold"].startswith("1 gold task(s)") and pushed["created"]["review"] == 11   # 10 real + 1 gold
    simulate_labels.fn(root, 32, pool)
    pulled = pull_annotations.fn(root, 32, pool)
    summary = json.loads((ls.data / "annotations" / "round-32" / "summary.json").read_text())
    assert pulled["scored"] == 10 and summary["review"]["tasks"] == 10 and summary["quality"]["mode"] == "blind"
    assert summary["quality"]["gold_tasks_labelled"] == 1 and not summary["review"]["problems"]
    assert sum(row["gold_answers"] for row in summary["quality"]["annotators"].values()) == 1
    assert r.candidates.is_file()
