"""Data-parallel training (issue 17): a training stage under 2 processes (torchrun, gloo, one torch thread
each) with per-process batch B equals the same stage under 1 process with batch B and grad_accum 2 (the
same global batch: the same samples and, per global micro-batch, the same noise): the same loss curve
and the same weights, within float tolerance (the gradients are averaged by DDP's all-reduce instead of
accumulated: the order of the float additions differs)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from tests.helpers.served import free_port

RES = 32
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "WANDB_MODE": "disabled"}
TOL = 1e-5     # float tolerance of the weights and losses (fp32, all-reduce vs accumulation)


@pytest.fixture(scope="module")
def pairs_data(tmp_path_factory) -> Path:
    from rorem_core.data.formats import Pair, read_triplets, write_entries
    from rorem_core.data.synthetic import SyntheticConfig, write_triplets

    root = tmp_path_factory.mktemp("ddp") / "set"
    write_triplets(root, SyntheticConfig(size=RES), "ddp", 16, 0.5)
    write_entries(root / "pairs.json", [Pair(source=t.source, mask=t.mask, preferred=t.GT, rejected=t.source)
                                        for t in read_triplets(root / "meta.json")])
    return root


def _cmd(tmp: Path, model: Path, data: Path, procs: int, grad_accum: int, steps: int = 4,
         checkpoint_every: int = 100) -> list[str]:
    base = {"cache_dir": str(tmp / "cache"), "work_dir": str(tmp / "work"), "wandb_mode": "disabled",
            "device": "cpu", "resolution": RES, "seed": 0}
    dpo = {"steps": steps, "batch_size": 2, "grad_accum": grad_accum, "lr": 1e-3, "lr_schedule": "constant",
           "lr_warmup_steps": 0, "log_every": 1, "checkpoint_every": checkpoint_every, "lora_rank": 4,
           "val_fraction": 0.25, "val_draws": 1}
    tmp.mkdir(parents=True, exist_ok=True)
    (tmp / "params.yaml").write_text(yaml.safe_dump({"base": base, "train_dpo": dpo}))
    launcher = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(procs), "--master_addr",
                "127.0.0.1", "--master_port", str(free_port())] if procs > 1 else [sys.executable]
    return [*launcher, "-m", "rorem_core.stages.train_dpo", "--params", str(tmp / "params.yaml"), "--init",
            str(model), "--pairs", str(data / "pairs.json"), "--out", str(tmp / "out"), "--metrics",
            str(tmp / "metrics.json")]


def _train(tmp: Path, model: Path, data: Path, procs: int, grad_accum: int) -> dict:
    """The stage's train_summary.json; asserts the stage saw ``procs`` processes."""
    r = subprocess.run(_cmd(tmp, model, data, procs, grad_accum), env=ENV, capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-4000:]
    assert f"x accum {grad_accum} x {procs} processes = 4 per step" in r.stdout + r.stderr, r.stdout[-2000:]
    return json.loads((tmp / "out" / "train_summary.json").read_text())


def _weights(out: Path) -> dict[str, torch.Tensor]:
    return {f"{p.relative_to(out)}:{k}": v for p in sorted(out.rglob("*.safetensors")) for k, v in load_file(p).items()}


@pytest.mark.multiprocess
def test_two_processes_train_like_one_process_with_the_same_global_batch(random_tiny_model, pairs_data, tmp_path):
    model = random_tiny_model(RES)
    one = _train(tmp_path / "one", model, pairs_data, procs=1, grad_accum=2)
    two = _train(tmp_path / "two", model, pairs_data, procs=2, grad_accum=1)
    curve = lambda m: [loss for _, loss in m["losses"]]       # noqa: E731
    assert len(curve(one)) == 4
    assert curve(two) == pytest.approx(curve(one), abs=TOL)
    a, b = _weights(tmp_path / "one" / "out"), _weights(tmp_path / "two" / "out")
    assert a.keys() == b.keys() and a
    worst = max((a[k] - b[k]).abs().max().item() for k in a)
    assert worst < TOL, f"weights of 1 and 2 processes differ by {worst}"
    moved = max((a[k]).abs().max().item() for k in a if "lora_B" in k or "lora.up" in k)
    assert moved > 0, "the LoRA did not train: the comparison would prove nothing"


@pytest.mark.multiprocess
def test_a_two_process_run_killed_after_a_checkpoint_resumes_under_two_processes(random_tiny_model, pairs_data,
                                                                                    tmp_path):
    import signal
    import time

    model = random_tiny_model(RES)
    ref, killed = tmp_path / "ref", tmp_path / "killed"
    r = subprocess.run(_cmd(ref, model, pairs_data, 2, 1, steps=8, checkpoint_every=2), env=ENV, capture_output=True,
                       text=True, timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    proc = subprocess.Popen(_cmd(killed, model, pairs_data, 2, 1, steps=8, checkpoint_every=2), env=ENV,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 300
    while not list((killed / "work").glob("**/checkpoints/checkpoint-*/train_state.json")):
        assert proc.poll() is None, "the stage ended before its first checkpoint; raise steps"
        assert time.monotonic() < deadline, "no checkpoint within 300 s"
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)                  # the launcher and both of its processes
    proc.wait()
    assert not (killed / "out").exists()
    r = subprocess.run(_cmd(killed, model, pairs_data, 2, 1, steps=8, checkpoint_every=2), env=ENV,
                       capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    got = json.loads((killed / "out" / "train_summary.json").read_text())
    assert got["resumed_from"] >= 2 and got["resumed_from"] % 2 == 0
    want = json.loads((ref / "out" / "train_summary.json").read_text())
    assert [x for _, x in got["losses"]] == pytest.approx([x for _, x in want["losses"]], abs=1e-6)
    a, b = _weights(ref / "out"), _weights(killed / "out")
    assert a.keys() == b.keys() and max((a[k] - b[k]).abs().max().item() for k in a) < 1e-6
