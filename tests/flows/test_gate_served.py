"""The human gate under `rorem serve`: a round submitted with human annotators suspends (no process
held), survives a restart of the Prefect server, and is resumed by the watcher when a SIMULATED
annotator finishes labelling in the real Label Studio; then it completes, commits and tags.

Real: `rorem serve` (prefect server + flow.serve + watcher), Label Studio, git, `dvc add`.
Fake: the ML stages (ROREM_STAGE_RUNNER=tests.helpers.fake_stages:FakeRunner), so this takes ~1-2 min, not a round."""

import json
import os
import signal
import subprocess
from pathlib import Path

import pytest

from tests.helpers.served import RORME
from tests.helpers.served import free_port as _free_port
from tests.helpers.served import serve as _serve
from tests.helpers.served import state as _state
from tests.helpers.served import wait as _wait

pytestmark = [pytest.mark.integration, pytest.mark.slow]
REPO = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent


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
