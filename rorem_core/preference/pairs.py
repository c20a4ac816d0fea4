"""Preference data: scored removal results and the preference pairs built from them (build_pairs).

A pair is two results of the SAME input (same source and mask bytes), ``preferred`` beating
``rejected``. Three rules, in priority order (a higher rule wins when two rules give the same pair):

  human_pair    (a) human pairwise choices: the annotation layer's RORem pairs file, extra keys
                    allowed; an entry with ``"tie": true`` (or ``"label": 0.5``) is a tie
  good_bad      (b) a human-good and a human-bad result of the same input (scored triplets /
                    candidates whose ``score`` is a human 0/1 label): every good x bad combination
  score_margin  (c) two results of the same input whose discriminator scores (probability of good)
                    differ by at least ``margin``; a smaller gap is a tie

Identity is by content: an input is sha256(source bytes, mask bytes), a result sha256(its bytes),
so copies of one image are one image and candidates of different rounds never mix by id. Ties are
dropped; the same unordered pair given twice is kept once (``duplicates``); a lower rule disagreeing
with a higher one is dropped and counted (``conflicts``); opposite votes within one rule cancel
(a tie). Written pairs live with their images: ``<out>/pairs.json`` + ``<out>/images/<sha>.png``
(content-addressed copies, so every path is inside the output folder as ``resolve_in_root`` wants).

For training, pairs and labelled results become latent-cache entries (``pair_entries``,
``labelled_entries``): a pair is two ordinary entries, (source, mask, preferred) and (source, mask,
rejected), loaded together by ``load_pair_batch``; the split into train / held-out is by input.
"""

from __future__ import annotations

import itertools
import json
import shutil
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Callable, Iterable, Sequence

import torch

from rorem_core.data.formats import (
    FormatError,
    Pair,
    dataset_file,
    read_candidates,
    read_pairs,
    read_triplets,
    resolve_in_root,
    write_entries,
)
from rorem_core.data.latents import LatentCache, load_batch
from rorem_core.io import atomic_dir, sha256_bytes, sha256_file

RULES = ("human_pair", "good_bad", "score_margin")  # priority order


@dataclass(frozen=True)
class Scored:
    """One removal result of an input, with its score (None = unscored)."""

    source: Path
    mask: Path
    result: Path
    score: float | None
    id: str | None = None        # candidate id, when known
    input_id: str | None = None  # pool item id, when known


@dataclass(frozen=True)
class Preference:
    """A pair before writing: absolute paths, the rule that made it and provenance extras."""

    source: Path
    mask: Path
    preferred: Path
    rejected: Path
    rule: str
    extra: dict = field(default_factory=dict, compare=False, hash=False)


def _file_hash(path: Path) -> str:
    st = Path(path).stat()  # keyed by size + mtime too: a rewritten file is hashed again
    return _hash_cached(Path(path), st.st_size, st.st_mtime_ns)


@lru_cache(maxsize=65536)
def _hash_cached(path: Path, size: int, mtime_ns: int) -> str:
    return sha256_file(path)


def input_key(source: Path, mask: Path) -> str:
    """Identity of an input: its source and mask bytes (paths and ids do not matter)."""
    return sha256_bytes(_file_hash(source).encode(), _file_hash(mask).encode())


# ---------------------------------------------------------------- reading scored results


def read_scored(path: Path) -> list[Scored]:
    """Scored results from a candidates manifest (``{"candidates": [...]}``) or a scored RORem
    triplets meta.json (``[{"source", "mask", "GT", "score"}]``, GT = the removal result)."""
    path = Path(path)
    path = dataset_file(path, "candidates.json", "meta.json")
    try:
        is_manifest = isinstance(json.loads(path.read_text(encoding="utf-8")), dict)
    except (OSError, json.JSONDecodeError) as e:
        raise FormatError(f"{path}: unreadable ({e}); pass a candidates.json or a scored meta.json") from e
    root = path.parent
    if is_manifest:
        return [Scored(*(resolve_in_root(root, r, where=f"{path} candidate {c.id}")
                         for r in (c.source, c.mask, c.result)),
                       score=c.score, id=c.id, input_id=c.input_id) for c in read_candidates(path)]
    out = []
    for i, t in enumerate(read_triplets(path)):
        where = f"{path} entry {i}"
        out.append(Scored(*(resolve_in_root(root, r, where=where) for r in (t.source, t.mask, t.GT)),
                          score=t.score, id=getattr(t, "id", None), input_id=getattr(t, "input_id", None)))
    return out


def by_input(samples: Iterable[Scored]) -> dict[str, list[Scored]]:
    """Group scored results by input identity, first-seen order; duplicate result files kept once."""
    groups: dict[str, dict[str, Scored]] = defaultdict(dict)
    for s in samples:
        groups[input_key(s.source, s.mask)].setdefault(_file_hash(s.result), s)
    return {k: list(v.values()) for k, v in groups.items()}


# ---------------------------------------------------------------- the three rules


def _extra(w: Scored, l: Scored) -> dict:
    out = {"input_id": w.input_id or l.input_id, "preferred_id": w.id, "rejected_id": l.id,
           "preferred_score": w.score, "rejected_score": l.score}
    return {k: v for k, v in out.items() if v is not None}


def human_pairs(path: Path) -> tuple[list[Preference], int]:
    """Rule (a) from a pairs file; returns (pairs, ties). Extra keys are kept as provenance."""
    path = Path(path)
    prefs, ties = [], 0
    for i, p in enumerate(read_pairs(path)):
        extra = dict(p.model_extra or {})
        files = [resolve_in_root(path.parent, r, where=f"{path} entry {i}")
                 for r in (p.source, p.mask, p.preferred, p.rejected)]
        if extra.get("tie") is True or extra.get("label") == 0.5 or _file_hash(files[2]) == _file_hash(files[3]):
            ties += 1
            continue
        keep = {k: v for k, v in extra.items() if k not in ("tie", "label", "rule")}
        prefs.append(Preference(*files, rule="human_pair", extra=keep))
    return prefs, ties


def good_bad_pairs(samples: Sequence[Scored], *, good_min: float, bad_max: float,
                   max_per_input: int | None = None) -> tuple[list[Preference], Counter]:
    """Rule (b): every (good, bad) combination within an input; counts inputs without both."""
    prefs, stats = [], Counter()
    for group in by_input(samples).values():
        scored = [s for s in group if s.score is not None]
        stats["unscored"] += len(group) - len(scored)
        good = [s for s in scored if s.score >= good_min]
        bad = [s for s in scored if s.score < bad_max]
        combos = sorted(itertools.product(good, bad), key=lambda gb: gb[1].score - gb[0].score)
        stats["inputs_without_both"] += not combos
        for w, l in combos[:max_per_input]:
            prefs.append(Preference(w.source, w.mask, w.result, l.result, "good_bad", _extra(w, l)))
    return prefs, stats


def margin_pairs(samples: Sequence[Scored], *, margin: float,
                 max_per_input: int | None = None) -> tuple[list[Preference], Counter]:
    """Rule (c): pairs within an input whose score gap is >= margin (smaller gaps are ties)."""
    prefs, stats = [], Counter()
    for group in by_input(samples).values():
        scored = [s for s in group if s.score is not None]
        stats["unscored"] += len(group) - len(scored)
        combos = []
        for a, b in itertools.combinations(scored, 2):
            w, l = (a, b) if a.score >= b.score else (b, a)
            if w.score - l.score >= margin:
                combos.append((w, l))
            else:
                stats["ties"] += 1
        combos.sort(key=lambda wl: wl[1].score - wl[0].score)   # largest gap first
        for w, l in combos[:max_per_input]:
            prefs.append(Preference(w.source, w.mask, w.result, l.result, "score_margin", _extra(w, l)))
    return prefs, stats


# ---------------------------------------------------------------- dedupe and write


def dedupe(prefs: Iterable[Preference]) -> tuple[list[Preference], Counter]:
    """One pair per (input, unordered result pair): the highest-priority rule decides.

    Within a rule, votes for opposite directions cancel (net 0 = tie, dropped); repeats are
    duplicates. A lower-priority rule on a decided pair is a duplicate, and also a conflict when
    it points the other way. Returns (kept pairs in first-seen order, counts).
    """
    votes: dict[tuple, dict[str, list[tuple[int, Preference]]]] = defaultdict(lambda: defaultdict(list))
    order: list[tuple] = []
    for p in prefs:
        hw, hl = _file_hash(p.preferred), _file_hash(p.rejected)
        key = (input_key(p.source, p.mask), min(hw, hl), max(hw, hl))
        if key not in votes:
            order.append(key)
        votes[key][p.rule].append((1 if hw < hl else -1, p))
    kept, stats = [], Counter()
    for key in order:
        decided = None
        for rule in RULES:
            entries = votes[key].get(rule, [])
            if not entries:
                continue
            net = sum(d for d, _ in entries)
            if decided is None:
                if net == 0:
                    stats[f"ties_{rule}"] += 1
                    continue
                decided = 1 if net > 0 else -1
                kept.append(next(p for d, p in entries if d == decided))
                stats["duplicates"] += len(entries) - 1
            else:
                stats["duplicates"] += len(entries)
                stats["conflicts"] += sum(d != decided for d, _ in entries)
    return kept, stats


def _copy_in(src: Path, images: Path, copied: dict[Path, str]) -> str:
    """Content-addressed copy into the output folder; returns its path relative to the pairs file."""
    if src not in copied:
        rel = f"images/{_file_hash(src)[:24]}{src.suffix.lower() or '.png'}"
        dst = images.parent / rel
        if not dst.exists():
            shutil.copyfile(src, dst)
        copied[src] = rel
    return copied[src]


def write_pairs(out_dir: Path, prefs: Sequence[Preference]) -> list[Pair]:
    """Write ``out_dir/pairs.json`` (RORem pairs + ``rule`` and provenance) and its images, atomically."""
    out = []
    with atomic_dir(out_dir) as tmp:
        (tmp / "images").mkdir()
        copied: dict[Path, str] = {}
        for p in prefs:
            rel = {k: _copy_in(getattr(p, k), tmp / "images", copied)
                   for k in ("source", "mask", "preferred", "rejected")}
            out.append(Pair(**rel, rule=p.rule, **p.extra))
        write_entries(tmp / "pairs.json", out)
    return out


def pair_counts(pairs: Sequence[Pair]) -> dict[str, int]:
    """Pairs per rule (every rule listed, zeros included)."""
    c = Counter(getattr(p, "rule", None) or "unknown" for p in pairs)
    return {r: c.get(r, 0) for r in RULES} | {k: v for k, v in c.items() if k not in RULES}


# ---------------------------------------------------------------- data: latent entries


def load_pair_batch(entries: Sequence[tuple[Path, Path]]) -> dict[str, torch.Tensor]:
    """(preferred entry, rejected entry) paths -> {w, l, mask, masked, source} (B, C, h, w)."""
    w = load_batch([e[0] for e in entries])
    l = load_batch([e[1] for e in entries])
    return {"w": w["target"], "l": l["target"], "mask": w["mask"], "masked": w["masked"], "source": w["source"]}


def labelled_batch_fn(key: str) -> Callable[[Sequence[tuple[Path, float]]], dict]:
    """Loader for (entry path, value) entries: the cache batch plus ``key`` -> [B] fp32."""
    def fn(entries):
        batch = load_batch([e[0] for e in entries])
        batch[key] = torch.tensor([float(e[1]) for e in entries], dtype=torch.float32)
        return batch
    return fn


def is_val(key: str, fraction: float) -> bool:
    """Deterministic held-out split by input identity (never by pair, so no input leaks)."""
    return fraction > 0 and int(key[:8], 16) / 16**8 < fraction


def pair_files(pairs_files: Sequence[Path]) -> list[tuple[tuple[Path, Path, Path], tuple[Path, Path, Path], str]]:
    """((source, mask, preferred), (source, mask, rejected), input key) for every pair."""
    out = []
    for f in pairs_files:
        f = dataset_file(f, "pairs.json")
        for i, p in enumerate(read_pairs(f)):
            s, m, w, l = (resolve_in_root(f.parent, r, where=f"{f} entry {i}")
                          for r in (p.source, p.mask, p.preferred, p.rejected))
            out.append(((s, m, w), (s, m, l), input_key(s, m)))
    return out


def pair_entries(cache: LatentCache, pairs_files: Sequence[Path], val_fraction: float):
    """(train, val) lists of (preferred entry, rejected entry) cache paths."""
    files = pair_files(pairs_files)
    ew = cache.ensure([f[0] for f in files])
    el = cache.ensure([f[1] for f in files])
    train, val = [], []
    for (_, _, key), w, l in zip(files, ew, el):
        (val if is_val(key, val_fraction) else train).append((w, l))
    return train, val


def labelled_entries(cache: LatentCache, pairs_files: Sequence[Path], scored: Sequence[Path],
                     good_min: float, val_fraction: float):
    """(train, val) lists of (entry, label) for KTO: pairs give preferred=1 / rejected=0, scored
    results give score >= good_min; unscored results are skipped; one label per result file."""
    items: dict[tuple, tuple[tuple[Path, Path, Path], float, str]] = {}
    for w, l, key in pair_files(pairs_files):
        items.setdefault(w, (w, 1.0, key))
        items.setdefault(l, (l, 0.0, key))
    for path in scored:
        for s in read_scored(Path(path)):
            if s.score is not None:
                trip = (s.source, s.mask, s.result)
                items.setdefault(trip, (trip, float(s.score >= good_min), input_key(s.source, s.mask)))
    vals = list(items.values())
    paths = cache.ensure([v[0] for v in vals])
    train, val = [], []
    for (_, label, key), p in zip(vals, paths):
        (val if is_val(key, val_fraction) else train).append((p, label))
    return train, val
