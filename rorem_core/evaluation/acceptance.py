"""Auto-acceptance precision: of the candidates the discriminator accepted into the training set, the
share the judge (rorem_core/evaluation/judge.py) calls clean against the pool's hidden GT (issue 13,
part 4: >= 0.90 every round, reported next to the human acceptance rate).

Only synthetic pools have a hidden GT (data/hidden/round-K/meta.json, ``[{"id", "GT"}]`` keyed by input
id); for a pool of photos the precision is unknown (None), never guessed.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

from rorem_core.data.formats import dataset_file, read_hidden_gt
from rorem_core.evaluation.metrics import proportion_ci95


def acceptance_precision(clean: Sequence[bool], reasons: Sequence[str | None] = ()) -> dict:
    """{n, n_clean, precision, ci95 (Wilson), reasons (count of each judge reason among the unclean)}
    of the accepted candidates' judge verdicts ``clean``; precision None when nothing was accepted."""
    n, k = len(clean), sum(bool(c) for c in clean)
    bad = Counter(r for c, r in zip(clean, reasons) if not c and r)
    return {"n": n, "n_clean": k, "precision": k / n if n else None,
            "ci95": list(proportion_ci95(k, n)) if n else None, "reasons": dict(sorted(bad.items()))}


def hidden_gt(hidden: Path) -> dict[str, Path]:
    """{input id: GT file} from a hidden-GT folder or its meta.json; {} when there is none."""
    return read_hidden_gt(hidden) if dataset_file(hidden).is_file() else {}


def judge_accepted(accepted_meta: Path, hidden: Path) -> dict | None:
    """Judge every accepted triplet of ``accepted_meta`` (auto_score's meta.json: source, mask, GT = the
    accepted result, input_id; paths relative to its folder) against the hidden GT of its input.
    None when the pool has no hidden GT; triplets whose input has none are counted in ``n_without_gt``."""
    from rorem_core.data.images import load_mask, load_rgb
    from rorem_core.evaluation.judge import judge

    gt = hidden_gt(hidden)
    if not gt:
        return None
    entries = json.loads(accepted_meta.read_text(encoding="utf-8")) if accepted_meta.is_file() else []
    base, clean, reasons, missing = accepted_meta.parent, [], [], 0
    for e in entries:
        g = gt.get(str(e.get("input_id")))
        if g is None:
            missing += 1
            continue
        v = judge(load_rgb(base / e["source"]), load_mask(base / e["mask"]), load_rgb(base / e["GT"]), load_rgb(g))
        clean.append(v.good)
        reasons.append(v.reason)
    return {**acceptance_precision(clean, reasons), "n_without_gt": missing}
