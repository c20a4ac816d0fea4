"""The masked-source fill (rorem_core/data/fill.py): the harmonic fill solves Laplace's equation (exact on
a plane, the neighbours' mean for one pixel), and whichever fill a base was pretrained with is what the
latent cache, the sampler and the RL inputs feed its UNet (read from the base's conditioning.json)."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from rorem_core.data.fill import harmonic_fill, masked_source
from rorem_core.data.images import load_rgb
from rorem_core.data.latents import LatentCache, encode_images, image_to_tensor, latent_cache, load_entry
from rorem_core.models.analytic_ae import AnalyticAutoencoder
from rorem_core.models.folders import ModelFolderError
from rorem_core.models.loading import COND_FILE, masked_fill_of
from tests.core.test_latents import _triple


def _plane(size: int = 16) -> torch.Tensor:
    """(1, 3, size, size) in [-1, 1]: two ramps and a constant, each harmonic."""
    r = torch.linspace(-0.6, 0.8, size)
    return torch.stack([r.expand(size, size), r[:, None].expand(size, size), torch.full((size, size), 0.2)])[None]


def test_harmonic_fill_refills_a_plane_exactly_and_keeps_the_outside():
    x, m = _plane(), torch.zeros(1, 1, 16, 16)
    m[..., 3:11, 5:14] = 1
    damaged = x * (1 - m) + m * 0.9                      # whatever is in the hole is ignored
    y = harmonic_fill(damaged, m)
    assert (y - x).abs().max() < 1e-5
    assert torch.equal(y * (1 - m), damaged * (1 - m))


def test_one_pixel_hole_gets_its_neighbours_mean_and_images_are_solved_independently():
    x = torch.zeros(2, 1, 3, 3)
    x[0, 0, 0, 1], x[0, 0, 2, 1], x[0, 0, 1, 0], x[0, 0, 1, 2] = 0.1, 0.2, 0.3, 0.6
    x[1] = _plane(3)[:, :1]
    m = torch.zeros(2, 1, 3, 3)
    m[0, 0, 1, 1] = 1                                     # image 1 has no hole
    y = harmonic_fill(x, m)
    assert y[0, 0, 1, 1].item() == pytest.approx(0.3)     # (0.1 + 0.2 + 0.3 + 0.6) / 4
    assert torch.equal(y[1], x[1])


def test_a_hole_without_boundary_is_grey_and_zero_fill_is_the_pipelines():
    x = torch.rand(1, 3, 8, 8) * 2 - 1
    assert torch.equal(harmonic_fill(x, torch.ones(1, 1, 8, 8)), torch.zeros_like(x))
    m = (torch.rand(1, 1, 8, 8) > 0.5).float()
    assert torch.equal(masked_source(x, m, "zero"), x * (1 - m))
    with pytest.raises(ValueError, match=r"masked fill 'blur' is not one of"):
        masked_source(x, m, "blur")


def _with_fill(model, tmp_path, fill):
    out = tmp_path / f"base_{fill}"
    shutil.copytree(model, out)
    (out / COND_FILE).write_text(json.dumps({"masked_fill": fill}))
    return out


def test_a_base_says_its_fill_and_a_bad_one_is_refused_naming_the_file(random_tiny_model, tmp_path):
    model = random_tiny_model(32)
    assert masked_fill_of(model) == "zero"                # no conditioning.json: SDXL / RORem's grey
    harm = _with_fill(model, tmp_path, "harmonic")
    assert masked_fill_of(harm) == "harmonic"
    child = tmp_path / "child"                            # a trained remover: a ref to its base
    child.mkdir()
    (child / "rorem_model.json").write_text(json.dumps({"base": str(harm), "unet": None, "loras": []}))
    assert masked_fill_of(child) == "harmonic"
    bad = _with_fill(model, tmp_path, "blur")
    with pytest.raises(ModelFolderError, match=rf"{COND_FILE}: masked_fill 'blur'.*bootstrap writes it"):
        masked_fill_of(bad)
    (bad / COND_FILE).write_text("masked_fill: harmonic")   # YAML, not JSON
    with pytest.raises(ModelFolderError, match=rf"{COND_FILE}: not a JSON object.*bootstrap writes it"):
        masked_fill_of(bad)


def test_the_latent_cache_holds_the_bases_fill_in_its_own_folder(random_tiny_model, tmp_path):
    from rorem_core.config.base import BaseConfig

    files = _triple(tmp_path, "x", 0)                     # 64 px: a random image, a 20 x 20 hole
    base = BaseConfig(resolution=64, cache_dir=str(tmp_path / "cache"), device="cpu")
    zero = latent_cache(random_tiny_model(64), base)
    harm = latent_cache(_with_fill(random_tiny_model(64), tmp_path, "harmonic"), base)
    assert (zero.fill, harm.fill) == ("zero", "harmonic") and zero.dir != harm.dir
    ez, eh = (load_entry(c.ensure([files])[0]) for c in (zero, harm))
    src = image_to_tensor(load_rgb(files[0]), 64)[None]
    m = (image_to_tensor(load_rgb(files[1]), 64)[None, :1] > 0).float()
    ae = AnalyticAutoencoder()
    assert torch.allclose(eh["masked"], encode_images(ae, harmonic_fill(src, m))[0], atol=1e-5)
    assert torch.allclose(ez["masked"], encode_images(ae, src * (1 - m))[0], atol=1e-5)
    assert torch.equal(ez["target"], eh["target"])
    with pytest.raises(ValueError, match="masked fill 'blur'"):
        LatentCache(tmp_path / "c", ae, 64, fill="blur")


def test_the_sampler_and_rl_inputs_feed_the_unet_the_bases_fill(random_tiny_model, tmp_path, monkeypatch):
    import rorem_core.models.remover as rem
    from rorem_core.rl.rollout import Inputs

    harm = _with_fill(random_tiny_model(32), tmp_path, "harmonic")
    seen = []
    real = rem.unet_forward
    monkeypatch.setattr(rem, "unet_forward",
                        lambda u, z, t, batch, *a: seen.append(batch["masked"]) or real(u, z, t, batch, *a))
    x, m = _plane(32) * 0.5, torch.zeros(1, 1, 32, 32)
    m[..., 8:24, 8:24] = 1
    model = rem.Remover.load(harm, cache_dir=str(tmp_path / "cache"), resolution=32)
    model.remove(x, m, [0], steps=1)
    want = encode_images(model.vae, harmonic_fill(x, m))
    assert model.masked_fill == "harmonic" and torch.allclose(seen[0].cpu(), want, atol=1e-6)
    assert torch.allclose(Inputs.encode(model.vae, ["a"], x, m, fill="harmonic").masked, want, atol=1e-6)
    assert not torch.allclose(Inputs.encode(model.vae, ["a"], x, m).masked, want, atol=1e-3)
