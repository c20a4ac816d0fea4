"""``rorem import seed|pool|test PATH [--round N]``: bring your own photos and masks into the project.

PATH is either a RORem dataset (``meta.json`` = ``[{"source", "mask", "GT"?}]``, paths relative to
it) or a folder with ``images/`` and ``masks/`` (and optionally ``gt/`` or ``GT/``) whose files are
matched by stem. Everything is checked first and every problem reported at once (the dataset
validator plus what only an import can see: unmatched names, symlinks, a missing GT); only then is
anything written. Files are normalised to 8-bit RGB PNG (sources, GT) and binary L PNG (masks)
after applying the EXIF orientation; 16-bit, gray, palette and RGBA inputs are converted as the
loader converts them (alpha dropped); the size and aspect ratio are kept.

The data lands in a content-addressed folder, ``data/imported/<kind>s/<name>-<hash>``, so the same
content imported twice maps to the same folder and changes nothing; a pool's GT (when given) goes
to ``data/imported/hidden/<name>-<hash>`` (where the simulated annotators look for it). ``params.yaml``
then names it: ``data.seed`` (and round 1's ``train``), ``data.test``, or ``rounds.N.pool``.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from dataclasses import dataclass, field
from io import StringIO
from pathlib import Path
from typing import Any

from rorem_core.data.formats import resolve_in_root
from rorem_core.data.images import load_mask, load_rgb, save_png
from rorem_core.data.validate import Problem, ValidationReport, check_entries
from rorem_core.io import sha256_file, write_json_atomic, write_text_atomic

KINDS = ("seed", "pool", "test")
IMAGE_EXT = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff")
GT_DIRS = ("gt", "GT")
IMPORT_ROOT = "data/imported"


class ImportRefused(ValueError):
    """The import cannot go ahead; the message lists every problem with its fix. Nothing was written."""


@dataclass
class ImportResult:
    kind: str
    path: str                 # the imported folder, relative to the project root
    hidden: str | None        # a pool's GT folder, when the pool came with GT
    n: int                    # entries
    has_gt: bool
    changed: bool             # False: this content was already imported and named in params.yaml
    params: dict[str, str] = field(default_factory=dict)   # params.yaml keys set -> value
    notes: list[str] = field(default_factory=list)


def _symlinks(path: Path) -> list[Problem]:
    """Every symbolic link under PATH (a link can point anywhere; we refuse them all)."""
    out = []
    for dirpath, dirnames, filenames in os.walk(path, followlinks=False):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            if p.is_symlink():
                out.append(Problem(str(p), None, f"is a symbolic link (to {os.readlink(p)})",
                                   "copy the real file into the folder; symlinks are refused because they can "
                                   "point outside PATH"))
    return out


def stem_index(folder: Path) -> tuple[dict[str, Path], list[tuple[Path, Path]], list[Path]]:
    """The image files of ``folder`` by stem, the (file, earlier file) pairs that share a stem (matching
    by stem cannot tell them apart) and the files skipped as not an image type we read; hidden files
    (``.DS_Store``) are ignored."""
    by_stem: dict[str, Path] = {}
    clashes, skipped = [], []
    for p in sorted(folder.iterdir()):
        if p.name.startswith(".") or not p.is_file():
            continue
        if p.suffix.lower() not in IMAGE_EXT:
            skipped.append(p)
        elif p.stem in by_stem:
            clashes.append((p, by_stem[p.stem]))
        else:
            by_stem[p.stem] = p
    return by_stem, clashes, skipped


def _stems(folder: Path, report: ValidationReport) -> dict[str, Path]:
    by_stem, clashes, skipped = stem_index(folder)
    for p, first in clashes:
        report.problems.append(Problem(str(p), None, f"has the same stem as {first.name} (files are matched by stem)",
                                       "rename or remove one of the two"))
    for p in skipped:   # a note, not a problem: its mask or image, if any, is reported as unmatched anyway
        report.notes.append(Problem(str(p), None, f"skipped: {p.suffix or 'no extension'} is not an image type "
                                    f"rorem reads ({' '.join(IMAGE_EXT)})", "convert it to PNG or JPEG to import it"))
    return by_stem


def _folder_entries(path: Path, report: ValidationReport) -> list[dict[str, Any]]:
    """``images/`` + ``masks/`` (+ ``gt/``) matched by file stem; unmatched names are problems."""
    problems = report.problems
    images, masks = _stems(path / "images", report), _stems(path / "masks", report)
    gt_dir = next((path / d for d in GT_DIRS if (path / d).is_dir()), None)
    gts = _stems(gt_dir, report) if gt_dir else {}
    for stem, f in images.items():
        if stem not in masks:
            problems.append(Problem(str(f), None, f"image has no mask (no masks/{stem}.*)",
                                    f"add masks/{stem}.png or remove the image"))
    for stem, f in masks.items():
        if stem not in images:
            problems.append(Problem(str(f), None, f"mask has no image (no images/{stem}.*)",
                                    "rename it to its image's stem or remove it"))
    for stem, f in gts.items():
        if stem not in images:
            problems.append(Problem(str(f), None, f"GT has no image (no images/{stem}.*)",
                                    "rename it to its image's stem or remove it"))
    rel = lambda p: p.relative_to(path).as_posix()  # noqa: E731
    return [{"id": stem, "source": rel(f), "mask": rel(masks[stem]),
             **({"GT": rel(gts[stem])} if stem in gts else {})}
            for stem, f in images.items() if stem in masks]


def scan(path: Path, kind: str) -> tuple[list[dict[str, Any]], ValidationReport]:
    """Read PATH's entries and check everything; the report lists every problem."""
    import json

    if kind not in KINDS:
        raise ImportRefused(f"unknown import kind {kind!r}; use one of {', '.join(KINDS)}")
    path = Path(path)
    meta = path / "meta.json"
    report = ValidationReport(path=str(path), kind=kind)
    if path.is_symlink() or not path.is_dir():
        report.problems.append(Problem(str(path), None, "not a folder" if not path.is_symlink() else "is a symlink",
                                       "point to a folder holding meta.json, or images/ and masks/"))
        return [], report
    report.problems += _symlinks(path)
    if meta.is_file():
        try:
            raw = json.loads(meta.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            report.problems.append(Problem(str(meta), None, f"invalid JSON ({e})", "fix the syntax so it parses"))
            return [], report
        entries = raw if isinstance(raw, list) else []
        if not isinstance(raw, list):
            report.problems.append(Problem(str(meta), None, f"expected a JSON list, found {type(raw).__name__}",
                                           "write meta.json as [{\"source\", \"mask\", \"GT\"}, ...] (RORem layout)"))
    elif (path / "images").is_dir() and (path / "masks").is_dir():
        meta = path / "images+masks"
        entries = _folder_entries(path, report)
    else:
        report.problems.append(Problem(str(path), None, "neither meta.json nor images/ + masks/ found",
                                       "give a RORem dataset (meta.json) or a folder with images/ and masks/ "
                                       "whose files share stems"))
        return [], report
    has_gt = [isinstance(e, dict) and "GT" in e for e in entries]
    check_kind = "triplets" if all(has_gt) and entries else "pool"
    for i, e in enumerate(entries):   # a pool entry needs an id; meta.json ones may lack it
        if isinstance(e, dict) and "id" not in e and isinstance(e.get("source"), str):
            e["id"] = Path(e["source"]).stem
    check_entries(entries, check_kind, meta, report)
    if any(has_gt) and not all(has_gt):
        missing = [str(e.get("source", i)) for i, e in enumerate(entries) if isinstance(e, dict) and "GT" not in e]
        report.problems.append(Problem(str(meta), None, f"{len(missing)} entries have no GT while others do "
                                       f"(e.g. {', '.join(missing[:3])})", "give every entry a GT, or none"))
    if kind == "seed" and not all(has_gt):
        report.problems.append(Problem(str(meta), None, "a seed set needs ground truth for every entry "
                                       "(it is what the remover trains on)",
                                       "add GT images (gt/<stem>.png or \"GT\" in meta.json), or import it as a pool"))
    return entries, report


def _safe_id(raw: str, used: set[str]) -> str:
    base = re.sub(r"[^A-Za-z0-9._-]+", "_", raw).strip("._") or "item"
    out, k = base, 1
    while out in used:
        out, k = f"{base}_{k}", k + 1
    used.add(out)
    return out


def _write_normalised(src_root: Path, entries: list[dict], stage: Path, kind: str, has_gt: bool) -> None:
    """Normalised PNGs + meta.json under ``stage/main`` (and ``stage/hidden`` for a pool's GT)."""
    main, hidden = stage / "main", stage / "hidden"
    used: set[str] = set()
    meta, hidden_meta = [], []
    for e in entries:
        iid = _safe_id(str(e["id"]), used)
        f = lambda key: resolve_in_root(src_root, e[key], where=str(src_root))  # noqa: E731
        save_png(main / "source" / f"{iid}.png", load_rgb(f("source")))
        save_png(main / "mask" / f"{iid}.png", load_mask(f("mask")))
        row = {"id": iid, "source": f"source/{iid}.png", "mask": f"mask/{iid}.png"}
        if has_gt and kind == "pool":
            save_png(hidden / "GT" / f"{iid}.png", load_rgb(f("GT")))
            hidden_meta.append({"id": iid, "GT": f"GT/{iid}.png"})
        elif has_gt:
            save_png(main / "GT" / f"{iid}.png", load_rgb(f("GT")))
            row["GT"] = f"GT/{iid}.png"
        meta.append(row)
    write_json_atomic(main / "meta.json", meta)
    if hidden_meta:
        write_json_atomic(hidden / "meta.json", hidden_meta)


def _tree_hash(folder: Path) -> str:
    import hashlib

    h = hashlib.sha256()
    for p in sorted(folder.rglob("*")):
        if p.is_file():
            h.update(p.relative_to(folder).as_posix().encode() + b"\0" + sha256_file(p).encode())
    return h.hexdigest()


def round_started(root: Path, n: int) -> str | None:
    """Why round n can no longer take a new pool / seed (its remover or candidates exist), or None."""
    from rorem_core.contract import RoundPaths

    rp = RoundPaths(n)
    for rel in (rp.remover, rp.candidates_dir):
        if (root / rel).exists():
            return f"round {n} has already started ({rel} exists) or finished"
    return None


def _params_updates(root: Path, params_path: Path, kind: str, rel: str, round_n: int | None
                    ) -> tuple[dict[tuple[str, ...], str], list[Problem]]:
    """The params.yaml keys this import sets, or the problems that forbid it."""
    import yaml

    from rorem_core.config import parse_rounds
    from rorem_core.contract import round_entry

    data = yaml.safe_load(params_path.read_text()) or {}
    rounds = parse_rounds(data.get("rounds"), str(params_path))
    probs: list[Problem] = []
    if kind == "test":
        return {("data", "test"): rel}, probs
    if kind == "seed":
        why = round_started(root, 1)
        if why:
            probs.append(Problem("rorem import seed", None, f"{why}: the seed set trains round 1",
                                 "import new photos as a pool for the next round (`rorem import pool PATH`)"))
        upd = {("data", "seed"): rel}
        if 1 in rounds:
            upd[("rounds", "1", "train")] = rel
        return upd, probs
    last = max(rounds, default=0)
    n = round_n if round_n is not None else next((k for k in sorted(rounds) if not round_started(root, k)), last + 1)
    why = round_started(root, n) if n <= last else None
    if why:
        probs.append(Problem(f"--round {n}", None, f"{why}; its pool can no longer change",
                             f"import into a later round: --round {last + 1}"))
    elif n < 1 or n > last + 1:
        probs.append(Problem(f"--round {n}", None, f"params.yaml declares rounds 1..{last}",
                             f"use --round {last + 1} (the next one) or an unstarted declared round"))
    if n > last and not probs:
        return {("rounds", str(n)): {**round_entry(n), "pool": rel}}, probs
    return {("rounds", str(n), "pool"): rel}, probs


def _apply_params(params_path: Path, updates: dict[tuple[str, ...], Any]) -> bool:
    """Set the keys (comments and layout kept, ruamel round trip); False when nothing changes."""
    from ruamel.yaml import YAML
    from ruamel.yaml.scalarstring import DoubleQuotedScalarString

    yml = YAML()
    yml.preserve_quotes, yml.width = True, 4096
    doc = yml.load(params_path.read_text())
    changed = False
    for keys, value in updates.items():
        node = doc
        for k in keys[:-1]:
            key = DoubleQuotedScalarString(k) if k.isdigit() else k
            if node.get(key) is None:
                node[key] = {}
            node = node[key]
        last = DoubleQuotedScalarString(keys[-1]) if keys[-1].isdigit() else keys[-1]
        if node.get(last) != value:
            node[last], changed = value, True
    if changed:
        buf = StringIO()
        yml.dump(doc, buf)
        write_text_atomic(params_path, buf.getvalue())
    return changed


def import_dataset(root: Path, kind: str, path: Path, round_n: int | None = None,
                   params_path: Path | None = None) -> ImportResult:
    """Check, normalise, write under ``data/imported`` and name it in params.yaml (see the module doc).

    Raises:
        ImportRefused: every problem at once; nothing under data/ or params.yaml was changed.
    """
    root, path = Path(root).resolve(), Path(path).absolute()
    params_path = params_path or root / "params.yaml"
    entries, report = scan(path, kind)
    has_gt = bool(entries) and all("GT" in e for e in entries if isinstance(e, dict))
    name = re.sub(r"[^A-Za-z0-9._-]+", "_", path.name) or kind
    updates, probs = _params_updates(root, params_path, kind, "(pending)", round_n)
    report.problems += probs
    if not report.ok:
        raise ImportRefused(f"rorem import {kind} {path}: nothing imported; fix these and run it again:\n"
                            + report.format())
    scratch = root / ".rorem" / "tmp"
    scratch.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=scratch, prefix="import-") as tmp:
        stage = Path(tmp)
        _write_normalised(path, entries, stage, kind, has_gt)
        digest = _tree_hash(stage)[:12]
        rel = f"{IMPORT_ROOT}/{kind}s/{name}-{digest}"
        hidden_rel = f"{IMPORT_ROOT}/hidden/{name}-{digest}" if (stage / "hidden").is_dir() else None
        for src, dst in ((stage / "main", rel), (stage / "hidden", hidden_rel)):
            if dst and not (root / dst).is_dir():       # same content = same folder: written once
                (root / dst).parent.mkdir(parents=True, exist_ok=True)
                shutil.move(str(src), str(root / dst))
    updates, _ = _params_updates(root, params_path, kind, rel, round_n)
    changed = _apply_params(params_path, updates)
    notes = [str(n) for n in report.notes]
    if kind == "test" and not has_gt:
        notes.append("test split without GT: success is judged by humans and estimated by the discriminator")
    return ImportResult(kind=kind, path=rel, hidden=hidden_rel, n=len(entries), has_gt=has_gt, changed=changed,
                        params={".".join(k): (v if isinstance(v, str) else v["pool"]) for k, v in updates.items()},
                        notes=notes)


__all__ = ["ImportRefused", "ImportResult", "KINDS", "import_dataset", "round_started", "scan", "stem_index"]
