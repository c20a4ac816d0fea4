"""Reference fills: they beat leaving the object, and touch only masked pixels."""

import numpy as np
import pytest

from rorem_core.data.synthetic import make_scene
from rorem_core.evaluation.baselines import BASELINES, harmonic, leave_object, ring_mean, telea
from rorem_core.evaluation.metrics import masked_psnr


@pytest.fixture(scope="module")
def scenes():
    return [make_scene(i, size=64, band="hard" if i % 2 else "easy", salt="test:baselines") for i in range(24)]


def _mean_psnr(fill, scenes):
    return float(np.mean([masked_psnr(fill(sc.source, sc.mask), sc.gt, sc.mask) for sc in scenes]))


def test_telea_ring_and_harmonic_beat_leaving_the_object(scenes):
    leave = _mean_psnr(leave_object, scenes)
    assert _mean_psnr(telea, scenes) > leave + 6
    assert _mean_psnr(ring_mean, scenes) > leave + 6
    assert _mean_psnr(harmonic, scenes) > _mean_psnr(ring_mean, scenes)   # it meets the surroundings everywhere


@pytest.mark.parametrize("name", sorted(BASELINES))
def test_baselines_change_only_masked_pixels(name, scenes):
    sc = scenes[1]
    out = BASELINES[name](sc.source, sc.mask)
    assert out.shape == sc.source.shape and out.dtype == np.float32
    assert np.array_equal(out[~sc.mask], sc.source[~sc.mask])
    assert 0.0 <= out.min() and out.max() <= 1.0


@pytest.mark.parametrize("name", sorted(BASELINES))
def test_empty_mask_returns_source(name, scenes):
    sc = scenes[0]
    out = BASELINES[name](sc.source, np.zeros(sc.mask.shape, bool))
    assert np.array_equal(out, sc.source)


def test_ring_mean_fills_with_ring_colour():
    src = np.zeros((9, 9, 3), np.float32)
    src[:, :, 0] = 0.8
    src[4, 4] = 0.1  # the "object"
    m = np.zeros((9, 9), bool)
    m[4, 4] = True
    out = ring_mean(src, m, ring=1)
    assert np.allclose(out[4, 4], [0.8, 0, 0])


def test_harmonic_is_exact_on_a_linear_gradient_and_averages_the_neighbours_of_one_pixel():
    ramp = np.linspace(0.2, 0.9, 16, dtype=np.float32)
    src = np.stack([np.tile(ramp, (16, 1)), np.tile(ramp[:, None], (1, 16)), np.full((16, 16), 0.4, np.float32)], -1)
    m = np.zeros((16, 16), bool)
    m[3:11, 5:14] = True
    assert np.abs(harmonic(src, m) - src).max() < 1e-5    # a plane is harmonic: the hole is refilled exactly
    one = np.zeros((3, 3, 3), np.float32)
    one[0, 1], one[2, 1], one[1, 0], one[1, 2] = 0.1, 0.2, 0.3, 0.6
    m = np.zeros((3, 3), bool)
    m[1, 1] = True
    assert np.allclose(harmonic(one, m)[1, 1], 0.3)        # (0.1 + 0.2 + 0.3 + 0.6) / 4


@pytest.mark.parametrize("fill", [ring_mean, harmonic])
def test_full_mask_falls_back_to_grey(fill):
    out = fill(np.zeros((4, 4, 3), np.float32), np.ones((4, 4), bool))
    assert np.allclose(out, 0.5)


def test_shape_mismatch_is_refused():
    with pytest.raises(ValueError, match="expected source"):
        telea(np.zeros((8, 8, 3)), np.zeros((4, 4), bool))
