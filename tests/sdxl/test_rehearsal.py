"""The SDXL preset at FULL SIZE on CPU (marker `sdxl_rehearsal`, also `slow`): the stand-in with the real
SDXL-inpainting architecture and random weights (built once, cached under .rorem/sdxl-standin), the
rehearsal preset (params.sdxl-rehearsal.yaml) with every count at 1: each training stage takes one step,
generation produces an image batch, the discriminator scores a batch, and the discriminator written in
RORem's layout (LoRA + 1280-channel cls_pred_branch.pt) loads back with the same scores.

Each stage runs as its own process, as `dvc repro` runs it (one full-size UNet in memory at a time,
~11 GiB peak). Measured cost on 2 CPU cores: docs/sdxl.md. The whole round: `make rehearsal`.
"""

from __future__ import annotations

import gc
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
STANDIN = REPO / ".rorem" / "sdxl-standin"
pytestmark = [pytest.mark.sdxl_rehearsal, pytest.mark.slow]


def stage(root: Path, name: str, *args: str) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "WANDB_MODE": "disabled"}
    r = subprocess.run([sys.executable, "-m", f"rorem_core.stages.{name}", "--params", "params.yaml", *args],
                       cwd=root, env=env, capture_output=True, text=True)
    assert r.returncode == 0, f"{name} failed:\n{r.stdout[-3000:]}\n{r.stderr[-5000:]}"


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    """Stand-in (cached), a project with the rehearsal preset at counts of 1, bootstrapped."""
    from rorem_core.models.sdxl_standin import build_standin

    build_standin(STANDIN)
    root = tmp_path_factory.mktemp("sdxl-rehearsal")
    p = yaml.safe_load((REPO / "params.sdxl-rehearsal.yaml").read_text())
    p["base"].update(cache_dir=str(root / ".rorem/cache"), work_dir=str(root / ".rorem/work"),
                     wandb_mode="disabled", device="cpu")
    p["bootstrap"].update(sdxl_pretrained=str(STANDIN), sdxl_unet=str(STANDIN / "unet"))
    p["bootstrap"]["synthetic"].update(n_seed=1, n_test=1, pool_size=1)
    for s in ("train_remover", "train_discriminator", "train_dpo", "distill"):
        p[s].update(steps=1)
    p["train_discriminator"]["heldout_fraction"] = 0.0      # one labelled input: keep it on the training side
    (root / "params.yaml").write_text(yaml.safe_dump(p, sort_keys=False))
    stage(root, "bootstrap", "--model-out", "models/base", "--data-root", "data", "--metrics", "results/bootstrap.json")
    yield root
    shutil.rmtree(root, ignore_errors=True)


def _summary(path: Path) -> dict:
    return json.loads(path.read_text())


def test_train_remover_takes_a_step_and_generate_makes_images(project):
    stage(project, "train_remover", "--round", "1", "--init", "models/base", "--train", "data/seed",
          "--out", "models/remover/round-1", "--metrics", "results/train_remover.json")
    s = _summary(project / "models/remover/round-1/train_summary.json")
    assert s["steps"] == 1 and np.isfinite(s["last_loss"])
    assert (project / "models/remover/round-1/lora/pytorch_lora_weights.safetensors").is_file()
    stage(project, "generate", "--round", "1", "--remover", "models/remover/round-1", "--pool", "data/pools/round-1",
          "--out", "data/candidates/round-1")
    from rorem_core.data.formats import read_candidates
    from rorem_core.data.images import load_rgb

    cands = read_candidates(project / "data/candidates/round-1/candidates.json")
    assert len(cands) == 2        # 1 input x 2 seeds, one UNet batch
    for c in cands:
        img = load_rgb(project / "data/candidates/round-1" / c.result)
        assert img.shape == (128, 128, 3) and np.isfinite(img).all()


def _labels(project: Path) -> Path:
    """The two candidates labelled good / bad, as the annotation pull writes them."""
    from rorem_core.data.formats import Triplet, read_candidates, write_entries

    cdir = project / "data/candidates/round-1"
    cands = read_candidates(cdir / "candidates.json")
    write_entries(cdir / "labels.json", [Triplet(source=c.source, mask=c.mask, GT=c.result, score=float(i == 0), id=c.id)
                                         for i, c in enumerate(cands)])
    return cdir / "labels.json"


def test_discriminator_step_scores_and_rorem_layout_round_trip(project, monkeypatch):
    """RORem's discriminator at full size: LoRA on the encoder + the 1280-wide head on the 16x16-pooled
    mid-block map; one step, a scoring batch (auto_score), then RORem's layout written and read back."""
    import torch
    from safetensors.torch import load_file

    from rorem_core.config import load_params, stage_config
    from rorem_core.data.latents import latent_cache
    from rorem_core.reward.discriminator import RORem_HEAD_FILE, load_discriminator, save_rorem_layout
    from rorem_core.reward.train import score_entries

    labels = _labels(project)
    stage(project, "train_discriminator", "--round", "1", "--init", "models/base", "--labels", str(labels),
          "--out", "models/discriminator/round-1", "--metrics", "results/train_discriminator.json")
    s = _summary(project / "models/discriminator/round-1/train_summary.json")
    assert s["metrics"]["steps"] == 1 and np.isfinite(s["metrics"]["last_loss"])
    stage(project, "auto_score", "--discriminator", "models/discriminator/round-1", "--candidates",
          "data/candidates/round-1", "--out", "data/auto/round-1", "--metrics", "results/auto_score.json")
    scored = json.loads((project / "data/auto/round-1/candidates.json").read_text())["candidates"]
    assert len(scored) == 2 and all(0 <= c["score"] <= 1 for c in scored)

    monkeypatch.chdir(project)   # relative paths of the params, as the stages see them
    params = load_params(project / "params.yaml")
    base = stage_config("train_discriminator", params).base
    from rorem_core.reward.train import read_labelled

    cache = latent_cache(project / "models/base", base)
    entries = cache.ensure([(x.source, x.mask, x.result) for x in read_labelled([labels])])
    del cache
    ours = load_discriminator(project / "models/discriminator/round-1", cache_dir=base.cache_dir)
    logits_ours = torch.logit(torch.tensor(score_entries(ours, entries, 2)).double())
    save_rorem_layout(ours, project / "rorem_disc")
    del ours
    gc.collect()
    head = torch.load(project / "rorem_disc" / RORem_HEAD_FILE, weights_only=True)
    assert head["cls_pred_branch.0.weight"].shape == (1280, 1280, 4, 4)
    assert any(".lora.down." in k for k in load_file(str(project / "rorem_disc/pytorch_lora_weights.safetensors")))
    rorem = load_discriminator(project / "rorem_disc", cache_dir=base.cache_dir, base=project / "models/base",
                               resolution=base.resolution)
    raw = torch.tensor(score_entries(rorem, entries, 2)).double()   # RORem's layout: softplus(logit)
    logits_rorem = torch.log(torch.expm1(raw))                      # inverse softplus
    # our bce discriminator scores sigmoid(logit + offset): compare the raw logits
    offset = json.loads((project / "models/discriminator/round-1/discriminator.json").read_text())["logit_offset"]
    torch.testing.assert_close(logits_rorem, logits_ours - offset, atol=1e-3, rtol=1e-3)


def test_dpo_and_distillation_take_a_step(project):
    from rorem_core.data.formats import Pair, read_candidates, write_entries

    cdir = project / "data/candidates/round-1"
    a, b = read_candidates(cdir / "candidates.json")
    write_entries(cdir / "pairs.json", [Pair(source=a.source, mask=a.mask, preferred=a.result, rejected=b.result)])
    stage(project, "train_dpo", "--round", "1", "--init", "models/remover/round-1", "--pairs", str(cdir / "pairs.json"),
          "--out", "models/dpo/round-1", "--metrics", "results/train_dpo.json")
    dpo = _summary(project / "results/train_dpo.json")
    assert dpo["steps"] == 1 and np.isfinite(dpo["last_loss"])
    # the round-1 remover is a LoRA: DPO trained on it fused, but stores only its own adapter and a
    # ref naming the remover's adapter under it (no 10.3 GB fused UNet per stage)
    _only_an_adapter(project / "models/dpo/round-1", ["../../remover/round-1/lora", "lora"])
    stage(project, "distill", "--round", "1", "--teacher", "models/dpo/round-1", "--train", "data/seed",
          "--candidates", "data/auto/round-1/candidates.json", "--out", "models/lcm/round-1",
          "--metrics", "results/distill.json")
    d = _summary(project / "results/distill.json")
    assert d["steps"] == 1 and np.isfinite(d["last_loss"])
    _only_an_adapter(project / "models/lcm/round-1",
                     ["../../remover/round-1/lora", "../../dpo/round-1/lora", "lora"])


def _only_an_adapter(model: Path, stack: list[str]) -> None:
    from safetensors import safe_open

    files = sorted(f.relative_to(model).as_posix() for f in model.rglob("*") if f.is_file())
    assert files == ["lora/pytorch_lora_weights.safetensors", "rorem_model.json", "train_summary.json"], files
    with safe_open(str(model / files[0]), framework="pt") as h:
        assert all(".lora_A." in k or ".lora_B." in k for k in h.keys())
    unet_fp32 = 2_567_478_084 * 4
    assert (model / files[0]).stat().st_size < unet_fp32 / 4
    assert _summary(model / "rorem_model.json")["loras"] == stack
