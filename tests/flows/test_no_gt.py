"""Rounds on photos without ground truth: simulated annotators are refused before any work, with why
and what to use; a test split without GT is evaluated by the discriminator's estimate only, and the
report labels GT / human / discriminator numbers separately."""

import json
import shutil
from pathlib import Path

import yaml

from flows.cli import main
from rorem_core.config import stage_config
from rorem_core.data.importer import import_dataset
from rorem_core.evaluation.report import build_report
from rorem_core.stages import evaluate
from tests.conftest import tiny_params
from tests.helpers.photos import write_folder

REPO = Path(__file__).resolve().parents[2]


def _project(tmp_path):
    root = tmp_path / "proj"
    root.mkdir()
    shutil.copy(REPO / "params.yaml", root / "params.yaml")
    return root


def test_simulated_annotators_on_a_pool_without_gt_stop_before_any_work(tmp_path, capsys):
    root = _project(tmp_path)
    import_dataset(root, "pool", write_folder(tmp_path / "photos", gt=False), round_n=1)
    before = {p: p.read_bytes() for p in root.rglob("*") if p.is_file()}
    assert main(["round", "1", "--annotators", "simulated", "--root", str(root), "--no-commit", "--no-push"]) == 1
    err = capsys.readouterr().err
    assert "--annotators simulated needs ground truth" in err and "has none" in err
    assert "--annotators human" in err and "rorem import pool PATH --round 1" in err
    assert {p: p.read_bytes() for p in root.rglob("*") if p.is_file()} == before


def test_simulated_is_fine_with_gt_and_before_the_bootstrap(tmp_path):
    from tasks.rounds import simulated_refusal

    root = _project(tmp_path)
    assert simulated_refusal(root, 1, "data/pools/round-1") is None          # the bootstrap writes its GT
    res = import_dataset(root, "pool", write_folder(tmp_path / "photos"), round_n=2)
    assert simulated_refusal(root, 2, res.path) is None


def test_test_split_without_gt_is_estimated_by_the_discriminator_and_labelled(tmp_path, random_tiny_model):
    root = _project(tmp_path)
    res = import_dataset(root, "test", write_folder(tmp_path / "photos", gt=False))
    assert yaml.safe_load((root / "params.yaml").read_text())["data"]["test"] == res.path
    from rorem_core.reward.discriminator import (
        DiscriminatorInfo,
        build_discriminator,
        make_trainable,
        save_discriminator,
    )

    model = random_tiny_model(64)
    disc = build_discriminator(model, cache_dir=tmp_path / "c", info=DiscriminatorInfo(base=str(model), resolution=64))
    make_trainable(disc)
    save_discriminator(disc, tmp_path / "disc", model)
    params = tiny_params(tmp_path)
    params["evaluate"].update(steps=2, references=False, num_grid=2)
    out = root / "results" / "evaluate" / "round-1"
    r = evaluate.run(stage_config("evaluate", params), model, root / res.path, out, tmp_path / "disc")
    a = r.metrics["remover"]["all"]
    assert a["gt"] is False and a["success_rate"] is None and a["masked_psnr"] is None and a["n"] == 5
    assert a["est_source"] == "discriminator" and 0.0 <= a["est_success_rate"] <= 1.0
    per = json.loads((out / "per_image.json").read_text())
    assert all(isinstance(p["disc_score"], float) and p["source"] == "discriminator" for p in per)
    assert abs(a["est_success_rate"] - sum(p["disc_success"] for p in per) / 5) < 1e-9
    (out / "metrics.json").write_text(json.dumps(r.metrics))
    no_disc = evaluate.run(stage_config("evaluate", params), model, root / res.path, tmp_path / "e2", None)
    assert no_disc.metrics["remover"]["all"]["est_success_rate"] is None and "n/a" in no_disc.table
    build_report(root, root / "reports", [1])
    md = (root / "reports" / "report.md").read_text()
    assert "Where the numbers come from: **GT**" in md and "success (disc. estimate)" in md
    row = next(line for line in md.splitlines() if line.startswith("| 1 | remover |"))
    assert "| no | n/a | n/a | n/a |" in row and row.endswith(f"{100 * a['est_success_rate']:.1f}% |")
    html = (root / "reports" / "gallery.html").read_text()
    assert "no GT; disc.:" in html
