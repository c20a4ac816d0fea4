"""Per-annotator quality from a pulled round (pure: no I/O, no HTTP).

For each annotator: accuracy on gold tasks (known answers, :mod:`annotation.gold`), agreement with
the majority of the *other* annotators on real tasks, Cohen's kappa per pair of annotators over the
real tasks both labelled, median time per task (Label Studio's ``lead_time``, seconds) and skips.
An annotator with at least ``gold.min_answers`` gold answers and a gold accuracy below
``gold.min_accuracy`` is *flagged*; ``gold.flagged_votes`` says what happens to their votes:
``exclude`` (default: dropped before the majority), ``downweight`` (weight ``flagged_weight`` in a
weighted majority) or ``keep``.
"""

from __future__ import annotations

import statistics
from collections import Counter, defaultdict
from itertools import combinations

from annotation.agreement import agreement_summary
from annotation.config import GoldConfig
from annotation.convert import GOOD, Conversion, annotator_of, majority


def cohen_kappa(a: list[str], b: list[str]) -> float | None:
    """Cohen's kappa of two annotators' labels on the same items (lists aligned by item).

    p_o = mean [a_i = b_i],  p_e = sum_c p_a(c) p_b(c),  kappa = (p_o - p_e) / (1 - p_e);
    None when there is no item or p_e = 1 (both always gave one and the same label).
    """
    n = len(a)
    if n == 0 or n != len(b):
        return None
    p_o = sum(x == y for x, y in zip(a, b)) / n
    ca, cb = Counter(a), Counter(b)
    p_e = sum(ca[c] * cb[c] for c in ca) / (n * n)
    return None if p_e >= 1.0 - 1e-12 else (p_o - p_e) / (1.0 - p_e)


def lead_times(tasks: list[dict], key_field: str = "candidate_id") -> dict[str, list[float]]:
    """Seconds per submitted (not cancelled) annotation, per annotator; the latest per task counts."""
    latest: dict[tuple, dict] = {}
    for t in tasks:
        key = (t.get("data") or {}).get(key_field)
        for ann in t.get("annotations") or []:
            k = (key, annotator_of(ann))
            rank = (str(ann.get("updated_at") or ""), ann.get("id") or 0)
            if k not in latest or rank > (str(latest[k].get("updated_at") or ""), latest[k].get("id") or 0):
                latest[k] = ann
    out: dict[str, list[float]] = defaultdict(list)
    for (_, who), ann in sorted(latest.items(), key=lambda kv: (str(kv[0][0]), kv[0][1])):
        if not ann.get("was_cancelled") and isinstance(ann.get("lead_time"), (int, float)):
            out[who].append(float(ann["lead_time"]))
    return dict(out)


def gold_scores(gold: Conversion | None, answers: dict[str, str]) -> dict[str, tuple[int, int]]:
    """annotator -> (gold answers given, correct ones)."""
    out: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for key, o in (gold.outcomes.items() if gold else ()):
        for who, label in o.votes.items():
            out[who][0] += 1
            out[who][1] += label == answers.get(key)
    return {w: (n, k) for w, (n, k) in out.items()}


def agreement_with_others(real: Conversion) -> dict[str, tuple[int, int]]:
    """annotator -> (tasks where the others had a strict majority, tasks agreeing with it)."""
    out: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for o in real.outcomes.values():
        for who, label in o.votes.items():
            others = majority(v for w, v in o.votes.items() if w != who)
            if others is not None:
                out[who][0] += 1
                out[who][1] += label == others
    return {w: (n, k) for w, (n, k) in out.items()}


def pair_kappas(real: Conversion) -> list[dict]:
    """Cohen's kappa and raw agreement per annotator pair over the real tasks both labelled."""
    by_who: dict[str, dict[str, str]] = defaultdict(dict)
    for key, o in real.outcomes.items():
        for who, label in o.votes.items():
            by_who[who][key] = label
    rows = []
    for a, b in combinations(sorted(by_who), 2):
        common = sorted(by_who[a].keys() & by_who[b].keys())
        la, lb = [by_who[a][k] for k in common], [by_who[b][k] for k in common]
        rows.append({"a": a, "b": b, "n": len(common), "kappa": cohen_kappa(la, lb),
                     "agreement": sum(x == y for x, y in zip(la, lb)) / len(common) if common else None})
    return rows


def annotator_table(real: Conversion, gold: Conversion | None, answers: dict[str, str],
                    times: dict[str, list[float]], cfg: GoldConfig) -> dict[str, dict]:
    """One row per annotator (module docstring), with ``flagged``."""
    gs, ag = gold_scores(gold, answers), agreement_with_others(real)
    people = sorted(set(real.per_annotator) | set(gold.per_annotator if gold else ()) | set(times))
    rows = {}
    for who in people:
        n_gold, ok = gs.get(who, (0, 0))
        n_ag, ok_ag = ag.get(who, (0, 0))
        acc = ok / n_gold if n_gold else None
        skips = real.per_annotator.get(who, Counter())["skipped"] + (
            gold.per_annotator.get(who, Counter())["skipped"] if gold else 0)
        rows[who] = {"gold_answers": n_gold, "gold_correct": ok, "gold_accuracy": acc,
                     "agreement_n": n_ag, "agreement_with_others": ok_ag / n_ag if n_ag else None,
                     "votes": real.per_annotator.get(who, Counter())["votes"], "skips": skips,
                     "median_lead_time_s": statistics.median(times[who]) if times.get(who) else None,
                     "flagged": acc is not None and n_gold >= cfg.min_answers and acc < cfg.min_accuracy}
    return rows


def apply_vote_rule(real: Conversion, flagged: set[str], cfg: GoldConfig, min_labels: int) -> int:
    """Relabel ``real`` in place under ``cfg.flagged_votes``; returns how many votes were excluded.

    exclude: flagged annotators' votes are removed, then the strict majority as usual;
    downweight: label = the strictly heaviest label, a flagged vote weighing ``flagged_weight``, 1 otherwise;
    keep: nothing changes. ``min_labels`` counts the votes left.
    """
    if not flagged or cfg.flagged_votes == "keep":
        return 0
    excluded = 0
    for o in real.outcomes.values():
        if cfg.flagged_votes == "exclude":
            gone = [w for w in o.votes if w in flagged]
            excluded += len(gone)
            for w in gone:
                del o.votes[w]
            o.label = majority(o.votes.values()) if len(o.votes) >= min_labels else None
        else:
            weight: Counter = Counter()
            for w, label in o.votes.items():
                weight[label] += cfg.flagged_weight if w in flagged else 1.0
            top = weight.most_common(2)
            tie = not top or (len(top) == 2 and abs(top[0][1] - top[1][1]) < 1e-9) or top[0][1] <= 0
            o.label = None if tie or len(o.votes) < min_labels else top[0][0]
        o.status = ("labeled" if o.label else "unlabeled" if not o.votes
                    else "insufficient" if len(o.votes) < min_labels else "tie")
    return excluded


def discriminator_vs_humans(real: Conversion, predictions: dict[str, dict]) -> dict:
    """How often the discriminator's verdict (score >= 0.5 = good) matches the human label."""
    pairs = [(p["score"] >= 0.5, o.label == GOOD) for k, o in real.outcomes.items()
             if o.label and (p := predictions.get(k)) and p.get("score") is not None]
    return {"n": len(pairs), "agreement": sum(a == b for a, b in pairs) / len(pairs) if pairs else None,
            "disc_good": sum(a for a, _ in pairs), "human_good": sum(b for _, b in pairs)}


def round_quality(real: Conversion, gold: Conversion | None, answers: dict[str, str],
                  times: dict[str, list[float]], cfg: GoldConfig, min_labels: int, *, mode: str,
                  gold_info: dict | None, predictions: dict[str, dict]) -> dict:
    """The ``quality`` section of summary.json; applies the vote rule to ``real`` (in place)."""
    all_votes = agreement_summary([list(o.votes.values()) for o in real.outcomes.values()])
    table = annotator_table(real, gold, answers, times, cfg)
    flagged, pairs = sorted(w for w, r in table.items() if r["flagged"]), pair_kappas(real)
    excluded = apply_vote_rule(real, set(flagged), cfg, min_labels)
    return {"mode": mode, "gold": {k: v for k, v in (gold_info or {}).items() if k not in ("tasks", "examples")}
            if gold_info else {"n_gold": 0, "message": "no push.json: pushed without gold"},
            "gold_tasks_labelled": sum(bool(o.votes) for o in gold.outcomes.values()) if gold else 0,
            "annotators": table, "pairs": pairs, "agreement_all_votes": all_votes,
            "min_accuracy": cfg.min_accuracy, "min_answers": cfg.min_answers, "rule": cfg.flagged_votes,
            "flagged_weight": cfg.flagged_weight if cfg.flagged_votes == "downweight" else None,
            "flagged": flagged, "excluded_votes": excluded,
            "discriminator_vs_humans": discriminator_vs_humans(real, predictions)}
