"""SDXL-scale checks (`gpu` marker): the same stages with the sdxl preset's params on real
SDXL-inpainting weights. Skipped without CUDA or without the weights available locally
(set ROREM_SDXL_DIR to a local diffusers dir of stable-diffusion-xl-1.0-inpainting-0.1)."""

import os
from pathlib import Path

import pytest
import torch
import yaml

REPO = Path(__file__).resolve().parents[2]
SDXL = os.environ.get("ROREM_SDXL_DIR")
pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA"),
    pytest.mark.skipif(not SDXL or not Path(SDXL, "model_index.json").is_file(),
                       reason="set ROREM_SDXL_DIR to a local SDXL-inpainting diffusers dir"),
]


@pytest.fixture(scope="module")
def sdxl_params(tmp_path_factory):
    root = tmp_path_factory.mktemp("sdxl")
    params = yaml.safe_load((REPO / "params.sdxl.yaml").read_text())
    params["base"].update(cache_dir=str(root / "cache"), work_dir=str(root / "work"), wandb_mode="disabled")
    params["bootstrap"].update(sdxl_pretrained=SDXL)
    params["bootstrap"]["synthetic"].update(n_seed=32, n_test=16, pool_size=8, n_pools=1)
    params["train_remover"].update(steps=4, batch_size=2, checkpoint_every=2)
    params["generate"].update(steps=20, batch_size=4)
    params["evaluate"].update(steps=20, batch_size=4)
    return root, params


def test_sdxl_bootstrap_train_generate_evaluate(sdxl_params):
    from rorem_core.config import stage_config
    from rorem_core.models.loading import load_vae, vae_scale_factor
    from rorem_core.stages import bootstrap, evaluate, generate, train_remover

    root, params = sdxl_params
    bootstrap.run(stage_config("bootstrap", params), root / "models/base", root / "data")
    assert vae_scale_factor(load_vae(root / "models/base")) == 8
    torch.cuda.reset_peak_memory_stats()
    tr = train_remover.run(stage_config("train_remover", params), root / "models/base", [root / "data/seed"],
                           root / "models/remover/round-1")
    print(f"train peak GPU memory {torch.cuda.max_memory_allocated() / 2**30:.1f} GiB, loss {tr.first_loss:.4f}"
          f" -> {tr.last_loss:.4f}")
    g = generate.run(stage_config("generate", params), root / "models/remover/round-1", root / "data/pools/round-1",
                     root / "data/candidates/round-1")
    assert g.n_candidates == 16
    ev = evaluate.run(stage_config("evaluate", params), root / "models/remover/round-1", root / "data/test",
                      root / "eval")
    print(ev.table)
    assert ev.metrics["remover"]["all"]["n"] == 16


def test_sdxl_whole_round_with_real_weights(tmp_path):
    """The round `make rehearsal` runs on the CPU stand-in, here on CUDA with the real weights and the
    SDXL preset's own sizes and precision (512 px, fp16, full fine-tune, LoRA r4 / r8 / r64); only
    the data and step counts are small. Prints wall time and peak host RSS per stage."""
    from tests.helpers.sdxl_round import format_rows, measured_round, scratch_project

    params = yaml.safe_load((REPO / "params.sdxl.yaml").read_text())
    params["base"]["wandb_mode"] = "disabled"
    params["bootstrap"].update(sdxl_pretrained=SDXL)
    params["bootstrap"]["synthetic"].update(n_seed=32, n_test=16, pool_size=8, n_pools=1)
    for s, steps in (("train_remover", 4), ("train_discriminator", 4), ("train_dpo", 4), ("distill", 4)):
        params[s].update(steps=steps)
    for s in ("generate", "evaluate", "evaluate_dpo"):
        params[s].update(steps=20)
    root = tmp_path / "proj"
    root.mkdir()
    scratch_project(root, params)
    res = measured_round(root, tmp_path)
    print(format_rows(res))
    assert res["error"] is None, res["error"]
    report = Path(res["report"]).read_text()
    assert "## Rounds" in report
