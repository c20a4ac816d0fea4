"""Each stage's run() on the tiny workspace writes its declared outputs (smoke: few steps)."""

import json

import numpy as np
import pytest
import torch

from rorem_core.data.formats import read_candidates
from rorem_core.data.images import load_mask, load_rgb
from rorem_core.data.validate import validate_dataset
from rorem_core.stages import evaluate, generate


def test_bootstrap_wrote_model_and_data(tiny_workspace):
    ws = tiny_workspace
    assert (ws.model_dir / "model_index.json").is_file()
    assert (ws.model_dir / "prompt_embeds.safetensors").is_file()
    for split in ("seed", "test", "pools/round-1", "hidden/round-1"):
        assert (ws.data / split / "meta.json").is_file(), split
    assert validate_dataset(ws.data / "seed").ok


def test_generate_writes_k_candidates_per_input_with_provenance(tiny_workspace, tmp_path):
    ws = tiny_workspace
    cfg = ws.config("generate", num_seeds=3, steps=3, batch_size=16)
    out = tmp_path / "cands"
    res = generate.run(cfg, ws.model_dir, ws.data / "pools" / "round-1", out, round_id=1)
    cands = read_candidates(out / "candidates.json")
    assert res.n_candidates == len(cands) == 3 * res.n_inputs
    by_input = {}
    for c in cands:
        by_input.setdefault(c.input_id, []).append(c)
        assert c.round == 1 and c.steps == 3 and c.model == str(ws.model_dir)
    assert all(len({c.seed for c in group}) == 3 for group in by_input.values())
    assert validate_dataset(out / "candidates.json").ok
    # composite: outside the mask the result is the source (8-bit rounding aside)
    c = cands[0]
    src, res_img, m = load_rgb(out / c.source), load_rgb(out / c.result), load_mask(out / c.mask)
    assert np.abs(src[~m] - res_img[~m]).max() <= 1 / 255 + 1e-6
    assert np.abs(src[m] - res_img[m]).mean() > 0.01


def test_candidate_is_reproducible_whatever_its_batch(tiny_workspace, tmp_path):
    """A candidate's noise comes from its own seed, so batch size does not change it."""
    ws = tiny_workspace
    a, b = tmp_path / "a", tmp_path / "b"
    generate.run(ws.config("generate", num_seeds=2, steps=2, batch_size=4), ws.model_dir,
                 ws.data / "pools" / "round-1", a)
    generate.run(ws.config("generate", num_seeds=2, steps=2, batch_size=64), ws.model_dir,
                 ws.data / "pools" / "round-1", b)
    ca, cb = read_candidates(a / "candidates.json"), read_candidates(b / "candidates.json")
    assert [c.seed for c in ca] == [c.seed for c in cb]
    diffs = [np.abs(load_rgb(a / x.result) - load_rgb(b / y.result)).max() for x, y in zip(ca[:6], cb[:6])]
    assert max(diffs) <= 2 / 255


def test_generate_refuses_a_pool_with_escaping_paths(tiny_workspace, tmp_path):
    pool = tmp_path / "pool"
    pool.mkdir()
    (pool / "meta.json").write_text(json.dumps([{"id": "x", "source": "../../etc/passwd", "mask": "m.png"}]))
    with pytest.raises(ValueError, match="escapes the dataset root"):
        generate.run(tiny_workspace.config("generate", steps=1), tiny_workspace.model_dir, pool, tmp_path / "o")
    assert not (tmp_path / "o").exists()


def test_evaluate_reports_remover_and_references_per_band(tiny_workspace, tmp_path):
    ws = tiny_workspace
    cfg = ws.config("evaluate", steps=2, max_images=24, batch_size=12, num_grid=4)
    res = evaluate.run(cfg, ws.model_dir, ws.data / "test", tmp_path / "eval")
    for method in ("remover", "leave_object", "ring_mean", "telea", "harmonic", "ae_ceiling"):
        assert res.metrics[method]["all"]["n"] == 24
    m = res.metrics
    assert m["telea"]["all"]["masked_psnr"] > m["leave_object"]["all"]["masked_psnr"] + 5
    assert m["ae_ceiling"]["all"]["masked_psnr"] > 30          # the autoencoder is not the bottleneck
    assert {"band_easy", "band_hard"} <= set(m["remover"])
    assert (tmp_path / "eval" / "samples.png").is_file()
    assert len(json.loads((tmp_path / "eval" / "per_image.json").read_text())) == 24
    assert "telea" in res.table


def test_strength_below_one_starts_from_the_noised_source(tiny_workspace):
    from rorem_core.models.remover import Remover

    rm = Remover.load(tiny_workspace.model_dir, cache_dir=tiny_workspace.params["base"]["cache_dir"], resolution=64)
    x = torch.rand(2, 3, 64, 64) * 2 - 1
    m = torch.zeros(2, 1, 64, 64)
    m[..., 16:32, 16:32] = 1
    full = rm.remove(x, m, [1, 2], steps=4, strength=1.0)
    weak = rm.remove(x, m, [1, 2], steps=4, strength=0.3)
    assert full.shape == weak.shape == (2, 3, 64, 64)
    assert not torch.allclose(full, weak)
    with pytest.raises(ValueError, match="no denoising step"):
        rm.remove(x, m, [1, 2], steps=2, strength=0.1)
