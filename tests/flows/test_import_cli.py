"""`rorem import` through the CLI in a git + DVC project: the imported folders are `dvc add`ed, a
second import of the same content changes nothing, a refused one exits 1 naming the fix."""

import shutil
import subprocess
from pathlib import Path

import yaml

from flows.cli import main
from tests.helpers.photos import write_folder

REPO = Path(__file__).resolve().parents[2]
DVC = str(REPO / ".venv" / "bin" / "dvc") if (REPO / ".venv" / "bin" / "dvc").exists() else "dvc"


def test_import_pool_is_dvc_tracked_and_idempotent(tmp_path, capsys):
    root = tmp_path / "proj"
    root.mkdir()
    shutil.copy(REPO / "params.yaml", root / "params.yaml")
    subprocess.run(["git", "init", "-q"], cwd=root, check=True)
    subprocess.run([DVC, "init", "-q"], cwd=root, check=True)
    photos = write_folder(tmp_path / "photos")
    assert main(["import", "pool", str(photos), "--round", "2", "--root", str(root)]) == 0
    out = capsys.readouterr().out
    pool = yaml.safe_load((root / "params.yaml").read_text())["rounds"]["2"]["pool"]
    assert f"params.yaml rounds.2 = {pool}" in out
    assert (root / f"{pool}.dvc").is_file() and (root / f"{pool.replace('/pools/', '/hidden/')}.dvc").is_file()
    dvc_files = {p: p.read_text() for p in root.rglob("*.dvc") if p.is_file()}
    assert main(["import", "pool", str(photos), "--round", "2", "--root", str(root)]) == 0
    assert "already imported (nothing changed)" in capsys.readouterr().out
    assert {p: p.read_text() for p in root.rglob("*.dvc") if p.is_file()} == dvc_files
    assert main(["import", "test", str(photos), "--round", "2", "--root", str(root)]) == 2
    assert "--round is for pools" in capsys.readouterr().err


def test_a_refused_import_exits_1_naming_every_file_and_changes_nothing(tmp_path, capsys):
    from PIL import Image

    root = tmp_path / "proj"
    root.mkdir()
    shutil.copy(REPO / "params.yaml", root / "params.yaml")
    photos = write_folder(tmp_path / "photos", gt=False)
    (photos / "masks" / "rgba.png").unlink()                                     # an image without its mask
    Image.new("L", (10, 10), 0).save(photos / "masks" / "orphan.png")           # a mask without its image
    params = (root / "params.yaml").read_bytes()
    assert main(["import", "seed", str(photos), "--root", str(root)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: rorem import seed") and "nothing imported" in err
    for needle in ("rgba.png: image has no mask", "orphan.png: mask has no image", "seed set needs ground truth"):
        assert needle in err, needle
    assert (root / "params.yaml").read_bytes() == params and not (root / "data").exists()
