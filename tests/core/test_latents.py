"""Latent cache: encoded once, keyed by content + VAE, corrupt entries refused with the file named."""

import numpy as np
import pytest
import torch

from rorem_core.data.images import save_png
from rorem_core.data.latents import CacheCorrupt, LatentCache, load_batch, load_entry
from rorem_core.models.analytic_ae import AnalyticAutoencoder


class CountingAE(AnalyticAutoencoder):
    calls = 0

    def encode(self, x, return_dict=True):
        CountingAE.calls += len(x)
        return super().encode(x, return_dict)


def _triple(root, name, seed):
    rng = np.random.default_rng(seed)
    mask = np.zeros((64, 64), bool)
    mask[20:40, 10:30] = True
    paths = [root / f"{name}_{k}.png" for k in ("s", "m", "t")]
    save_png(paths[0], rng.random((64, 64, 3)).astype(np.float32))
    save_png(paths[1], mask)
    save_png(paths[2], rng.random((64, 64, 3)).astype(np.float32))
    return tuple(paths)


def test_each_image_is_encoded_once_and_reused(tmp_path):
    CountingAE.calls = 0
    cache = LatentCache(tmp_path / "c", CountingAE(), 64, batch_size=4)
    items = [_triple(tmp_path, f"i{i}", i) for i in range(6)]
    first = cache.ensure(items)
    assert CountingAE.calls == 18                     # 6 triples x (target, masked, source)
    assert cache.ensure(items) == first and CountingAE.calls == 18
    batch = load_batch(first)
    assert batch["target"].shape == (6, 4, 16, 16) and batch["mask"].shape == (6, 1, 16, 16)
    assert set(batch["mask"].unique().tolist()) == {0.0, 1.0}


def test_key_changes_with_content_and_vae(tmp_path):
    a = _triple(tmp_path, "a", 0)
    c1 = LatentCache(tmp_path / "c", AnalyticAutoencoder(), 64)
    c2 = LatentCache(tmp_path / "c", AnalyticAutoencoder(scaling_factor=1.0), 64)
    assert c1.dir != c2.dir                            # another VAE never reuses entries
    k1 = c1.key(*a)
    save_png(a[2], np.zeros((64, 64, 3), np.float32))
    assert c1.key(*a) != k1


def test_masked_latent_hides_the_object(tmp_path):
    s, m, t = _triple(tmp_path, "x", 3)
    entry = load_entry(LatentCache(tmp_path / "c", AnalyticAutoencoder(), 64).ensure([(s, m, t)])[0])
    inside = entry["mask"][0] > 0.5
    fully_inside = torch.nn.functional.avg_pool2d(torch.ones(1, 1, 64, 64), 4)[0, 0] > 0  # all cells
    assert inside.any() and fully_inside.all()
    # cells entirely inside the pixel mask carry no source information
    assert torch.allclose(entry["masked"][:3, 6:9, 3:7], torch.zeros(3, 3, 4))
    assert not torch.allclose(entry["source"][:3, 6:9, 3:7], torch.zeros(3, 3, 4))


@pytest.mark.parametrize("damage", ["truncate", "flip_byte"])
def test_corrupt_entry_is_refused_naming_the_file(tmp_path, damage):
    path = LatentCache(tmp_path / "c", AnalyticAutoencoder(), 64).ensure([_triple(tmp_path, "y", 4)])[0]
    data = bytearray(path.read_bytes())
    if damage == "truncate":
        data = data[: len(data) // 2]
    else:
        data[-5] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(CacheCorrupt) as e:
        load_entry(path)
    assert str(path) in str(e.value) and "delete" in str(e.value)
