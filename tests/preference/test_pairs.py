"""Pair building (rorem_core.preference.pairs, stage build_pairs): the three rules, ties, duplicates,
conflicts, provenance, content identity and the written RORem pairs format."""

from __future__ import annotations

import json

import numpy as np
import pytest
import yaml

from rorem_core.config import BuildPairsConfig, ConfigError, stage_config
from rorem_core.data.formats import (
    Candidate,
    Pair,
    Triplet,
    read_pairs,
    resolve_in_root,
    write_candidates,
    write_entries,
)
from rorem_core.data.images import save_png
from rorem_core.preference.pairs import dedupe, good_bad_pairs, human_pairs, margin_pairs, read_scored, write_pairs
from rorem_core.stages import build_pairs


def _img(path, value):
    save_png(path, np.full((8, 8, 3), value / 255, np.float32))
    return path


@pytest.fixture
def cands(tmp_path):
    """Two inputs (a, b), three results each, scores a: 0.9 / 0.5 / 0.45, b: 0.8 / 0.2 / 0.8 (equal =
    a tie); plus for a an unscored result and a byte copy of a's first result (kept once, first seen)."""
    d = tmp_path / "cands"
    _img(d / "in/a_src.png", 10), _img(d / "in/a_mask.png", 255)
    _img(d / "in/b_src.png", 20), _img(d / "in/b_mask.png", 255)
    scores = {"a": [0.9, 0.5, 0.45], "b": [0.8, 0.2, 0.8]}
    out = []
    for inp, ss in scores.items():
        for k, s in enumerate(ss):
            cid = f"r1-{inp}-k{k}"
            _img(d / f"res/{cid}.png", 100 + 10 * k + (50 if inp == "b" else 0))
            out.append(Candidate(id=cid, round=1, input_id=inp, seed=k, model="m", steps=4, source=f"in/{inp}_src.png",
                                 mask=f"in/{inp}_mask.png", result=f"res/{cid}.png", score=s))
    _img(d / "res/r1-a-k9.png", 99)
    _img(d / "res/r1-a-k0-copy.png", 100)   # same bytes as r1-a-k0: one result, not a new one
    for cid, res, score in (("r1-a-k9", "res/r1-a-k9.png", None), ("r1-a-k0c", "res/r1-a-k0-copy.png", 0.1)):
        out.append(Candidate(id=cid, round=1, input_id="a", seed=9, model="m", steps=4, source="in/a_src.png",
                             mask="in/a_mask.png", result=res, score=score))
    write_candidates(d / "candidates.json", out)
    return d / "candidates.json"


def test_margin_rule_drops_ties_and_orders_by_score(cands):
    samples = read_scored(cands)
    prefs, stats = margin_pairs(samples, margin=0.3)
    got = {(p.preferred.name, p.rejected.name) for p in prefs}
    # a: 0.9-0.5 and 0.9-0.45 pass, 0.5-0.45 tie; b: 0.8-0.2 twice pass, 0.8-0.8 tie
    assert got == {("r1-a-k0.png", "r1-a-k1.png"), ("r1-a-k0.png", "r1-a-k2.png"),
                   ("r1-b-k0.png", "r1-b-k1.png"), ("r1-b-k2.png", "r1-b-k1.png")}
    assert stats["ties"] == 2
    assert all(p.rule == "score_margin" and p.extra["preferred_score"] > p.extra["rejected_score"] for p in prefs)
    capped, _ = margin_pairs(samples, margin=0.3, max_per_input=1)
    assert len(capped) == 2  # one per input, the largest gap first
    assert {(p.extra["preferred_score"], p.extra["rejected_score"]) for p in capped} == {(0.9, 0.45), (0.8, 0.2)}


def test_good_bad_rule_pairs_every_good_with_every_bad_of_the_same_input(tmp_path):
    for name, v in (("s", 1), ("m", 255), ("g1", 2), ("g2", 3), ("b1", 4), ("s2", 5), ("g3", 6)):
        _img(tmp_path / f"{name}.png", v)
    trip = [Triplet(source=s, mask="m.png", GT=g, score=v)
            for s, g, v in (("s.png", "g1.png", 1), ("s.png", "g2.png", 1), ("s.png", "b1.png", 0),
                            ("s2.png", "g3.png", 1))]
    write_entries(tmp_path / "meta.json", trip)
    prefs, stats = good_bad_pairs(read_scored(tmp_path / "meta.json"), good_min=0.5, bad_max=0.5)
    assert sorted((p.preferred.name, p.rejected.name) for p in prefs) == [("g1.png", "b1.png"), ("g2.png", "b1.png")]
    assert stats["inputs_without_both"] == 1 and {p.rule for p in prefs} == {"good_bad"}


def test_human_pairs_drop_ties_and_keep_extra_keys(tmp_path):
    for name, v in (("s", 1), ("m", 255), ("x", 2), ("y", 3), ("x_copy", 2)):
        _img(tmp_path / f"{name}.png", v)
    entries = [Pair(source="s.png", mask="m.png", preferred="x.png", rejected="y.png", pair_id="p1", annotators=3),
               Pair(source="s.png", mask="m.png", preferred="x.png", rejected="y.png", tie=True),
               Pair(source="s.png", mask="m.png", preferred="x.png", rejected="x_copy.png")]  # same bytes: a tie
    write_entries(tmp_path / "pairs.json", entries)
    prefs, ties = human_pairs(tmp_path / "pairs.json")
    assert ties == 2 and len(prefs) == 1
    assert prefs[0].rule == "human_pair" and prefs[0].extra == {"pair_id": "p1", "annotators": 3}


def test_dedupe_priority_duplicates_conflicts_and_cancelling_votes(cands, tmp_path):
    margin, _ = margin_pairs(read_scored(cands), margin=0.3)
    a0_a1 = next(p for p in margin if p.preferred.name == "r1-a-k0.png" and p.rejected.name == "r1-a-k1.png")
    b = next(p for p in margin if p.preferred.name == "r1-b-k0.png")
    human_same = a0_a1.__class__(a0_a1.source, a0_a1.mask, a0_a1.preferred, a0_a1.rejected, "human_pair")
    human_flip = b.__class__(b.source, b.mask, b.rejected, b.preferred, "human_pair")   # disagrees with scores
    vote_a = b.__class__(b.source, b.mask, b.preferred, b.rejected, "good_bad")
    vote_b = b.__class__(b.source, b.mask, b.rejected, b.preferred, "good_bad")
    kept, stats = dedupe([*margin, human_same, human_flip, human_same, vote_a, vote_b])
    assert len(kept) == len(margin)                 # one pair per (input, unordered results)
    rules = {(p.preferred.name, p.rejected.name): p.rule for p in kept}
    assert rules[("r1-a-k0.png", "r1-a-k1.png")] == "human_pair"
    assert rules[("r1-b-k1.png", "r1-b-k0.png")] == "human_pair"   # the human choice wins over the score
    # human_same twice: 1 duplicate; margin pairs under decided human pairs: 2 duplicates, 1 conflict;
    # good_bad votes cancel inside their rule but come after the human decision: 2 duplicates, 1 conflict
    assert stats["duplicates"] == 5 and stats["conflicts"] == 2
    kept2, stats2 = dedupe([vote_a, vote_b])
    assert kept2 == [] and stats2["ties_good_bad"] == 1


def test_written_pairs_are_self_contained_rorem_pairs(cands, tmp_path):
    prefs, _ = margin_pairs(read_scored(cands), margin=0.3)
    out = tmp_path / "pairs_out"
    write_pairs(out, prefs)
    back = read_pairs(out / "pairs.json")
    assert len(back) == 4
    for p in back:
        for key in ("source", "mask", "preferred", "rejected"):
            assert resolve_in_root(out, getattr(p, key)).is_file()
        assert p.rule == "score_margin" and p.input_id in ("a", "b") and p.preferred_id.startswith("r1-")
    # content-addressed: the shared mask bytes are one file; both inputs' sources are distinct files
    assert len(list((out / "images").iterdir())) == len({getattr(p, k) for p in back for k in
                                                         ("source", "mask", "preferred", "rejected")})


def test_stage_counts_per_rule_and_cli(cands, tmp_path):
    cfg = stage_config("build_pairs", {"base": {}, "build_pairs": {"margin": 0.3}})
    res = build_pairs.run(cfg, tmp_path / "out", scored=[cands], labels=[cands])
    # labels: scores >= 0.5 good / < 0.5 bad: a: {0.9, 0.5} x {0.45}; b: {0.8, 0.8} x {0.2}
    assert res.per_rule == {"human_pair": 0, "good_bad": 4, "score_margin": 1}
    assert res.n_pairs == 5 and res.dropped["duplicates"] == 3 and res.dropped["unscored"] == 2
    assert res.dropped["ties_score_margin"] == 2
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump({"base": {}, "build_pairs": {"margin": 0.3}}))
    rc = build_pairs.main(["--params", str(params), "--scored", str(cands), "--out", str(tmp_path / "cli"),
                           "--metrics", str(tmp_path / "m.json")])
    assert rc == 0 and json.loads((tmp_path / "m.json").read_text())["per_rule"]["score_margin"] == 4


def test_config_rejects_inconsistent_thresholds_and_zero_margin():
    with pytest.raises(ValueError, match="bad_max"):
        BuildPairsConfig(base={}, good_min=0.4, bad_max=0.6)
    with pytest.raises(ConfigError, match="margin"):
        stage_config("build_pairs", {"base": {}, "build_pairs": {"margin": 0}})
    with pytest.raises(ValueError, match="no inputs"):
        build_pairs.run(BuildPairsConfig(base={}), None)
