"""Fixtures for the annotation tests: tiny rounds on disk and one real Label Studio per session.

The server is started by the project's own command (``annotation.cli.main(["up"])``) on a free
127.0.0.1 port, from a copy of the migrated template data dir (~4 s). Label Studio's venv and the
template are built once in the repository (``.venv-ls``, ``.rorem/labelstudio-template``); CI
creates the venv with ``scripts/labelstudio_env.sh``. Only with ``RUN_WITHOUT_LS=1`` may the
server tests be skipped when that venv cannot be created.
"""

from __future__ import annotations

import json
import os
import secrets
import socket
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import yaml

from annotation import cli
from annotation.client import LabelStudioClient
from annotation.config import AnnotationConfig
from annotation.server import TEMPLATE_ENV, TOKEN_ENV, VENV_ENV, LabelStudioServer, ServerError
from rorem_core.data.formats import Candidate, write_candidates
from rorem_core.data.images import save_png

REPO = Path(__file__).resolve().parents[2]
SIZE = 64


@dataclass
class RoundFiles:
    round_id: int
    candidates: Path            # data/candidates/round-N/candidates.json
    hidden: Path                # data/hidden/round-N/meta.json
    good: list[str]             # candidate ids the oracle calls good
    bad: list[str]


def _scene(i: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(source, mask, GT) for input i: a gradient background and a red square object."""
    yy, xx = np.mgrid[0:SIZE, 0:SIZE].astype(np.float32) / SIZE
    gt = np.stack([0.2 + 0.3 * xx, 0.3 + 0.2 * yy, 0.6 + 0.1 * xx * yy], axis=-1)
    y0, x0 = 12 + 7 * i, 16 + 5 * i
    src = gt.copy()
    src[y0:y0 + 16, x0:x0 + 16] = [0.9, 0.1, 0.1]
    mask = np.zeros((SIZE, SIZE), dtype=bool)
    mask[y0 - 2:y0 + 18, x0 - 2:x0 + 18] = True
    return src, mask, gt


def make_round(data_root: Path, round_id: int, n_inputs: int = 3, *, scores: bool = True) -> RoundFiles:
    """Inputs p000.. with two candidates each: s0 good (GT + small noise), s1 bad (object left)."""
    cdir, hdir = data_root / "candidates" / f"round-{round_id}", data_root / "hidden" / f"round-{round_id}"
    rng = np.random.default_rng(round_id)
    cands, hidden, good, bad = [], [], [], []
    for i in range(n_inputs):
        pid = f"p{i:03d}"
        src, mask, gt = _scene(i % 5)   # 5 object positions fit the 64-px scene; more inputs repeat them
        save_png(cdir / "inputs" / "source" / f"{pid}.png", src)
        save_png(cdir / "inputs" / "mask" / f"{pid}.png", mask)
        save_png(hdir / "GT" / f"{pid}.png", gt)
        hidden.append({"id": pid, "GT": f"GT/{pid}.png"})
        results = {0: np.clip(gt + rng.normal(0, 0.01, gt.shape), 0, 1), 1: src}
        for seed, img in results.items():
            cid = f"r{round_id}-{pid}-s{seed}"
            save_png(cdir / "results" / f"{cid}.png", img)
            score = (0.8 if seed == 0 else 0.3) if scores and i != 0 else None
            cands.append(Candidate(id=cid, round=round_id, input_id=pid, seed=seed, model="test", steps=4,
                                   source=f"inputs/source/{pid}.png", mask=f"inputs/mask/{pid}.png",
                                   result=f"results/{cid}.png", score=score,
                                   score_model="disc-test" if score is not None else None))
            (good if seed == 0 else bad).append(cid)
    write_candidates(cdir / "candidates.json", cands)
    hdir.mkdir(parents=True, exist_ok=True)
    (hdir / "meta.json").write_text(json.dumps(hidden))
    return RoundFiles(round_id, cdir / "candidates.json", hdir / "meta.json", good, bad)


@dataclass
class LSEnv:
    root: Path                  # the test project (params.yaml, data/, .rorem/)
    server: LabelStudioServer
    client: LabelStudioClient
    token: str

    @property
    def data(self) -> Path:
        return self.root / "data"

    def cfg(self, **overrides) -> AnnotationConfig:
        return self.server.cfg.model_copy(update=overrides)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def ls(tmp_path_factory) -> LSEnv:
    shared = LabelStudioServer(root=REPO, cfg=AnnotationConfig())
    try:
        shared.ensure_venv()
        shared.ensure_template()
    except ServerError as e:
        if os.environ.get("RUN_WITHOUT_LS") == "1":
            pytest.skip(f"Label Studio venv could not be created and RUN_WITHOUT_LS=1: {e}")
        raise
    root = tmp_path_factory.mktemp("lsproject")
    (root / "data").mkdir()
    (root / "params.yaml").write_text(yaml.safe_dump({"annotation": {"port": _free_port(), "project_prefix": "t"}}))
    token = "rorem-test-" + secrets.token_hex(16)
    saved = {k: os.environ.get(k) for k in (TOKEN_ENV, VENV_ENV, TEMPLATE_ENV)}
    os.environ.update({TOKEN_ENV: token, VENV_ENV: str(shared.venv), TEMPLATE_ENV: str(shared.template)})
    try:
        assert cli.main(["--root", str(root), "up"]) == 0, "`rorem labelstudio up` failed"
        server = LabelStudioServer(root=root, cfg=cli.load_config(root))
        with server.client() as client:
            yield LSEnv(root, server, client, token)
    finally:
        cli.main(["--root", str(root), "down"])
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@pytest.fixture(scope="session")
def new_round():
    """``new_round(data_root, round_id, n_inputs=3, scores=True) -> RoundFiles``."""
    return make_round
