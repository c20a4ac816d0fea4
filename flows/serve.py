"""``rorem serve``: a local Prefect server (state in .rorem/prefect, survives restarts), the round and
bootstrap deployments (``flow.serve``: run in this process tree), the work pool ``rorem`` with the
round deployment for ``rorem worker`` machines (:mod:`flows.worker`), Label Studio, and the gate watcher.

The watcher polls the rounds that wait for annotators (``.rorem/rounds/round-N.json`` with status
"waiting" and the suspended run's id) and resumes a run with ``AnnotationDone(source="watcher")`` once
its Label Studio projects reach the target. ``rorem resume`` does the same by hand; so does the UI.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

from flows.settings import SERVER_FILE, prefect_env, prefect_home, served_url

log = logging.getLogger("rorem.serve")
DEPLOYMENT = "rorem-round/local"


def start_prefect_server(root: Path, port: int, timeout_s: float = 180.0) -> dict:
    """Start ``prefect server start`` on 127.0.0.1:port (or find ours running); returns
    {pid, url, started} (started: False when it was already running)."""
    root = Path(root).resolve()
    url = served_url(root)
    info_file = root / SERVER_FILE
    if url:
        return {**json.loads(info_file.read_text()), "started": False}
    url = f"http://127.0.0.1:{port}/api"
    exe = Path(sys.executable).with_name("prefect")
    logf = prefect_home(root) / "server.log"
    env = {**os.environ, "PREFECT_HOME": str(prefect_home(root)), "PREFECT_API_URL": url}
    with open(logf, "ab") as out:
        proc = subprocess.Popen([str(exe) if exe.exists() else "prefect", "server", "start", "--host", "127.0.0.1",
                                 "--port", str(port)], env=env, stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"prefect server exited with code {proc.returncode}; see {logf} "
                               f"(is port {port} taken? pick another with --port)")
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as r:
                if r.status == 200:
                    break
        except OSError:
            time.sleep(0.5)
    else:
        os.killpg(proc.pid, signal.SIGTERM)
        raise RuntimeError(f"prefect server did not answer {url}/health within {timeout_s:.0f} s; see {logf}")
    info = {"pid": proc.pid, "url": url}
    info_file.write_text(json.dumps(info))
    return {**info, "started": True}


def stop_prefect_server(root: Path) -> bool:
    """Stop the server ``rorem serve`` started (its DB stays: suspended rounds survive)."""
    f = Path(root).resolve() / SERVER_FILE
    try:
        pid = json.loads(f.read_text())["pid"]
        os.killpg(pid, signal.SIGTERM)
    except (OSError, ValueError, KeyError, ProcessLookupError):
        return False
    finally:
        f.unlink(missing_ok=True)
    return True


def waiting_rounds(root: Path) -> list[dict]:
    """State of every round that waits for annotators under a served (suspended) run."""
    out = []
    for f in sorted((Path(root) / ".rorem" / "rounds").glob("round-*.json")):
        st = json.loads(f.read_text())
        if st.get("status") == "waiting" and st.get("flow_run_id"):
            out.append(st)
    return out


class RunGone(RuntimeError):
    """The round's suspended run ended without a resume (crashed, cancelled): nothing is left to resume."""


def resume(flow_run_id: str, source: str, note: str = "") -> bool:
    """Resume a suspended round run with ``AnnotationDone``; False if it is not paused (any more)."""
    from uuid import UUID

    from prefect.client.orchestration import get_client
    from prefect.flow_runs import resume_flow_run

    with get_client(sync_client=True) as c:
        run = c.read_flow_run(UUID(flow_run_id))
    if not run.state or not run.state.is_paused():
        if run.state and run.state.is_final():   # e.g. the server stopped before the suspension was stored
            raise RunGone(f"Prefect has the run {run.state.name}: it cannot be resumed; run the round again "
                          "(finished stages are skipped)")
        return False
    resume_flow_run(UUID(flow_run_id), run_input={"source": source, "note": note})
    return True


def check_and_resume(root: Path) -> list[int]:
    """One watcher pass: resume every waiting round whose projects reached its target; returns them."""
    from tasks.annotation import annotation_progress, target_reached
    from tasks.rounds import Layout, update_state

    resumed = []
    for st in waiting_rounds(root):
        n = int(st["round"])
        prog = annotation_progress.fn(str(root), n, st.get("label_studio_url"), st.get("min_labels"))
        if target_reached(prog, float(st.get("target_fraction", 1.0))):
            try:
                done = resume(st["flow_run_id"], "watcher", f"{prog['done']}/{prog['total']} tasks done")
            except RunGone as e:   # stop watching it; `rorem status` shows why
                log.warning("round %s: %s", n, e)
                update_state(Layout(root, n).state, status="failed", waiting_for=None, flow_run_id=None, error=str(e))
                continue
            if done:
                log.info("round %s: annotation target reached, resumed run %s", n, st["flow_run_id"])
                resumed.append(n)
    return resumed


def watch(root: Path, poll_s: float, stop: threading.Event) -> None:
    """The watcher loop (a daemon thread of ``rorem serve``); errors are logged, never fatal."""
    while not stop.wait(poll_s):
        try:
            check_and_resume(root)
        except Exception as e:  # a Label Studio or API hiccup must not stop the watcher
            log.warning("watcher pass failed (will retry in %.0f s): %s", poll_s, e)


def serve(root: Path, *, port: int = 4200, label_studio: bool = True, poll_s: float = 30.0, limit: int = 1) -> None:
    """Blocks: server + deployments + watcher until Ctrl-C (the server is stopped, its DB kept)."""
    root = Path(root).resolve()
    prefect_env(root, api_url=f"http://127.0.0.1:{port}/api")
    info = start_prefect_server(root, port)
    os.environ["PREFECT_API_URL"] = info["url"]
    ls_server = None
    if label_studio:
        from annotation.cli import load_config
        from annotation.server import LabelStudioServer

        ls_server = LabelStudioServer(root=root, cfg=load_config(root))
        ls_started = not ls_server.status()["running"]
        print(f"Label Studio: {ls_server.start()['url']}")
    from prefect import serve as prefect_serve
    from prefect.deployments.runner import EntrypointType

    from flows.round import RoundParams, rorem_bootstrap, rorem_round

    # Ctrl-C takes Prefect's graceful SIGTERM path (asyncio's own SIGINT handling can hang the runner)
    signal.signal(signal.SIGINT, lambda *_: os.kill(os.getpid(), signal.SIGTERM))
    stop = threading.Event()
    threading.Thread(target=watch, args=(root, poll_s, stop), daemon=True, name="rorem-gate-watcher").start()
    print(f"Prefect UI: {info['url'].removesuffix('/api')}  (deployment {DEPLOYMENT}; watcher every {poll_s:g} s)")
    params = {"params": RoundParams(root=str(root), annotators="human").model_dump()}
    from flows.worker import POOL, WORKER_DEPLOYMENT, deploy_to_pool

    deploy_to_pool(POOL)      # for `rorem worker` on GPU machines (docs/scaling.md)
    print(f"work pool {POOL!r}: deployment {WORKER_DEPLOYMENT} runs rounds on `rorem worker` machines")
    try:
        prefect_serve(rorem_round.to_deployment("local", parameters=params, entrypoint_type=EntrypointType.MODULE_PATH),
                      rorem_bootstrap.to_deployment("local", parameters={"root": str(root)},
                                                    entrypoint_type=EntrypointType.MODULE_PATH),
                      limit=limit)
    finally:
        stop.set()
        if info["started"]:          # servers someone else started keep running
            stop_prefect_server(root)
        if ls_server is not None and ls_started:
            ls_server.stop()
