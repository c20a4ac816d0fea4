"""Fixtures for the annotation tests: tiny rounds on disk and one real Label Studio per session.

The server is started by the project's own command (``annotation.cli.main(["up"])``) on a free
127.0.0.1 port, from a copy of the migrated template data dir (~4 s). Label Studio's venv and the
template are built once in the repository (``.venv-ls``, ``.rorem/labelstudio-template``); CI
creates the venv with ``scripts/labelstudio_env.sh``. Only with ``RUN_WITHOUT_LS=1`` may the
server tests be skipped when that venv cannot be created.
"""

from __future__ import annotations

import os
import secrets
import socket
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from annotation import cli
from annotation.client import LabelStudioClient
from annotation.config import AnnotationConfig
from annotation.server import TEMPLATE_ENV, TOKEN_ENV, VENV_ENV, LabelStudioServer, ServerError
from tests.helpers.rounds import RoundFiles, make_round  # noqa: F401  (the annotation tests' tiny rounds)

REPO = Path(__file__).resolve().parents[2]


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
    """``new_round(data_root, round_id, n_inputs=3, scores=True) -> RoundFiles``.

    Refuses a (data_root, round_id) that an earlier test of the session already made: the session's
    Label Studio keeps round N's projects and push.json, so a second test on round N would see the
    first one's tasks and gold plan (this once made a gold test pass alone and fail in the suite)."""
    made: dict[tuple[str, int], str] = {}

    def make(data_root: Path, round_id: int, *args, **kwargs) -> RoundFiles:
        key, who = (str(Path(data_root).resolve()), int(round_id)), os.environ.get("PYTEST_CURRENT_TEST", "?")
        if key in made:
            raise AssertionError(f"round {round_id} under {data_root} was already made by {made[key]}; "
                                 f"give {who} a round number no other test uses")
        made[key] = who
        return make_round(data_root, round_id, *args, **kwargs)

    return make
