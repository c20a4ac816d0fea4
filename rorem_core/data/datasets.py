"""Datasets that grow round by round, as RORem's training set does: merge RORem ``meta.json`` folders
into one new, self-contained folder.

    merged/meta.json            the entries (extra keys kept; ``origin`` and ``round`` added when missing)
    merged/{source,mask,GT}/    every image once, named by content: ``<sha256[:24]>.png``

Content names make the merge idempotent and deduplicating: the same image reached through two
rounds is one file, and the same (source, mask, GT) triple is one entry unless ``keep_repeats``
(labels: one input judged in two rounds is two labels). Images are hard-linked from their sources
(no bytes copied; copied across filesystems); nothing in the inputs is ever modified.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from rorem_core.data.formats import FormatError, dataset_file, read_triplets, resolve_in_root
from rorem_core.data.validate import require_valid
from rorem_core.io import atomic_dir, link_or_copy, sha256_file, write_json_atomic

KEYS = ("source", "mask", "GT")


@dataclass
class Part:
    """One input of a merge: a meta.json, which of its entries to keep, and their provenance."""

    meta: Path
    origin: str                                      # seed | human | auto | ... (kept if an entry has one)
    round: int | None = None                         # the round its entries came from (kept if present)
    keep: Callable[[dict], bool] = lambda e: True    # e.g. human labels: accepted only
    edit: Callable[[dict], dict] = lambda e: e       # e.g. a training set keeps scores as provenance


@dataclass
class MergeResult:
    entries: list[dict]
    counts: dict[str, int] = field(default_factory=dict)   # origin -> entries kept
    n_inputs: dict[str, int] = field(default_factory=dict)  # part meta -> entries read
    n_duplicates: int = 0


def meta_of(p: Path) -> Path:
    """A dataset folder's meta.json (``scored/meta.json`` inside an annotation pull), or the file itself."""
    return dataset_file(p, "scored/meta.json", "meta.json")


def _entries(part: Part) -> Iterable[tuple[dict, dict[str, Path]]]:
    meta = meta_of(part.meta)
    if meta.is_file() and meta.read_text().strip() == "[]":
        return                    # an empty set (round 0's labels) is valid here, unlike for training
    require_valid(meta)           # every problem of the input at once, before anything is written
    root = meta.parent
    for i, t in enumerate(read_triplets(meta)):
        entry = t.model_dump(exclude_none=True)
        if not part.keep(entry):
            continue
        entry = part.edit(entry)
        files = {k: resolve_in_root(root, entry[k], where=f"{meta} entry {i}") for k in KEYS}
        entry.setdefault("origin", part.origin)
        if part.round is not None:
            entry.setdefault("round", part.round)
        yield entry, files


def merge(parts: Sequence[Part], out_dir: Path, *, keep_repeats: bool = False, link: str = "hardlink") -> MergeResult:
    """Merge ``parts`` in order into ``out_dir`` (written atomically). The first occurrence of a triple
    wins; with ``keep_repeats`` every entry is kept but its images are still stored once."""
    res, seen, hashes, ids = MergeResult(entries=[]), set(), {}, set()
    files_out: dict[str, Path] = {}
    for part in parts:
        n = 0
        for entry, files in _entries(part):
            n += 1
            names = {}
            for k, f in files.items():
                h = hashes.get(f) or hashes.setdefault(f, sha256_file(f)[:24])
                names[k] = f"{k}/{h}{f.suffix.lower() or '.png'}"
                files_out[names[k]] = f
            key = tuple(names[k] for k in KEYS) + ((len(res.entries),) if keep_repeats else ())
            if key in seen:
                res.n_duplicates += 1
                continue
            seen.add(key)
            if "id" in entry:   # ids stay unique: a repeat gets its provenance appended
                base, k = f"{entry['id']}@{entry['origin']}" + (f"-r{entry['round']}" if "round" in entry else ""), 1
                entry["id"] = entry["id"] if entry["id"] not in ids else base
                while entry["id"] in ids:
                    entry["id"], k = f"{base}-{k}", k + 1
                ids.add(entry["id"])
            res.entries.append({**entry, **names})
            res.counts[entry["origin"]] = res.counts.get(entry["origin"], 0) + 1
        res.n_inputs[str(part.meta)] = n
    with atomic_dir(out_dir) as tmp:
        for rel, src in files_out.items():
            link_or_copy(src, tmp / rel, link)
        write_json_atomic(tmp / "meta.json", res.entries)
    return res


def require_parts(paths: Sequence[Path], what: str) -> None:
    """Every input exists before a merge starts (the error names the file and the stage that makes it)."""
    missing = [str(meta_of(p)) for p in paths if not meta_of(p).is_file()]
    if missing:
        raise FormatError(f"{what}: missing {', '.join(missing)}; run the stage that writes it first "
                          "(dvc repro shows which) or fix the path in params.yaml rounds")
