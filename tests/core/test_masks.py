"""Pure mask ops: dilation, bounding box, area, latent-size resize (empty, full, border cases)."""

import numpy as np
import pytest
import torch

from rorem_core.data.masks import area_fraction, bbox, dilate, resize_mask_to_latent


def _mask(h=16, w=16, points=()):
    m = np.zeros((h, w), bool)
    for y, x in points:
        m[y, x] = True
    return m


def test_dilate_centre_pixel_gives_square():
    out = dilate(_mask(points=[(8, 8)]), 2)
    assert out.sum() == 25 and out[6:11, 6:11].all()


def test_dilate_empty_and_full_stay_put():
    assert not dilate(_mask(), 3).any()
    full = np.ones((8, 8), bool)
    assert dilate(full, 3).all()


def test_dilate_at_border_grows_inwards_only():
    out = dilate(_mask(points=[(0, 0)]), 2)
    assert out.sum() == 9 and out[:3, :3].all()


def test_dilate_zero_returns_copy_and_rejects_3d():
    m = _mask(points=[(3, 3)])
    out = dilate(m, 0)
    assert np.array_equal(out, m) and out is not m
    with pytest.raises(ValueError, match="2-D"):
        dilate(np.zeros((4, 4, 3), bool), 1)


def test_bbox_cases():
    assert bbox(_mask()) is None
    assert bbox(np.ones((5, 7), bool)) == (0, 0, 5, 7)
    assert bbox(_mask(points=[(0, 15), (3, 10)])) == (0, 10, 4, 16)  # touches the top/right border


def test_area_fraction_cases():
    assert area_fraction(_mask()) == 0.0
    assert area_fraction(np.ones((4, 4), bool)) == 1.0
    assert area_fraction(_mask(4, 4, [(0, 0), (3, 3)])) == pytest.approx(2 / 16)


def test_thin_mask_survives_max_pool_but_not_nearest():
    m = np.zeros((64, 64), bool)
    m[1, :] = True  # a 1-px line, thinner than the factor 4
    mx = resize_mask_to_latent(m, 16, "max")
    assert isinstance(mx, np.ndarray) and mx.dtype == np.float32 and mx.shape == (16, 16)
    assert mx[0].min() == 1.0 and mx[1:].max() == 0.0
    assert resize_mask_to_latent(m, 16, "nearest").max() == 0.0  # diffusers' behaviour drops it
    assert np.allclose(resize_mask_to_latent(m, 16, "area")[0], 0.25)


def test_resize_tensor_shapes_and_non_integer_factor():
    t = torch.zeros(2, 1, 30, 30)
    t[1, 0, 29, 29] = 1  # touches the corner
    out = resize_mask_to_latent(t, (8, 8))
    assert isinstance(out, torch.Tensor) and out.shape == (2, 1, 8, 8)
    assert out[0].max() == 0 and out[1, 0, 7, 7] == 1
    assert resize_mask_to_latent(torch.ones(1, 16, 16, dtype=torch.bool), 4).shape == (1, 4, 4)


def test_resize_full_and_empty():
    assert resize_mask_to_latent(np.ones((32, 32), bool), 8, "area").min() == 1.0
    assert resize_mask_to_latent(np.zeros((32, 32), bool), 8).max() == 0.0


def test_resize_rejects_unknown_mode_and_rank():
    with pytest.raises(ValueError, match="unknown mode"):
        resize_mask_to_latent(np.zeros((8, 8)), 2, "bilinear")
    with pytest.raises(ValueError, match="expected"):
        resize_mask_to_latent(np.zeros((8,)), 2)
