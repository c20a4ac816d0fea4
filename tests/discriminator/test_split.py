"""Held-out split by input, label lookup by latent content, class balancing, prior-shift correction."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from rorem_core.data.latents import write_entry
from rorem_core.reward.train import LabelTable, oversample, split_by_input
from rorem_core.training.losses import bce_loss, pos_weight_from_labels


def test_split_is_by_input_and_stable():
    keys = [f"in{i // 3}" for i in range(300)]                          # 100 inputs, 3 candidates each
    s = split_by_input(keys, 0.2, seed=0)
    held, train = set(s["heldout"]), set(s["train"])
    assert held.isdisjoint(train) and held | train == set(keys)
    assert 10 <= len(held) <= 30                                        # ~20 of 100 inputs
    # adding inputs never moves an old one: the decision depends on (seed, input) only
    s2 = split_by_input(keys + [f"new{i}" for i in range(50)], 0.2, seed=0)
    assert held <= set(s2["heldout"]) and train <= set(s2["train"])
    assert set(split_by_input(keys, 0.2, seed=1)["heldout"]) != held


def test_previous_split_pins_inputs():
    keys = [f"in{i}" for i in range(50)]
    prev = split_by_input(keys, 0.5, seed=0)
    now = split_by_input(keys + ["x", "y"], 0.0, seed=0, prev=prev)     # fraction 0 now, old held-out stays
    assert set(prev["heldout"]) <= set(now["heldout"])
    assert {"x", "y"} <= set(now["train"])


def _entries(tmp_path, n):
    paths = []
    for i in range(n):
        g = torch.Generator().manual_seed(i)
        t = {"target": torch.randn(4, 2, 2, generator=g), "masked": torch.zeros(4, 2, 2),
             "source": torch.randn(4, 2, 2, generator=g), "mask": torch.ones(1, 2, 2)}
        write_entry(tmp_path / f"{i}.safetensors", t)
        paths.append(tmp_path / f"{i}.safetensors")
    return paths


def test_label_table_lookup_and_duplicates(tmp_path):
    from rorem_core.data.latents import load_batch

    e = _entries(tmp_path, 3)
    table = LabelTable([e[0], e[1], e[2], e[1]], [1.0, 0.0, 1.0, 1.0])  # e1 labelled twice: mean 0.5
    assert table.entries == e and table.labels == [1.0, 0.5, 1.0]
    batch = load_batch([e[2], e[1], e[0]])
    torch.testing.assert_close(table.lookup(batch), torch.tensor([1.0, 0.5, 1.0]))


def test_oversample_balances_classes(tmp_path):
    e = [tmp_path / f"{i}" for i in range(10)]
    out = oversample(e, [1.0, 1.0] + [0.0] * 8)                         # 2 good, 8 bad
    assert len(out) == 16 and sum(p in e[:2] for p in out) == 8
    assert oversample(e, [0.0] * 10) == e                               # one class: unchanged


def test_pos_weight_prior_shift_correction():
    """The weighted-BCE optimum of a constant logit is log-odds + ln(pw); the saved logit_offset
    -ln(pw) brings the probability back to the true rate (the calibration claim in the docs)."""
    y = torch.tensor([1.0] * 2 + [0.0] * 8)                             # true rate 0.2
    pw = pos_weight_from_labels(y)                                      # 4.0
    z = torch.zeros(1, requires_grad=True)
    opt = torch.optim.LBFGS([z], lr=0.5, max_iter=200)

    def closure():
        opt.zero_grad()
        loss, _ = bce_loss(z.expand(10), y, pos_weight=pw)
        loss.backward()
        return loss

    opt.step(closure)
    assert float(z.detach()) == pytest.approx(math.log(0.2 / 0.8) + math.log(pw), abs=1e-3)   # = 0: balanced
    assert float(torch.sigmoid(z.detach() - math.log(pw))) == pytest.approx(0.2, abs=1e-3)
    assert np.isclose(pw, 4.0)
