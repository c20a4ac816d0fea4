"""Remover training smoke tests: parameters change, a smaller last batch works, LoRA saves in the
diffusers format, and a SIGKILLed run resumes from its last checkpoint to the same weights."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from rorem_core.config import stage_config
from rorem_core.data.synthetic import SyntheticConfig, write_triplets
from rorem_core.models.loading import load_unet
from rorem_core.training.sft import train_remover

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def small_set(tmp_path_factory):
    root = tmp_path_factory.mktemp("small")
    write_triplets(root / "train", SyntheticConfig(), "smoke", 20, 0.5)
    return root / "train" / "meta.json"


def _cfg(tmp_path, **kw):
    base = {"cache_dir": str(tmp_path / "cache"), "work_dir": str(tmp_path / "work"), "wandb_mode": "disabled",
            "device": "cpu"}
    train = {"steps": 3, "batch_size": 8, "lr": 1e-3, "lr_warmup_steps": 0, "lr_schedule": "constant",
             "checkpoint_every": 2, "log_every": 1, **kw}
    return stage_config("train_remover", {"base": base, "train_remover": train})


def test_full_finetune_changes_every_parameter_and_handles_last_batch(tiny_workspace, small_set, tmp_path):
    out = tmp_path / "out"
    # 20 samples with batch 8 -> batches of 8, 8, 4: the smaller last batch must work (RORem crashes)
    res = train_remover(_cfg(tmp_path), tiny_workspace.model_dir, [small_set], out)
    assert res.steps == 3 and len(res.losses) == 3
    before, after = load_unet(tiny_workspace.model_dir).state_dict(), load_unet(out).state_dict()
    unchanged = [k for k in before if torch.equal(before[k], after[k])]
    assert not unchanged, f"parameters did not change: {unchanged[:5]}"
    summary = json.loads((out / "train_summary.json").read_text())
    assert summary["steps"] == 3 and summary["resumed_from"] == 0


def test_lora_mode_trains_only_adapters_and_saves_diffusers_lora(tiny_workspace, small_set, tmp_path):
    from diffusers import StableDiffusionXLInpaintPipeline

    out = tmp_path / "lora_out"
    train_remover(_cfg(tmp_path, mode="lora", lora_rank=4, steps=2), tiny_workspace.model_dir, [small_set], out)
    assert (out / "lora" / "pytorch_lora_weights.safetensors").is_file()
    merged = load_unet(out)        # base UNet + adapter
    base = load_unet(tiny_workspace.model_dir)
    assert any("lora" in n for n, _ in merged.named_parameters())
    pipe = StableDiffusionXLInpaintPipeline.from_pretrained(str(tiny_workspace.model_dir))
    pipe.load_lora_weights(str(out / "lora"))          # diffusers accepts our LoRA file
    x = torch.randn(1, 9, 16, 16)
    hidden, added = torch.zeros(1, 77, 64), {"text_embeds": torch.zeros(1, 32), "time_ids": torch.zeros(1, 6)}
    y0 = base(x, 500, encoder_hidden_states=hidden, added_cond_kwargs=added).sample
    y1 = merged(x, 500, encoder_hidden_states=hidden, added_cond_kwargs=added).sample
    assert not torch.allclose(y0, y1), "the trained adapter has no effect"
    # generation with the LoRA remover and the LCM scheduler (4 steps), as for a distilled student
    from rorem_core.models.remover import Remover

    rm = Remover.load(out, cache_dir=str(tmp_path / "cache"), resolution=64)
    x, m = torch.rand(2, 3, 64, 64) * 2 - 1, torch.zeros(2, 1, 64, 64)
    m[..., 16:40, 16:40] = 1
    y = rm.remove(x, m, [3, 4], steps=4, scheduler="lcm")
    assert y.shape == (2, 3, 64, 64) and torch.isfinite(y).all()


def _write_params(tmp_path, steps):
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["base"].update(cache_dir=str(tmp_path / "cache"), work_dir=str(tmp_path / "work"),
                          wandb_mode="disabled", device="cpu")
    params["train_remover"].update(steps=steps, batch_size=8, checkpoint_every=4, log_every=1,
                                   lr_warmup_steps=2, checkpoints_keep=2)
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(params))
    return path


def _stage_cmd(params, model_dir, train, out):
    return [sys.executable, "-m", "rorem_core.stages.train_remover", "--params", str(params),
            "--init", str(model_dir), "--train", str(train), "--out", str(out)]


def test_sigkill_then_resume_matches_an_uninterrupted_run(tiny_workspace, small_set, tmp_path):
    steps = 16
    ref_dir, kill_dir = tmp_path / "ref", tmp_path / "killed"
    for d in (ref_dir, kill_dir):
        d.mkdir()
    env = {**os.environ, "OMP_NUM_THREADS": "1"}   # identical float order in both runs
    subprocess.run(_stage_cmd(_write_params(ref_dir, steps), tiny_workspace.model_dir, small_set, ref_dir / "out"),
                   check=True, env=env, capture_output=True)

    params = _write_params(kill_dir, steps)
    proc = subprocess.Popen(_stage_cmd(params, tiny_workspace.model_dir, small_set, kill_dir / "out"), env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while not list((kill_dir / "work").glob("*/*/checkpoints/checkpoint-*")):
        assert proc.poll() is None, "training finished before a checkpoint was seen; raise steps"
        assert time.time() < deadline
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (kill_dir / "out").exists(), "a killed run must not leave a finished-looking output"

    subprocess.run(_stage_cmd(params, tiny_workspace.model_dir, small_set, kill_dir / "out"), check=True, env=env,
                   capture_output=True)
    summary = json.loads((kill_dir / "out" / "train_summary.json").read_text())
    assert summary["resumed_from"] > 0 and summary["resumed_from"] % 4 == 0
    a, b = load_unet(ref_dir / "out").state_dict(), load_unet(kill_dir / "out").state_dict()
    worst = max((a[k] - b[k]).abs().max().item() for k in a)
    assert worst < 1e-6, f"resumed weights differ from the uninterrupted run by {worst}"
    ref_losses = json.loads((ref_dir / "out" / "train_summary.json").read_text())["losses"]
    assert [s for s, _ in summary["losses"]] == [s for s, _ in ref_losses]
    assert [v for _, v in summary["losses"]] == pytest.approx([v for _, v in ref_losses], abs=1e-6)


def test_training_refuses_a_bad_dataset_listing_every_problem_first(tiny_workspace, tmp_path):
    from rorem_core.data.validate import DatasetInvalid

    bad = tmp_path / "bad"
    write_triplets(bad, SyntheticConfig(), "bad", 4, 0.0)
    meta = json.loads((bad / "meta.json").read_text())
    meta[0]["GT"] = "../outside.png"
    (bad / meta[1]["mask"]).write_bytes(b"")
    (bad / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(DatasetInvalid) as e:
        train_remover(_cfg(tmp_path), tiny_workspace.model_dir, [bad / "meta.json"], tmp_path / "never")
    msg = str(e.value)
    assert "escapes" in msg and meta[1]["mask"] in msg          # both problems in one error
    assert not (tmp_path / "never").exists() and not (tmp_path / "work").exists()


def test_grad_accumulation_and_offline_wandb_tracking(tiny_workspace, small_set, tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    base = {"cache_dir": str(tmp_path / "cache"), "work_dir": str(tmp_path / "work"), "wandb_mode": "offline",
            "device": "cpu"}
    cfg = stage_config("train_remover", {"base": base, "train_remover": {
        "steps": 2, "batch_size": 4, "grad_accum": 2, "lr_warmup_steps": 0, "log_every": 1}})
    res = train_remover(cfg, tiny_workspace.model_dir, [small_set], tmp_path / "out", wandb_group="round-1")
    assert res.steps == 2 and [s for s, _ in res.losses] == [1, 2]
    runs = list((tmp_path / "work").rglob("offline-run-*"))
    assert runs, "no offline wandb run was written"


def test_log_windows_average_the_steps_since_the_previous_logging_step():
    from rorem_core.training.trainer import log_windows, mean_dicts

    history = [{"step": i, "loss": float(i), "acc": i / 10} for i in range(1, 8)]
    assert log_windows(history, 3) == [(3, 2.0), (6, 5.0), (7, 7.0)]
    assert log_windows(history[4:], 3) == [(6, 5.5), (7, 7.0)]      # a history that starts at step 5
    assert mean_dicts(history[-2:]) == pytest.approx({"loss": 6.5, "acc": 0.65}) and mean_dicts([]) == {}
