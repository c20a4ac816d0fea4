"""`rorem remove`: a 1000x750 photo comes back 1000x750, identical outside the dilated (and feathered)
mask; the folder form matches by stem; prompts / CFG change the result; bad input is named."""

import numpy as np
import pytest
import yaml
from PIL import Image

from flows.cli import main
from rorem_core.data.fullres import changed_region, default_feather
from tests.conftest import tiny_params
from tests.helpers.photos import scene


@pytest.fixture
def project(tmp_path, random_tiny_model):
    root = tmp_path / "proj"
    root.mkdir()
    (root / "params.yaml").write_text(yaml.safe_dump(tiny_params(root)))
    return root, random_tiny_model(64)


def _photo(d, name, w, h, seed):
    src, _, m = scene(w, h, seed)
    d.mkdir(parents=True, exist_ok=True)
    Image.fromarray(src).save(d / f"{name}.jpg", quality=95)
    (d.parent / "masks").mkdir(exist_ok=True)
    Image.fromarray(m).save(d.parent / "masks" / f"{name}.png")
    return d / f"{name}.jpg", d.parent / "masks" / f"{name}.png"


def _remove(root, model, *args):
    return main(["remove", *map(str, args), "--model", str(model), "--steps", "3", "--root", str(root)])


def test_full_resolution_photo_comes_back_full_size_and_unchanged_outside_the_mask(project, tmp_path, capsys):
    root, model = project
    img, mask = _photo(tmp_path / "images", "big", 1000, 750, 0)
    out = tmp_path / "big_out.png"
    assert _remove(root, model, img, mask, "-o", out, "--dilate", "5") == 0
    assert "1000x750" in capsys.readouterr().out
    res = np.asarray(Image.open(out))
    src = np.asarray(Image.open(img).convert("RGB"))
    assert res.shape == (750, 1000, 3)
    m = np.asarray(Image.open(mask)) >= 128
    outside = ~changed_region(m, 5, default_feather(750, 1000, 64))
    assert np.array_equal(res[outside], src[outside])
    assert np.abs(res[m].astype(int) - src[m]).mean() > 5          # the object's pixels were replaced


def test_folder_form_prompts_and_bad_input(project, tmp_path, capsys):
    root, model = project
    for i, (w, h) in enumerate([(120, 90), (64, 64), (70, 110)]):
        _photo(tmp_path / "images", f"p{i}", w, h, i)
    out = tmp_path / "out"
    assert _remove(root, model, tmp_path / "images", tmp_path / "masks", "-o", out) == 0
    assert sorted(p.name for p in out.iterdir()) == ["p0.png", "p1.png", "p2.png"]
    assert Image.open(out / "p2.png").size == (70, 110)
    plain = np.asarray(Image.open(out / "p0.png"))
    assert _remove(root, model, tmp_path / "images" / "p0.jpg", tmp_path / "masks" / "p0.png", "-o",
                   tmp_path / "q.png", "--quality-prompts", "--guidance-scale", "3") == 0
    assert not np.array_equal(np.asarray(Image.open(tmp_path / "q.png")), plain)   # CFG + prompt took effect
    capsys.readouterr()
    Image.fromarray(np.zeros((10, 10), np.uint8)).save(tmp_path / "masks" / "orphan.png")
    assert _remove(root, model, tmp_path / "images", tmp_path / "masks", "-o", out) == 1
    assert "orphan.png: no image" in capsys.readouterr().err
    Image.fromarray(np.full((10, 10), 255, np.uint8)).save(tmp_path / "small_mask.png")
    assert _remove(root, model, tmp_path / "images" / "p0.jpg", tmp_path / "small_mask.png") == 1
    assert "mask is 10x10 but" in capsys.readouterr().err
    assert main(["remove", "a.png", "b.png", "--model", "dpo", "--root", str(root)]) == 1
    assert "no dpo model yet" in capsys.readouterr().err


def test_folder_form_checks_every_pair_before_removing_any(project, tmp_path, capsys):
    """A mask of another size and an empty mask among good pairs: both named at once, nothing written."""
    root, model = project
    for i, (w, h) in enumerate([(64, 64), (80, 60), (60, 80)]):
        _photo(tmp_path / "images", f"p{i}", w, h, i)
    Image.fromarray(np.full((10, 10), 255, np.uint8)).save(tmp_path / "masks" / "p1.png")   # wrong size
    Image.fromarray(np.zeros((80, 60), np.uint8)).save(tmp_path / "masks" / "p2.png")        # empty
    out = tmp_path / "out"
    assert _remove(root, model, tmp_path / "images", tmp_path / "masks", "-o", out) == 1
    err = capsys.readouterr().err
    assert "p1.png: mask is 10x10 but" in err and "p2.png: the mask is empty" in err and "nothing removed" in err
    assert not out.exists()


def test_model_names_include_the_rl_remover_and_ambiguous_stems_are_named(tmp_path):
    from rorem_core.models.oneshot import ModelNotFound, pairs_in, resolve_model

    for rel in ("models/rl/round-1", "models/rl/round-3", "models/remover/round-2"):
        (tmp_path / rel).mkdir(parents=True)
    assert resolve_model(tmp_path, "rl") == (tmp_path / "models/rl/round-3", "rl")
    assert resolve_model(tmp_path, "rl@1") == (tmp_path / "models/rl/round-1", "rl")
    assert resolve_model(tmp_path, "round-2") == (tmp_path / "models/remover/round-2", "sft")
    with pytest.raises(ModelNotFound, match=r"no rl model of round 2 .*have rounds \[1, 3\]"):
        resolve_model(tmp_path, "rl@2")
    for d in ("images", "masks"):
        (tmp_path / d).mkdir()
    for name in ("images/a.jpg", "images/a.png", "masks/a.png", "images/b.png", "masks/b.png"):
        Image.fromarray(np.zeros((8, 8), np.uint8)).save(tmp_path / name)
    pairs, problems = pairs_in(tmp_path / "images", tmp_path / "masks")
    assert [p.name for p, _ in pairs] == ["a.jpg", "b.png"]
    assert problems == [f"{tmp_path / 'images/a.png'}: same stem as a.jpg (files are matched by stem; rename or "
                        "remove one)"]
