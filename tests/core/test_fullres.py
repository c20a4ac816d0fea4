"""Any resolution in, full resolution out: letterboxing keeps the aspect ratio, paste-back returns the
photo's own size, identical outside the dilated + feathered mask and the result inside it."""

import numpy as np
import pytest
import torch

from rorem_core.data.fullres import changed_region, feather_alpha, letterbox_image, paste_back, unletterbox
from rorem_core.data.latents import image_to_tensor, mask_to_tensor


def _photo(h=750, w=1000, seed=0):
    rng = np.random.default_rng(seed)
    img = rng.integers(0, 256, (h, w, 3)).astype(np.float32) / 255.0
    mask = np.zeros((h, w), bool)
    mask[300:420, 600:700] = True
    return img, mask


def test_paste_back_keeps_size_and_changes_nothing_outside_the_dilated_mask():
    img, mask = _photo()
    square = np.full((64, 64, 3), 0.5, np.float32)
    out = paste_back(img, square, mask, dilation=6, feather=8)
    assert out.shape == img.shape
    outside = ~changed_region(mask, 6, 8)
    assert np.array_equal(out[outside], img[outside])               # bit for bit
    inner = changed_region(mask, 6, 0)
    np.testing.assert_allclose(out[inner], unletterbox(square, 750, 1000)[inner], atol=1e-6)
    ring = changed_region(mask, 6, 8) & ~inner
    assert ring.any() and not np.allclose(out[ring], img[ring])     # the feathered edge blends


def test_feather_alpha_is_one_inside_zero_outside_and_ramps():
    mask = np.zeros((40, 40), bool)
    mask[15:25, 15:25] = True
    a = feather_alpha(mask, 2, 4)
    assert (a[changed_region(mask, 2, 0)] == 1).all() and (a[~changed_region(mask, 2, 4)] == 0).all()
    row = a[20, :15]
    assert (np.diff(row) >= 0).all() and 0 < row[12] < 1


def test_a_mask_of_another_size_is_refused():
    img, _ = _photo(100, 80)
    with pytest.raises(ValueError, match="mask is 10x10 but the image is 80x100"):
        paste_back(img, np.zeros((64, 64, 3), np.float32), np.zeros((10, 10), bool))


def test_non_square_inputs_are_letterboxed_not_stretched():
    img = np.zeros((50, 100, 3), np.float32)
    img[:, 45:55] = 1.0                                  # a 10 px wide vertical bar in a 2:1 photo
    t = image_to_tensor(img, 64)
    assert t.shape == (3, 64, 64)
    bar = (t[0, 32] > 0).numpy()                         # the middle row of the square
    assert 5 <= bar.sum() <= 8                           # 10 px * 64/100, not 10 * 64/50 (stretched)
    np.testing.assert_array_equal(letterbox_image(img)[:25], np.repeat(img[:1], 25, 0))   # edge padding
    m = np.zeros((50, 100), bool)
    m[20:30, 48:52] = True
    mt = mask_to_tensor(m, 64)
    assert mt.shape == (1, 64, 64) and mt[0, :16].sum() == 0 and mt.sum() > 0   # padding is unmasked


def test_square_inputs_at_the_working_resolution_are_untouched():
    img = np.random.default_rng(1).random((64, 64, 3)).astype(np.float32)
    np.testing.assert_allclose(image_to_tensor(img, 64), torch.from_numpy(img).permute(2, 0, 1) * 2 - 1)
