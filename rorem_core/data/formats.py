"""RORem-compatible dataset formats and the candidates manifest.

On disk (all paths relative to the folder holding the JSON file, as in RORem):

- triplets ``meta.json``: ``[{"source", "mask", "GT"}, ...]``; a scored set adds ``"score"``
  (0/1 from humans, a float from the discriminator);
- preference pairs: ``[{"source", "mask", "preferred", "rejected"}, ...]``;
- a pool (new inputs of a round): ``[{"id", "source", "mask"}, ...]``; its ground truth is kept in a
  separate hidden folder and is read only by the oracle (simulated annotators, evaluation);
- candidates manifest ``candidates.json``: ``{"version": 1, "candidates": [Candidate, ...]}``.

Extra keys (``id``, ``band``, provenance) are kept on read and written back, so a real RORem
``meta.json`` loads unchanged and our own additions survive a round trip.
"""

from __future__ import annotations

import json
from pathlib import Path, PurePosixPath
from typing import Any, Iterable, Sequence, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError

from rorem_core.io import write_json_atomic

IMAGE_KEYS = {"triplet": ("source", "mask", "GT"), "pair": ("source", "mask", "preferred", "rejected"),
              "pool": ("source", "mask")}


class FormatError(ValueError):
    """A dataset file is malformed. The message names the file and how to fix it."""


class Triplet(BaseModel):
    """One training triplet; ``score`` is present in scored sets (1 good / 0 bad, or a probability)."""

    model_config = ConfigDict(extra="allow")
    source: str
    mask: str
    GT: str
    score: float | None = None


class Pair(BaseModel):
    """A preference pair on one input (same source and mask): ``preferred`` beats ``rejected``."""

    model_config = ConfigDict(extra="allow")
    source: str
    mask: str
    preferred: str
    rejected: str


class PoolItem(BaseModel):
    """A new input of a round: the remover sees source + mask; the ground truth is hidden elsewhere."""

    model_config = ConfigDict(extra="allow")
    id: str
    source: str
    mask: str


class Candidate(BaseModel):
    """One removal result with its provenance."""

    model_config = ConfigDict(extra="forbid")
    id: str                    # unique, e.g. "r1-p0007-s1"
    round: int
    input_id: str              # the PoolItem id it was generated from
    seed: int                  # sampling seed of this candidate
    model: str                 # which remover produced it (path or name)
    steps: int                 # scheduler steps requested
    scheduler: str = "euler"
    strength: float = 1.0
    source: str                # relative to the manifest folder
    mask: str                  # the mask the remover was given (after dilation)
    result: str
    score: float | None = None           # discriminator probability of "good", when known
    score_model: str | None = None       # which discriminator produced ``score``


T = TypeVar("T", bound=BaseModel)


def resolve_in_root(root: str | Path, rel: str, *, where: str = "") -> Path:
    """Resolve ``rel`` against ``root``, refusing absolute paths and paths escaping ``root``.

    Raises:
        FormatError: naming ``where`` (the JSON file / entry) and the fix.
    """
    root = Path(root).resolve()
    p = PurePosixPath(rel.replace("\\", "/"))
    if p.is_absolute() or (len(rel) > 1 and rel[1] == ":"):
        raise FormatError(f"{where}: path {rel!r} is absolute; write it relative to {root}")
    full = (root / Path(*p.parts)).resolve()
    if full != root and root not in full.parents:
        raise FormatError(f"{where}: path {rel!r} escapes the dataset root {root}; "
                          "keep every file inside the folder of its meta.json")
    return full


def dataset_file(path: str | Path, *names: str) -> Path:
    """A dataset given as a folder or as its file: for a folder, the first of ``names`` (default
    ``meta.json``) that exists in it, else the last name (the general one, so a "not found" error
    names it); for a file, the file itself. The one place that resolves "a folder or its meta.json"."""
    path, names = Path(path), names or ("meta.json",)
    if not path.is_dir():
        return path
    return next((path / n for n in names if (path / n).is_file()), path / names[-1])


def read_json_list(path: Path, what: str = "entries (RORem meta.json)",
                   missing: str = "point to the folder's meta.json") -> list[Any]:
    """The JSON list at ``path`` (rows unchecked); FormatError naming the file, ``what`` it should hold
    and the fix (``missing``: what to do when the file does not exist)."""
    path = Path(path)
    if not path.is_file():
        raise FormatError(f"{path}: file not found; {missing}")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise FormatError(f"{path}: invalid JSON ({e}); fix the file or regenerate it") from e
    if not isinstance(data, list):
        raise FormatError(f"{path}: expected a JSON list of {what}, found {type(data).__name__}")
    return data


def read_hidden_gt(path: str | Path) -> dict[str, Path]:
    """A pool's hidden ground truth (``data/hidden/round-N``, a folder or its ``meta.json`` =
    ``[{"id", "GT", ...}]``) -> {input id: GT file}, every path checked inside its folder. FormatError
    naming the file for a missing or malformed one; the one reader of hidden GT (simulated annotators,
    gold tasks, the RL oracle reward, auto-acceptance precision)."""
    meta = dataset_file(path)
    rows = read_json_list(meta, "hidden GT entries {id, GT}",
                          "hidden GT exists for synthetic pools only (data/hidden/round-N)")
    try:
        return {str(r["id"]): resolve_in_root(meta.parent, r["GT"], where=str(meta)) for r in rows}
    except (KeyError, TypeError) as e:
        raise FormatError(f"{meta}: a hidden GT entry lacks {e}; expected [{{'id', 'GT'}}, ...]") from e


def _parse(model: type[T], data: Sequence[Any], path: Path) -> list[T]:
    out, problems = [], []
    for i, entry in enumerate(data):
        if not isinstance(entry, dict):
            problems.append(f"entry {i}: expected an object, found {type(entry).__name__}")
            continue
        try:
            out.append(model.model_validate(entry))
        except ValidationError as e:
            fields = ", ".join(f"{'.'.join(map(str, err['loc']))}: {err['msg']}" for err in e.errors())
            problems.append(f"entry {i}: {fields}")
    if problems:
        shown = "\n  ".join(problems[:20]) + (f"\n  ... and {len(problems) - 20} more" if len(problems) > 20 else "")
        raise FormatError(f"{path}: {len(problems)} malformed entries (expected keys "
                          f"{', '.join(model.model_fields)}):\n  {shown}")
    return out


def read_triplets(path: str | Path) -> list[Triplet]:
    path = Path(path)
    return _parse(Triplet, read_json_list(path), path)


def read_pairs(path: str | Path) -> list[Pair]:
    path = Path(path)
    return _parse(Pair, read_json_list(path), path)


def read_pool(path: str | Path) -> list[PoolItem]:
    path = Path(path)
    return _parse(PoolItem, read_json_list(path), path)


def write_entries(path: str | Path, entries: Iterable[BaseModel]) -> None:
    """Write triplets / pairs / pool items as a RORem JSON list (atomic)."""
    write_json_atomic(path, [e.model_dump(exclude_none=True) for e in entries])


def read_candidates(path: str | Path) -> list[Candidate]:
    path = Path(path)
    if not path.is_file():
        raise FormatError(f"{path}: candidates manifest not found; run the generate stage first")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise FormatError(f"{path}: invalid JSON ({e}); regenerate it with the generate stage") from e
    if not isinstance(data, dict) or "candidates" not in data:
        raise FormatError(f"{path}: expected {{\"version\": 1, \"candidates\": [...]}}")
    cands = _parse(Candidate, data["candidates"], path)
    seen: set[str] = set()
    for c in cands:
        if c.id in seen:
            raise FormatError(f"{path}: duplicate candidate id {c.id!r}; ids must be unique")
        seen.add(c.id)
    return cands


def write_candidates(path: str | Path, candidates: Iterable[Candidate]) -> None:
    cands = list(candidates)
    ids = [c.id for c in cands]
    if len(set(ids)) != len(ids):
        dup = sorted({i for i in ids if ids.count(i) > 1})
        raise FormatError(f"{path}: duplicate candidate ids {dup[:5]}; refusing to write")
    write_json_atomic(path, {"version": 1, "candidates": [c.model_dump() for c in cands]})


__all__ = ["Candidate", "FormatError", "Pair", "PoolItem", "Triplet", "IMAGE_KEYS",
           "read_candidates", "read_hidden_gt", "read_pairs", "read_pool", "read_triplets", "resolve_in_root",
           "write_candidates", "write_entries"]
