"""Three rounds as a user runs them, and whether they learn as a person judges (issue 13, acceptance):

  PYTHONPATH=. python benchmarks/bench_rounds.py [--rounds 3] [--workdir DIR] [--set KEY=VALUE ...] [--tiny]
  PYTHONPATH=. python benchmarks/bench_rounds.py --workdir DIR --table-only      # the table of a finished (or partial) run

In a scratch copy of this project (its tracked files, its own git + DVC repo, params.yaml with the
``--set`` overrides, e.g. ``--set bootstrap.synthetic.texture_scale=5 --set evaluate.judge=judge
--set annotation.simulated.judge=judge``), runs ``rorem round --annotators simulated`` N times (the real
flow: Prefect, DVC, a managed Label Studio, simulated annotators), evaluates the base remover on the
same test split and seeds (``results/evaluate/round-0``, so every round's change is paired per test
image), rebuilds the report, and prints the table of rorem_core/evaluation/rounds_table.py: Table-1
rows per round, judged success per band with intervals, paired changes vs the base and the previous
round, the discriminator's held-out ROC-AUC with its DeLong interval, auto-acceptance precision next
to the human acceptance rate, and the bars of issue 13 parts 2-4.

Exit 0 when every bar is met, 1 when one misses (each is named), 2 when a round fails. A killed run
resumes: finished rounds (tagged round-N in the scratch repo) are not run again.
Each round of the default preset takes about 15 CPU-minutes on 2 cores.
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


# --tiny: a wiring check in minutes (the sizes of bench_orchestration.py), not a measurement
TINY = {"bootstrap.synthetic.n_seed": 48, "bootstrap.synthetic.n_test": 16, "bootstrap.synthetic.pool_size": 6,
        "train_remover.steps": 4, "train_remover.batch_size": 8, "train_remover.lr_warmup_steps": 1,
        "train_remover.checkpoint_every": 2, "generate.steps": 2, "evaluate.steps": 2, "evaluate.batch_size": 8,
        **{f"{s}.{k}": v for s in ("evaluate_dpo", "evaluate_lcm") for k, v in (("steps", 2), ("batch_size", 8))},
        **{f"{s}.{k}": v for s in ("train_discriminator", "train_dpo", "distill")
           for k, v in (("steps", 3), ("batch_size", 4), ("lr_warmup_steps", 1), ("checkpoint_every", 2),
                        ("log_every", 1))},
        "train_rl.enabled": False}


def parse_sets(pairs: list[str]) -> dict[str, object]:
    """["a.b=1", "c=judge"] -> {"a.b": 1, "c": "judge"} (values parsed as YAML)."""
    out = {}
    for p in pairs:
        key, sep, value = p.partition("=")
        if not sep or not key:
            raise SystemExit(f"error: --set {p!r}: expected KEY=VALUE, e.g. evaluate.judge=judge")
        out[key.strip()] = yaml.safe_load(value)
    return out


def apply_sets(params: dict, sets: dict[str, object]) -> dict:
    """Set each dotted key of ``sets`` in ``params`` (sections created when missing)."""
    for key, value in sets.items():
        *path, last = key.split(".")
        d = params
        for k in path:
            if not isinstance(d.setdefault(k, {}), dict):
                raise SystemExit(f"error: --set {key}: {k!r} is not a section in params.yaml")
            d = d[k]
        d[last] = value
    return params


def scratch_copy(root: Path, sets: dict[str, object]) -> None:
    """This project's tracked (and untracked, not ignored) files without tests, params.yaml with
    ``sets`` applied (CPU, wandb off, a free Label Studio port), then git init + dvc init + commit."""
    from benchmarks.common import copy_project_files

    copy_project_files(root)
    p = yaml.safe_load((root / "params.yaml").read_text())
    p["base"].update(wandb_mode="disabled", device="cpu")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        p["annotation"] = {**(p.get("annotation") or {}), "port": s.getsockname()[1], "project_prefix": "bench"}
    apply_sets(p, sets)
    (root / "params.yaml").write_text(yaml.safe_dump(p, sort_keys=False))
    dvc = str(Path(sys.executable).with_name("dvc"))
    for cmd in (["git", "init", "-q"], [dvc, "init", "-q"], ["git", "add", "-A"], ["git", "commit", "-qm", "scratch"]):
        subprocess.run(cmd, cwd=root, check=True, capture_output=True)


def env_for(base: Path, root: Path) -> dict[str, str]:
    """The environment of the scratch project's commands: its own code first, a private Prefect home."""
    return {**os.environ, "PYTHONPATH": str(root), "PREFECT_HOME": str(base / "prefect"),
            "ROREM_LABEL_STUDIO_VENV": os.environ.get("ROREM_LABEL_STUDIO_VENV", str(REPO / ".venv-ls")),
            "ROREM_LABEL_STUDIO_TEMPLATE": os.environ.get("ROREM_LABEL_STUDIO_TEMPLATE",
                                                          str(REPO / ".rorem/labelstudio-template")),
            "ROREM_LABEL_STUDIO_TOKEN": "bench-" + secrets.token_hex(8), "WANDB_MODE": "disabled",
            "GIT_AUTHOR_NAME": "bench", "GIT_AUTHOR_EMAIL": "bench@localhost", "GIT_COMMITTER_NAME": "bench",
            "GIT_COMMITTER_EMAIL": "bench@localhost"}


def finished(root: Path, n: int) -> bool:
    """Round n ran to the end: the flow tagged it (and its evaluation is there)."""
    tags = subprocess.run(["git", "tag", "--list", f"round-{n}"], cwd=root, capture_output=True, text=True).stdout
    return bool(tags.strip()) and (root / f"results/evaluate/round-{n}/metrics.json").is_file()


def evaluate_base(root: Path, env: dict[str, str]) -> None:
    """The base remover (models/base, the bootstrap's) on the test split with the evaluate section's
    sampler and seeds: round 0 of the table, the reference of every paired change."""
    out = root / "results/evaluate/round-0"
    if (out / "per_image.json").is_file() and (out / "metrics.json").is_file():
        return
    cmd = [sys.executable, "-m", "rorem_core.stages.evaluate", "--params", "params.yaml", "--remover", "models/base",
           "--test", str(yaml.safe_load((root / "params.yaml").read_text()).get("data", {}).get("test", "data/test")),
           "--out", str(out), "--metrics", str(out / "metrics.json")]
    subprocess.run(cmd, cwd=root, env=env, check=True)


def run_rounds(base: Path, root: Path, n_rounds: int) -> dict[int, float]:
    """`rorem round --annotators simulated` until round ``n_rounds`` is finished; seconds per round run."""
    env, seconds = env_for(base, root), {}
    for n in range(1, n_rounds + 1):
        if finished(root, n):
            print(f"round {n}: finished before, not run again", flush=True)
        else:
            t = time.perf_counter()
            rc = subprocess.run([sys.executable, "-m", "flows.cli", "round", str(n), "--annotators", "simulated",
                                 "--root", str(root), "--local"], cwd=root, env=env).returncode
            seconds[n] = time.perf_counter() - t
            if rc != 0:
                raise RuntimeError(f"round {n} failed (exit {rc}); see the output above; rerun with "
                                   f"--workdir {base} to resume")
            print(f"round {n}: {seconds[n] / 60:.1f} min", flush=True)
        if n == 1:
            evaluate_base(root, env)
    subprocess.run([sys.executable, "-m", "flows.cli", "report", "--root", str(root)], cwd=root, env=env,
                   capture_output=True)   # the report again, now with the base's evaluation
    subprocess.run([sys.executable, "-m", "flows.cli", "labelstudio", "--root", str(root), "down"], cwd=root, env=env,
                   capture_output=True)
    return seconds


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--workdir", type=Path, help="scratch folder (default: a new temporary one); reuse to resume")
    ap.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                    help="params.yaml override of the scratch copy, e.g. evaluate.judge=judge (repeatable)")
    ap.add_argument("--tiny", action="store_true", help="tiny sizes (a wiring check in minutes, not a measurement); "
                    "--set still applies on top")
    ap.add_argument("--table-only", action="store_true", help="print the table of --workdir's rounds, run nothing")
    a = ap.parse_args(argv)
    base = a.workdir or Path(tempfile.mkdtemp(prefix="bench-rounds-"))
    root = base / "proj"
    seconds: dict[int, float] = {}
    if not a.table_only:
        if not (root / ".git").is_dir():
            root.mkdir(parents=True, exist_ok=True)
            scratch_copy(root, {**(TINY if a.tiny else {}), **parse_sets(a.sets)})
        elif a.sets:
            print("note: --set ignored: the scratch copy exists (its params.yaml is what the rounds use)")
        try:
            seconds = run_rounds(base, root, a.rounds)
        except (RuntimeError, subprocess.CalledProcessError) as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
    from rorem_core.evaluation.rounds_table import load, render, rounds_table

    t = rounds_table(load(root, range(1, a.rounds + 1)))
    print(f"\n{a.rounds} rounds in {root} ({os.cpu_count()} CPU cores"
          + (", " + ", ".join(f"round {n} {s / 60:.1f} min" for n, s in seconds.items()) if seconds else "") + ")\n")
    print(render(t))
    (base / "bench_rounds.json").write_text(json.dumps({"seconds": seconds, **t}, indent=2))
    print(f"details: {base / 'bench_rounds.json'}; report: {root / 'reports/report.md'}")
    if t["missed"]:
        print(f"{len(t['missed'])} bar(s) missed:\n" + "\n".join(f"  {b['bar']}: {b['seen']}" for b in t["missed"]))
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
