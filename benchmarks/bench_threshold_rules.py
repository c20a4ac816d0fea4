"""How precise is what auto_score accepts, by each threshold rule? Cross-fitted on a discriminator's own
held-out labels (issue 13 part 4: auto-acceptance precision >= 0.90).

  PYTHONPATH=. python benchmarks/bench_threshold_rules.py DISC [DISC ...] [--min-precision 0.9] [--splits 200]

DISC: a discriminator folder with ``heldout_scores.json`` (train_discriminator writes it: one row per
held-out human label, {label, score, input}), e.g. bench_self_training's ``models/disc_1`` (validation
pool-101, never a round's pool or the test split).

Why cross-fitting: ``auto_score.min_precision`` picks the lowest cut whose held-out precision reaches the
bar, then accepts unreviewed candidates above it. Choosing among many noisy estimates and measuring on
the same labels is biased high (a round's 92 % of 26 became 77 % on what it accepted, docs/judge.md). So
each split halves the held-out INPUTS (a candidate's siblings stay together, as train_discriminator
splits), sets the threshold on one half by a rule and measures on the other half what it accepts, both
ways round. Rules: the discriminator's own 0.5; ``estimate`` (the held-out precision >= the bar);
``lower95`` (the lower end of its Wilson 95 % interval >= the bar; ``auto_score.precision_bound``).
Prints per rule: the share of the other half accepted, the pooled precision of what was accepted, and in
how many evaluations something was accepted at all and below the bar; per discriminator its ROC-AUC and
its within-input AUC (candidates of one input against each other, reward/metrics.within_group_auc).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from rorem_core.reward.metrics import precision_threshold, roc_auc, within_group_auc  # noqa: E402


def rule_threshold(rule: str, labels, scores, min_precision: float, min_support: int) -> float:
    """Accept iff score > this, set on (labels, scores) by ``rule``: fixed | estimate | lower95."""
    if rule == "fixed":
        return 0.5
    return precision_threshold(labels, scores, min_precision, min_support, bound=rule)["threshold"]


def crossfit(rows: list[dict], rules: list[str], min_precision: float, min_support: int = 10, splits: int = 200,
             seed: int = 0) -> dict[str, dict]:
    """Per rule over ``splits`` random halvings of the inputs (each half setting the threshold for the
    other): {n_evals, accepted_share, precision (pooled over evaluations; None if nothing accepted),
    evals_accepting, evals_below (accepting with precision < min_precision), thresholds}."""
    y = np.array([float(r["label"]) >= 0.5 for r in rows])
    s = np.array([float(r["score"]) for r in rows])
    groups = np.array([str(r.get("input", i)) for i, r in enumerate(rows)])
    inputs = np.unique(groups)
    rng = np.random.default_rng(seed)
    out = {r: {"n_evals": 0, "n_other": 0, "n_accepted": 0, "n_good": 0, "evals_accepting": 0, "evals_below": 0,
               "thresholds": []} for r in rules}
    for _ in range(splits):
        half = np.isin(groups, rng.permutation(inputs)[: len(inputs) // 2])
        for fit, other in ((half, ~half), (~half, half)):
            for rule in rules:
                t = rule_threshold(rule, y[fit], s[fit], min_precision, min_support)
                acc = other & (s > t)
                o = out[rule]
                o["n_evals"] += 1
                o["n_other"] += int(other.sum())
                o["n_accepted"] += int(acc.sum())
                o["n_good"] += int((acc & y).sum())
                o["thresholds"].append(t)
                if acc.any():
                    o["evals_accepting"] += 1
                    o["evals_below"] += int(y[acc].mean() < min_precision)
    for o in out.values():
        o["accepted_share"] = o["n_accepted"] / o["n_other"]
        o["precision"] = o["n_good"] / o["n_accepted"] if o["n_accepted"] else None
    return out


def table(name: str, rows: list[dict], res: dict[str, dict], min_precision: float) -> str:
    y = [float(r["label"]) >= 0.5 for r in rows]
    s = [r["score"] for r in rows]
    within = within_group_auc(y, s, [r.get("input", i) for i, r in enumerate(rows)])
    w = "n/a" if within["auc"] is None else f"{within['auc']:.3f} ({within['n_pairs']} pairs, {within['n_groups']} inputs)"
    lines = [f"{name}: {len(rows)} held-out labels of {len({r.get('input') for r in rows})} inputs, "
             f"{100 * np.mean(y):.1f} % good; ROC-AUC {roc_auc(y, s):.3f}, within-input AUC {w}; bar {min_precision:g}",
             "| rule | other half accepted | precision of the accepted | evaluations accepting | of them below the bar |",
             "|---|---|---|---|---|"]
    names = {"fixed": "0.5 (the discriminator's own)", "estimate": f"estimate >= {min_precision:g}",
             "lower95": f"Wilson lower95 >= {min_precision:g}"}
    for rule, o in res.items():
        prec = "nothing accepted" if o["precision"] is None else f"{100 * o['precision']:.1f} %"
        lines.append(f"| {names[rule]} | {100 * o['accepted_share']:.1f} % | {prec} | "
                     f"{o['evals_accepting']} / {o['n_evals']} | {o['evals_below']} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("disc", type=Path, nargs="+", help="discriminator folders with heldout_scores.json")
    p.add_argument("--min-precision", type=float, default=0.9)
    p.add_argument("--min-support", type=int, default=10)
    p.add_argument("--splits", type=int, default=200)
    a = p.parse_args(argv)
    for d in a.disc:
        f = d / "heldout_scores.json"
        if not f.is_file():
            p.error(f"{f} does not exist: give a discriminator folder that train_discriminator wrote")
        rows = json.loads(f.read_text())
        res = crossfit(rows, ["fixed", "estimate", "lower95"], a.min_precision, a.min_support, a.splits)
        print(table(str(d), rows, res, a.min_precision) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
