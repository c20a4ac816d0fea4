"""Run a stage through the project's launcher (``python -m rorem_core.launch``) with ``launch.processes``
set in its params file: the entry point dvc.yaml uses, so the multi-process tests test that too."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import yaml

from tests.helpers.served import free_port

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "WANDB_MODE": "disabled"}


def launch_cmd(params: Path, module: str, args: list[str], processes: int) -> list[str]:
    """The command (launch settings written into ``params`` first: processes, a free rendezvous port)."""
    p = yaml.safe_load(Path(params).read_text()) or {}
    p["launch"] = {"processes": processes, "main_port": free_port()}
    Path(params).write_text(yaml.safe_dump(p))
    return [sys.executable, "-m", "rorem_core.launch", module, "--params", str(params), *args]


def run_or_explain_hang(cmd: list[str], env: dict, timeout: float) -> subprocess.CompletedProcess:
    """``subprocess.run(cmd, capture_output=True, text=True)``, whose timeout says where it hung: every process
    of the tree (launcher, torchrun, each worker: torchrun starts them in their own sessions, so only a walk
    of the tree finds them) gets SIGABRT, which PYTHONFAULTHANDLER turns into a traceback of every thread
    on stderr (a stuck collective shows as the line each process waits on), and the test fails with it."""
    proc = subprocess.Popen(cmd, env={**env, "PYTHONFAULTHANDLER": "1"}, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        tree = _tree(proc.pid)
        _signal(tree, signal.SIGABRT)
        try:
            out, err = proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:       # one that ignores SIGABRT still holds the pipes
            _signal(tree, signal.SIGKILL)
            out, err = proc.communicate()
        raise AssertionError(f"ran past {timeout:.0f} s, tracebacks of every process below: {cmd}\n"
                             f"{out[-2000:]}\n{err[-20000:]}") from None
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)


def _tree(pid: int) -> list[int]:
    import psutil

    try:
        return [pid, *(c.pid for c in psutil.Process(pid).children(recursive=True))]
    except psutil.NoSuchProcess:
        return [pid]


def _signal(pids: list[int], sig: int) -> None:
    for pid in pids:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass


def run_stage(params: Path, module: str, args: list[str], processes: int, timeout: int = 900) -> str:
    """Run it; returns stdout + stderr; fails the test with their tails when the stage fails."""
    r = run_or_explain_hang(launch_cmd(params, module, args, processes), ENV, timeout)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-4000:]
    return r.stdout + r.stderr
