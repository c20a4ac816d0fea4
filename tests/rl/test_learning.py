"""Slow learning check of online RL on the tiny preset (shipped base, 64 px, CPU), through the
functions of benchmarks/bench_rl_learning.py (which also runs the discriminator and oracle rewards;
their figures, which do NOT show learning in CPU-minutes, are in docs/rl.md).

A reward the policy controls directly (mean brightness of the fill): the held-out reward rises with a
paired 95 % interval above zero (the policy-gradient machinery learns), and the guard sees the hack:
the test split's masked PSNR falls beyond its interval. Printed with ``pytest -m slow -s``.
"""

from __future__ import annotations

import pytest

from benchmarks import bench_rl_learning


@pytest.mark.slow
def test_a_controllable_reward_is_learned_and_the_guard_sees_the_hack(tiny_workspace, tmp_path):
    b = bench_rl_learning
    params, model, data = b.workspace(tiny_workspace.root, tmp_path)
    res = b.run_reward("brightness", params, model, data, tmp_path, steps=12)   # 6 rollouts
    b.show("brightness", res)
    assert res.heldout_reward["ci95"][0] > 0, res.heldout_reward
    assert res.test_masked_psnr["ci95"][1] < 0, "the guard should see the fill drift away from the GT"
