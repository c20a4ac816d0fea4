"""Selection for humans (random / most uncertain mix) and automatic acceptance: pure functions."""

from __future__ import annotations

import json

import numpy as np
import pytest

from rorem_core.data.formats import Candidate
from rorem_core.reward.selection import (
    accepted,
    n_units,
    read_selection_ids,
    select,
    uncertainty,
)


def cands(n_inputs: int, k: int = 2) -> list[Candidate]:
    return [Candidate(id=f"c{i}-{j}", round=1, input_id=f"p{i}", seed=j, model="m", steps=1,
                      source=f"s{i}.png", mask=f"m{i}.png", result=f"r{i}-{j}.png")
            for i in range(n_inputs) for j in range(k)]


def test_uncertainty_hand_values():
    np.testing.assert_allclose(uncertainty(np.array([0.5, 0.0, 1.0, 0.75]), 0.5), [1.0, 0.0, 0.0, 0.5])
    # threshold 0.8: the scale is max(0.8, 0.2) = 0.8 -> s=0 gives 0, s=1 gives 1 - 0.2/0.8
    np.testing.assert_allclose(uncertainty(np.array([0.0, 1.0, 0.8]), 0.8), [0.0, 0.75, 1.0])
    assert uncertainty(np.array([3.0]), 0.5)[0] == 0.0                 # softplus scores above 1 clip at 0


def test_n_units():
    assert n_units(100, None, 0.25) == 25
    assert n_units(100, 10, 0.25) == 10
    assert n_units(5, 10, 0.25) == 5
    assert n_units(3, None, 0.01) == 1


def test_select_mix_uncertain_then_random():
    cs = cands(10)                                                      # 20 candidates
    scores = np.linspace(0.0, 1.0, 20)
    scores[[3, 7, 12]] = [0.5, 0.49, 0.52]                              # the three most uncertain
    items = select(cs, scores, n=6, uncertain_fraction=0.5, threshold=0.5, seed=0)
    assert len(items) == 6
    unc = {it.id for it in items if it.reason == "uncertain"}
    assert unc == {cs[3].id, cs[7].id, cs[12].id}
    assert sum(it.reason == "random" for it in items) == 3
    assert [it.priority for it in items] == sorted((it.priority for it in items), reverse=True)
    assert items[0].id == cs[3].id and items[0].score == pytest.approx(0.5)
    # same seed, same choice; another seed changes the random part only
    again = select(cs, scores, n=6, uncertain_fraction=0.5, threshold=0.5, seed=0)
    assert [it.id for it in again] == [it.id for it in items]
    other = select(cs, scores, n=6, uncertain_fraction=0.5, threshold=0.5, seed=5)
    assert {it.id for it in other if it.reason == "uncertain"} == unc


def test_select_round_one_is_random():
    items = select(cands(10), None, n=8, uncertain_fraction=0.5, threshold=0.5, seed=1)
    assert len(items) == 8 and all(it.reason == "random" and it.priority == 0 and it.score is None for it in items)
    picks = [{it.id for it in select(cands(10), None, n=8, uncertain_fraction=0.5, threshold=0.5, seed=s)}
             for s in range(4)]
    assert len({frozenset(p) for p in picks}) > 1                       # the seed matters


def test_select_by_input_keeps_candidates_together():
    cs = cands(6, k=3)
    scores = np.full(18, 0.95)
    scores[4] = 0.5                                                     # input p1 has the most uncertain candidate
    items = select(cs, scores, n=2, uncertain_fraction=0.5, threshold=0.5, seed=0, unit="input")
    inputs = {it.input_id for it in items}
    assert len(inputs) == 2 and "p1" in inputs and len(items) == 6
    assert {it.reason for it in items if it.input_id == "p1"} == {"uncertain"}


def test_accepted_threshold_and_exclude():
    cs = cands(2)
    got = accepted(cs, np.array([0.2, 0.6, 0.5, 0.9]), 0.5, exclude={"c1-1"})
    assert [c.id for c in got] == ["c0-1"]                              # 0.5 is not > 0.5; c1-1 excluded


def test_read_selection_ids(tmp_path):
    (tmp_path / "s.json").write_text(json.dumps({"items": [{"id": "a"}, {"id": "b"}]}))
    assert read_selection_ids(tmp_path / "s.json") == {"a", "b"}
    (tmp_path / "bad.json").write_text(json.dumps({"x": 1}))
    with pytest.raises(ValueError, match="selection"):
        read_selection_ids(tmp_path / "bad.json")
