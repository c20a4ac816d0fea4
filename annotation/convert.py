"""Label Studio export JSON -> our formats (pure: no I/O, no HTTP).

Rules, applied per task:
- one vote per annotator: among an annotator's annotations on a task the latest ``updated_at``
  (then highest id) wins; older ones are counted as ``superseded``;
- a cancelled (skipped) latest annotation gives no vote and is counted as ``skipped``;
- a result that does not match the labeling config, or an empty result, gives no vote and is
  reported as a problem (never dropped silently);
- the label is the strict majority of the votes; a tie gives no label (listed in ``ties``);
  fewer than ``min_labels`` votes gives no label (listed in ``insufficient``);
- tasks whose key (candidate id / pair id) is missing or unknown are reported as problems.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

from annotation.agreement import agreement_summary

QUALITY, REASON, PREF = "quality", "reason", "pref"
GOOD, BAD = "good", "bad"
REASONS = ("object_remains", "artifacts", "new_object", "shadow_or_reflection_left", "smudge", "texture_broken")
VOLATILE_KEYS = frozenset({"created_ago"})  # "0 minutes": changes with the clock, not the data


class ResultMismatch(ValueError):
    """An annotation result does not fit the labeling config."""


def normalize_export(tasks: list[dict]) -> list[dict]:
    """Drop clock-dependent keys and sort tasks, annotations, predictions and drafts by id."""
    def clean(x: Any) -> Any:
        if isinstance(x, dict):
            return {k: clean(v) for k, v in x.items() if k not in VOLATILE_KEYS}
        if isinstance(x, list):
            return [clean(v) for v in x]
        return x

    out = [clean(t) for t in tasks]
    for t in out:
        for key in ("annotations", "predictions", "drafts"):
            if isinstance(t.get(key), list) and all(isinstance(a, dict) for a in t[key]):
                t[key].sort(key=lambda a: a.get("id", 0))
    return sorted(out, key=lambda t: t.get("id", 0))


def annotator_of(ann: dict) -> str:
    """The annotator's email (full export), else ``user-<id>`` (id-only export)."""
    who = ann.get("completed_by")
    if isinstance(who, dict):
        return who.get("email") or f"user-{who.get('id')}"
    return f"user-{who}" if who is not None else "unknown"


def parse_review(result: list[dict]) -> tuple[str, tuple[str, ...]]:
    """(good|bad, reasons) from a review result; raises ResultMismatch."""
    quality, reasons = None, ()
    for item in result:
        name, value = item.get("from_name"), item.get("value") or {}
        choices = value.get("choices")
        if item.get("type") != "choices" or not isinstance(choices, list):
            raise ResultMismatch(f"result item {name!r} of type {item.get('type')!r} is not a choice")
        if name == QUALITY:
            if len(choices) != 1 or choices[0] not in (GOOD, BAD):
                raise ResultMismatch(f"quality must be exactly one of good/bad, got {choices}")
            quality = choices[0]
        elif name == REASON:
            unknown = [c for c in choices if c not in REASONS]
            if unknown:
                raise ResultMismatch(f"unknown reason(s) {unknown}; allowed: {', '.join(REASONS)}")
            reasons = tuple(sorted(choices))
        else:
            raise ResultMismatch(f"unknown control {name!r} (config has {QUALITY}, {REASON})")
    if quality is None:
        raise ResultMismatch("no quality choice in the result")
    return quality, reasons


def parse_pairwise(result: list[dict]) -> tuple[str, tuple[str, ...]]:
    """(left|right, ()) from a pairwise result, found by type, not to_name (the UI writes to_name=pref)."""
    picks = [it for it in result if it.get("type") == "pairwise"]
    others = [it.get("type") for it in result if it.get("type") != "pairwise"]
    if others or len(picks) != 1:
        raise ResultMismatch(f"expected one pairwise item, got types {[it.get('type') for it in result]}")
    selected = (picks[0].get("value") or {}).get("selected")
    if selected not in ("left", "right"):
        raise ResultMismatch(f"pairwise value.selected must be left/right, got {selected!r}")
    return selected, ()


@dataclass
class TaskOutcome:
    key: str                      # candidate id (review) or pair id (pairwise)
    task_ids: list[int]
    votes: dict[str, str]         # annotator -> label (valid votes only)
    reasons: Counter = field(default_factory=Counter)
    skipped: list[str] = field(default_factory=list)
    label: str | None = None      # strict majority, if any
    status: str = "unlabeled"     # labeled | tie | insufficient | unlabeled


@dataclass
class Conversion:
    project: str
    outcomes: dict[str, TaskOutcome]
    problems: list[dict]
    counts: Counter
    per_annotator: dict[str, Counter]

    def summary(self) -> dict:
        by_status = Counter(o.status for o in self.outcomes.values())
        return {
            "tasks": len(self.outcomes), **{s: by_status.get(s, 0) for s in
                                            ("labeled", "tie", "insufficient", "unlabeled")},
            "labels": dict(sorted(Counter(o.label for o in self.outcomes.values() if o.label).items())),
            "annotations": dict(sorted(self.counts.items())),
            "per_annotator": {a: dict(sorted(c.items())) for a, c in sorted(self.per_annotator.items())},
            "agreement": agreement_summary([list(o.votes.values()) for o in self.outcomes.values()]),
            "ties": sorted(k for k, o in self.outcomes.items() if o.status == "tie"),
            "insufficient": sorted(k for k, o in self.outcomes.items() if o.status == "insufficient"),
            "problems": self.problems,
        }


def majority(labels: Iterable[str]) -> str | None:
    """The label with strictly more votes than any other; None on a tie or no votes."""
    top = Counter(labels).most_common(2)
    if not top or (len(top) == 2 and top[0][1] == top[1][1]):
        return None
    return top[0][0]


def convert(tasks: list[dict], *, project: str, key_field: str, known: set[str] | None,
            parse: Callable[[list[dict]], tuple[str, tuple[str, ...]]], min_labels: int = 1) -> Conversion:
    """Votes, majority labels, counts and problems for one project's export."""
    conv = Conversion(project, {}, [], Counter(), {})
    latest: dict[str, dict[str, dict]] = {}   # key -> annotator -> winning annotation
    for task in tasks:
        key = (task.get("data") or {}).get(key_field)
        n_ann = len(task.get("annotations") or [])
        if key is None or (known is not None and key not in known):
            conv.problems.append({"kind": "unknown_task", "project": project, "task_id": task.get("id"),
                                  "detail": f"{key_field}={key!r} is not in this round's manifest; "
                                            f"{n_ann} annotation(s) on it are not converted",
                                  "fix": "pull with the candidates.json the round was pushed from, or delete "
                                         "the stray task in Label Studio"})
            conv.counts["on_unknown_tasks"] += n_ann
            continue
        if key in conv.outcomes:
            conv.problems.append({"kind": "duplicate_task", "project": project, "task_id": task.get("id"),
                                  "detail": f"a second task for {key_field}={key!r}; votes merged",
                                  "fix": "none needed; delete the duplicate task in Label Studio to silence this"})
            conv.outcomes[key].task_ids.append(task.get("id"))
        else:
            conv.outcomes[key] = TaskOutcome(key, [task.get("id")], {})
        for ann in task.get("annotations") or []:
            conv.counts["total"] += 1
            who = annotator_of(ann)
            prev = latest.setdefault(key, {}).get(who)
            rank = (str(ann.get("updated_at") or ""), ann.get("id") or 0)
            if prev is None or rank > (str(prev.get("updated_at") or ""), prev.get("id") or 0):
                latest[key][who] = ann
            conv.counts["superseded"] += prev is not None
    for key, by_who in latest.items():
        _collect_votes(conv, conv.outcomes[key], by_who, parse)
    for out in conv.outcomes.values():
        out.label = majority(out.votes.values()) if len(out.votes) >= min_labels else None
        out.status = ("labeled" if out.label else "unlabeled" if not out.votes
                      else "insufficient" if len(out.votes) < min_labels else "tie")
    return conv


def _collect_votes(conv: Conversion, out: TaskOutcome, by_who: dict[str, dict],
                   parse: Callable[[list[dict]], tuple[str, tuple[str, ...]]]) -> None:
    for who, ann in sorted(by_who.items()):
        stats = conv.per_annotator.setdefault(who, Counter())
        if ann.get("was_cancelled"):
            out.skipped.append(who)
            conv.counts["skipped"] += 1
            stats["skipped"] += 1
            continue
        try:
            if not ann.get("result"):
                raise ResultMismatch("empty result (submitted without a label)")
            label, reasons = parse(ann["result"])
        except ResultMismatch as e:
            conv.problems.append({"kind": "result_mismatch", "project": conv.project,
                                  "task_id": ann.get("task"), "annotation_id": ann.get("id"),
                                  "annotator": who, "detail": str(e),
                                  "fix": "ask the annotator to re-submit this task with the round's labeling "
                                         "config (annotation/configs/); check the project's config was not edited"})
            conv.counts["mismatched"] += 1
            stats["mismatched"] += 1
            continue
        out.votes[who] = label
        out.reasons.update(reasons)
        conv.counts["votes"] += 1
        stats["votes"] += 1
