"""`rorem import`: folders and RORem datasets in, normalised PNGs under data/imported, params.yaml
naming them; every bad input refused at once with the file and the fix, nothing changed."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from rorem_core.data.importer import ImportRefused, import_dataset
from tests.helpers.photos import scene, write_folder

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def project(tmp_path):
    root = tmp_path / "proj"
    root.mkdir()
    shutil.copy(REPO / "params.yaml", root / "params.yaml")
    return root


def _snapshot(root: Path) -> dict:
    files = {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*")
             if p.is_file() and ".rorem" not in p.parts}
    return files


def test_folder_import_normalises_keeps_sizes_and_names_it_in_params(project, tmp_path):
    src = write_folder(tmp_path / "photos")
    res = import_dataset(project, "seed", src)
    assert res.n == 5 and res.has_gt and res.changed and res.path.startswith("data/imported/seeds/photos-")
    meta = json.loads((project / res.path / "meta.json").read_text())
    by_id = {e["id"]: e for e in meta}
    assert set(by_id) == {"plain0", "plain1", "rgba", "gray16", "rotated"}
    for e in meta:
        s, m, g = (Image.open(project / res.path / e[k]) for k in ("source", "mask", "GT"))
        assert s.mode == "RGB" and g.mode == "RGB" and m.mode == "L" and s.size == m.size == g.size
        assert set(np.unique(np.asarray(m))) <= {0, 255}
    assert Image.open(project / res.path / by_id["plain0"]["source"]).size == (96, 64)     # any size kept
    rotated = np.asarray(Image.open(project / res.path / by_id["rotated"]["source"]), np.float32)
    assert rotated.shape == (64, 48, 3)                              # EXIF orientation applied
    assert np.abs(rotated - scene(48, 64, 12)[0]).mean() < 5         # upright, as the mask was drawn
    gray = np.asarray(Image.open(project / res.path / by_id["gray16"]["source"]))
    assert gray.max() > 100                                          # 16-bit scaled, not clipped to white
    params = yaml.safe_load((project / "params.yaml").read_text())
    assert params["data"]["seed"] == res.path and params["rounds"]["1"]["train"] == res.path
    assert "# rorem-loop parameters" in (project / "params.yaml").read_text()   # comments kept


def test_same_content_twice_changes_nothing(project, tmp_path):
    src = write_folder(tmp_path / "photos")
    first = import_dataset(project, "test", src)
    before = _snapshot(project)
    again = import_dataset(project, "test", src)
    assert again.path == first.path and not again.changed and _snapshot(project) == before


def test_rorem_meta_json_pool_without_gt(project, tmp_path):
    d = tmp_path / "rorem"
    (d / "source").mkdir(parents=True)
    (d / "mask").mkdir()
    meta = []
    for i in range(3):
        s, _, m = scene(80, 60, i)
        Image.fromarray(s).save(d / "source" / f"{i}.jpg")
        Image.fromarray(m).save(d / "mask" / f"{i}.png")
        meta.append({"source": f"source/{i}.jpg", "mask": f"mask/{i}.png"})
    (d / "meta.json").write_text(json.dumps(meta))
    res = import_dataset(project, "pool", d, round_n=1)
    assert res.n == 3 and not res.has_gt and res.hidden is None
    assert yaml.safe_load((project / "params.yaml").read_text())["rounds"]["1"]["pool"] == res.path
    pool = json.loads((project / res.path / "meta.json").read_text())
    assert [e["id"] for e in pool] == ["0", "1", "2"] and all("GT" not in e for e in pool)


def test_pool_with_gt_keeps_it_hidden_where_the_simulated_annotators_look(project, tmp_path):
    res = import_dataset(project, "pool", write_folder(tmp_path / "p"), round_n=2)
    assert res.hidden == res.path.replace("/pools/", "/hidden/")
    assert "GT" not in json.loads((project / res.path / "meta.json").read_text())[0]
    hidden = json.loads((project / res.hidden / "meta.json").read_text())
    assert len(hidden) == 5 and (project / res.hidden / hidden[0]["GT"]).is_file()
    assert yaml.safe_load((project / "params.yaml").read_text())["rounds"]["2"]["pool"] == res.path


def test_every_bad_input_is_named_with_its_fix_and_nothing_changes(project, tmp_path):
    d = write_folder(tmp_path / "bad", gt=False)
    Image.fromarray(scene(50, 50, 3)[0]).save(d / "images" / "no_mask.png")           # unmatched image
    Image.fromarray(scene(50, 50, 3)[2]).save(d / "masks" / "orphan.png")            # unmatched mask
    Image.fromarray(scene(90, 60, 4)[0]).save(d / "images" / "wrong_size.png")
    Image.fromarray(scene(30, 30, 4)[2]).save(d / "masks" / "wrong_size.png")        # mask of another size
    Image.fromarray(scene(40, 40, 5)[0]).save(d / "images" / "empty.png")
    Image.fromarray(np.zeros((40, 40), np.uint8)).save(d / "masks" / "empty.png")    # empty mask
    Image.fromarray(scene(40, 40, 6)[0]).save(d / "images" / "corrupt.jpg")
    raw = (d / "images" / "corrupt.jpg").read_bytes()
    (d / "images" / "corrupt.jpg").write_bytes(raw[: len(raw) // 2])                  # truncated JPEG
    Image.fromarray(scene(40, 40, 6)[2]).save(d / "masks" / "corrupt.png")
    outside = tmp_path / "secret.png"
    Image.fromarray(scene(40, 40, 7)[0]).save(outside)
    (d / "images" / "link.png").symlink_to(outside)                                   # symlink out of PATH
    Image.fromarray(scene(40, 40, 7)[2]).save(d / "masks" / "link.png")
    before = _snapshot(project)
    with pytest.raises(ImportRefused) as e:
        import_dataset(project, "pool", d)
    msg = str(e.value)
    for needle in ("no_mask.png: image has no mask", "orphan.png: mask has no image", "image sizes differ",
                   "resize", "empty.png: mask is empty", "corrupt.jpg: source: cannot decode",
                   "link.png: is a symbolic link", "copy the real file"):
        assert needle in msg, f"{needle!r} missing from:\n{msg}"
    assert "nothing imported" in msg and _snapshot(project) == before
    assert not (project / "data").exists()


def test_seed_without_gt_and_a_started_round_are_refused(project, tmp_path):
    d = write_folder(tmp_path / "nogt", gt=False)
    with pytest.raises(ImportRefused, match="seed set needs ground truth"):
        import_dataset(project, "seed", d)
    (project / "models" / "remover" / "round-1").mkdir(parents=True)
    before = _snapshot(project)
    started = r"(?s)--round 1: round 1 has already started .*fix: import into a later round: --round 2"
    with pytest.raises(ImportRefused, match=started):
        import_dataset(project, "pool", d, round_n=1)
    with pytest.raises(ImportRefused, match="--round 5: params.yaml declares rounds 1..1"):
        import_dataset(project, "pool", d, round_n=5)
    with pytest.raises(ImportRefused, match=r"(?s)rorem import seed: round 1 has already started .*trains round 1"
                                             r".*fix: import new photos as a pool"):
        import_dataset(project, "seed", write_folder(tmp_path / "with_gt"))
    assert _snapshot(project) == before
    res = import_dataset(project, "pool", d)         # no --round: the next unstarted round, declared new
    rounds = yaml.safe_load((project / "params.yaml").read_text())["rounds"]
    assert res.params == {"rounds.2": res.path} and rounds["2"]["pool"] == res.path and "1" in rounds


def test_partial_gt_and_an_empty_folder(project, tmp_path):
    d = write_folder(tmp_path / "part")
    (d / "gt" / "rgba.png").unlink()
    with pytest.raises(ImportRefused, match="1 entries have no GT while others do"):
        import_dataset(project, "test", d)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ImportRefused, match="neither meta.json nor images/ \\+ masks/"):
        import_dataset(project, "pool", tmp_path / "empty")


def test_meta_json_paths_out_of_path_are_refused(project, tmp_path):
    d = tmp_path / "rorem"
    (d / "source").mkdir(parents=True)
    s, _, m = scene(40, 40, 1)
    Image.fromarray(s).save(tmp_path / "secret.png")
    Image.fromarray(s).save(d / "source" / "a.png")
    Image.fromarray(m).save(d / "mask.png")
    (d / "meta.json").write_text(json.dumps([{"source": "../secret.png", "mask": "mask.png"},
                                             {"source": str(tmp_path / "secret.png"), "mask": "mask.png"},
                                             {"source": "source/a.png", "mask": "mask.png"}]))
    before = _snapshot(project)
    with pytest.raises(ImportRefused) as e:
        import_dataset(project, "pool", d)
    assert "'../secret.png' escapes the dataset root" in str(e.value) and "is absolute" in str(e.value)
    assert _snapshot(project) == before and not (project / "data").exists()


def test_files_sharing_a_stem_are_refused_and_other_types_noted(project, tmp_path):
    d = write_folder(tmp_path / "dup", gt=False)
    Image.fromarray(scene(96, 64, 0)[0]).save(d / "images" / "plain0.jpg")      # plain0.png exists too
    (d / "images" / "holiday.heic").write_bytes(b"not read")
    (d / "images" / ".DS_Store").write_bytes(b"ignored")
    with pytest.raises(ImportRefused) as e:
        import_dataset(project, "pool", d)
    msg = str(e.value)
    assert "plain0.png: has the same stem as plain0.jpg" in msg and "rename or remove one of the two" in msg
    assert "1 problem(s)" in msg                                            # the note is not a problem
    assert "holiday.heic: skipped: .heic is not an image type" in msg and ".DS_Store" not in msg
    (d / "images" / "plain0.jpg").unlink()
    res = import_dataset(project, "pool", d)
    assert res.n == 5 and any("holiday.heic: skipped" in n for n in res.notes)
