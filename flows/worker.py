"""Rounds on GPU machines: a Prefect work pool and ``rorem worker``.

``rorem serve`` (on a laptop or a small always-on box) creates the process work pool ``rorem`` and
the deployment ``rorem-round/worker`` in it. ``rorem worker`` on a GPU machine, in its own checkout
of the project, polls that pool and runs each round run in a subprocess there (a Prefect process
worker). The deployment carries no code and no path: the flow run imports ``flows.round`` from the
worker's installed project and finds the project through ``ROREM_ROOT``, which ``rorem worker`` sets
to its ``--root``. So a round started from the Prefect UI or ``rorem round --on worker`` anywhere
runs on the GPU box, against that box's data, DVC cache and Label Studio (or ``--label-studio-url``).

The human gate still frees the machine: a served round suspends (its process exits); the worker's own
gate watcher (the same as ``rorem serve``'s, over the worker's ``.rorem/rounds``) resumes it once the
annotators are done, and Prefect hands the resumed run back to a worker of the pool.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
import urllib.request
from pathlib import Path

POOL = "rorem"
WORKER_DEPLOYMENT = "rorem-round/worker"
ROOT_ENV = "ROREM_ROOT"        # the worker's project root, read by the flow when its root is "."


class WorkerError(RuntimeError):
    """A worker or work-pool setup problem; the message says what was seen and the fix."""


def project_root(root: str) -> Path:
    """The round's project: ``root``, except that "." in a worker's flow run means the worker's
    project (``ROREM_ROOT``): a deployment cannot know where the GPU machine keeps its checkout."""
    if root in ("", ".") and os.environ.get(ROOT_ENV):
        return Path(os.environ[ROOT_ENV]).resolve()
    return Path(root).resolve()


def check_api(url: str, timeout_s: float = 5.0) -> None:
    """Raise WorkerError unless the Prefect API at ``url`` answers /health."""
    try:
        with urllib.request.urlopen(f"{url.rstrip('/')}/health", timeout=timeout_s) as r:
            if r.status == 200:
                return
            seen = f"HTTP {r.status}"
    except (OSError, ValueError) as e:
        seen = str(e)
    raise WorkerError(f"no Prefect server answers at {url} ({seen}); start `rorem serve` on the machine that "
                      "holds the server (or a team Prefect server) and pass its API URL: "
                      "`rorem worker --api http://HOST:4200/api`")


def ensure_pool(pool: str = POOL) -> bool:
    """Create the process work pool ``pool`` unless it exists; True when it was created."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.exceptions import ObjectAlreadyExists, ObjectNotFound

    with get_client(sync_client=True) as c:
        try:
            c.read_work_pool(pool)
            return False
        except ObjectNotFound:
            pass
        try:
            c.create_work_pool(WorkPoolCreate(name=pool, type="process"))
        except ObjectAlreadyExists:      # another `rorem serve` created it meanwhile
            return False
    return True


def deploy_to_pool(pool: str = POOL) -> None:
    """The round flow as ``rorem-round/worker`` in ``pool``: module entrypoint, no storage (the worker
    has the project installed), root "." (= the worker's ROREM_ROOT), human annotators by default."""
    from prefect import deploy
    from prefect.deployments.runner import EntrypointType

    from flows.round import RoundParams, rorem_round

    ensure_pool(pool)
    params = {"params": RoundParams(root=".", annotators="human").model_dump()}
    dep = rorem_round.to_deployment(WORKER_DEPLOYMENT.split("/")[1], parameters=params, work_pool_name=pool,
                                    entrypoint_type=EntrypointType.MODULE_PATH)
    deploy(dep, work_pool_name=pool, build=False, push=False, print_next_steps_message=False, ignore_warnings=True)


def worker_command(pool: str, limit: int) -> list[str]:
    exe = shutil.which("prefect", path=str(Path(sys.executable).parent)) or "prefect"
    return [exe, "worker", "start", "--pool", pool, "--type", "process", "--limit", str(limit)]


def run_worker(root: Path, api_url: str, *, pool: str = POOL, limit: int = 1, poll_s: float = 30.0) -> int:
    """Blocks: a Prefect process worker on ``pool`` for the project at ``root`` plus the gate watcher,
    until Ctrl-C. Checks the server first: nothing is written when it does not answer."""
    check_api(api_url)
    from flows.settings import prefect_env

    root = Path(root).resolve()
    prefect_env(root, api_url=api_url)     # the task cache and results live in the worker's project
    env = {**os.environ, ROOT_ENV: str(root), "PREFECT_API_URL": api_url}
    from flows.serve import watch

    stop = threading.Event()
    threading.Thread(target=watch, args=(root, poll_s, stop), daemon=True, name="rorem-gate-watcher").start()
    proc = subprocess.Popen(worker_command(pool, limit), cwd=root, env=env, start_new_session=True)
    print(f"worker for {root} on pool {pool!r} of {api_url} (pid {proc.pid}; gate watcher every {poll_s:g} s)",
          flush=True)
    signal.signal(signal.SIGTERM, lambda *_: proc.send_signal(signal.SIGTERM))
    try:
        return proc.wait()
    except KeyboardInterrupt:
        proc.send_signal(signal.SIGTERM)
        return proc.wait()
    finally:
        stop.set()
