"""Simulated annotators with ``simulated.judge: judge``: review verdicts and pair preferences follow the
judge (rorem_core.evaluation.judge) instead of masked PSNR."""

from __future__ import annotations

import numpy as np

from annotation.simulated import Oracle, _pair_result, read_hidden_gt
from rorem_core.data.formats import read_candidates
from rorem_core.data.images import load_mask, load_rgb, save_png


def _oracles(r):
    cands = read_candidates(r.candidates)
    hidden = read_hidden_gt(r.hidden)
    return cands, hidden, Oracle(cands, r.candidates.parent, hidden, rule="judge"), \
        Oracle(cands, r.candidates.parent, hidden)


def test_judge_rule_calls_a_smudge_bad_that_psnr_calls_good(tmp_path, new_round):
    r = new_round(tmp_path / "data", 1, n_inputs=2)
    cands, hidden, by_judge, by_psnr = _oracles(r)
    base = r.candidates.parent
    for c in cands:
        if c.id in r.good:   # replace the noisy GT by a ghost: 8 % of the object still shows (~26 dB)
            gt, src, m = load_rgb(hidden[c.input_id]), load_rgb(base / c.source), load_mask(base / c.mask)
            save_png(base / c.result, np.where(m[..., None], 0.92 * gt + 0.08 * src, gt))
    for cid in r.good:
        assert by_psnr.review(cid) == ("good", [])
        label, reasons = by_judge.review(cid)
        assert label == "bad" and reasons == ["smudge"]
    assert all(by_judge.review(c) == ("bad", ["object_remains"]) for c in r.bad)


def test_judge_rule_accepts_the_ground_truth_and_prefers_it_in_a_pair(tmp_path, new_round):
    r = new_round(tmp_path / "data", 1, n_inputs=2)
    cands, hidden, by_judge, _ = _oracles(r)
    base = r.candidates.parent
    for c in cands:
        if c.id in r.good:
            save_png(base / c.result, load_rgb(hidden[c.input_id]))
    assert all(by_judge.review(c) == ("good", []) for c in r.good)
    good, bad = r.good[0], r.bad[0]
    pref = _pair_result(by_judge, {"candidate_left": bad, "candidate_right": good}, flip=False)
    assert pref[0]["value"]["selected"] == "right"
    assert by_judge.preference(good) > by_judge.preference(bad)
