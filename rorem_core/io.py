"""Atomic file writes and content hashing.

Every artifact is written to a temporary file in the destination folder and renamed into place,
so a killed process never leaves a half-written file under its final name.
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

# mkstemp/mkdtemp create 0600/0700 entries; published artifacts get the usual umask-based modes.
_UMASK = os.umask(0)
os.umask(_UMASK)
FILE_MODE = 0o666 & ~_UMASK
DIR_MODE = 0o777 & ~_UMASK


def pid_alive(pid: int) -> bool:
    """True while process ``pid`` runs. A zombie (killed, not reaped yet) counts as gone: a SIGKILLed
    writer whose parent died too stays one where nothing reaps orphans (containers without an init)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:   # exists, owned by someone else
        pass
    try:  # Linux: the state letter follows the parenthesised command name
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return True           # no /proc (macOS): kill(0) is all we know
    return state != "Z"


def drop_stale_temps(path: Path) -> list[Path]:
    """Remove temp siblings of ``path`` (``.<name>.<pid>-*.tmp``) left by killed processes: the temp
    name carries the writer's pid, so a live writer's temp is never touched."""
    prefix, dropped = f".{path.name}.", []
    for t in path.parent.glob(f"{glob.escape(prefix)}*.tmp"):
        pid = t.name[len(prefix):].split("-", 1)[0]
        if pid.isdigit() and not pid_alive(int(pid)):
            shutil.rmtree(t) if t.is_dir() and not t.is_symlink() else t.unlink(missing_ok=True)
            dropped.append(t)
    return dropped


def _temp_prefix(path: Path) -> str:
    return f".{path.name}.{os.getpid()}-"


@contextmanager
def atomic_path(path: str | os.PathLike, suffix: str = "") -> Iterator[Path]:
    """Yield a temp path next to ``path``; on success rename it onto ``path`` (atomic on POSIX)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=_temp_prefix(path), suffix=suffix + ".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        if tmp_path.is_file():
            os.chmod(tmp_path, FILE_MODE)
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> None:
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    write_bytes_atomic(path, text.encode("utf-8"))


def write_json_atomic(path: str | os.PathLike, obj: Any) -> None:
    write_text_atomic(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


@contextmanager
def atomic_dir(path: str | os.PathLike) -> Iterator[Path]:
    """Build a directory under a temp name and swap it into place only when the block succeeds.

    A pre-existing ``path`` is replaced as a whole; a crash leaves the old one (or nothing).
    Under a data-parallel launch (RANK > 0: not the main process) the block builds into a scratch folder
    that is dropped: only the main process publishes a stage's output (rorem_core.parallel).
    """
    path = Path(path)
    if int(os.environ.get("RANK", "0")) > 0:
        with tempfile.TemporaryDirectory(prefix=f"rorem-rank{os.environ['RANK']}-") as scratch:
            yield Path(scratch)
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    drop_stale_temps(path)    # what a killed earlier run left next to the output
    tmp = Path(tempfile.mkdtemp(prefix=_temp_prefix(path), suffix=".tmp", dir=path.parent))
    try:
        yield tmp
        replace_dir(tmp, path)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)


def replace_dir(src: Path, path: Path) -> None:
    """Swap the finished folder ``src`` into ``path`` (a pre-existing ``path`` is replaced as a whole)."""
    os.chmod(src, DIR_MODE)
    if path.exists():
        old = path.with_name(f".{path.name}.old")
        if old.exists():
            shutil.rmtree(old)
        os.replace(path, old)
        os.replace(src, path)
        shutil.rmtree(old)
    else:
        os.replace(src, path)


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def sha256_bytes(*parts: bytes) -> str:
    h = hashlib.sha256()
    for p in parts:
        h.update(len(p).to_bytes(8, "little"))
        h.update(p)
    return h.hexdigest()


def link_or_copy(src: Path, dst: Path, mode: str = "hardlink") -> None:
    """Place ``src`` at ``dst``: a hard link (no bytes copied; DVC-safe, files are never modified in place)
    or a copy when asked or when linking fails (another filesystem)."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    if dst.exists():
        dst.unlink()
    if mode == "hardlink":
        try:
            os.link(src, dst)
            return
        except OSError:
            pass
    shutil.copy2(src, dst)


class ArtifactCorrupt(RuntimeError):
    """A stored artifact (model weights, checkpoint) is truncated or altered; the message names the
    file and how to recover it."""


def check_safetensors(path: str | os.PathLike, fix: str = "") -> None:
    """Cheap integrity check of a ``.safetensors`` file without reading its tensors: the header must
    parse and the file must be exactly as long as the header's last tensor says (catches truncation
    and appended bytes). Raises ArtifactCorrupt naming the file and ``fix``."""
    path = Path(path)
    fix = fix or ("restore it with `dvc checkout` (or `dvc pull`), or re-run the stage that wrote it")
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            n = int.from_bytes(f.read(8), "little")
            if size < 8 or n > size - 8:
                raise ValueError(f"header of {n} bytes does not fit in {size} bytes")
            header = json.loads(f.read(n))
        ends = [v["data_offsets"][1] for k, v in header.items() if k != "__metadata__"]
        expected = 8 + n + max(ends, default=0)
    except (OSError, ValueError, KeyError, TypeError, IndexError) as e:
        raise ArtifactCorrupt(f"{path}: unreadable safetensors file ({e}); {fix}") from None
    if size != expected:
        raise ArtifactCorrupt(f"{path}: truncated or altered safetensors file ({size} bytes, its header "
                              f"says {expected}); {fix}")


def load_torch_state(path: str | os.PathLike, fix: str = "") -> dict:
    """A torch ``.pt`` state dict loaded with ``weights_only=True`` (no pickle code runs). A torch zip
    has no length header to check up front, so a truncated or altered file is caught by its zip
    directory / CRCs while loading and raised as ArtifactCorrupt naming the file and ``fix``."""
    import pickle  # only for its exception type: loading goes through weights_only

    import torch  # here, not at the top: the annotation layer imports this module without torch

    path = Path(path)
    fix = fix or ("restore it with `dvc checkout` (or `dvc pull`), or copy it again from the release "
                  "that shipped it")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise
    except (RuntimeError, EOFError, OSError, ValueError, pickle.UnpicklingError) as e:
        first = str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__
        raise ArtifactCorrupt(f"{path}: truncated or unreadable torch file ({first}); {fix}") from None
    if not isinstance(state, dict):
        raise ArtifactCorrupt(f"{path}: holds a {type(state).__name__}, not a state dict; {fix}")
    return state


def file_manifest(folder: str | os.PathLike, skip: tuple[str, ...] = ()) -> dict[str, list]:
    """{relative posix path: [size, sha256]} of every file under ``folder`` (names in ``skip`` left out)."""
    folder = Path(folder)
    return {p.relative_to(folder).as_posix(): [p.stat().st_size, sha256_file(p)]
            for p in sorted(folder.rglob("*")) if p.is_file() and p.name not in skip}


def manifest_problems(folder: str | os.PathLike, manifest: dict[str, list]) -> list[str]:
    """What differs between ``folder`` and a ``file_manifest`` taken earlier (missing, size, content)."""
    folder, out = Path(folder), []
    for rel, (size, digest) in sorted(manifest.items()):
        p = folder / rel
        if not p.is_file():
            out.append(f"{p} is missing")
        elif p.stat().st_size != size:
            out.append(f"{p} has {p.stat().st_size} bytes, {size} were written (truncated?)")
        elif sha256_file(p) != digest:
            out.append(f"{p} fails its sha256 (altered)")
    return out
