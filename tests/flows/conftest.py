"""Flow-test fixtures: one Prefect test harness per session (temp DB + server, ~15 s), a throwaway
git project, and fakes for the stage runner and the Label Studio tasks, so the flow's logic is
tested in seconds; the end-to-end tests (test_e2e.py) use the real DVC and Label Studio.

Shared test code lives in tests/helpers (imported as ``tests.helpers.x``)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from tests.helpers.fake_stages import FakeRunner
from tests.helpers.served import served_project  # noqa: F401  (fixture of the served / worker tests)

HERE = Path(__file__).resolve().parent



PARAMS = """\
# rorem test params: this comment must survive the flow's edits
base:
  seed: 0
  wandb_mode: disabled
rounds:
  "1":
    init: models/base
    train: data/seed
    pool: data/pools/round-1
    prev_disc: models/discriminator/round-0
    prev_labels: data/labels/round-0
"""
GIT_ENV = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t"}


def git(root: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, check=True,
                          env={**os.environ, **GIT_ENV, "GIT_PAGER": "cat"}).stdout


def init_project(root: Path) -> Path:
    root.mkdir(parents=True)
    (root / "params.yaml").write_text(PARAMS)
    (root / ".gitignore").write_text("/.rorem/\n")
    git(root, "init", "-q")
    git(root, "add", "-A")
    git(root, "commit", "-qm", "init")
    return root


class FakeGate:
    """Replaces the Label Studio tasks used by flows.gate; ``progress`` yields successive answers."""

    def __init__(self):
        self.calls: list[str] = []
        self.progress = [{"round": 1, "done": 4, "total": 4, "min_labels": 1}]

    def install(self, monkeypatch) -> None:
        import flows.gate as g

        def rec(name, result=None):
            def fn(*args, **kw):
                self.calls.append(name)
                return result(*args) if callable(result) else (result or {})
            fn.fn = fn
            return fn

        def progress(*args):
            return self.progress.pop(0) if len(self.progress) > 1 else self.progress[0]

        def freeze(root, n):
            (Path(root) / f"data/annotations/round-{n}.dvc").parent.mkdir(parents=True, exist_ok=True)
            (Path(root) / f"data/annotations/round-{n}.dvc").write_text("outs: [{md5: fake}]\n")
            return f"data/annotations/round-{n}.dvc"

        for name, result in (("ensure_label_studio", "http://ls"), ("push_selection", {"created": {"review": 4}}),
                             ("simulate_labels", {"created": {"review": 4}}), ("annotation_progress", progress),
                             ("pull_annotations", {"scored": 4}), ("freeze_annotations", freeze)):
            monkeypatch.setattr(g, name, rec(name, result))


@pytest.fixture(scope="session")
def prefect_harness():
    """A temporary Prefect server and DB for the whole session (requested only by flow tests)."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=90):
        yield


@pytest.fixture
def project(tmp_path) -> Path:
    return init_project(tmp_path / "proj")


@pytest.fixture
def fake_runner():
    from tasks.stages import use_runner

    FakeRunner.reset()
    with use_runner(FakeRunner):
        yield FakeRunner


@pytest.fixture
def fake_gate(monkeypatch) -> FakeGate:
    gate = FakeGate()
    gate.install(monkeypatch)
    return gate


@pytest.fixture
def git_cmd():
    return git
