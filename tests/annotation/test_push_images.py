"""The image side of a push at scale, without a server: the cached root check, overlays rendered once
(an index), each batch's images written just before its import, hard links instead of copies."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

import annotation.overlays as overlays
from annotation.config import AnnotationConfig
from annotation.paths import PathRefused, RootCheck, inside_root
from annotation.pull import _write_dataset
from annotation.push import build_round_tasks, push_round
from rorem_core.data.images import save_png


def test_root_check_gives_inside_roots_answers(tmp_path):
    root = tmp_path / "data"
    (root / "a").mkdir(parents=True)
    (root / "a" / "x.png").write_bytes(b"png")
    (tmp_path / "secret.png").write_bytes(b"png")
    os.symlink(root / "a" / "x.png", root / "in.png")           # symlink staying inside
    os.symlink(tmp_path / "secret.png", root / "out.png")       # symlink leaving the root
    os.symlink(tmp_path, root / "dirlink")                      # folder symlink leaving the root
    check = RootCheck(root)
    for ok in (root / "a" / "x.png", root / "in.png", root / "a" / ".." / "a" / "x.png"):
        assert check(ok) == inside_root(ok, root) == (root / "a" / "x.png").resolve()
    for bad, why in ((root / "out.png", "outside"), (root / "dirlink" / "secret.png", "outside"),
                     (root / ".." / "secret.png", "outside"), (root / "missing.png", "not found"),
                     (root / "a", "not found")):
        with pytest.raises(PathRefused, match=why) as mine:
            check(bad)
        with pytest.raises(PathRefused) as theirs:
            inside_root(bad, root)
        assert str(mine.value) == str(theirs.value)


def _count_renders(monkeypatch) -> list[int]:
    calls = [0]
    real = overlays.render_overlay

    def counted(*a, **kw):
        calls[0] += 1
        return real(*a, **kw)

    monkeypatch.setattr(overlays, "render_overlay", counted)
    return calls


def _overlay_files(data: Path, round_id: int) -> dict[str, tuple[bytes, int]]:
    folder = data / "annotations" / f"round-{round_id}" / "overlays"
    return {p.name: (p.read_bytes(), p.stat().st_ino) for p in sorted(folder.glob("*.png"))}


def test_overlays_are_rendered_once_and_again_only_when_an_input_changes(tmp_path, new_round, monkeypatch):
    r = new_round(tmp_path / "data", 3, n_inputs=4)
    cfg = AnnotationConfig(pairwise=False, gold={"share": 0.0})
    renders = _count_renders(monkeypatch)
    build_round_tasks(cfg, 3, r.candidates, tmp_path / "data")
    first = _overlay_files(tmp_path / "data", 3)
    assert renders[0] == 4 and len(first) == 4                  # one per input, not per candidate
    build_round_tasks(cfg, 3, r.candidates, tmp_path / "data")
    assert renders[0] == 4 and _overlay_files(tmp_path / "data", 3) == first   # the index proves them current

    source = r.candidates.parent / "inputs" / "source" / "p001.png"
    save_png(source, np.zeros((64, 64, 3), dtype=np.float32))     # an input changes: its overlay only
    build_round_tasks(cfg, 3, r.candidates, tmp_path / "data")
    now = _overlay_files(tmp_path / "data", 3)
    assert renders[0] == 5 and now["p001.png"][0] != first["p001.png"][0]
    assert {k: v for k, v in now.items() if k != "p001.png"} == {k: v for k, v in first.items() if k != "p001.png"}

    index = tmp_path / "data" / "annotations" / "round-3" / "overlays.index.json"
    index.write_text("{not json")                                  # a damaged index costs renders, not images
    build_round_tasks(cfg, 3, r.candidates, tmp_path / "data")
    assert renders[0] == 9 and _overlay_files(tmp_path / "data", 3) == now   # same bytes: nothing rewritten
    assert json.loads(index.read_text())["version"] == overlays.OVERLAY_VERSION


class RecordingServer:
    """The calls push_round makes, in memory; each import records which of the push's images exist."""

    url = "http://fake"

    def __init__(self, data: Path):
        self.data, self.projects, self.tasks, self.seen = data, {}, {}, []

    def find_project(self, title):
        return next((p for p in self.projects.values() if p["title"] == title), None)

    def create_project(self, **fields):
        pid = len(self.projects) + 1
        self.projects[pid], self.tasks[pid] = {"id": pid, **fields}, []
        return self.projects[pid]

    def update_project(self, project_id, **fields):
        return self.projects[project_id]

    def local_storages(self, project_id):
        return []

    def create_local_storage(self, project_id, path, title):
        return {}

    def iter_tasks(self, project_id, *, include=None, page_size=1000):
        yield from self.tasks[project_id]

    def _file(self, url: str) -> Path:
        return self.data / url.split("?d=", 1)[1]

    def import_tasks(self, project_id, tasks):
        shown = {k: [self._file(t["data"][k]) for t in tasks] for k in ("original", "overlay", "result")}
        self.seen.append({k: all(p.is_file() for p in v) for k, v in shown.items()})
        self.tasks[project_id] += json.loads(json.dumps(tasks))
        return list(range(len(tasks)))


def test_push_writes_each_batchs_images_before_importing_it(tmp_path, new_round):
    r = new_round(tmp_path / "data", 4, n_inputs=6)
    server = RecordingServer(tmp_path / "data")
    cfg = AnnotationConfig(pairwise=False, gold={"share": 0.0}, import_batch=4)
    res = push_round(server, cfg, 4, r.candidates, tmp_path / "data")
    assert res.created == {"review": 12} and len(server.seen) == 3
    assert all(all(s.values()) for s in server.seen), server.seen   # never a task before its images
    review = tmp_path / "data" / "annotations" / "round-4" / "review"
    results = {p.stat().st_ino for p in (r.candidates.parent / "results").glob("*.png")}
    assert results <= {p.stat().st_ino for p in review.glob("*.png")}   # linked, not copied

    for p in [*review.glob("*.png"), *(review.parent / "overlays").glob("*.png")]:
        p.unlink()                                                   # a re-push restores what tasks show
    assert push_round(server, cfg, 4, r.candidates, tmp_path / "data").created == {"review": 0}
    assert all(server._file(t["data"][k]).is_file() for t in server.tasks[1] for k in ("original", "overlay", "result"))


def test_datasets_link_their_images_and_a_rewrite_keeps_them(tmp_path):
    src = tmp_path / "src.png"
    src.write_bytes(b"png bytes")
    out = tmp_path / "scored"
    assert _write_dataset(out, [{"GT": "GT/a.png"}], {"GT/a.png": src})
    assert (out / "GT" / "a.png").stat().st_ino == src.stat().st_ino and (out / "GT" / "a.png").read_bytes() == b"png bytes"
    assert not _write_dataset(out, [{"GT": "GT/a.png"}], {"GT/a.png": src})   # already exactly that
