"""`rorem worker` (issue 17): a Prefect process worker, started by the test as a user starts it on a GPU
machine, picks up a round submitted to the work pool (`rorem round --on worker`) from the local
`rorem serve` server, suspends it at the human gate (the run's process exits: the worker is free),
and completes it after its own gate watcher resumes it once a SIMULATED annotator has finished.

Real: Prefect server + work pool + process worker, Label Studio, git, `dvc add`. Fake: the ML stages
(tests.helpers.fake_stages), as in test_gate_served.py: the dispatch is under test, not the stages."""

from __future__ import annotations

import json
import os
import subprocess
import urllib.request

import pytest

from tests.helpers.served import RORME, free_port, serve, state, wait

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _flow_run(api: str, run_id: str) -> dict:
    with urllib.request.urlopen(f"{api}/flow_runs/{run_id}", timeout=5) as r:
        return json.loads(r.read())


def test_a_worker_runs_a_round_from_the_work_pool_and_is_free_while_annotators_work(served_project, tmp_path):
    root, env, procs = served_project
    port = free_port()
    api = f"http://127.0.0.1:{port}/api"
    # serve's own watcher is slowed down, so the resume below can only come from the worker's watcher
    serve(root, env, port, procs, tmp_path / "serve.log", poll_s=3600)
    wlog = tmp_path / "worker.log"
    procs.append(subprocess.Popen([*RORME, "worker", "--root", str(root), "--api", api, "--poll", "1"], cwd=tmp_path,
                                  env=env, stdout=open(wlog, "w"), stderr=subprocess.STDOUT, start_new_session=True))
    wait(lambda: "started" in wlog.read_text().lower(), 180, "the worker to start", wlog)

    out = subprocess.run([*RORME, "round", "--root", str(root), "--on", "worker", "--annotators", "human",
                          "--no-push"], cwd=root, env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and "to a `rorem worker`" in out.stdout, out.stdout + out.stderr
    st = wait(lambda: state(root).get("status") == "waiting" and state(root), 240, "the gate to suspend", wlog)
    run_id = st["flow_run_id"]
    run = wait(lambda: (r := _flow_run(api, run_id))["state"]["type"] == "PAUSED" and r, 120, "the suspension", wlog)
    assert run["work_pool_name"] == "rorem" and run["parameters"]["params"]["root"] == "."   # the worker's project

    from annotation.cli import load_config
    from annotation.server import LabelStudioServer
    from annotation.simulated import simulate_round

    os.environ["ROREM_LABEL_STUDIO_TOKEN"] = env["ROREM_LABEL_STUDIO_TOKEN"]
    try:
        ls = LabelStudioServer(root=root, cfg=load_config(root))
        with ls.client() as c:
            simulate_round(c, ls.cfg, 1, root / "data/candidates/round-1/candidates.json",
                           root / "data/hidden/round-1/meta.json")
    finally:
        os.environ.pop("ROREM_LABEL_STUDIO_TOKEN")
    st = wait(lambda: state(root).get("status") == "completed" and state(root), 240,
              "the worker's watcher to resume the round and the worker to finish it", wlog)
    assert st["resumed_by"] == "watcher" and st["tag"] == "round-1"
    assert (root / "data/annotations/round-1.dvc").is_file()
    # the flow writes "completed" as its last step; Prefect records COMPLETED a moment after it returns
    wait(lambda: _flow_run(api, run_id)["state"]["type"] == "COMPLETED", 60, "Prefect to record COMPLETED", wlog)
    assert run_id in wlog.read_text()                     # the worker ran it (not `rorem serve`)
    assert run_id not in (tmp_path / "serve.log").read_text()


def test_worker_without_a_reachable_server_says_so_and_writes_nothing(tmp_path):
    root = tmp_path / "proj"
    root.mkdir()
    (root / "params.yaml").write_text("base: {seed: 0}\n")
    api = f"http://127.0.0.1:{free_port()}/api"
    r = subprocess.run([*RORME, "worker", "--root", str(root), "--api", api], capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 1 and f"no Prefect server answers at {api}" in r.stderr and "rorem serve" in r.stderr
    assert sorted(p.name for p in root.iterdir()) == ["params.yaml"]
