"""One whole round (`rorem round --annotators simulated`) of an SDXL preset in a scratch copy of this
project (git + DVC, simulated annotators through the real Label Studio), with wall time and peak RSS
per stage. Used by benchmarks/bench_sdxl_rehearsal.py (CPU, stand-in) and tests/gpu (real weights).

Per-stage figures: each stage is one `python -m rorem_core.stages.<name>` process under `dvc repro`; a
sampler thread reads the RSS of every such process every 0.5 s (psutil) and keeps the peak; the wall
time is the flow's per-stage `dvc repro` time (RoundSummary.stage_seconds), or, when the round fails,
the span the sampler saw the stage's process for.
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]
STAGE_CMD = re.compile(r"rorem_core\.stages\.(\w+)")


def scratch_project(root: Path, params: dict, links: dict[str, Path] | None = None) -> None:
    """Copy the project files, write ``params`` as params.yaml (own Label Studio port), symlink
    ``links`` (relative path in the project -> target), git + DVC init and commit. On an existing
    scratch project only the code is refreshed (DVC then re-runs just the stages whose code changed)."""
    fresh = not (root / ".git").is_dir()
    files = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=REPO,
                           capture_output=True, text=True, check=True).stdout.split()
    for rel in files:
        if not rel.startswith(("tests/", ".dvc/")) and (REPO / rel).is_file() and (fresh or rel != "params.yaml"):
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / rel, root / rel)
    if not fresh:
        subprocess.run(["git", "commit", "-qam", "code refreshed"], cwd=root, capture_output=True)
        return
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        params["annotation"] = {**(params.get("annotation") or {}), "port": s.getsockname()[1],
                                "project_prefix": "sdxl"}
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    for rel, target in (links or {}).items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).symlink_to(Path(target).resolve())
    dvc = str(Path(sys.executable).with_name("dvc"))
    for cmd in (["git", "init", "-q"], [dvc, "init", "-q"], ["git", "add", "-A"], ["git", "commit", "-qm", "p"]):
        subprocess.run(cmd, cwd=root, check=True, capture_output=True)


class RssSampler(threading.Thread):
    """Peak RSS (bytes) and first/last-seen time per stage process, keyed by stage name
    (``evaluate --section X`` -> X)."""

    def __init__(self, period: float = 0.5):
        super().__init__(daemon=True)
        self.period, self.peak, self.seen, self.stop = period, {}, {}, threading.Event()

    def run(self) -> None:
        import psutil

        me = psutil.Process()
        while not self.stop.is_set():
            for proc in me.children(recursive=True):
                try:
                    cmd = " ".join(proc.cmdline())
                    if not (m := STAGE_CMD.search(cmd)):
                        continue
                    sec = re.search(r"--section (\w+)", cmd)
                    name = sec.group(1) if sec else m.group(1)
                    self.peak[name] = max(self.peak.get(name, 0), proc.memory_info().rss)
                    now = time.perf_counter()
                    self.seen[name] = [self.seen.get(name, [now])[0], now]
                except psutil.Error:
                    continue
            time.sleep(self.period)


def measured_round(root: Path, base: Path) -> dict:
    """Run round 1 in ``root`` (``base`` holds Prefect's home and the DVC remote); per-stage figures.
    A failing round still returns the stages that ran, with the error."""
    # Label Studio's venv and template: the caller's when set (a git worktree shares its checkout's)
    os.environ.setdefault("ROREM_LABEL_STUDIO_VENV", str(REPO / ".venv-ls"))
    os.environ.setdefault("ROREM_LABEL_STUDIO_TEMPLATE", str(REPO / ".rorem/labelstudio-template"))
    os.environ.update({"PREFECT_HOME": str(base / "prefect"),
                       "ROREM_LABEL_STUDIO_TOKEN": "sdxl-" + secrets.token_hex(8), "WANDB_MODE": "disabled",
                       "GIT_AUTHOR_NAME": "b", "GIT_AUTHOR_EMAIL": "b@b", "GIT_COMMITTER_NAME": "b",
                       "GIT_COMMITTER_EMAIL": "b@b"})
    from flows.settings import prefect_env

    prefect_env(root)
    from flows.round import RoundParams, rorem_round

    sampler = RssSampler()
    sampler.start()
    t, s, error = time.perf_counter(), None, None
    try:
        s = rorem_round(RoundParams(root=str(root), round=1, dvc_remote=str(base / "remote")))
    except Exception as e:  # noqa: BLE001  (reported with what ran before it)
        error = e
    wall = time.perf_counter() - t
    sampler.stop.set()
    sampler.join()
    subprocess.run([sys.executable, "-m", "flows.cli", "labelstudio", "--root", str(root), "down"], cwd=root,
                   capture_output=True)
    rows = {}
    for k in (s.stages if s else sampler.peak):
        name, seen = k.split("@")[0], sampler.seen.get(k.split("@")[0])
        wall_k = s.stage_seconds.get(k) if s else None
        rows[k] = {"wall_s": round(wall_k if wall_k is not None else seen[1] - seen[0], 1) if (wall_k or seen) else None,
                   "peak_rss_gib": round(sampler.peak[name] / 2**30, 2) if name in sampler.peak else None,
                   "status": s.stages[k] if s else "ran"}
    return {"round_wall_s": round(wall, 1), "stages": rows, "gate_s": s.gate_seconds if s else None,
            "versioning_s": s.versioning_seconds if s else None, "report": s.report if s else None,
            "disk_gb": round_disk(root, base / "remote"), "error": repr(error) if error else None}


def dir_bytes(path: Path, skip: tuple[str, ...] = ()) -> int:
    """Bytes of the files under ``path`` (symlinks not followed, each inode once, top-level ``skip`` names left out)."""
    seen, total = set(), 0
    for dirpath, dirs, files in os.walk(path):
        if Path(dirpath) == path:
            dirs[:] = [d for d in dirs if d not in skip]
        for f in files:
            st = os.lstat(os.path.join(dirpath, f))
            if not os.path.islink(os.path.join(dirpath, f)) and (st.st_dev, st.st_ino) not in seen:
                seen.add((st.st_dev, st.st_ino))
                total += st.st_size
    return total


def round_disk(root: Path, remote: Path) -> dict[str, float]:
    """GB (1e9 bytes) the round takes: the workspace (outputs, work dirs, caches; the stand-in is a
    symlink, not counted), DVC's cache and the DVC remote."""
    gb = 1e9
    return {"workspace": round(dir_bytes(root, skip=(".dvc", ".git")) / gb, 3),
            "workspace_rorem": round(dir_bytes(root / ".rorem") / gb, 3),   # of which latent caches + work dirs
            "dvc_cache": round(dir_bytes(root / ".dvc" / "cache") / gb, 3) if (root / ".dvc" / "cache").is_dir() else 0.0,
            "dvc_remote": round(dir_bytes(remote) / gb, 3) if remote.is_dir() else 0.0}


def format_rows(result: dict) -> str:
    lines = [f"{'stage':<26}{'wall s':>9}{'peak RSS GiB':>14}  status"]
    for k, r in result["stages"].items():
        w = f"{r['wall_s']:.1f}" if r["wall_s"] is not None else "-"
        m = f"{r['peak_rss_gib']:.2f}" if r["peak_rss_gib"] is not None else "-"
        lines.append(f"{k:<26}{w:>9}{m:>14}  {r['status']}")
    return "\n".join(lines)
