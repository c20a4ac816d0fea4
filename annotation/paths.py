"""Local-files URLs, the served-root check, and file names derived from ids (pure, no I/O but stat)."""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path
from urllib.parse import quote

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")


class PathRefused(ValueError):
    """A task would reference a file outside the served root (or a missing file)."""


def inside_root(path: Path | str, doc_root: Path | str) -> Path:
    """``path`` fully resolved (symlinks followed); raises PathRefused unless it is a file under ``doc_root``.

    Resolving first means a symlink inside the root that points outside is refused too.
    """
    full, root = os.path.realpath(path), os.path.realpath(doc_root)
    if not full.startswith(root.rstrip(os.sep) + os.sep):
        raise PathRefused(f"{path} resolves to {full}, outside the served root {root}")
    if not os.path.isfile(full):
        raise PathRefused(f"{path}: file not found")
    return Path(full)


def local_files_url(full: Path | str, doc_root: Path | str) -> str:
    """``/data/local-files/?d=<path relative to the served root>`` for a path checked by inside_root.

    ``doc_root`` must already be resolved (as push does once per round)."""
    full, root = str(full), str(doc_root).rstrip(os.sep) + os.sep
    if not full.startswith(root):
        raise PathRefused(f"{full} is outside the served root {doc_root}")
    return "/data/local-files/?d=" + quote(full[len(root):].replace(os.sep, "/"), safe="/")


def safe_name(identifier: str) -> str:
    """A file-name-safe form of an id; ids that change under the mapping get a short hash suffix."""
    name = _UNSAFE.sub("_", identifier).strip(".") or "x"
    if name != identifier:
        name += "-" + hashlib.sha256(identifier.encode()).hexdigest()[:8]
    return name


def unique_names(wanted: list[tuple[str, str]]) -> dict[str, str]:
    """Map each key to a file stem: its preferred name, or name-<hash(key)> if another key took it.

    ``wanted`` is ``[(preferred_name, key), ...]``; equal keys share one name. Deterministic for a
    given order of first appearance.
    """
    taken: dict[str, str] = {}
    out: dict[str, str] = {}
    for preferred, key in wanted:
        if key in out:
            continue
        name = safe_name(preferred)
        if taken.get(name, key) != key:
            name = f"{name}-{hashlib.sha256(key.encode()).hexdigest()[:8]}"
        taken[name] = key
        out[key] = name
    return out
