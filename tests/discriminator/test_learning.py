"""The learning check of issue 4 (slow): on candidates of the shipped tiny remover plus known-good and
known-bad results, labelled by the simulated oracle (noisy near its threshold), the discriminator
trained with the params.yaml preset reaches, on held-out INPUTS: accuracy >= 0.85, ROC-AUC >= 0.90,
calibration error <= 0.10 and a (calibrated) estimated success rate within 5 points of the oracle's. Figures per band are printed
(benchmarks/bench_discriminator.py prints the same table)."""

from __future__ import annotations

import copy

import pytest

from rorem_core.stages import train_discriminator
from tests.helpers.oracle_labels import simulate_labels

# the recommended tiny preset, used if params.yaml has no train_discriminator section
TINY_TRAIN = dict(mode="full", steps=600, batch_size=32, lr=3e-4, lr_schedule="constant_with_warmup",
                  lr_warmup_steps=20, checkpoint_every=200, log_every=50, heldout_fraction=0.2)


@pytest.mark.slow
def test_discriminator_learns_oracle_labels(tiny_workspace, tmp_path):
    from rorem_core.config import stage_config

    ws = tiny_workspace
    params = copy.deepcopy(ws.params)                                   # scratch dirs under tmp_path
    params["base"].update(cache_dir=str(tmp_path / "cache"), work_dir=str(tmp_path / "work"))
    data = ws.data
    sources = [("pool-1", data / "pools/round-1", data / "hidden/round-1"),
               ("pool-2", data / "pools/round-2", data / "hidden/round-2"), ("test", data / "test", data / "test")]
    labels = simulate_labels(ws.model_dir, sources, tmp_path, stage_config("generate", params, {"steps": 25}),
                             noise_db=0.5, seed=0)
    # the oracle labels already hold known-good / known-bad results per input: no seed anchors here
    cfg = stage_config("train_discriminator", params, {"anchors": 0} if params.get("train_discriminator") else TINY_TRAIN)
    m = train_discriminator.run(cfg, ws.model_dir, labels, tmp_path / "disc").metrics
    for k, v in m["heldout"].items():
        print(f"{k:<16} n={v['n']:4d} acc={v['accuracy']:.3f} auc={v['roc_auc']} ece={v['ece']:.3f} "
              f"human={v['human_success_rate']:.3f} est={v['est_success_rate']:.3f} "
              f"est_mean={v['est_success_rate_mean']:.3f}")
    held = m["heldout"]["all"]
    assert m["n_heldout_inputs"] >= 50 and {"band_easy", "band_hard"} <= set(m["heldout"])
    assert held["accuracy"] >= 0.85
    assert held["roc_auc"] >= 0.90
    # the estimate of the success rate is the calibrated one (mean probability: unbiased when calibrated,
    # which bce + logit_offset is for); RORem's share above the threshold is printed beside it: it moves
    # with every borderline candidate (2.5 points on one machine, 6.0 on another: docs/discriminator.md)
    assert abs(held["est_success_rate_mean"] - held["human_success_rate"]) <= 0.05
    assert held["ece"] <= 0.10
    # the known-bad kinds are the easy part. The remover's own candidates (labels near the noisy 20 dB
    # threshold) are the hard part: their AUC was 0.745 on one machine and 0.564 on another, so it is
    # printed above and documented (docs/discriminator.md), not asserted
    assert m["heldout"]["kind_leave"]["accuracy"] >= 0.9 and m["heldout"]["kind_noise"]["accuracy"] >= 0.9
