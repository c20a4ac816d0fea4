"""The human gate under `rorem serve`: a round submitted with human annotators suspends (no process
held), survives a restart of the Prefect server, and is resumed by the watcher when a SIMULATED
annotator finishes labelling in the real Label Studio; then it completes, commits and tags.

Real: `rorem serve` (prefect server + flow.serve + watcher), Label Studio, git, `dvc add`.
Fake: the ML stages (ROREM_STAGE_RUNNER=tests.helpers.fake_stages:FakeRunner), so this takes ~1-2 min, not a round."""

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

pytestmark = [pytest.mark.integration, pytest.mark.slow]
REPO = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
RORME = [sys.executable, "-m", "flows.cli"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait(cond, timeout_s: float, what: str, log: Path | None = None):
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
    from annotation.config import AnnotationConfig
    from annotation.server import LabelStudioServer

    shared = LabelStudioServer(root=REPO, cfg=AnnotationConfig())
    shared.ensure_venv()
    shared.ensure_template()
    root = tmp_path / "proj"
    root.mkdir()
    (root / "params.yaml").write_text(yaml.safe_dump({
        "base": {"seed": 0, "wandb_mode": "disabled"},
        "annotation": {"port": _free_port(), "project_prefix": "served", "gold": {"share": 0.0}},   # no gold: counts below
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
    procs = []
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


def _serve(root, env, port, procs, log: Path):
    p = subprocess.Popen([*RORME, "serve", "--root", str(root), "--port", str(port), "--poll", "1"], cwd=root,
                         env=env, stdout=open(log, "w"), stderr=subprocess.STDOUT, start_new_session=True)
    procs.append(p)
    _wait(lambda: "deployments are being served" in log.read_text(), 240, "rorem serve to be ready", log)
    return p


def _state(root) -> dict:
    f = root / ".rorem/rounds/round-1.json"
    return json.loads(f.read_text()) if f.is_file() else {}


def _run_state(root, run_id: str) -> str:
    """Prefect's state type of the flow run (PAUSED once the suspension is stored), '' if unreachable."""
    import urllib.request

    url = json.loads((root / ".rorem/prefect/server.json").read_text())["url"]
    try:
        with urllib.request.urlopen(f"{url}/flow_runs/{run_id}", timeout=5) as r:
            return (json.loads(r.read()).get("state") or {}).get("type") or ""
    except OSError:
        return ""


def test_suspended_round_survives_a_server_restart_and_resumes_when_annotators_finish(served_project, tmp_path):
    root, env, procs = served_project
    port = _free_port()
    serve = _serve(root, env, port, procs, tmp_path / "serve1.log")
    out = subprocess.run([*RORME, "round", "--root", str(root), "--annotators", "human", "--no-push"], cwd=root,
                         env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and "submitted round run" in out.stdout, out.stdout + out.stderr
    st = _wait(lambda: _state(root).get("status") == "waiting" and _state(root), 180, "the gate to suspend",
               tmp_path / "serve1.log")
    assert st["waiting_for"].startswith("annotations of round 1: 0/9") and st["flow_run_id"]
    # the state file is written just before the suspension reaches the server: stop the server only once
    # Prefect holds the run as PAUSED (stopping it earlier crashes the run: nothing is left to resume)
    _wait(lambda: _run_state(root, st["flow_run_id"]) == "PAUSED", 120, "Prefect to hold the run as suspended",
          tmp_path / "serve1.log")
    status = subprocess.run([*RORME, "status", "--root", str(root)], cwd=root, env=env, capture_output=True,
                            text=True)
    assert "waiting for annotations of round 1: 0/9" in status.stdout and "review: 0/6" in status.stdout

    serve.send_signal(signal.SIGINT)                      # Ctrl-C: the server stops, its DB stays
    serve.wait(timeout=60)
    assert not (root / ".rorem/prefect/server.json").exists()
    _serve(root, env, port, procs, tmp_path / "serve2.log")

    from annotation.cli import load_config
    from annotation.server import LabelStudioServer
    from annotation.simulated import simulate_round

    os.environ["ROREM_LABEL_STUDIO_TOKEN"] = env["ROREM_LABEL_STUDIO_TOKEN"]
    try:
        ls = LabelStudioServer(root=root, cfg=load_config(root))
        with ls.client() as c:                           # the SIMULATED annotator finishes every task
            rep = simulate_round(c, ls.cfg, 1, root / "data/candidates/round-1/candidates.json",
                                 root / "data/hidden/round-1/meta.json")
    finally:
        os.environ.pop("ROREM_LABEL_STUDIO_TOKEN")
    assert rep.created == {"review": 6, "pairwise": 3}
    st = _wait(lambda: _state(root).get("status") == "completed" and _state(root), 180,
               "the watcher to resume the round and the round to finish", tmp_path / "serve2.log")
    assert st["resumed_by"] == "watcher" and st["tag"] == "round-1"
    assert (root / "data/annotations/round-1.dvc").is_file()
    assert json.loads((root / "data/annotations/round-1/summary.json").read_text())["review"]["labeled"] == 6
    log = (tmp_path / "serve2.log").read_text()
    assert "Task run 'generate@1' - Finished in state Cached" in log    # the re-run from the top recomputed nothing
