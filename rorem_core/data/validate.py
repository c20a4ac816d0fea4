"""Dataset validation before any training: every problem at once, each with the file and the fix.

Checks a triplets / scored / pairs / pool / hidden ``meta.json`` or a ``candidates.json``:
invalid JSON, wrong top-level type, missing keys or wrong types, absolute paths and paths escaping
the dataset root (``formats.resolve_in_root``), missing / zero-byte / undecodable images (every
image is fully decoded, so a truncated PNG is caught), size mismatches within an entry, empty and
full masks, duplicate entries and ids, out-of-range scores, and pairs whose two results are the
same file. Grayscale / RGBA / palette images are converted at load time, so they give a *note*,
not a problem. Nothing is written: the dataset is only read.

CLI: ``rorem validate PATH [--kind KIND]`` -> ``main(argv)``; exit 0 when OK, 1 otherwise.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from PIL import Image
from pydantic import BaseModel, ConfigDict, ValidationError

from rorem_core.data.formats import Candidate, FormatError, Pair, PoolItem, Triplet, dataset_file, resolve_in_root
from rorem_core.data.images import ImageError, ImageTooLarge, image_size, load_mask


class ScoredTriplet(Triplet):
    score: float  # required here: 1 good / 0 bad from humans, or a probability


class HiddenItem(BaseModel):
    """Hidden ground truth of a pool item (read only by the oracle)."""

    model_config = ConfigDict(extra="allow")
    id: str
    GT: str


# kind -> (entry model, image keys, keys that make two entries duplicates)
KINDS: dict[str, tuple[type[BaseModel], tuple[str, ...], tuple[str, ...]]] = {
    "triplets": (Triplet, ("source", "mask", "GT"), ("source", "mask", "GT")),
    "scored": (ScoredTriplet, ("source", "mask", "GT"), ("source", "mask", "GT")),
    "pairs": (Pair, ("source", "mask", "preferred", "rejected"), ("source", "mask", "preferred", "rejected")),
    "pool": (PoolItem, ("source", "mask"), ("source", "mask")),
    "hidden": (HiddenItem, ("GT",), ("GT",)),
    "candidates": (Candidate, ("source", "mask", "result"), ("result",)),
}
CONVERTED_MODES = {"L", "LA", "P", "PA", "RGBA", "1", "I", "I;16", "F", "CMYK", "YCbCr", "LAB", "HSV"}
MASK_OK_MODES = {"L", "1", "RGB"}


class DatasetInvalid(ValueError):
    """The dataset has problems; the message lists every one of them with its fix."""


@dataclass(frozen=True)
class Problem:
    """One problem (or note): the file concerned, the entry index (None = the whole file), the fix."""

    file: str
    entry: int | None
    message: str
    fix: str

    def __str__(self) -> str:
        where = f"[entry {self.entry}] " if self.entry is not None else ""
        return f"{where}{self.file}: {self.message}\n      fix: {self.fix}"


@dataclass
class ValidationReport:
    path: str                     # the meta.json / candidates.json checked
    kind: str | None              # detected or given kind
    n_entries: int = 0
    problems: list[Problem] = field(default_factory=list)
    notes: list[Problem] = field(default_factory=list)   # converted inputs: fine, but worth knowing

    @property
    def ok(self) -> bool:
        return not self.problems

    def format(self) -> str:
        head = f"{self.path} ({self.kind or 'unknown kind'}, {self.n_entries} entries): "
        head += "OK" if self.ok else f"{len(self.problems)} problem(s)"
        lines = [head] + [f"  {p}" for p in self.problems]
        if self.notes:
            lines += [f"notes ({len(self.notes)}, inputs are converted, no action needed):"]
            lines += [f"  {n}" for n in self.notes]
        return "\n".join(lines)


@dataclass
class _FileInfo:
    size: tuple[int, int] | None = None     # (width, height) after a full decode
    mode: str = ""
    error: tuple[str, str] | None = None    # (message, fix)
    mask_state: str = ""                    # "empty" / "full" / "" for masks


def _split_fix(msg: str, where: str) -> tuple[str, str]:
    """Split a FormatError message 'where: what; fix' into (what, fix)."""
    body = msg[len(where) + 2:] if msg.startswith(where + ": ") else msg
    what, _, fix = body.partition("; ")
    return what, fix or "correct the path in the JSON file"


def _inspect(path: Path, is_mask: bool) -> _FileInfo:
    """Fully decode one file (read-only); never raises for a bad file."""
    if path.is_dir():
        return _FileInfo(error=("is a folder, not an image file", "point the entry at an image file"))
    if not path.is_file():
        return _FileInfo(error=("file not found", "restore the file or remove the entry"))
    if path.stat().st_size == 0:
        return _FileInfo(error=("file is empty (0 bytes)", "re-export the image or remove the entry"))
    try:
        if is_mask:
            m = load_mask(path)
            size = (m.shape[1], m.shape[0])
            state = "empty" if not m.any() else "full" if m.all() else ""
        else:
            size, state = image_size(path), ""
        with Image.open(path) as im:  # header only, for the mode note
            mode = im.mode
    except ImageTooLarge as e:
        return _FileInfo(error=(f"image too large ({e})",
                                "downscale it (training resizes to base.resolution anyway) or remove the entry"))
    except ImageError as e:
        cause = e.__cause__ or e
        return _FileInfo(error=(f"cannot decode image ({cause})",
                                "the file is truncated or not an image: re-export it or remove the entry"))
    return _FileInfo(size=size, mode=mode, mask_state=state)


class _Checker:
    """Validates the entries of one JSON file; collects problems instead of raising."""

    def __init__(self, meta: Path, kind: str, report: ValidationReport):
        self.meta, self.root, self.kind, self.report = meta, meta.parent, kind, report
        self.cache: dict[Path, _FileInfo] = {}

    def problem(self, file: str, entry: int | None, message: str, fix: str, note: bool = False) -> None:
        (self.report.notes if note else self.report.problems).append(Problem(file, entry, message, fix))

    def entry(self, i: int, raw: Any) -> tuple | None:
        """Check entry ``i``; returns its duplicate key (resolved paths) or None."""
        model, image_keys, dup_keys = KINDS[self.kind]
        if not isinstance(raw, dict):
            self.problem(str(self.meta), i, f"expected an object, found {type(raw).__name__}",
                         f"make every entry an object with keys {', '.join(image_keys)}")
            return None
        try:
            model.model_validate(raw)
        except ValidationError as e:
            for err in e.errors():
                key = ".".join(map(str, err["loc"])) or "(entry)"
                what = f"missing key {key!r}" if err["type"] == "missing" else f"key {key!r}: {err['msg']}"
                required = [k for k, f in model.model_fields.items() if f.is_required()]
                self.problem(str(self.meta), i, what,
                             f"give every {self.kind} entry the keys {', '.join(required)}")
        resolved = {k: self.image(i, k, raw[k]) for k in image_keys if isinstance(raw.get(k), str)}
        self.sizes(i, raw, resolved)
        self.extra(i, raw, resolved)
        if all(resolved.get(k) is not None for k in dup_keys):
            return tuple(resolved[k] for k in dup_keys)
        return None

    def image(self, i: int, key: str, rel: str) -> Path | None:
        where = f"{self.meta} entry {i}"
        try:
            path = resolve_in_root(self.root, rel, where=where)
        except FormatError as e:
            self.problem(rel, i, *_split_fix(str(e), where))
            return None
        info = self.cache.get(path) or self.cache.setdefault(path, _inspect(path, key == "mask"))
        if info.error:
            self.problem(rel, i, f"{key}: {info.error[0]}", info.error[1])
        elif info.mask_state:
            what = ("mask is empty (no pixel >= 0.5): nothing to remove" if info.mask_state == "empty"
                    else "mask covers the whole image: no context is left to fill from")
            self.problem(rel, i, what, "redraw the mask around the object (and its shadow) or drop the entry")
        elif key != "mask" and info.mode in CONVERTED_MODES:
            self.problem(rel, i, f"{key} is mode {info.mode}; it is converted to RGB on load"
                         + (" (alpha is dropped, not composited)" if "A" in info.mode else ""),
                         "none needed; save as RGB to silence this note", note=True)
        elif key == "mask" and info.mode not in MASK_OK_MODES:
            self.problem(rel, i, f"mask is mode {info.mode}; its first channel after RGB conversion is used",
                         "none needed; save masks as L (grayscale) to silence this note", note=True)
        return path

    def sizes(self, i: int, raw: dict, resolved: dict[str, Path | None]) -> None:
        sizes = {k: self.cache[p].size for k, p in resolved.items() if p is not None and self.cache[p].size}
        if len(set(sizes.values())) > 1:
            ref_key = next(iter(sizes))
            ref = sizes[ref_key]
            shown = ", ".join(f"{k} {raw[k]} {w}x{h}" for k, (w, h) in sizes.items())
            bad = next(k for k, s in sizes.items() if s != ref)
            self.problem(raw[bad], i, f"image sizes differ within the entry: {shown}",
                         f"resize {raw[bad]} to {ref[0]}x{ref[1]} (the {ref_key}'s size) or regenerate it")

    def extra(self, i: int, raw: dict, resolved: dict[str, Path | None]) -> None:
        score = raw.get("score")
        if isinstance(score, (int, float)) and not isinstance(score, bool) and \
                not (math.isfinite(score) and 0 <= score <= 1):
            self.problem(str(self.meta), i, f"score {score!r} is outside [0, 1]",
                         "use 1/0 for human good/bad or a probability in [0, 1]")
        if self.kind == "pairs" and resolved.get("preferred") is not None \
                and resolved.get("preferred") == resolved.get("rejected"):
            self.problem(raw["preferred"], i, "preferred and rejected are the same file",
                         "a pair needs two different results; drop the entry")

    def duplicates(self, keys: list[tuple | None], ids: list[Any]) -> None:
        first: dict[Any, int] = {}
        names = "/".join(KINDS[self.kind][2])
        for i, k in enumerate(keys):
            if k is not None and first.setdefault(("k", k), i) != i:
                self.problem(str(self.meta), i, f"duplicate of entry {first[('k', k)]} (same {names})",
                             "remove one of the two entries")
        for i, v in enumerate(ids):
            if isinstance(v, str) and first.setdefault(("id", v), i) != i:
                self.problem(str(self.meta), i, f"duplicate id {v!r} (also entry {first[('id', v)]})",
                             "ids must be unique: rename or remove one")


def detect_kind(data: Any) -> str | None:
    """Kind from the JSON shape and the union of entry keys; None when it cannot be told."""
    if isinstance(data, dict):
        return "candidates" if "candidates" in data else None
    if not isinstance(data, list):
        return None
    keys = set().union(*(e.keys() for e in data if isinstance(e, dict)))
    if keys & {"preferred", "rejected"}:
        return "pairs"
    if "GT" in keys and keys & {"source", "mask"}:
        return "scored" if "score" in keys else "triplets"
    if keys & {"source", "mask"}:
        return "pool"
    return "hidden" if "GT" in keys else None


def _meta_path(path: Path, kind: str | None) -> Path:
    names = ("candidates.json", "meta.json") if kind == "candidates" else ("meta.json", "candidates.json", "meta.json")
    return dataset_file(path, *names)


def _load(meta: Path, report: ValidationReport) -> Any:
    if not meta.is_file():
        report.problems.append(Problem(str(meta), None, "file not found",
                                       "point to a dataset folder holding meta.json (or candidates.json)"))
        return None
    try:
        return json.loads(meta.read_bytes().decode("utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        report.problems.append(Problem(str(meta), None, f"invalid JSON ({e})",
                                       "fix the syntax (or regenerate the file) so it parses as JSON"))
        return None


def _entries(data: Any, kind: str, meta: Path, report: ValidationReport) -> list[Any] | None:
    if kind == "candidates":
        if not isinstance(data, dict) or not isinstance(data.get("candidates"), list):
            report.problems.append(Problem(str(meta), None, "expected {\"version\": 1, \"candidates\": [...]}",
                                           "regenerate the manifest with the generate stage"))
            return None
        if data.get("version") != 1:
            report.problems.append(Problem(str(meta), None, f"unsupported version {data.get('version')!r}",
                                           "set \"version\": 1 or regenerate the manifest"))
        return data["candidates"]
    if not isinstance(data, list):
        report.problems.append(Problem(str(meta), None, f"expected a JSON list of entries, found "
                                       f"{type(data).__name__}", "write meta.json as [{...}, ...] (RORem layout)"))
        return None
    return data


def validate_dataset(path: str | Path, kind: str | None = None) -> ValidationReport:
    """Validate the dataset at ``path`` (its JSON file or folder); ``kind`` is one of KINDS or None
    (detect from keys). Reads only; returns a report listing every problem and note."""
    if kind is not None and kind not in KINDS:
        raise ValueError(f"unknown dataset kind {kind!r}; use one of {', '.join(KINDS)}")
    meta = _meta_path(Path(path), kind)
    report = ValidationReport(path=str(meta), kind=kind)
    data = _load(meta, report)
    if data is None:
        return report
    report.kind = kind = kind or detect_kind(data)
    if kind is None and isinstance(data, dict):
        report.problems.append(Problem(str(meta), None, "expected a JSON list of entries (RORem meta.json) or a "
                                       "candidates manifest {\"version\": 1, \"candidates\": [...]}, found an object",
                                       "write meta.json as [{...}, ...] (RORem layout)"))
        return report
    if kind is None and data == []:
        report.problems.append(Problem(str(meta), None, "no entries", "regenerate the dataset or point to another one"))
        return report
    if kind is None:
        report.problems.append(Problem(str(meta), None, "cannot tell the dataset kind from its keys",
                                       f"pass --kind (one of {', '.join(KINDS)}) or fix the keys"))
        return report
    entries = _entries(data, kind, meta, report)
    if entries is None:
        return report
    return check_entries(entries, kind, meta, report)


def check_entries(entries: list[Any], kind: str, meta: Path, report: ValidationReport | None = None
                  ) -> ValidationReport:
    """Check in-memory entries as if they were ``meta``'s (paths relative to ``meta.parent``); used by
    ``validate_dataset`` and by ``rorem import`` for a folder without meta.json."""
    report = report or ValidationReport(path=str(meta), kind=kind)
    report.n_entries = len(entries)
    if not entries:
        report.problems.append(Problem(str(meta), None, "no entries", "regenerate the dataset or point to another one"))
    checker = _Checker(meta, kind, report)
    keys = [checker.entry(i, e) for i, e in enumerate(entries)]
    checker.duplicates(keys, [e.get("id") if isinstance(e, dict) else None for e in entries])
    report.problems.sort(key=lambda p: -1 if p.entry is None else p.entry)
    return report


def require_valid(path: str | Path, kind: str | None = None) -> ValidationReport:
    """Validate and raise ``DatasetInvalid`` listing every problem; returns the report when OK."""
    report = validate_dataset(path, kind)
    if not report.ok:
        raise DatasetInvalid(report.format())
    return report


def main(argv: Sequence[str] | None = None) -> int:
    """``rorem validate PATH [--kind KIND]``: print the report; 0 when OK, 1 otherwise."""
    ap = argparse.ArgumentParser(prog="rorem validate", description=__doc__.splitlines()[0])
    ap.add_argument("path", help="a meta.json / candidates.json, or the folder holding it")
    ap.add_argument("--kind", choices=list(KINDS), help="dataset kind (default: detect from the keys)")
    args = ap.parse_args(argv)
    report = validate_dataset(args.path, args.kind)
    print(report.format())
    return 0 if report.ok else 1


__all__ = ["DatasetInvalid", "KINDS", "Problem", "ValidationReport", "check_entries", "detect_kind", "main",
           "require_valid", "validate_dataset"]


if __name__ == "__main__":
    sys.exit(main())

