"""Orchestration overhead of the round flow (tiny preset, CPU, SIMULATED annotators, real Label Studio,
real DVC in a scratch git repo copied from this project):

  * one round: the flow's wall time vs the sum of its stages' own command times (ratio), with the
    rest split into DVC (hashing, locking, one `dvc repro` per stage), the human gate (push, simulated
    labels, pull, dvc add), versioning (dvc push, git commit, tag) and Prefect + bookkeeping;
  * re-running the finished round: with the content-keyed task cache (everything cached) and
    without it (`--no-cache`: every stage goes to `dvc repro`, which finds nothing to do).

  python benchmarks/bench_orchestration.py [--workdir DIR] [--steps 6] [--pool 6]

Label Studio's venv and template are the project's (``.venv-ls``, ``.rorem/labelstudio-template``).
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:   # run as a script: the repo root for `benchmarks.common`
    sys.path.insert(0, str(REPO))


def scratch_project(root: Path, steps: int, pool: int) -> None:
    """Copy the tracked project files, shrink params, git init + dvc init + commit."""
    from benchmarks.common import copy_project_files

    copy_project_files(root)
    p = yaml.safe_load((root / "params.yaml").read_text())
    p["base"].update(wandb_mode="disabled", device="cpu")
    p["bootstrap"]["base_unet"] = os.environ.get("ROREM_TEST_BASE_UNET", "shipped")
    p["bootstrap"]["synthetic"].update(n_seed=48, n_test=16, pool_size=pool, n_pools=1)
    p["train_remover"].update(steps=steps, batch_size=8, lr_warmup_steps=1, checkpoint_every=max(1, steps // 2))
    p["generate"].update(steps=2, num_seeds=2)
    for section in ("evaluate", "evaluate_dpo", "evaluate_lcm"):
        p[section].update(steps=2, batch_size=8)
    small = {"lr_warmup_steps": 1, "checkpoint_every": 2, "log_every": 1}
    p["train_discriminator"].update(steps=4, batch_size=8, **small)
    p["train_dpo"].update(steps=3, batch_size=4, **small)
    p["distill"].update(steps=3, batch_size=4, **small)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        p["annotation"] = {**(p.get("annotation") or {}), "port": s.getsockname()[1], "project_prefix": "bench"}
    p.setdefault("report", {"calibration_bins": 10})
    (root / "params.yaml").write_text(yaml.safe_dump(p, sort_keys=False))
    if not (root / "rorem_core/assets/tiny_base").exists():   # only usable with ROREM_TEST_BASE_UNET=random
        (root / "rorem_core/assets/tiny_base").mkdir(parents=True)
        (root / "rorem_core/assets/tiny_base/README").write_text("placeholder\n")
    dvc = str(Path(sys.executable).with_name("dvc"))
    for cmd in (["git", "init", "-q"], [dvc, "init", "-q"], ["git", "add", "-A"], ["git", "commit", "-qm", "p"]):
        subprocess.run(cmd, cwd=root, check=True, capture_output=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workdir", type=Path)
    ap.add_argument("--steps", type=int, default=6, help="train_remover steps")
    ap.add_argument("--pool", type=int, default=6, help="pool size (inputs sent through the round)")
    a = ap.parse_args()
    base = a.workdir or Path(tempfile.mkdtemp(prefix="bench-orch-"))
    root = base / "proj"
    root.mkdir(parents=True, exist_ok=True)
    scratch_project(root, a.steps, a.pool)
    os.environ.update({"ROREM_LABEL_STUDIO_VENV": str(REPO / ".venv-ls"), "PREFECT_HOME": str(base / "prefect"),
                       "ROREM_LABEL_STUDIO_TEMPLATE": str(REPO / ".rorem/labelstudio-template"),
                       "ROREM_LABEL_STUDIO_TOKEN": "bench-" + secrets.token_hex(8), "WANDB_MODE": "disabled",
                       "GIT_AUTHOR_NAME": "b", "GIT_AUTHOR_EMAIL": "b@b", "GIT_COMMITTER_NAME": "b",
                       "GIT_COMMITTER_EMAIL": "b@b"})
    from flows.settings import prefect_env

    prefect_env(root)
    from prefect import flow

    from flows.round import RoundParams, rorem_round

    t = time.perf_counter()
    flow(lambda: None, name="warm-up")()                  # Prefect's ephemeral server starts on the first call
    server_s = time.perf_counter() - t
    params = RoundParams(root=str(root), round=1, dvc_remote=str(base / "remote"))
    t = time.perf_counter()
    s = rorem_round(params)
    wall = time.perf_counter() - t
    own, dvc_wall = sum(s.command_seconds.values()), sum(s.stage_seconds.values())
    prefect_s = wall - dvc_wall - s.gate_seconds - s.versioning_seconds
    print(f"\none round (tiny, {a.steps} remover steps, pool {a.pool}, 2 seeds; {os.cpu_count()} CPU cores)")
    print(f"{'stage':<24}{'dvc repro s':>12}{'own s':>9}")
    for k in s.stages:
        if k in s.stage_seconds:
            print(f"{k:<24}{s.stage_seconds[k]:>12.1f}{s.command_seconds.get(k, 0):>9.1f}")
    print(f"flow wall time            {wall:7.1f} s  (+ {server_s:.1f} s Prefect ephemeral server start, once)")
    print(f"  stages' own commands    {own:7.1f} s")
    print(f"  DVC overhead            {dvc_wall - own:7.1f} s  ({len(s.stage_seconds)} `dvc repro` calls)")
    print(f"  human gate (simulated)  {s.gate_seconds:7.1f} s  (push, label, pull, dvc add)")
    print(f"  versioning              {s.versioning_seconds:7.1f} s  (dvc push, git commit, tag)")
    print(f"  Prefect + bookkeeping   {prefect_s:7.1f} s")
    print(f"ratio flow / stages' own  {wall / own:7.2f}   (without the gate: {(wall - s.gate_seconds) / own:.2f})")
    reruns = {}
    for label, use_cache in (("cached (task cache)", True), ("no task cache (DVC no-ops)", False)):
        t = time.perf_counter()
        r = rorem_round(params.model_copy(update={"use_cache": use_cache}))
        reruns[label] = time.perf_counter() - t
        print(f"re-run of the finished round, {label}: {reruns[label]:.1f} s; "
              f"stages {sorted(set(r.stages.values()))}")
    (base / "bench_orchestration.json").write_text(json.dumps({
        "wall_s": wall, "server_start_s": server_s, "own_s": own, "dvc_wall_s": dvc_wall, "gate_s": s.gate_seconds,
        "versioning_s": s.versioning_seconds, "stage_seconds": s.stage_seconds, "command_seconds": s.command_seconds,
        "reruns_s": reruns}, indent=2))
    subprocess.run([sys.executable, "-m", "flows.cli", "labelstudio", "--root", str(root), "down"], cwd=root)
    print(f"details: {base / 'bench_orchestration.json'}")


if __name__ == "__main__":
    main()
