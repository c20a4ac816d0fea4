"""Dataset validation: every bad case is reported with its file and fix, all at once, read-only."""

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from rorem_core.data.formats import Candidate, write_candidates
from rorem_core.data.synthetic import SyntheticConfig, write_triplets
from rorem_core.data.validate import DatasetInvalid, detect_kind, main, require_valid, validate_dataset
from rorem_core.io import sha256_file

CFG = SyntheticConfig(size=32)


@pytest.fixture
def ds(tmp_path) -> Path:
    """A valid 4-triplet dataset (32 px) in RORem layout."""
    write_triplets(tmp_path / "ds", CFG, "v", 4, hard_fraction=0.5)
    return tmp_path / "ds"


def _meta(ds: Path) -> list[dict]:
    return json.loads((ds / "meta.json").read_text())


def _write_meta(ds: Path, meta) -> None:
    (ds / "meta.json").write_text(json.dumps(meta))


def _one(ds: Path, kind=None):
    rep = validate_dataset(ds, kind)
    assert not rep.ok
    return rep


def _find(rep, file=None, entry=None, text=""):
    hits = [p for p in rep.problems if (file is None or p.file == file) and
            (entry is None or p.entry == entry) and text in p.message]
    assert hits, f"no problem with file={file} entry={entry} text={text!r} in:\n{rep.format()}"
    assert all(h.fix for h in hits)
    return hits[0]


def _save(path: Path, arr: np.ndarray) -> None:
    Image.fromarray(arr).save(path)


def test_valid_dataset_is_ok(ds):
    rep = validate_dataset(ds / "meta.json")
    assert rep.ok and rep.kind == "triplets" and rep.n_entries == 4 and not rep.notes, rep.format()
    assert require_valid(ds).ok


def test_missing_file(ds):
    (ds / _meta(ds)[1]["GT"]).unlink()
    _find(_one(ds), file="GT/v-00001.png", entry=1, text="file not found")


def test_zero_byte_image(ds):
    (ds / "source" / "v-00002.png").write_bytes(b"")
    _find(_one(ds), file="source/v-00002.png", entry=2, text="0 bytes")


def test_truncated_png(ds):
    p = ds / "GT" / "v-00000.png"
    data = p.read_bytes()
    p.write_bytes(data[: len(data) // 2])
    _find(_one(ds), file="GT/v-00000.png", entry=0, text="cannot decode")


def test_not_an_image(ds):
    (ds / "mask" / "v-00003.png").write_text("hello")
    _find(_one(ds), file="mask/v-00003.png", entry=3, text="cannot decode")


@pytest.mark.parametrize("key", ["mask", "GT"])
def test_size_mismatch(ds, key):
    rel = _meta(ds)[0][key]
    _save(ds / rel, np.full((16, 32, 3), 255, np.uint8) if key == "GT" else
          np.pad(np.full((8, 8), 255, np.uint8), 4))
    p = _find(_one(ds), file=rel, entry=0, text="sizes differ")
    assert "source/v-00000.png 32x32" in p.message and "32x" in p.fix


def test_absolute_and_escaping_paths(ds, tmp_path):
    meta = _meta(ds)
    outside = tmp_path / "outside.png"
    _save(outside, np.zeros((32, 32, 3), np.uint8))
    meta[0]["source"] = str(outside)
    meta[1]["GT"] = "../outside.png"
    _write_meta(ds, meta)
    rep = _one(ds)
    assert "relative" in _find(rep, file=str(outside), entry=0, text="absolute").fix
    _find(rep, file="../outside.png", entry=1, text="escapes")


def test_symlink_escaping_root_is_refused(ds, tmp_path):
    outside = tmp_path / "outside.png"
    _save(outside, np.zeros((32, 32, 3), np.uint8))
    (ds / "source" / "link.png").symlink_to(outside)
    meta = _meta(ds)
    meta[0]["source"] = "source/link.png"
    _write_meta(ds, meta)
    _find(_one(ds), file="source/link.png", entry=0, text="escapes")


def test_duplicate_entry_and_id(ds):
    meta = _meta(ds)
    meta.append(dict(meta[1]))                               # same source+mask+GT (and id)
    meta.append({**meta[2], "source": "./" + meta[2]["source"], "id": "other"})  # same files, spelled differently
    _write_meta(ds, meta)
    rep = _one(ds)
    _find(rep, entry=4, text="duplicate of entry 1")
    _find(rep, entry=4, text="duplicate id 'v-00001'")
    _find(rep, entry=5, text="duplicate of entry 2")


def test_empty_and_full_masks(ds):
    meta = _meta(ds)
    _save(ds / meta[0]["mask"], np.zeros((32, 32), np.uint8))
    _save(ds / meta[1]["mask"], np.full((32, 32), 255, np.uint8))
    rep = _one(ds)
    _find(rep, file=meta[0]["mask"], entry=0, text="mask is empty")
    _find(rep, file=meta[1]["mask"], entry=1, text="covers the whole image")


def test_invalid_json(ds):
    (ds / "meta.json").write_text('[{"source": "a.png",]')
    p = _find(_one(ds), file=str(ds / "meta.json"), text="invalid JSON")
    assert p.entry is None


def test_wrong_top_level_and_missing_meta(ds, tmp_path):
    (ds / "meta.json").write_text(json.dumps({"source": "a.png"}))
    _find(_one(ds, "triplets"), text="expected a JSON list")
    (tmp_path / "empty").mkdir()
    _find(_one(tmp_path / "empty"), text="file not found")


def test_empty_dataset_and_unknown_keys(ds):
    _write_meta(ds, [])
    _find(_one(ds), text="no entries")
    _find(_one(ds, "pool"), text="no entries")
    _write_meta(ds, [{"image": "a.png"}])
    assert "--kind" in _find(_one(ds), text="cannot tell the dataset kind").fix


def test_missing_keys_and_wrong_types(ds):
    meta = _meta(ds)
    del meta[0]["GT"]
    meta[1]["mask"] = 5
    meta[2] = "source/v-00002.png"
    _write_meta(ds, meta)
    rep = _one(ds, "triplets")
    _find(rep, entry=0, text="missing key 'GT'")
    _find(rep, entry=1, text="key 'mask'")
    _find(rep, entry=2, text="expected an object")


def test_grayscale_rgba_and_palette_inputs_pass_with_notes(ds):
    meta = _meta(ds)
    for i, mode in enumerate(["L", "RGBA", "P"]):
        for key in ("source", "GT"):
            with Image.open(ds / meta[i][key]) as im:
                im.convert(mode).save(ds / meta[i][key])
    rep = validate_dataset(ds)
    assert rep.ok, rep.format()
    assert {(n.entry, n.file) for n in rep.notes} == {(i, meta[i][k]) for i in range(3) for k in ("source", "GT")}


def test_all_problems_reported_together_and_require_valid_lists_them(ds):
    meta = _meta(ds)
    (ds / meta[0]["source"]).unlink()                          # missing
    (ds / meta[1]["GT"]).write_bytes(b"")                      # zero-byte
    _save(ds / meta[2]["mask"], np.zeros((32, 32), np.uint8))  # empty mask
    meta[3]["GT"] = "../../x.png"                              # escaping
    meta.append(dict(meta[2]))                                 # duplicate (and duplicate id)
    _write_meta(ds, meta)
    rep = validate_dataset(ds)
    files = {p.file for p in rep.problems}
    assert {meta[0]["source"], meta[1]["GT"], meta[2]["mask"], "../../x.png"} <= files
    assert any("duplicate of entry 2" in p.message for p in rep.problems)
    assert len(rep.problems) >= 7  # empty mask counted for entries 2 and 4, plus duplicate + duplicate id
    with pytest.raises(DatasetInvalid) as err:
        require_valid(ds)
    assert isinstance(err.value, ValueError)
    for p in rep.problems:
        assert p.message in str(err.value)


def test_validation_does_not_modify_files(ds):
    meta = _meta(ds)
    (ds / meta[0]["GT"]).write_bytes((ds / meta[0]["GT"]).read_bytes()[:40])  # truncated
    with Image.open(ds / meta[1]["source"]) as im:
        im.convert("RGBA").save(ds / meta[1]["source"])
    meta[2]["mask"] = "/abs/mask.png"
    _write_meta(ds, meta)
    files = sorted(p for p in ds.rglob("*"))
    before = {p: (sha256_file(p), p.stat().st_mtime_ns) for p in files if p.is_file()}
    validate_dataset(ds)
    main([str(ds)])
    assert sorted(ds.rglob("*")) == files
    assert {p: (sha256_file(p), p.stat().st_mtime_ns) for p in files if p.is_file()} == before


def test_kind_detection():
    assert detect_kind([{"source": "a", "mask": "b", "GT": "c"}]) == "triplets"
    assert detect_kind([{"source": "a", "mask": "b", "GT": "c", "score": 1}]) == "scored"
    assert detect_kind([{"source": "a", "mask": "b", "preferred": "c", "rejected": "d"}]) == "pairs"
    assert detect_kind([{"id": "x", "source": "a", "mask": "b"}]) == "pool"
    assert detect_kind([{"id": "x", "GT": "c"}]) == "hidden"
    assert detect_kind({"version": 1, "candidates": []}) == "candidates"
    assert detect_kind([{"foo": 1}]) is None and detect_kind("x") is None
    with pytest.raises(ValueError, match="unknown dataset kind"):
        validate_dataset(".", kind="triplet")


def test_scored_triplets_and_score_range(ds):
    meta = _meta(ds)
    for e, s in zip(meta, [1, 0, 0.5, 1.7], strict=True):
        e["score"] = s
    _write_meta(ds, meta)
    rep = _one(ds)
    assert rep.kind == "scored"
    _find(rep, entry=3, text="outside [0, 1]")
    assert len(rep.problems) == 1
    del meta[0]["score"]
    meta[3]["score"] = 1
    _write_meta(ds, meta)
    _find(_one(ds, "scored"), entry=0, text="missing key 'score'")


def test_pairs(ds):
    t = _meta(ds)
    pairs = [{"source": t[0]["source"], "mask": t[0]["mask"], "preferred": t[0]["GT"], "rejected": t[1]["GT"]},
             {"source": t[1]["source"], "mask": t[1]["mask"], "preferred": t[1]["GT"], "rejected": t[1]["GT"]}]
    _write_meta(ds, pairs)
    rep = _one(ds)
    assert rep.kind == "pairs" and len(rep.problems) == 1
    _find(rep, entry=1, text="same file")
    _save(ds / t[1]["GT"], np.zeros((16, 16, 3), np.uint8))
    _find(_one(ds), file=t[1]["GT"], entry=0, text="sizes differ")


def test_candidates_manifest(ds):
    t = _meta(ds)
    def cand(i, cid):
        return Candidate(id=cid, round=1, input_id=f"p{i}", seed=0, model="m", steps=4,
                         source=t[i]["source"], mask=t[i]["mask"], result=t[i]["GT"])
    write_candidates(ds / "candidates.json", [cand(0, "a"), cand(1, "b")])
    assert validate_dataset(ds, "candidates").ok  # the folder also holds meta.json: kind picks the file
    (ds / "meta.json").unlink()
    rep = validate_dataset(ds)
    assert rep.ok and rep.kind == "candidates" and rep.n_entries == 2, rep.format()
    data = json.loads((ds / "candidates.json").read_text())
    data["candidates"].append({**data["candidates"][1], "result": t[2]["GT"]})
    data["candidates"][0]["extra_key"] = 1
    (ds / "candidates.json").write_text(json.dumps(data))
    rep = _one(ds)
    _find(rep, entry=2, text="duplicate id 'b'")
    _find(rep, entry=0, text="extra_key")


def test_cli_exit_codes_and_output(ds, capsys):
    assert main([str(ds)]) == 0
    assert "OK" in capsys.readouterr().out
    (ds / "mask" / "v-00001.png").unlink()
    assert main([str(ds / "meta.json"), "--kind", "triplets"]) == 1
    out = capsys.readouterr().out
    assert "mask/v-00001.png" in out and "fix:" in out and "1 problem" in out
