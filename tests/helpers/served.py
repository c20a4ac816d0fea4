"""A served project for the tests of `rorem serve` and `rorem worker`: a git + DVC project whose ML
stages are fakes (ROREM_STAGE_RUNNER=tests.helpers.fake_stages:FakeRunner, so a round takes seconds),
with the real Prefect server, Label Studio, git and `dvc add`; and the waits those tests need."""

from __future__ import annotations

import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from rorem_core import contract

REPO = Path(__file__).resolve().parents[2]
RORME = [sys.executable, "-m", "flows.cli"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait(cond, timeout_s: float, what: str, log: Path | None = None):
    """``cond()``'s first truthy value, polled every second; on timeout an AssertionError with the log's tail."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        got = cond()
        if got:
            return got
        time.sleep(1)
    tail = log.read_text()[-4000:] if log and log.is_file() else ""
    raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}\n{tail}")


@pytest.fixture
def served_project(tmp_path, git_cmd):
    """(root, env for the `rorem` subprocesses, list the test appends its processes to: killed after)."""
    from annotation.config import AnnotationConfig
    from annotation.server import LabelStudioServer

    shared = LabelStudioServer(root=REPO, cfg=AnnotationConfig())
    shared.ensure_venv()
    shared.ensure_template()
    root = tmp_path / "proj"
    root.mkdir()
    (root / "params.yaml").write_text(yaml.safe_dump({
        "base": {"seed": 0, "wandb_mode": "disabled"},
        "annotation": {"port": free_port(), "project_prefix": "served", "gold": {"share": 0.0}},   # no gold: counts
        "rounds": {"1": contract.round_entry(1)}}))
    (root / ".gitignore").write_text("/.rorem/\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update({"ROREM_LABEL_STUDIO_VENV": str(shared.venv), "ROREM_LABEL_STUDIO_TEMPLATE": str(shared.template),
                "ROREM_LABEL_STUDIO_TOKEN": "rorem-served-" + secrets.token_hex(8),
                "ROREM_STAGE_RUNNER": "tests.helpers.fake_stages:FakeRunner", "PYTHONPATH": str(REPO),
                "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t",
                "GIT_COMMITTER_EMAIL": "t@t", "PREFECT_SERVER_ANALYTICS_ENABLED": "false"})
    subprocess.run(["git", "init", "-q"], cwd=root, check=True)
    subprocess.run([str(Path(sys.executable).with_name("dvc")), "init", "-q"], cwd=root, check=True)
    git_cmd(root, "add", "-A")
    git_cmd(root, "commit", "-qm", "init")
    procs: list[subprocess.Popen] = []
    yield root, env, procs
    for p in procs:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
    subprocess.run([*RORME, "labelstudio", "--root", str(root), "down"], env=env, cwd=root, capture_output=True)
    info = root / ".rorem/prefect/server.json"
    if info.is_file():
        try:
            os.killpg(json.loads(info.read_text())["pid"], signal.SIGKILL)
        except ProcessLookupError:
            pass


def serve(root: Path, env: dict, port: int, procs: list, log: Path, poll_s: float = 1) -> subprocess.Popen:
    """`rorem serve` (watcher every ``poll_s`` s), returned once its deployments are served."""
    p = subprocess.Popen([*RORME, "serve", "--root", str(root), "--port", str(port), "--poll", str(poll_s)], cwd=root,
                         env=env, stdout=open(log, "w"), stderr=subprocess.STDOUT, start_new_session=True)
    procs.append(p)
    wait(lambda: "deployments are being served" in log.read_text(), 240, "rorem serve to be ready", log)
    return p


def state(root: Path, n: int = 1) -> dict:
    """Round n's state file (.rorem/rounds/round-N.json), {} before it exists."""
    f = root / f".rorem/rounds/round-{n}.json"
    return json.loads(f.read_text()) if f.is_file() else {}
