"""Find secret strings (API tokens, wandb keys) anywhere a project keeps data, git history included.

``find_secrets(root, secrets)`` reads every file under ``root`` as bytes (text, JSON, logs, SQLite
databases, wandb run files, the DVC cache, the raw files of ``.git``) and, when ``root`` is a git
repository, every object in its object database (``git cat-file --batch-all-objects``: commits, trees
and blobs of all refs, stashes and unreachable objects, which are zlib-compressed on disk and so
invisible to a plain byte scan) plus ``git log -p --all`` to name the commit and file of a hit.

Places where a secret is *meant* to be are excluded by default (``DEFAULT_EXCLUDE``): the git-ignored
secret files, Label Studio's own database (it stores its users' tokens) and the virtual environments.
Pure Python + the ``git`` executable; no Prefect or Label Studio imports.
"""

from __future__ import annotations

import fnmatch
import os
import shutil
import subprocess
from collections.abc import Iterable, Sequence
from pathlib import Path

DEFAULT_EXCLUDE = (
    ".rorem/secrets/*",                          # where the token is meant to live (mode 600, git-ignored)
    ".rorem/labelstudio*/label_studio.sqlite3*",  # Label Studio's DB: holds its users' API tokens by design
    ".venv/*", ".venv-ls/*",                     # installed packages, not project data
)
MIN_SECRET_LEN = 6  # shorter strings would match by chance


def _excluded(rel: str, exclude: Sequence[str]) -> bool:
    return any(fnmatch.fnmatch(rel, pat) for pat in exclude)


def _where(data: bytes, pos: int) -> str:
    """'line N' for text, 'offset N' for binary content."""
    if b"\0" in data[:8192]:
        return f"offset {pos}"
    line = data.count(b"\n", 0, pos) + 1
    return f"line {line}"


def _scan_bytes(data: bytes, secrets: Sequence[bytes]) -> list[tuple[int, int]]:
    """(secret index, first position) of every secret present in ``data``."""
    return [(i, p) for i, s in enumerate(secrets) if (p := data.find(s)) >= 0]


def _scan_files(root: Path, secrets: Sequence[bytes], exclude: Sequence[str]) -> list[str]:
    hits = []
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        dirnames.sort()
        for name in sorted(filenames):
            path = Path(dirpath) / name
            rel = path.relative_to(root).as_posix()
            if path.is_symlink() or not path.is_file() or _excluded(rel, exclude):
                continue
            try:
                data = path.read_bytes()
            except OSError as e:  # unreadable: say so rather than pass silently
                hits.append(f"{rel}: unreadable ({e.strerror}); check it by hand")
                continue
            hits += [f"{rel}: {_where(data, p)} (secret #{i + 1})" for i, p in _scan_bytes(data, secrets)]
    return hits


def _git(root: Path, *args: str, stdin: bytes | None = None) -> bytes:
    r = subprocess.run(["git", "-C", str(root), *args], input=stdin, capture_output=True, check=False)
    if r.returncode != 0:
        raise RuntimeError(f"git {' '.join(args)} failed in {root}: {r.stderr.decode(errors='replace')[-500:]}")
    return r.stdout


def _scan_git_objects(root: Path, secrets: Sequence[bytes]) -> list[str]:
    """Every object in the repository (reachable or not), decompressed by git."""
    out = _git(root, "cat-file", "--batch-all-objects", "--batch", "--unordered")
    hits, pos = [], 0
    while pos < len(out):
        nl = out.index(b"\n", pos)
        sha, kind, size = out[pos:nl].decode().split()
        body = out[nl + 1: nl + 1 + int(size)]
        pos = nl + 1 + int(size) + 1   # content is followed by a newline
        hits += [f"git object {sha} ({kind}) (secret #{i + 1})" for i, _ in _scan_bytes(body, secrets)]
    return hits


def _scan_git_log(root: Path, secrets: Sequence[bytes]) -> list[str]:
    """Commit and file of each hit in the history of all refs (``git log -p --all --text``)."""
    out = _git(root, "log", "-p", "--all", "--text", "--no-color", "--no-ext-diff", "--format=%x00commit %H%n%B")
    hits, commit, file = [], "?", "(commit message)"
    for line in out.split(b"\n"):
        if line.startswith(b"\0commit "):   # a NUL marker: a commit message cannot fake it
            commit, file = line[8:].decode(errors="replace"), "(commit message)"
        elif line.startswith(b"diff --git "):
            file = line.rsplit(b" b/", 1)[-1].decode(errors="replace")
        elif any(s in line for s in secrets):
            idx = next(i for i, s in enumerate(secrets) if s in line)
            hits.append(f"git commit {commit[:12]} {file} (secret #{idx + 1})")
    return sorted(set(hits))


def find_secrets(root: Path, secrets: list[str], *, exclude: Iterable[str] = DEFAULT_EXCLUDE) -> list[str]:
    """Every place under ``root`` (files and git history) where one of ``secrets`` appears.

    Args:
        root: the project folder (a git repository or not).
        secrets: the strings to look for (tokens, keys); each at least ``MIN_SECRET_LEN`` characters.
        exclude: glob patterns relative to ``root`` (posix) of files not scanned; default
            ``DEFAULT_EXCLUDE``, the places a secret is meant to be.

    Returns:
        Locations, e.g. ``"logs/x.log: line 3 (secret #1)"``, ``"git commit 1a2b3c4d5e6f params.yaml
        (secret #1)"``, ``"git object <sha> (blob) (secret #1)"``; ``[]`` when nothing leaked. The
        secrets themselves never appear in the result (they are numbered from 1 in the given order).
    """
    root = Path(root).resolve()
    short = [i + 1 for i, s in enumerate(secrets) if len(s) < MIN_SECRET_LEN]
    if short:
        raise ValueError(f"secret(s) #{short} are shorter than {MIN_SECRET_LEN} characters and would match "
                         "by chance; pass the full token")
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: not a folder; pass the project root")
    needles = [s.encode("utf-8") for s in secrets]
    hits = _scan_files(root, needles, tuple(exclude))
    if (root / ".git").exists():
        if shutil.which("git") is None:
            raise RuntimeError("git is not installed: the history of the repository cannot be scanned")
        hits += _scan_git_log(root, needles) + _scan_git_objects(root, needles)
    return hits


__all__ = ["DEFAULT_EXCLUDE", "MIN_SECRET_LEN", "find_secrets"]
