"""Synthetic scenes: determinism, coverage of shapes/textures, shadows in the mask, bands, writers."""

import hashlib
import json

import numpy as np
import pytest
from pydantic import ValidationError

from rorem_core.data.formats import read_pool, read_triplets
from rorem_core.data.images import encode_png, load_mask, load_rgb
from rorem_core.data.synthetic import (
    BANDS,
    SHAPES,
    TEXTURES,
    SyntheticConfig,
    band_spec,
    make_scene,
    scene_band,
    write_all,
    write_triplets,
)
from rorem_core.data.validate import validate_dataset
from rorem_core.io import sha256_file

SMALL = SyntheticConfig(size=32, n_seed=6, n_test=4, pool_size=3, n_pools=2)


def _png_digest(sc):
    return hashlib.sha256(encode_png(sc.source) + encode_png(sc.mask) + encode_png(sc.gt)).hexdigest()


@pytest.fixture(scope="module")
def many():
    return {b: [make_scene(i, band=b, salt="test:many") for i in range(120)] for b in BANDS}


def test_scene_types_and_ranges():
    sc = make_scene(0, size=64, band="hard", salt="t")
    assert sc.source.shape == sc.gt.shape == (64, 64, 3)
    assert sc.source.dtype == sc.gt.dtype == np.float32 and sc.mask.dtype == bool
    assert 0 <= sc.source.min() and sc.source.max() <= 1 and 0 <= sc.gt.min() and sc.gt.max() <= 1
    assert {"shape", "texture", "shadow", "band"} <= set(sc.info) and sc.info["band"] == "hard"


def test_same_seed_same_bytes_and_different_seeds_differ():
    a, b = make_scene(7, band="easy", salt="s"), make_scene(7, band="easy", salt="s")
    assert _png_digest(a) == _png_digest(b)
    assert _png_digest(make_scene(8, band="easy", salt="s")) != _png_digest(a)
    assert _png_digest(make_scene(7, band="easy", salt="s2")) != _png_digest(a)


def test_generator_output_is_pinned():
    """Golden digest of 8 seed-split scenes (uint8 pixels, platform-independent PCG64 stream).
    If you change the generator on purpose, every dataset changes: update the digest knowingly."""
    h = hashlib.sha256()
    for i in range(4):
        for band in ("easy", "hard"):
            sc = make_scene(i, size=64, band=band, salt="0:seed")
            for a in (sc.source, sc.gt):
                h.update(np.clip(np.rint(a * 255), 0, 255).astype(np.uint8).tobytes())
            h.update(np.packbits(sc.mask).tobytes())
    assert h.hexdigest()[:16] == "a0260c539e9e1fc2"


def test_all_shapes_and_textures_appear(many):
    scenes = many["easy"] + many["hard"]
    shapes = {sc.info["shape"] for sc in scenes}
    textures = {sc.info["texture"] for sc in scenes}
    assert shapes == set(SHAPES) and len(shapes) >= 5
    assert textures == set(TEXTURES) and len(textures) >= 5


def test_source_equals_gt_outside_mask_and_differs_inside(many):
    for sc in many["hard"][:40]:
        assert np.array_equal(sc.source[~sc.mask], sc.gt[~sc.mask])
        assert np.abs(sc.source - sc.gt)[sc.mask].max() > 0.05


def test_shadow_is_inside_the_mask():
    """Same scene with and without its shadow: the shadow darkens pixels outside the object's own
    mask, and the mask grows to cover them (removal must remove the shadow too)."""
    grown = 0
    for i in range(20):
        with_s = make_scene(i, band="easy", salt="sh", spec=BANDS["easy"].model_copy(update={"shadow_prob": 1.0}))
        no_s = make_scene(i, band="easy", salt="sh", spec=BANDS["easy"].model_copy(update={"shadow_prob": 0.0}))
        assert with_s.info["shadow"] and not no_s.info["shadow"]
        assert np.array_equal(with_s.gt, no_s.gt) and (with_s.mask >= no_s.mask).all()
        darker = (with_s.gt - with_s.source).min(axis=2) > 0.02      # all channels darkened
        shadow_only = darker & ~no_s.mask
        assert not (darker & ~with_s.mask).any()
        grown += bool(shadow_only.any())
    assert grown >= 15


def test_bands_differ_in_area_and_shadow_rate(many):
    cov = {b: np.mean([sc.mask.mean() for sc in many[b]]) for b in BANDS}
    shadow = {b: np.mean([sc.info["shadow"] for sc in many[b]]) for b in BANDS}
    assert cov["hard"] > 1.4 * cov["easy"]
    assert shadow["hard"] > shadow["easy"] + 0.3
    assert {sc.info["texture"] for sc in many["hard"]} >= {"wood", "dots", "checker"}


def test_size_scales_lengths():
    f32 = np.mean([make_scene(i, size=32, salt="sz").mask.mean() for i in range(20)])
    f128 = np.mean([make_scene(i, size=128, salt="sz").mask.mean() for i in range(20)])
    assert make_scene(0, size=128, salt="sz").source.shape == (128, 128, 3)
    assert f128 == pytest.approx(f32, rel=0.3)


def test_band_coin_is_per_index_and_respects_extremes():
    assert all(scene_band(i, "x", 0.0) == "easy" for i in range(50))
    assert all(scene_band(i, "x", 1.0) == "hard" for i in range(50))
    hard = sum(scene_band(i, "x", 0.5) == "hard" for i in range(400))
    assert 150 < hard < 250


def test_config_forbids_unknown_keys_and_unknown_band():
    with pytest.raises(ValidationError):
        SyntheticConfig(n_seeds=10)
    with pytest.raises(ValueError, match="unknown band"):
        make_scene(0, band="medium")
    assert band_spec(SyntheticConfig(hard_shadow_prob=0.9), "hard").shadow_prob == 0.9


def test_write_triplets_layout_and_content(tmp_path):
    entries = write_triplets(tmp_path / "seed", SMALL, "seed", 5, hard_fraction=1.0)
    meta = json.loads((tmp_path / "seed" / "meta.json").read_text())
    assert [e["id"] for e in meta] == [f"seed-{i:05d}" for i in range(5)]
    assert all(e["band"] == "hard" and e["source"].startswith("source/") for e in meta)
    back = read_triplets(tmp_path / "seed" / "meta.json")
    assert [t.model_dump() for t in back] == [t.model_dump() for t in entries]
    sc = make_scene(0, size=32, band="hard", salt=SMALL.salt("seed"), spec=band_spec(SMALL, "hard"))
    assert np.array_equal(load_mask(tmp_path / "seed" / meta[0]["mask"]), sc.mask)
    assert np.abs(load_rgb(tmp_path / "seed" / meta[0]["GT"]) - sc.gt).max() <= 0.5 / 255 + 1e-6
    assert validate_dataset(tmp_path / "seed").ok


def test_write_all_layout_validates_and_is_deterministic(tmp_path):
    summary = write_all(SMALL, tmp_path / "a")
    write_all(SMALL, tmp_path / "b")
    assert summary["seed"]["n"] == 6 and summary["pool-2"]["n"] == 3
    for sub, kind in (("seed", "triplets"), ("test", "triplets"), ("pools/round-1", "pool"),
                      ("hidden/round-2", "hidden")):
        rep = validate_dataset(tmp_path / "a" / sub)
        assert rep.ok and rep.kind == kind, rep.format()
    pool = read_pool(tmp_path / "a" / "pools" / "round-1" / "meta.json")
    hidden = json.loads((tmp_path / "a" / "hidden" / "round-1" / "meta.json").read_text())
    assert [p.id for p in pool] == [h["id"] for h in hidden] == ["r1-p0000", "r1-p0001", "r1-p0002"]
    assert set(pool[0].model_dump()) == {"id", "source", "mask", "band"}
    assert not (tmp_path / "a" / "pools" / "round-1" / "GT").exists()
    files_a = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*") if p.is_file())
    files_b = sorted(p.relative_to(tmp_path / "b") for p in (tmp_path / "b").rglob("*") if p.is_file())
    assert files_a == files_b
    assert all(sha256_file(tmp_path / "a" / f) == sha256_file(tmp_path / "b" / f) for f in files_a)


def test_splits_are_disjoint(tmp_path):
    write_all(SMALL.model_copy(update={"n_seed": 40, "n_test": 20, "pool_size": 20}), tmp_path)
    digests: dict[str, set[str]] = {}
    for split in ("seed", "test", "pools/round-1", "pools/round-2"):
        digests[split] = {sha256_file(p) for p in (tmp_path / split / "source").glob("*.png")}
    sizes = sum(len(d) for d in digests.values())
    assert sizes == 40 + 20 + 20 + 20  # no duplicates within or across splits
    assert len(set().union(*digests.values())) == sizes


# ---- texture_scale (issue 13: textures the tiny autoencoder's 16x16 latent can hold) ----------

FIXTURE = __import__("pathlib").Path(__file__).parents[1] / "fixtures" / "synthetic_scale1.npz"


def test_texture_scale_1_draws_the_scenes_of_before_the_option():
    """The fixture holds 6 hard scenes (one per texture) written by the code before ``texture_scale``
    existed, as uint8; scale 1 must reproduce them (+-1 level: libm may round differently elsewhere),
    so the shipped base's data and key are unchanged."""
    stored = np.load(FIXTURE)
    indices = sorted({int(k.split("_")[0]) for k in stored.files})
    assert len(indices) == 6
    for i in indices:
        sc = make_scene(i, band="hard", salt="fixture:texture-scale-1", texture_scale=1.0)
        for key, arr in (("source", sc.source), ("gt", sc.gt)):
            diff = np.abs(np.rint(arr * 255).astype(int) - stored[f"{i}_{key}"].astype(int))
            assert diff.max() <= 1 and (diff > 0).mean() < 0.001, (i, key)
        assert np.array_equal(sc.mask, stored[f"{i}_mask"]), i


def _highpass_energy(img: np.ndarray) -> float:
    g = img.mean(-1)
    return float(np.mean(np.diff(g, axis=0) ** 2) + np.mean(np.diff(g, axis=1) ** 2))


@pytest.mark.parametrize("texture", ["stripes", "checker", "dots", "wood", "noise"])
def test_texture_scale_makes_every_texture_coarser(texture):
    """Same scene index and salt, scale 5 vs 1: the background's pixel-to-pixel differences (a measure
    of fine detail) fall by more than half for every texture (the object may differ: its colour is
    drawn against the background)."""
    spec = BANDS["hard"].model_copy(update={"textures": {texture: 1.0}})
    fine = [make_scene(i, band="hard", salt="t:scale", spec=spec) for i in range(6)]
    coarse = [make_scene(i, band="hard", salt="t:scale", spec=spec, texture_scale=5.0) for i in range(6)]
    for f, c in zip(fine, coarse):
        assert f.info["texture"] == c.info["texture"] == texture
        assert _highpass_energy(c.gt) < 0.5 * _highpass_energy(f.gt), texture


def test_texture_scale_is_validated():
    with pytest.raises(ValidationError, match="texture_scale"):
        SyntheticConfig(texture_scale=0.5)
