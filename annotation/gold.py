"""Gold tasks: review tasks with known answers, mixed into a round's review project.

Sources of a known answer, per input of the round:
  gt         the pool's hidden ground truth shown as the "result": a clean removal -> good
  source     the unedited source shown as the "result": the object remains -> bad (object_remains)
  unanimous  (``gold.unanimous``) an earlier round's result that at least ``unanimous_min_votes``
             annotators labelled the same way -> that label

Known-good gold is required (GT or a unanimous "good"): gold of only "bad" answers would reward an
annotator who always answers bad, so without it the round proceeds without gold and says why, and
the gold drawn has as many good as bad answers.

A gold task looks like any other review task: same data keys, a candidate id of the same form
(``r<N>-<input>-k<j>`` with ``j`` after the input's real candidates), a priority and a decoy
prediction copied from a real task of the round, and its images served from the same folder under
opaque names (:func:`neutral_copy`). Which tasks are gold, and their answers, live only in
``data/annotations/round-N/push.json`` (never in Label Studio).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from annotation.config import GoldConfig
from annotation.convert import BAD, GOOD
from rorem_core.data.formats import Candidate, FormatError, read_hidden_gt, resolve_in_root


@dataclass(frozen=True)
class GoldItem:
    key: str            # the task's candidate_id (looks like a real one)
    input_id: str
    answer: str         # good | bad
    origin: str         # gt | source | unanimous
    source: str         # absolute paths
    mask: str
    result: str


@dataclass
class GoldPlan:
    items: list[GoldItem]       # mixed into the review project
    examples: list[GoldItem]    # shown in the instructions only (never a task)
    wanted: int                 # n_gold the share asks for
    available: dict[str, int]   # origin -> how many could be drawn
    message: str                # what happened, for the summary and the report

    @classmethod
    def from_json(cls, d: dict) -> "GoldPlan":
        return cls([GoldItem(**g) for g in d["tasks"].values()], [GoldItem(**g) for g in d["examples"]],
                   d["wanted"], d["available"], d["message"])

    def as_json(self) -> dict:
        return {"wanted": self.wanted, "n_gold": len(self.items), "available": self.available,
                "message": self.message, "tasks": {g.key: asdict(g) for g in self.items},
                "examples": [asdict(g) for g in self.examples]}


def n_wanted(share: float, n_real: int) -> int:
    """Gold tasks for ``n_real`` real ones so that gold / (gold + real) ~= share."""
    return int(round(share / (1.0 - share) * n_real)) if n_real else 0


def read_unanimous(labels_dir: Path | None, min_votes: int) -> list[tuple[dict, Path]]:
    """Entries of ``labels_dir/meta.json`` whose votes (>= min_votes) all agree, with their folder."""
    meta = Path(labels_dir) / "meta.json" if labels_dir else None
    if meta is None or not meta.is_file():
        return []
    rows = json.loads(meta.read_text(encoding="utf-8"))
    out = []
    for r in rows:
        votes = list((r.get("votes") or {}).values())
        if len(votes) >= min_votes and len(set(votes)) == 1 and votes[0] in (GOOD, BAD):
            out.append((r, meta.parent))
    return out


def _hidden_gt(hidden_meta: Path | None) -> dict[str, Path]:
    """The pool's hidden GT, or {} when it has none (gold then comes from earlier labels only)."""
    return read_hidden_gt(hidden_meta) if hidden_meta is not None and Path(hidden_meta).is_file() else {}


def _key(input_id: str, round_id: int, taken: set[str], counts: dict[str, int]) -> str:
    j = counts.get(input_id, 0)
    while (key := f"r{round_id}-{input_id}-k{j}") in taken:
        j += 1
    counts[input_id] = j + 1
    taken.add(key)
    return key


def plan_gold(cfg: GoldConfig, round_id: int, cands: list[Candidate], base: Path, *,
              hidden_meta: Path | None = None, prev_labels: Path | None = None) -> GoldPlan:
    """Draw the round's gold tasks (module docstring); deterministic in (cfg.seed, round_id)."""
    base = Path(base)
    wanted = n_wanted(cfg.share, len(cands))
    if cfg.share == 0:
        return GoldPlan([], [], 0, {}, "gold tasks off (annotation.gold.share = 0)")
    gt = _hidden_gt(hidden_meta)
    inputs: dict[str, Candidate] = {}
    for c in sorted(cands, key=lambda c: c.id):
        inputs.setdefault(c.input_id, c)
    good, bad = [], []
    for iid, c in sorted(inputs.items()):
        src, msk = str((base / c.source).resolve()), str((base / c.mask).resolve())
        if iid in gt:
            good.append(("gt", iid, GOOD, src, msk, str(gt[iid])))
        bad.append(("source", iid, BAD, src, msk, src))
    n_unan = 0
    if cfg.unanimous:
        for row, folder in read_unanimous(prev_labels, cfg.unanimous_min_votes):
            label = next(iter(row["votes"].values()))
            try:
                paths = [str(resolve_in_root(folder, row[k], where=str(folder / "meta.json")))
                         for k in ("source", "mask", "GT")]
            except (FormatError, KeyError):
                continue
            (good if label == GOOD else bad).append(("unanimous", str(row.get("input_id") or row.get("id")),
                                                     label, *paths))
            n_unan += 1
    available = {"gt": len(gt.keys() & inputs.keys()), "source": len(inputs), "unanimous": n_unan}
    if not good:
        where = f"{hidden_meta}" if hidden_meta else "no hidden GT for this pool"
        return GoldPlan([], [], wanted, available,
                        f"no gold: no known-good answers (hidden GT: {where}; unanimous earlier labels: "
                        f"{n_unan if cfg.unanimous else 'annotation.gold.unanimous is off'}); the round proceeds "
                        "without gold tasks and annotator accuracy is not measured")
    rng = np.random.default_rng([cfg.seed, round_id])
    good = [good[i] for i in rng.permutation(len(good))]
    bad = [bad[i] for i in rng.permutation(len(bad))]
    taken, counts = {c.id for c in cands}, {}
    for c in cands:
        counts[c.input_id] = counts.get(c.input_id, 0) + 1
    make = lambda t: GoldItem(_key(t[1], round_id, taken, counts), *t[1:3], t[0], *t[3:])
    examples = []
    if cfg.examples and len(good) > 1 and len(bad) > 1:
        examples = [make(good.pop()), make(bad.pop())]
    k = min(len(good), len(bad), -(-wanted // 2))   # as many good as bad answers: "always bad" scores 50 %
    items = [make(pool.pop()) for _ in range(k) for pool in (good, bad)][:wanted]
    msg = f"{len(items)} gold task(s) ({sum(g.answer == GOOD for g in items)} good, " \
          f"{sum(g.answer == BAD for g in items)} bad) of {wanted} wanted"
    if len(items) < wanted:
        msg += f"; only {k} known-good and {k} known-bad answers could be paired"
    return GoldPlan(items, examples, wanted, available, msg)


def gold_candidates(plan: GoldPlan, round_id: int, cands: list[Candidate]) -> list[Candidate]:
    """Gold items as candidates (absolute paths), each with a decoy score copied from a real candidate of
    the round (none when no real candidate has a score), so its prediction looks like the others'."""
    scored = sorted((c for c in cands if c.score is not None), key=lambda c: c.id)
    out = []
    for g in plan.items:
        h = int.from_bytes(hashlib.sha256(g.key.encode()).digest()[:4], "little")
        decoy = scored[h % len(scored)] if scored else None
        out.append(Candidate(id=g.key, round=round_id, input_id=g.input_id, seed=h, model="gold", steps=0,
                             source=g.source, mask=g.mask, result=g.result,
                             score=decoy.score if decoy else None, score_model=decoy.score_model if decoy else None))
    return out


def decoy_priority(key: str, ranked: list[float]) -> float:
    """A real task's priority (picked by a hash of the gold key): gold is spread through the queue.

    ``ranked``: the real tasks' priorities, sorted (once per push, not once per gold task)."""
    if not ranked:
        return 0.0
    return ranked[int.from_bytes(hashlib.sha256(key.encode()).digest()[:4], "little") % len(ranked)]


def neutral_name(src: Path, folder: Path, round_id: int, role: str,
                 realpath: Callable[[Path], str] = os.path.realpath) -> Path:
    """Where :func:`neutral_copy` puts ``src``: ``folder/<opaque>.png``, a name that hides where it came
    from (GT, source, result). ``realpath``: ``os.path.realpath`` or a faster equal one
    (:class:`annotation.paths.RealPaths`, for many files of few folders)."""
    return Path(folder) / (hashlib.sha256(f"{round_id}|{role}|{realpath(src)}".encode()).hexdigest()[:20]
                           + ".png")


def neutral_copy(src: Path, folder: Path, round_id: int, role: str,
                 realpath: Callable[[Path], str] = os.path.realpath) -> Path:
    """``src`` under :func:`neutral_name`, unless already there (same size): :func:`place_copy`."""
    return place_copy(src, neutral_name(src, folder, round_id, role, realpath))


def place_copy(src: Path, target: Path) -> Path:
    """``src`` at ``target`` unless a file of its size is there already.

    A hard link where the file system allows it (same bytes, no second copy on disk: a round of
    10,000 candidates links 15,000 files in ~1 s instead of copying them in ~4 s; nothing here
    modifies a file in place), else a copy; through a temp name and a rename (atomic)."""
    try:
        if os.stat(target).st_size == os.stat(src).st_size:
            return target
    except FileNotFoundError:
        pass
    os.makedirs(os.path.dirname(target), exist_ok=True)
    tmp = os.fspath(target) + ".tmp"
    if os.path.lexists(tmp):
        os.unlink(tmp)
    try:
        os.link(src, tmp)
    except OSError:          # another file system, or links not allowed here
        shutil.copyfile(src, tmp)
        os.chmod(tmp, 0o644)
    os.replace(tmp, target)
    return Path(target)
