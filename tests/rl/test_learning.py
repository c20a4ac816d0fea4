"""Slow learning checks of online RL on the tiny preset (shipped base, 64 px, CPU). Each prints its
figures; docs/rl.md quotes them. Run: ``pytest -m slow -s tests/rl/test_learning.py``.

1. A reward the policy controls directly (mean brightness of the fill): the held-out reward rises
   with a paired 95 % interval above zero (the policy-gradient machinery learns), and the guard sees
   the hack: the test split's masked PSNR falls beyond its interval.
2. The discriminator reward (trained here on simulated oracle labels of pool 2; rollouts on pool 1):
   the held-out discriminator reward rises and the test oracle success does not fall beyond its
   95 % interval.
The oracle reward (masked PSNR vs the hidden GT) is in docs/rl.md as a measured run, not a test:
within a few CPU-minutes it does not move the held-out reward beyond noise (docs/rl.md).
"""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch

from rorem_core.config import stage_config
from rorem_core.stages import train_rl

# one recipe for both checks: REINFORCE, large batches (2 optimiser steps per rollout), lr 1e-3
RECIPE = dict(loss="reinforce", lr=1e-3, batch_size=160, steps=20, patience=0, heldout_fraction=0.5,
              test_images=100, log_every=2, checkpoint_every=50)


def _params(ws, tmp: Path) -> dict:
    p = copy.deepcopy(ws.params)
    p["base"].update(cache_dir=str(tmp / "cache"), work_dir=str(tmp / "work"))
    return p


class Brightness:
    """Mean pixel value inside the mask: a reward the remover can raise without removing better."""

    name, success_threshold = "brightness", 0.0

    def __call__(self, results, sources, masks, ids):
        m = masks.float()
        return ((results.mean(1, keepdim=True) * m).sum((1, 2, 3)) / m.sum((1, 2, 3))).float()


def _show(tag: str, res) -> None:
    for k in ("heldout_reward", "test_success", "test_masked_psnr"):
        d = getattr(res, k)
        print(f"{tag} {k:<17} n={d['n']:3d} before {d['before']:.4f} after {d['after']:.4f} "
              f"delta {d['delta']:+.4f} 95% CI [{d['ci95'][0]:+.4f}, {d['ci95'][1]:+.4f}]")


@pytest.mark.slow
def test_a_controllable_reward_is_learned_and_the_guard_sees_the_hack(tiny_workspace, tmp_path):
    from rorem_core.rl import rewards

    ws = tiny_workspace
    rewards.register("brightness", lambda **_: Brightness())
    try:
        cfg = stage_config("train_rl", _params(ws, tmp_path), {**RECIPE, "reward": "brightness"})
        res = train_rl.run(cfg, ws.model_dir, ws.data / "pools/round-1", tmp_path / "rl", test=ws.data / "test")
    finally:
        rewards.REWARDS.pop("brightness")
    _show("brightness", res)
    assert res.heldout_reward["ci95"][0] > 0, res.heldout_reward
    assert res.test_masked_psnr["ci95"][1] < 0, "the guard should see the fill drift away from the GT"


@pytest.mark.slow
def test_discriminator_reward_rises_without_losing_oracle_success(tiny_workspace, tmp_path):
    from rorem_core.stages import train_discriminator
    from tests.helpers.oracle_labels import simulate_labels

    ws = tiny_workspace
    params = _params(ws, tmp_path)
    labels = simulate_labels(ws.model_dir, [("pool-2", ws.data / "pools/round-2", ws.data / "hidden/round-2")],
                             tmp_path, stage_config("generate", params, {"steps": 25}), noise_db=0.5, seed=0)
    dcfg = stage_config("train_discriminator", params, {"steps": 300, "anchors": 0})
    train_discriminator.run(dcfg, ws.model_dir, labels, tmp_path / "disc")
    torch.manual_seed(0)
    cfg = stage_config("train_rl", params, {**RECIPE, "reward": "discriminator"})
    res = train_rl.run(cfg, ws.model_dir, ws.data / "pools/round-1", tmp_path / "rl",
                       discriminator=tmp_path / "disc", test=ws.data / "test")
    _show("discriminator", res)
    assert res.heldout_reward["ci95"][0] > 0, res.heldout_reward
    assert res.test_success["ci95"][1] >= 0, "oracle success fell beyond its interval: reward hacking"
