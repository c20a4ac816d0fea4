"""The kill-and-resume harness of the training-stage fault tests: start a stage, SIGKILL it as soon as
its first checkpoint exists, and compare the weights a rerun writes with an uninterrupted run's."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import torch
from safetensors.torch import load_file


def kill_after_first_checkpoint(cmd: list[str], work: Path, env: dict, timeout_s: float = 300) -> None:
    """Run ``cmd`` and SIGKILL it and every process under it (a launcher's workers: torchrun starts each
    in its own session, so a process-group kill would leave them running) once ``work`` holds a
    finished checkpoint (its train_state.json is written last): a machine that loses power."""
    import psutil

    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + timeout_s
    while not list(work.glob("**/checkpoints/checkpoint-*/train_state.json")):
        assert proc.poll() is None, "the stage ended before its first checkpoint; raise steps"
        assert time.monotonic() < deadline, f"no checkpoint within {timeout_s:.0f} s"
        time.sleep(0.02)
    tree = [proc.pid]
    try:
        tree += [c.pid for c in psutil.Process(proc.pid).children(recursive=True)]
    except psutil.NoSuchProcess:
        pass
    for pid in tree:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    proc.wait()
    psutil.wait_procs([p for p in map(_alive, tree[1:]) if p], timeout=30)


def _alive(pid: int):
    import psutil

    try:
        return psutil.Process(pid)
    except psutil.NoSuchProcess:
        return None


def weights(out: Path) -> dict[str, torch.Tensor]:
    """Every tensor of every safetensors file under ``out``, keyed 'file:tensor'."""
    return {f"{p.relative_to(out)}:{k}": v for p in sorted(out.rglob("*.safetensors")) for k, v in load_file(p).items()}


def max_weight_diff(a: Path, b: Path) -> float:
    """Largest absolute difference between the weights under two output folders (same files and keys)."""
    wa, wb = weights(a), weights(b)
    assert wa.keys() == wb.keys() and wa, f"different weight files or keys: {sorted(wa.keys() ^ wb.keys())[:4]}"
    return max((wa[k] - wb[k]).abs().max().item() for k in wa)
