"""Auto-acceptance precision (issue 13, part 4): hand values of the pure function, and the judge on
accepted triplets against a hidden GT (a clean fill, an object left, an input without GT)."""

from __future__ import annotations

import json

import pytest

from rorem_core.data.images import save_png
from rorem_core.evaluation.acceptance import acceptance_precision, judge_accepted
from tests.helpers.rounds import _scene


def test_acceptance_precision_hand_values():
    p = acceptance_precision([True, True, False, True], [None, None, "smudge", None])
    assert (p["n"], p["n_clean"], p["precision"], p["reasons"]) == (4, 3, 0.75, {"smudge": 1})
    assert p["ci95"][0] < 0.75 < p["ci95"][1]
    assert acceptance_precision([]) == {"n": 0, "n_clean": 0, "precision": None, "ci95": None, "reasons": {}}


def test_judge_accepted_against_the_hidden_gt(tmp_path):
    auto, hidden = tmp_path / "auto", tmp_path / "hidden"
    entries, gts = [], []
    for i, fill in enumerate(("gt", "source", "gt")):
        src, mask, gt = _scene(i)
        save_png(auto / f"s{i}.png", src)
        save_png(auto / f"m{i}.png", mask)
        save_png(auto / f"r{i}.png", gt if fill == "gt" else src)
        entries.append({"source": f"s{i}.png", "mask": f"m{i}.png", "GT": f"r{i}.png", "input_id": f"p{i}"})
        if i < 2:                                   # input p2 has no hidden GT
            save_png(hidden / f"GT{i}.png", gt)
            gts.append({"id": f"p{i}", "GT": f"GT{i}.png"})
    (auto / "meta.json").write_text(json.dumps(entries))
    (hidden / "meta.json").write_text(json.dumps(gts))
    p = judge_accepted(auto / "meta.json", hidden)
    assert (p["n"], p["n_clean"], p["precision"], p["n_without_gt"]) == (2, 1, 0.5, 1)
    assert p["reasons"] == {"object_remains": 1}
    assert judge_accepted(auto / "meta.json", tmp_path / "nowhere") is None     # a pool of photos: unknown
    (hidden / "meta.json").write_text('{"not": "a list"}')
    with pytest.raises(ValueError, match="hidden GT"):
        judge_accepted(auto / "meta.json", hidden)
