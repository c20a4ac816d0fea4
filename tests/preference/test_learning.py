"""Learning that must be real (issue 5), tiny preset on CPU, fixed seeds; run with ``-m slow``.

Both tests run the benchmark's experiment functions (benchmarks/bench_preference.py) with smaller
sizes, print the same tables and assert the issue's bars. They use the session ``tiny_workspace``
(shipped pretrained base); ``ROREM_PREF_WORKSPACE=<bootstrapped dir>`` points them at another one.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def learning_bench(request, bench, tmp_path_factory):
    path = os.environ.get("ROREM_PREF_WORKSPACE")
    root = Path(path) if path else request.getfixturevalue("tiny_workspace").root
    return bench.workspace(root, tmp_path_factory.mktemp("pref_learning"))


def test_dpo_raises_heldout_implicit_accuracy_and_keeps_the_success_rate(learning_bench, bench):
    """Pairs: 8 candidates per input of a 300-input pool (10 Euler steps: CI time), oracle-scored
    (sigmoid((masked PSNR - 20 dB) / 2 dB)), score gap >= 0.05. The held-out inputs' implicit accuracy
    must exceed 0.6; on 600 test images (20 Euler steps, the same seeds for both removers) the DPO
    remover's oracle success rate must not be lower than the pre-DPO one beyond the 95 % interval of
    the paired difference (the benchmark adds the discriminator's judgement and 50-step sampling)."""
    r = bench.dpo_experiment(learning_bench, pool_size=300, k=8, gen_steps=10, n_test=600, eval_steps=20,
                             margin=0.05, with_disc=False, steps=200, batch_size=16)
    bench.print_dpo(r)
    train = r["train"]
    assert train["val_before"]["implicit_acc"] == 0.5 and train["n_val"] >= 120   # enough held-out pairs: SE <= 0.045
    assert train["val_after"]["implicit_acc"] > 0.6
    diff, lo, hi = r["oracle_diff"]
    assert hi >= 0.0, f"DPO lowered the oracle success rate by {-diff:.3f} (95% CI [{lo:.3f}, {hi:.3f}])"


def test_four_step_student_keeps_80_percent_of_the_teacher_gain(learning_bench, bench):
    """Plain and reward-weighted (softmax over oracle scores) LCM students (150 steps), 4 LCM steps, vs
    the 50-step Euler teacher: masked-PSNR gain over "leave the object" kept >= 80 %."""
    r = bench.distill_experiment(learning_bench, pool_size=200, k=2, gen_steps=20, n_test=300, with_disc=False,
                                 consistency=False, steps=150)   # half the benchmark's 300 steps: CI time
    bench.print_distill(r)
    for key in ("plain", "rwd"):
        kept = bench.gain_kept(r, key)
        assert kept >= 0.8, f"{key} student keeps {100 * kept:.0f}% of the teacher's gain (< 80%)"
