"""Run a stage through the project's launcher (``python -m rorem_core.launch``) with ``launch.processes``
set in its params file: the entry point dvc.yaml uses, so the multi-process tests test that too."""

from __future__ import annotations

import os
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


def run_stage(params: Path, module: str, args: list[str], processes: int, timeout: int = 900) -> str:
    """Run it; returns stdout + stderr; fails the test with their tails when the stage fails."""
    r = subprocess.run(launch_cmd(params, module, args, processes), env=ENV, capture_output=True, text=True,
                       timeout=timeout)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-4000:]
    return r.stdout + r.stderr
