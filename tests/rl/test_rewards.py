"""The judge reward grades a removal as the judge does (docs/judge.md): the GT itself scores > 0 (clean),
the untouched source (object left in place) and a tone-shifted fill score < 0, in that order of badness."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from rorem_core.data.images import save_png
from rorem_core.rl.rewards import load_reward


@pytest.fixture()
def scene(tmp_path):
    """A 32 px grey gradient with a dark 10 x 10 object; its hidden GT as the stage reads it."""
    ramp = np.linspace(0.3, 0.7, 32, dtype=np.float32)
    gt = np.stack([np.tile(ramp, (32, 1))] * 3, -1)
    src = gt.copy()
    src[11:21, 11:21] = 0.05
    mask = np.zeros((32, 32), bool)
    mask[9:23, 9:23] = True
    save_png(tmp_path / "hidden" / "GT" / "a.png", gt)
    (tmp_path / "hidden" / "meta.json").write_text(json.dumps([{"id": "a", "GT": "GT/a.png"}]))
    t = lambda x: torch.from_numpy(x).permute(2, 0, 1)[None] * 2 - 1  # noqa: E731  (1, 3, R, R) in [-1, 1]
    return tmp_path / "hidden", t(gt), t(src), torch.from_numpy(mask)[None, None].float()


def test_judge_reward_calls_the_gt_clean_and_ranks_a_left_object_below_a_tone_shift(scene):
    hidden, gt, src, mask = scene
    reward = load_reward("judge", hidden=hidden, resolution=32, success_db=20.0)
    shifted = gt + 0.2 * mask            # +0.1 in [0, 1] inside the hole: a visible patch
    r = reward(torch.cat([gt, src, shifted]), src.repeat(3, 1, 1, 1), mask.repeat(3, 1, 1, 1), ["a"] * 3)
    assert reward.success_threshold == 0.0
    assert r[0] > 0 > r[2] > r[1], r.tolist()
