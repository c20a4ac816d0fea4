"""Formats: the real RORem layout loads unchanged; write/read round trips; refusals."""

import json
import shutil
from pathlib import Path

import pytest

from rorem_core.data.formats import (
    Candidate,
    FormatError,
    Pair,
    PoolItem,
    Triplet,
    read_candidates,
    read_pairs,
    read_pool,
    read_triplets,
    resolve_in_root,
    write_candidates,
    write_entries,
)
from rorem_core.data.images import load_mask, load_rgb
from rorem_core.data.validate import validate_dataset

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "rorem_layout"


def _cand(i: int, **kw) -> Candidate:
    base = dict(id=f"r1-p{i:04d}-s0", round=1, input_id=f"r1-p{i:04d}", seed=0, model="models/remover",
                steps=25, source=f"source/{i}.png", mask=f"mask/{i}.png", result=f"results/{i}.png")
    return Candidate(**{**base, **kw})


def test_real_rorem_layout_loads_unchanged():
    raw = json.loads((FIXTURE / "meta.json").read_text())
    triplets = read_triplets(FIXTURE / "meta.json")
    assert [t.model_dump(exclude_none=True) for t in triplets] == raw
    assert set(raw[0]) == {"source", "mask", "GT"}
    for t in triplets:  # grayscale source and RGBA GT are converted, masks are RGB files
        src, gt, m = (load_rgb(FIXTURE / t.source), load_rgb(FIXTURE / t.GT), load_mask(FIXTURE / t.mask))
        assert src.shape == gt.shape == (32, 32, 3) and m.shape == (32, 32) and m.any() and not m.all()


def test_real_rorem_layout_validates_ok():
    rep = validate_dataset(FIXTURE)
    assert rep.ok and rep.kind == "triplets" and rep.n_entries == 4, rep.format()
    assert {n.file for n in rep.notes} == {"source/000002.png", "GT/000003.png"}


def test_fixture_rewrite_is_byte_identical_json(tmp_path):
    shutil.copy(FIXTURE / "meta.json", tmp_path / "meta.json")
    write_entries(tmp_path / "out.json", read_triplets(tmp_path / "meta.json"))
    assert json.loads((tmp_path / "out.json").read_text()) == json.loads((FIXTURE / "meta.json").read_text())


def test_triplets_round_trip_keeps_extra_keys(tmp_path):
    entries = [Triplet(source="source/a.png", mask="mask/a.png", GT="GT/a.png", id="a", band="hard")]
    write_entries(tmp_path / "meta.json", entries)
    back = read_triplets(tmp_path / "meta.json")
    assert back[0].model_dump(exclude_none=True) == {"source": "source/a.png", "mask": "mask/a.png",
                                                     "GT": "GT/a.png", "id": "a", "band": "hard"}


def test_scored_triplets_round_trip(tmp_path):
    entries = [Triplet(source="s/a.png", mask="m/a.png", GT="g/a.png", score=s) for s in (1.0, 0.0, 0.73)]
    write_entries(tmp_path / "meta.json", entries)
    assert [t.score for t in read_triplets(tmp_path / "meta.json")] == [1.0, 0.0, 0.73]
    assert json.loads((tmp_path / "meta.json").read_text())[1]["score"] == 0.0  # 0 is kept, not dropped


def test_pairs_and_pool_round_trip(tmp_path):
    pairs = [Pair(source="s.png", mask="m.png", preferred="r/1.png", rejected="r/2.png", round=2)]
    write_entries(tmp_path / "pairs.json", pairs)
    assert read_pairs(tmp_path / "pairs.json") == pairs
    pool = [PoolItem(id="r1-p0000", source="source/a.png", mask="mask/a.png", band="easy")]
    write_entries(tmp_path / "pool.json", pool)
    assert read_pool(tmp_path / "pool.json") == pool


def test_candidates_round_trip_and_duplicate_refusal(tmp_path):
    cands = [_cand(0), _cand(1, score=0.4, score_model="models/disc")]
    write_candidates(tmp_path / "candidates.json", cands)
    assert read_candidates(tmp_path / "candidates.json") == cands
    with pytest.raises(FormatError, match="duplicate candidate ids"):
        write_candidates(tmp_path / "dup.json", [_cand(0), _cand(0)])
    assert not (tmp_path / "dup.json").exists()
    data = json.loads((tmp_path / "candidates.json").read_text())
    data["candidates"].append(data["candidates"][0])
    (tmp_path / "dup2.json").write_text(json.dumps(data))
    with pytest.raises(FormatError, match="duplicate candidate id"):
        read_candidates(tmp_path / "dup2.json")


def test_read_refuses_missing_keys(tmp_path):
    (tmp_path / "meta.json").write_text(json.dumps([{"source": "a.png", "mask": "b.png"}]))
    with pytest.raises(FormatError, match="GT"):
        read_triplets(tmp_path / "meta.json")


@pytest.mark.parametrize("rel,match", [("/etc/passwd", "absolute"), ("../x.png", "escapes"),
                                       ("a/../../x.png", "escapes"), ("C:/x.png", "absolute")])
def test_resolve_in_root_refuses(tmp_path, rel, match):
    with pytest.raises(FormatError, match=match):
        resolve_in_root(tmp_path, rel, where="meta.json entry 0")


def test_resolve_in_root_accepts_nested(tmp_path):
    assert resolve_in_root(tmp_path, "a/./b/../c.png") == (tmp_path / "a" / "c.png").resolve()


def test_dataset_file_resolves_a_folder_or_its_file(tmp_path):
    from rorem_core.data.formats import dataset_file

    assert dataset_file(tmp_path / "x.json") == tmp_path / "x.json"           # a file path is itself
    assert dataset_file(tmp_path) == tmp_path / "meta.json"                    # nothing there: the default name
    (tmp_path / "pairs.json").write_text("[]")
    assert dataset_file(tmp_path, "meta.json", "pairs.json") == tmp_path / "pairs.json"   # the one that exists
    (tmp_path / "meta.json").write_text("[]")
    assert dataset_file(tmp_path, "meta.json", "pairs.json") == tmp_path / "meta.json"    # first match wins
