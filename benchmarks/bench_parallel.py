"""Data-parallel throughput (issue 17): generate and auto_score with 1 and 2 processes (torchrun, gloo,
one torch thread each) on the same pool, in one run, side by side, with the ratio; the outputs of 1 and
2 processes are compared byte for byte as well.

    OMP_NUM_THREADS=1 PYTHONPATH=. python benchmarks/bench_parallel.py [--inputs 32] [--steps 10]

A random tiny-preset remover (64 px) and a random discriminator: throughput does not depend on the
weights. On this 2-core machine the ideal ratio is 2x; other jobs on the machine lower it.
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:   # run as a script: the repo root for `rorem_core`
    sys.path.insert(0, str(REPO))
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "WANDB_MODE": "disabled",
       "PYTHONPATH": str(REPO)}


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(procs: int, module: str, args: list[str]) -> float:
    """Wall seconds of ``python -m module args`` under ``procs`` processes."""
    launcher = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(procs), "--master_addr",
                "127.0.0.1", "--master_port", str(_port())] if procs > 1 else [sys.executable]
    t = time.perf_counter()
    r = subprocess.run([*launcher, "-m", module, *args], env=ENV, capture_output=True, text=True)
    if r.returncode:
        raise SystemExit(f"{module} with {procs} process(es) failed:\n{r.stderr[-3000:]}")
    return time.perf_counter() - t


def setup(root: Path, n_inputs: int, steps: int) -> tuple[Path, Path]:
    """A random 64 px tiny remover, a pool of ``n_inputs``, params, and a random discriminator."""
    import torch

    from rorem_core.data.synthetic import SyntheticConfig, write_pool
    from rorem_core.models.conditioning import EMBED_FILE, encode_empty_prompt, save_prompt_embeds
    from rorem_core.models.tiny import TinyPresetConfig, build_tiny_model
    from rorem_core.reward.discriminator import DiscriminatorInfo, build_discriminator, make_trainable, save_discriminator

    model = root / "base"
    build_tiny_model(model, TinyPresetConfig(), 64)
    save_prompt_embeds(model / EMBED_FILE, encode_empty_prompt(str(model)))
    write_pool(root / "pool", root / "hidden", SyntheticConfig(size=64, pool_size=n_inputs), 1)
    params = {"base": {"cache_dir": str(root / "cache"), "work_dir": str(root / "work"), "wandb_mode": "disabled",
                       "device": "cpu", "resolution": 64, "seed": 0},
              "generate": {"num_seeds": 2, "batch_size": 8, "steps": steps},
              "auto_score": {"batch_size": 8, "threshold": 0.5}}
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    torch.manual_seed(0)
    disc = build_discriminator(model, cache_dir=root / "cache", info=DiscriminatorInfo(base=str(model), resolution=64,
                                                                                       lora_rank=2))
    make_trainable(disc)
    save_discriminator(disc, root / "disc", model)
    return model, root / "disc"


def files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--inputs", type=int, default=32)
    ap.add_argument("--steps", type=int, default=10)
    a = ap.parse_args()
    root = Path(tempfile.mkdtemp(prefix="bench-parallel-"))
    model, disc = setup(root, a.inputs, a.steps)
    p = ["--params", str(root / "params.yaml")]
    rows = []
    for procs in (1, 2):
        g = launch(procs, "rorem_core.stages.generate", [*p, "--remover", str(model), "--pool", str(root / "pool"),
                                                           "--out", str(root / f"gen-{procs}")])
        s = launch(procs, "rorem_core.stages.auto_score", [*p, "--discriminator", str(disc), "--candidates",
                                                            str(root / "gen-1"), "--out", str(root / f"auto-{procs}")])
        rows.append((procs, g, s))
    n = 2 * a.inputs
    print(f"\n== data-parallel throughput, {a.inputs} inputs x 2 seeds = {n} candidates, {a.steps} Euler steps, 64 px, "
          f"{os.cpu_count()} CPU cores, one torch thread per process (process start-up and model load included)")
    print(f"{'processes':>10} {'generate s':>11} {'cand/s':>8} {'auto_score s':>13} {'cand/s':>8}")
    for procs, g, s in rows:
        print(f"{procs:>10} {g:>11.1f} {n / g:>8.2f} {s:>13.1f} {n / s:>8.2f}")
    (_, g1, s1), (_, g2, s2) = rows
    print(f"ratio 2/1 processes: generate {g1 / g2:.2f}x, auto_score {s1 / s2:.2f}x")
    same = files(root / "gen-1") == files(root / "gen-2") and files(root / "auto-1") == files(root / "auto-2")
    print(f"outputs of 1 and 2 processes byte-identical: {same}")


if __name__ == "__main__":
    main()
