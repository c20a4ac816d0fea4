"""Data-parallel training (issue 17): a training stage under 2 processes (torchrun, gloo, one torch thread
each) with per-process batch B equals the same stage under 1 process with batch B and grad_accum 2 (the
same global batch: the same samples and, per global micro-batch, the same noise; train_rl: the same
rollouts, sampled data-parallel): the same loss and metric curves and the same weights, within float
tolerance (the gradients are averaged by DDP's all-reduce instead of accumulated: the order of the float
additions differs)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from tests.helpers.kill import kill_after_first_checkpoint, max_weight_diff, weights
from tests.helpers.launch import ENV, launch_cmd, run_or_explain_hang

RES = 32
TOL = 1e-5     # float tolerance of the weights and losses (fp32, all-reduce vs accumulation)


@pytest.fixture(scope="module")
def pairs_data(tmp_path_factory) -> Path:
    """16 triplets (meta.json), pairs.json (GT over the source), labels.json (GT good, source bad), and a
    pool of 8 inputs with its hidden GT (pool/, hidden/: train_rl's rollouts and oracle reward)."""
    from rorem_core.data.formats import Pair, read_triplets, write_entries
    from rorem_core.data.synthetic import SyntheticConfig, write_pool, write_triplets

    root = tmp_path_factory.mktemp("ddp") / "set"
    write_triplets(root, SyntheticConfig(size=RES), "ddp", 16, 0.5)
    write_pool(root / "pool", root / "hidden", SyntheticConfig(size=RES, pool_size=8), 1)
    ts = read_triplets(root / "meta.json")
    write_entries(root / "pairs.json", [Pair(source=t.source, mask=t.mask, preferred=t.GT, rejected=t.source)
                                        for t in ts])
    (root / "labels.json").write_text(json.dumps([{"source": t.source, "mask": t.mask, "GT": gt, "score": sc,
                                                   "id": f"{t.id}-{sc}"} for t in ts
                                                  for gt, sc in ((t.GT, 1.0), (t.source, 0.0))]))
    return root


COMMON = {"batch_size": 2, "lr": 1e-3, "lr_schedule": "constant", "lr_warmup_steps": 0, "log_every": 1}
# stage -> (its section beyond COMMON, its data arguments)
STAGES = {
    "train_dpo": ({"lora_rank": 4, "val_fraction": 0.25, "val_draws": 1},
                  lambda d, m: ["--init", str(m), "--pairs", str(d / "pairs.json")]),
    "train_remover": ({"mode": "lora", "lora_rank": 4}, lambda d, m: ["--init", str(m), "--train", str(d / "meta.json")]),
    "train_discriminator": ({"mode": "lora", "lora_rank": 4, "anchors": 0, "heldout_fraction": 0.25, "eval_batch_size": 8},
                            lambda d, m: ["--init", str(m), "--labels", str(d / "labels.json")]),
    "distill": ({"lora_rank": 4}, lambda d, m: ["--teacher", str(m), "--train", str(d / "meta.json")]),
    # 6 rollout inputs (2 held out); a rollout = 5 inputs x K 2 x 1 trained step = 10 transitions = 5 global
    # micro-batches, so the step of micro-batches 4 and 5 trains on rollouts 0 (process 0) and 1 (process 1),
    # and rollout 1 is sampled with weights the two runs reached apart; sampling blocks of 4 rows: both
    # processes sample (3 blocks); patience 1: the plateau check at step 5 (of 8) runs in the resume test
    "train_rl": ({"reward": "oracle", "lora_rank": 4, "inputs_per_epoch": 5, "num_samples": 2, "sampler_steps": 2,
                  "timestep_fraction": 0.5, "heldout_fraction": 0.25, "test_images": 4, "sample_batch_size": 4,
                  "patience": 1},
                 lambda d, m: ["--init", str(m), "--pool", str(d / "pool"), "--hidden", str(d / "hidden"),
                               "--test", str(d)]),
}


def _cmd(tmp: Path, model: Path, data: Path, procs: int, grad_accum: int, steps: int = 4,
         checkpoint_every: int = 100, stage: str = "train_dpo") -> list[str]:
    base = {"cache_dir": str(tmp / "cache"), "work_dir": str(tmp / "work"), "wandb_mode": "disabled",
            "device": "cpu", "resolution": RES, "seed": 0}
    section = {**COMMON, **STAGES[stage][0], "steps": steps, "grad_accum": grad_accum,
               "checkpoint_every": checkpoint_every}
    tmp.mkdir(parents=True, exist_ok=True)
    (tmp / "params.yaml").write_text(yaml.safe_dump({"base": base, stage: section}))
    return launch_cmd(tmp / "params.yaml", f"rorem_core.stages.{stage}", [*STAGES[stage][1](data, model), "--out",
                      str(tmp / "out"), "--metrics", str(tmp / "metrics.json")], procs)


def _train(tmp: Path, model: Path, data: Path, procs: int, grad_accum: int, stage: str = "train_dpo") -> dict:
    """The stage's train_summary.json; asserts the stage saw ``procs`` processes."""
    r = run_or_explain_hang(_cmd(tmp, model, data, procs, grad_accum, stage=stage), ENV, 900)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-4000:]
    assert f"x accum {grad_accum} x {procs} processes = 4 per step" in r.stdout + r.stderr, r.stdout[-2000:]
    return json.loads((tmp / "out" / "train_summary.json").read_text())


@pytest.mark.multiprocess
@pytest.mark.parametrize("stage", list(STAGES))
def test_two_processes_train_like_one_process_with_the_same_global_batch(random_tiny_model, pairs_data, tmp_path,
                                                                        stage):
    model = random_tiny_model(RES)
    one = _train(tmp_path / "one", model, pairs_data, procs=1, grad_accum=2, stage=stage)
    two = _train(tmp_path / "two", model, pairs_data, procs=2, grad_accum=1, stage=stage)
    curve = lambda m: [loss for _, loss in m["losses"]]       # noqa: E731
    assert len(curve(one)) == 4
    assert curve(two) == pytest.approx(curve(one), abs=TOL)
    if stage == "train_rl":           # its summary keeps every step's metric row (rewards, approx-KL, ...)
        assert [h.keys() for h in two["history"]] == [h.keys() for h in one["history"]]
        for h1, h2 in zip(one["history"], two["history"]):
            assert h2 == pytest.approx(h1, abs=TOL), h1["step"]
        assert one["rollouts"] == two["rollouts"] == 2
        assert one["history"][2]["rollout"] == 0.5      # the straddling step trained on both rollouts
    a = weights(tmp_path / "one" / "out")
    worst = max_weight_diff(tmp_path / "one" / "out", tmp_path / "two" / "out")
    assert worst < TOL, f"weights of 1 and 2 processes differ by {worst}"
    moved = max((a[k]).abs().max().item() for k in a if "lora_B" in k or "lora.up" in k)
    assert moved > 0, "the LoRA did not train: the comparison would prove nothing"


@pytest.mark.multiprocess
@pytest.mark.parametrize("stage", ["train_dpo", "train_rl"])
def test_a_two_process_run_killed_after_a_checkpoint_resumes_under_two_processes(random_tiny_model, pairs_data,
                                                                                    tmp_path, stage):
    """train_rl: killed after step 2 or later, in the middle of a rollout (5 global micro-batches, 2 per step)."""
    model = random_tiny_model(RES)
    ref, killed = tmp_path / "ref", tmp_path / "killed"
    cmd = lambda d: _cmd(d, model, pairs_data, 2, 1, steps=8, checkpoint_every=2, stage=stage)   # noqa: E731
    r = run_or_explain_hang(cmd(ref), ENV, 900)
    assert r.returncode == 0, r.stderr[-3000:]
    kill_after_first_checkpoint(cmd(killed), killed / "work", ENV)   # the launcher's tree: torchrun, both processes
    assert not (killed / "out").exists()
    r = run_or_explain_hang(cmd(killed), ENV, 900)
    assert r.returncode == 0, r.stderr[-3000:]
    got = json.loads((killed / "out" / "train_summary.json").read_text())
    assert got["resumed_from"] >= 2 and got["resumed_from"] % 2 == 0
    want = json.loads((ref / "out" / "train_summary.json").read_text())
    assert [x for _, x in got["losses"]] == pytest.approx([x for _, x in want["losses"]], abs=1e-6)
    assert max_weight_diff(ref / "out", killed / "out") < 1e-6
    for a, b in zip(got.get("history", []), want.get("history", [])):     # train_rl's metric rows
        assert a == pytest.approx(b, abs=1e-6), a["step"]
    assert (got["steps"], got.get("rollouts"), got.get("stopped_early")) == (want["steps"], want.get("rollouts"),
                                                                            want.get("stopped_early"))
