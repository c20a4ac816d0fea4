"""The image files a push writes for its tasks: mask overlays and review copies under opaque names.

They are written on demand, per batch of tasks (:meth:`TaskImages.prepare`), so that a push renders
the next batch's overlays while Label Studio imports the previous batch (two processes, two cores),
and a task is never imported before the files it shows exist. Overlays are skipped when an index
says they are up to date (:class:`OverlayWriter`).
"""

from __future__ import annotations

import hashlib
import json
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable

import numpy as np

from annotation.gold import neutral_name, place_copy
from annotation.paths import PathRefused, RootCheck, local_files_url
from rorem_core.data.images import encode_png, load_mask, load_rgb
from rorem_core.io import atomic_path, write_json_atomic

OVERLAY_VERSION = 1   # bump when render_overlay changes: every overlay is then rendered again
IMAGE_THREADS = min(8, os.cpu_count() or 1)   # threads writing a batch's images


def render_overlay(source: np.ndarray, mask: np.ndarray, alpha: float = 0.45) -> np.ndarray:
    """Source (H, W, 3) with the mask tinted red (blend ``alpha``) and its 1-px border pure red."""
    out = source.copy()
    red = np.array([1.0, 0.0, 0.0], dtype=out.dtype)
    out[mask] = (1 - alpha) * out[mask] + alpha * red
    inner = mask.copy()
    inner[1:, :] &= mask[:-1, :]
    inner[:-1, :] &= mask[1:, :]
    inner[:, 1:] &= mask[:, :-1]
    inner[:, :-1] &= mask[:, 1:]
    out[mask & ~inner] = red
    return out


def _stamp(path: Path) -> list:
    """What identifies a file's content without reading it: path, size, mtime (ns), inode (a rewrite
    through a rename gets a new inode even within one mtime tick)."""
    st = os.stat(path)
    return [str(path), st.st_size, st.st_mtime_ns, st.st_ino]


class OverlayWriter:
    """Renders overlays into one folder, skipping those an index proves up to date.

    ``<folder>.index.json`` (next to the folder, not in it: a storage may serve what is in it) records,
    per overlay, the stamps (:func:`_stamp`) of its source, its mask and the overlay as written. When
    all three still match, the overlay is what a render would give and is left alone (a re-push of
    10,000 tasks skips ~5,000 decodes, renders and PNG encodings); otherwise it is rendered and
    rewritten only when its bytes change. The index is a cache: deleting it costs one render per
    overlay, never a wrong image. Overlays are derived files, renamed into place without fsync (a
    crash may lose one; its stamp then differs and it is rendered again)."""

    def __init__(self, folder: Path):
        self.folder = Path(folder)
        self.index_path = self.folder.with_name(self.folder.name + ".index.json")
        try:
            data = json.loads(self.index_path.read_text(encoding="utf-8"))
            self.saved = dict(data["overlays"]) if data.get("version") == OVERLAY_VERSION else {}
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            self.saved = {}
        self.index = dict(self.saved)

    def write(self, source: Path, mask: Path, target: Path) -> Path:
        inputs, rec = [_stamp(source), _stamp(mask)], self.index.get(target.name) or {}
        if rec.get("inputs") != inputs or not target.is_file() or rec.get("overlay") != _stamp(target):
            png = encode_png(render_overlay(load_rgb(source), load_mask(mask)), compress_level=1)
            if not target.is_file() or target.read_bytes() != png:
                with atomic_path(target) as tmp:
                    tmp.write_bytes(png)
                os.chmod(target, 0o644)
        self.index[target.name] = {"inputs": inputs, "overlay": _stamp(target)}
        return target

    def save(self) -> None:
        if self.index != self.saved:
            write_json_atomic(self.index_path, {"version": OVERLAY_VERSION, "overlays": dict(sorted(self.index.items()))})
            self.saved = dict(self.index)


class TaskImages:
    """The files the round's tasks show that the push writes, keyed by their local-files URL.

    :meth:`overlay` and :meth:`neutral` return the final path at once (task URLs can be built) and
    record how to write it; :meth:`prepare` writes what a list of tasks shows and has not been
    written yet. Every written file is checked to resolve inside the served root."""

    def __init__(self, doc_root: Path, overlay_dir: Path, check: RootCheck):
        self.doc_root, self.check = Path(doc_root), check
        real_dir = os.path.realpath(overlay_dir)
        if not real_dir.startswith(os.path.realpath(doc_root).rstrip(os.sep) + os.sep):
            raise PathRefused(f"overlay folder {overlay_dir} resolves to {real_dir}, outside the served root "
                              f"{doc_root}; put it under the project's data folder")
        self.overlays = OverlayWriter(Path(overlay_dir))
        self._todo: dict[str, Callable[[], Path]] = {}

    def _add(self, target: Path, write: Callable[[], Path]) -> Path:
        self._todo.setdefault(local_files_url(target, self.doc_root), write)
        return target

    def overlay(self, name: str, source: Path, mask: Path) -> Path:
        target = self.overlays.folder / f"{name}.png"
        return self._add(target, lambda: self.overlays.write(source, mask, target))

    def neutral(self, src: Path, folder: Path, round_id: int, role: str) -> Path:
        target = neutral_name(src, folder, round_id, role, self.check.real)
        return self._add(target, lambda: place_copy(src, target))

    def example_overlay(self, key: str, source: Path, mask: Path) -> Path:
        """An instructions example's overlay, written now (the instructions are set before any import)."""
        name = f"example-{hashlib.sha256(key.encode()).hexdigest()[:12]}.png"
        return self.check(self.overlays.write(source, mask, self.overlays.folder / name))

    def prepare(self, tasks: list[dict]) -> None:
        """Write the not-yet-written files that ``tasks`` show (any value of their data that is one)."""
        urls = [v for t in tasks for v in t["data"].values() if isinstance(v, str) and v in self._todo]
        self._write([self._todo.pop(u) for u in dict.fromkeys(urls)])

    def prepare_all(self) -> None:
        """Write what is left and save the overlay index (once per push: saving it per batch rewrote a
        growing file ~10 times; a push killed before this costs re-renders, never a wrong image)."""
        self._write([self._todo.pop(u) for u in list(self._todo)])
        self.overlays.save()

    def _write(self, writes: list[Callable[[], Path]]) -> None:
        """Run ``writes`` on IMAGE_THREADS threads: PNG decoding and encoding and file creation release
        the GIL (600 overlays: 0.65 s on 2 threads vs 1.2-1.7 s on one, here); each file is distinct."""
        if len(writes) > 1 and IMAGE_THREADS > 1:
            with ThreadPoolExecutor(IMAGE_THREADS, thread_name_prefix="push-images") as pool:
                written = list(pool.map(lambda w: w(), writes))
        else:
            written = [w() for w in writes]
        for path in written:
            self.check(path)
