"""`rorem export`: a round's SFT / DPO / LCM / RL model as a self-contained diffusers folder that plain
`AutoPipelineForInpainting.from_pretrained(OUT)` loads offline (in a fresh process, from another
folder) and runs; LoRAs fused, the LCM scheduler set, a model card with metrics, counts, git, DVC.
The tiny preset's analytic autoencoder is our own class: diffusers imports no module a folder names,
so the plain script imports that one module first (an SDXL export has diffusers' AutoencoderKL)."""

import json
import os
import shutil
import subprocess
import sys

import pytest
import torch
import yaml

from flows.cli import main
from rorem_core.models.loading import load_unet, write_ref
from rorem_core.models.unet import add_lora, save_lora

PLAIN = """
import sys, numpy as np
from PIL import Image
from diffusers import AutoPipelineForInpainting
import rorem_core.models.analytic_ae  # the TINY preset's autoencoder is our class (an SDXL export needs nothing)
pipe = AutoPipelineForInpainting.from_pretrained(sys.argv[1])
img = Image.fromarray((np.random.default_rng(0).random((64, 64, 3)) * 255).astype(np.uint8))
mask = Image.fromarray(np.pad(np.full((20, 20), 255, np.uint8), 22))
out = pipe(prompt="", image=img, mask_image=mask, num_inference_steps=int(sys.argv[2]), strength=0.99,
           guidance_scale=1.0, height=64, width=64, output_type="np").images
print(type(pipe).__name__, type(pipe.scheduler).__name__, out.shape, bool(np.isfinite(out).all()))
"""


def _lora_model(base, out, targets, seed):
    unet = load_unet(base)
    add_lora(unet, 4, targets, seed=seed)
    with torch.no_grad():                       # a trained-looking LoRA: B != 0, so fusing changes weights
        for n, p in unet.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.05)
    save_lora(unet, out / "lora")
    write_ref(out, base, unet=None, lora="lora")


@pytest.fixture
def round_project(tmp_path, random_tiny_model):
    root = tmp_path / "proj"
    base = root / "models" / "base"
    shutil.copytree(random_tiny_model(64), base)
    sft = root / "models" / "remover" / "round-1"
    shutil.copytree(base / "unet", sft / "unet")
    write_ref(sft, base, unet="unet", lora=None)
    _lora_model(sft, root / "models" / "dpo" / "round-1", ["to_q", "to_k", "to_v", "to_out.0"], 1)
    _lora_model(sft, root / "models" / "lcm" / "round-1", ["to_q", "to_v", "conv1", "conv2"], 2)
    _lora_model(sft, root / "models" / "rl" / "round-1", ["to_q", "to_k", "to_v", "to_out.0"], 3)
    res = root / "results"
    (res / "evaluate" / "round-1").mkdir(parents=True)
    (res / "evaluate" / "round-1" / "metrics.json").write_text(json.dumps(
        {"remover": {"all": {"n": 400, "success_rate": 0.61, "masked_psnr_db": 23.5}}}))
    (res / "trainset").mkdir()
    (res / "trainset" / "round-1.json").write_text(json.dumps({"n_total": 430, "n_human": 20, "n_auto": 10}))
    (root / "dvc.lock").write_text(yaml.safe_dump({"schema": "2.0", "stages": {"train_remover@1": {
        "outs": [{"path": "models/remover/round-1", "md5": "abc123.dir"}]}}}))
    for cmd in (["init", "-q"], ["-c", "user.email=t@t", "-c", "user.name=t", "commit", "-q", "--allow-empty", "-m", "r1"],
                ["tag", "round-1"]):
        subprocess.run(["git", *cmd], cwd=root, check=True)
    return root


def _plain_load(out, steps, tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    r = subprocess.run([sys.executable, "-c", PLAIN, str(out), str(steps)], cwd=tmp_path, env=env,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    return r.stdout.strip().splitlines()[-1]


@pytest.mark.parametrize("kind,steps,scheduler", [("sft", 3, "EulerDiscreteScheduler"),
                                                  ("dpo", 3, "EulerDiscreteScheduler"),
                                                  ("lcm", 4, "LCMScheduler"),
                                                  ("rl", 3, "EulerDiscreteScheduler")])
def test_export_loads_with_plain_diffusers_offline(round_project, tmp_path, kind, steps, scheduler):
    out = tmp_path / f"export-{kind}"
    assert main(["export", str(out), "--round", "1", "--model", kind, "--root", str(round_project)]) == 0
    assert not (out / "rorem_model.json").exists() and (out / "unet" / "config.json").is_file()
    line = _plain_load(out, steps, tmp_path)
    assert line == f"StableDiffusionXLInpaintPipeline {scheduler} (1, 64, 64, 3) True"
    from diffusers import UNet2DConditionModel

    exported = UNet2DConditionModel.from_pretrained(str(out / "unet"))
    ours = load_unet(round_project / ("models/remover/round-1" if kind == "sft" else f"models/{kind}/round-1"))
    if kind != "sft":
        ours.fuse_lora()
        ours.unload_lora()
        changed = load_unet(round_project / "models/remover/round-1").state_dict()
        assert any(not torch.equal(changed[k], v) for k, v in exported.state_dict().items()), "LoRA not fused"
    mine = ours.state_dict()
    assert all(torch.allclose(v, mine[k], atol=1e-6) for k, v in exported.state_dict().items())


def test_model_card_has_metrics_counts_git_and_dvc(round_project, tmp_path, capsys):
    out = tmp_path / "card"
    assert main(["export", str(out), "--round", "1", "--model", "sft", "--root", str(round_project)]) == 0
    card = (out / "README.md").read_text()
    for needle in ("| remover |", "0.61", "trainset: n_total 430, n_human 20, n_auto 10", "round tag: `round-1`",
                   "DVC md5 of `models/remover/round-1`: `abc123.dir`", "AutoPipelineForInpainting",
                   "import rorem_core.models.analytic_ae"):
        assert needle in card, needle
    info = json.loads((out / "rorem_export.json").read_text())
    assert len(info["git_commit"]) == 40
    capsys.readouterr()
    assert main(["export", str(out), "--round", "1", "--model", "sft", "--root", str(round_project)]) == 1
    assert "exists and is not empty" in capsys.readouterr().err
    assert main(["export", str(tmp_path / "x"), "--round", "2", "--model", "dpo", "--root", str(round_project)]) == 1
    assert "round 2 has no dpo model" in capsys.readouterr().err


def test_a_harmonic_fill_export_keeps_its_fill_and_says_so(round_project, tmp_path):
    from rorem_core.models.loading import COND_FILE, masked_fill_of

    plain = tmp_path / "plain"
    assert main(["export", str(plain), "--round", "1", "--model", "sft", "--root", str(round_project)]) == 0
    assert not (plain / COND_FILE).exists() and "masked fill" not in (plain / "README.md").read_text()
    (round_project / "models/base" / COND_FILE).write_text(json.dumps({"masked_fill": "harmonic"}))
    out = tmp_path / "harmonic"
    assert main(["export", str(out), "--round", "1", "--model", "dpo", "--root", str(round_project)]) == 0
    assert masked_fill_of(out) == "harmonic"                     # rorem's loaders feed it what it was trained on
    assert "Trained with a harmonic masked fill" in (out / "README.md").read_text()
    assert json.loads((out / "rorem_export.json").read_text())["masked_fill"] == "harmonic"
