"""Fixtures of the reliability tests: content hashes of folders (to prove nothing stored changed), a
small annotation round on disk with a fake Label Studio client serving crafted exports, and a tiny
random remover model (32 px, seconds)."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np
import pytest

from rorem_core.data.formats import Candidate, write_candidates
from rorem_core.data.images import save_png
from tests.helpers import threads

SIZE = 32


# module scope: the module-scoped training fixtures run on the same thread count as the tests that
# compare against them (CPU float reductions differ between 1 and 2 threads)
one_torch_thread = pytest.fixture(autouse=True, scope="module")(threads.one_torch_thread)


def tree_hash(*paths: Path) -> str:
    """sha256 over every file's relative path, mode and bytes (missing paths hash as absent); the
    roots' own locations do not count, so two folders with the same content hash the same."""
    h = hashlib.sha256()
    for i, root in enumerate(paths):
        root = Path(root)
        h.update(f"<root {i}>".encode())
        if not root.exists():
            h.update(b"absent")
            continue
        files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file() or p.is_symlink())
        for p in files:
            h.update(p.relative_to(root.parent if root.is_file() else root).as_posix().encode())
            h.update(oct(os.lstat(p).st_mode).encode())
            h.update(os.readlink(p).encode() if p.is_symlink() else p.read_bytes())
    return h.hexdigest()


# ---- an annotation round and a fake Label Studio -------------------------------------------------

def make_candidates(root: Path, round_id: int = 1, n_inputs: int = 2) -> Path:
    """data/candidates/round-N: two candidates per input (s0 good, s1 bad); returns candidates.json."""
    cdir = root / "candidates" / f"round-{round_id}"
    rng = np.random.default_rng(round_id)
    cands = []
    for i in range(n_inputs):
        pid = f"p{i:03d}"
        src = rng.random((SIZE, SIZE, 3)).astype(np.float32)
        mask = np.zeros((SIZE, SIZE), bool)
        mask[8:20, 8 + i:20 + i] = True
        save_png(cdir / "inputs" / "source" / f"{pid}.png", src)
        save_png(cdir / "inputs" / "mask" / f"{pid}.png", mask)
        for seed in (0, 1):
            cid = f"r{round_id}-{pid}-s{seed}"
            save_png(cdir / "results" / f"{cid}.png", rng.random((SIZE, SIZE, 3)).astype(np.float32))
            cands.append(Candidate(id=cid, round=round_id, input_id=pid, seed=seed, model="test", steps=4,
                                   source=f"inputs/source/{pid}.png", mask=f"inputs/mask/{pid}.png",
                                   result=f"results/{cid}.png"))
    write_candidates(cdir / "candidates.json", cands)
    return cdir / "candidates.json"


def review_choice(quality: str, reasons: tuple[str, ...] = ()) -> list[dict]:
    out = [{"from_name": "quality", "to_name": "result", "type": "choices", "value": {"choices": [quality]}}]
    if reasons:
        out.append({"from_name": "reason", "to_name": "result", "type": "choices",
                    "value": {"choices": list(reasons)}})
    return out


def annotation(ann_id: int, task_id: int, who: str, result: list[dict], *, cancelled: bool = False,
               updated: str = "2026-01-01T00:00:00Z") -> dict:
    return {"id": ann_id, "task": task_id, "completed_by": {"id": ann_id, "email": who}, "result": result,
            "was_cancelled": cancelled, "updated_at": updated}


def review_export(candidates: list[str], votes: dict[str, list[dict]] | None = None) -> list[dict]:
    """One task per candidate id; ``votes`` maps candidate id -> its annotations (task ids 1..)."""
    return [{"id": i + 1, "data": {"candidate_id": cid}, "annotations": (votes or {}).get(cid, []),
             "predictions": []} for i, cid in enumerate(candidates)]


class FakeLabelStudio:
    """What pull_round needs from LabelStudioClient: projects by title and their JSON exports."""

    url = "http://fake-label-studio"

    def __init__(self, exports: dict[str, list[dict]]):
        self.exports = exports     # kind ("review" / "pairwise") -> tasks

    def find_project(self, title: str) -> dict | None:
        kind = title.rsplit(" ", 1)[-1]
        return {"id": 1 if kind == "review" else 2, "title": title} if kind in self.exports else None

    def export_snapshot(self, project_id: int, title: str) -> list[dict]:
        import copy

        return copy.deepcopy(self.exports["review" if project_id == 1 else "pairwise"])


@pytest.fixture
def ann_round(tmp_path):
    """(candidates.json, output folder data/annotations/round-1) of a fresh small round."""
    return make_candidates(tmp_path / "data"), tmp_path / "data" / "annotations" / "round-1"


# ---- a tiny random remover -----------------------------------------------------------------------

@pytest.fixture(scope="session")
def tiny_model(random_tiny_model) -> Path:
    """Random tiny SDXL-inpainting model dir at 32 px (analytic autoencoder), with prompt embeddings."""
    return random_tiny_model(SIZE)


@pytest.fixture(scope="session")
def tiny_triplets(tmp_path_factory) -> Path:
    """10 synthetic triplets at 32 px; returns their meta.json."""
    from rorem_core.data.synthetic import SyntheticConfig, write_triplets

    root = tmp_path_factory.mktemp("rel_data") / "train"
    write_triplets(root, SyntheticConfig(size=SIZE), "rel", 10, 0.5)
    return root / "meta.json"


@pytest.fixture(scope="session")
def rel():
    """The helpers above, for the test modules (conftest is not importable under importlib mode)."""
    from types import SimpleNamespace

    return SimpleNamespace(tree_hash=tree_hash, make_candidates=make_candidates, review_choice=review_choice,
                           annotation=annotation, review_export=review_export, FakeLabelStudio=FakeLabelStudio,
                           SIZE=SIZE)
