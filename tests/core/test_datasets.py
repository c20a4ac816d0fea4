"""Growing datasets: the labels@N chain and the trainset@N merge (seed + human-accepted + auto-accepted)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from rorem_core.config import BaseConfig
from rorem_core.data.datasets import Part, merge
from rorem_core.data.formats import FormatError
from rorem_core.io import sha256_file
from rorem_core.stages import labels as labels_stage
from rorem_core.stages import trainset as trainset_stage


def _png(path: Path, value: int, mask: bool = False) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    a = np.zeros((16, 16), np.uint8) if mask else np.full((16, 16, 3), value, np.uint8)
    if mask:
        a[4:10, 4:10] = 255
    Image.fromarray(a).save(path)
    return path.name


def make_set(root: Path, entries: list[tuple[int, int, float | None]], **extra) -> Path:
    """A meta.json folder; each entry (source value, GT value, score): one shared mask."""
    _png(root / "mask" / "m.png", 0, mask=True)
    meta = []
    for i, (src, gt, score) in enumerate(entries):
        e = {"source": f"source/{_png(root / 'source' / f's{src}.png', src)}", "mask": "mask/m.png",
             "GT": f"GT/{_png(root / 'GT' / f'g{gt}.png', gt)}", "id": f"e{i}", **extra}
        if score is not None:
            e["score"] = score
        meta.append(e)
    (root / "meta.json").write_text(json.dumps(meta))
    return root


def _snapshot(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): sha256_file(p) for p in sorted(root.rglob("*")) if p.is_file()}


def test_merge_dedupes_triples_stores_images_once_and_keeps_inputs(tmp_path):
    a = make_set(tmp_path / "a", [(10, 20, None), (11, 21, None)])
    b = make_set(tmp_path / "b", [(10, 20, 1.0), (12, 22, 1.0)])       # (10, 20) repeats a's first triple
    before = {p: _snapshot(p) for p in (a, b)}
    res = merge([Part(a, origin="seed"), Part(b, origin="human", round=3)], tmp_path / "out")
    assert [e["origin"] for e in res.entries] == ["seed", "seed", "human"] and res.n_duplicates == 1
    assert res.entries[2]["round"] == 3 and "round" not in res.entries[0]
    assert len(list((tmp_path / "out" / "mask").iterdir())) == 1           # one mask, by content
    for e in res.entries:                                                    # self-contained, content-named
        for k in ("source", "mask", "GT"):
            assert (tmp_path / "out" / e[k]).is_file() and Path(e[k]).stem == sha256_file(tmp_path / "out" / e[k])[:24]
    assert {p: _snapshot(p) for p in (a, b)} == before


def test_merge_keep_repeats_keeps_every_label(tmp_path):
    a = make_set(tmp_path / "a", [(10, 20, 1.0)])
    b = make_set(tmp_path / "b", [(10, 20, 0.0)])
    res = merge([Part(a, origin="human", round=1), Part(b, origin="human", round=2)], tmp_path / "out",
                keep_repeats=True)
    assert [(e["round"], e["score"]) for e in res.entries] == [(1, 1.0), (2, 0.0)]


def test_merge_refuses_an_escaping_path_and_writes_nothing(tmp_path):
    a = make_set(tmp_path / "a", [(10, 20, None)])
    meta = json.loads((a / "meta.json").read_text())
    meta[0]["GT"] = "../../outside.png"
    (a / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(Exception, match="meta.json") as e:
        merge([Part(a, origin="seed")], tmp_path / "out")
    assert "escapes" in str(e.value) or "outside" in str(e.value)
    assert not (tmp_path / "out").exists()


def test_labels_chain_from_round_0_accumulates_every_human_label(tmp_path):
    cfg = labels_stage.LabelsConfig(base=BaseConfig())
    round0 = tmp_path / "labels" / "round-0"
    round0.mkdir(parents=True)
    (round0 / "meta.json").write_text("[]")
    ann1 = make_set(tmp_path / "ann1" / "scored", [(10, 20, 1.0), (11, 21, 0.0)], round=1)
    r1 = labels_stage.run(cfg, round0, ann1.parent, tmp_path / "labels" / "round-1", round_id=1)
    assert r1.metrics == {"round": 1, "n_labels": 2, "n_previous": 0, "n_new": 2, "n_good": 1, "n_bad": 1}
    ann2 = make_set(tmp_path / "ann2" / "scored", [(10, 20, 0.0)], round=2)   # round 1's input, judged again
    r2 = labels_stage.run(cfg, tmp_path / "labels" / "round-1", ann2.parent, tmp_path / "labels" / "round-2",
                          round_id=2)
    assert r2.metrics["n_labels"] == 3 and r2.metrics["n_previous"] == 2 and r2.metrics["n_bad"] == 2


def test_trainset_adds_human_accepted_and_auto_accepted_results(tmp_path):
    cfg = trainset_stage.TrainsetConfig(base=BaseConfig())
    seed = make_set(tmp_path / "seed", [(1, 2, None), (3, 4, None)])
    human = make_set(tmp_path / "ann" / "scored", [(10, 20, 1.0), (11, 21, 0.0)], round=1)   # one rejected
    auto = make_set(tmp_path / "auto", [(12, 22, 0.9)], round=1)
    res = trainset_stage.run(cfg, seed, human.parent, auto, tmp_path / "trainset" / "round-1", round_id=1)
    assert res.metrics["n_total"] == 4 and res.metrics["n_previous"] == 2
    assert res.metrics["n_human"] == 1 and res.metrics["n_auto"] == 1
    meta = json.loads((tmp_path / "trainset" / "round-1" / "meta.json").read_text())
    assert [e["origin"] for e in meta] == ["seed", "seed", "human", "auto"]
    assert [e.get("accept_score") for e in meta] == [None, None, 1.0, 0.9] and not any("score" in e for e in meta)
    assert len({e["id"] for e in meta}) == 4                 # ids made unique across the merged sources
    from rorem_core.data.validate import require_valid
    require_valid(tmp_path / "trainset" / "round-1" / "meta.json")   # a valid training set for the next round
    # round 2 builds on round 1's set: previous entries keep their origin and round
    res2 = trainset_stage.run(cfg, tmp_path / "trainset" / "round-1", human.parent, make_set(tmp_path / "auto2", [], round=2),
                              tmp_path / "trainset" / "round-2", round_id=2)
    assert res2.metrics["n_total"] == 4 and res2.metrics["n_human"] == 0 and res2.metrics["n_duplicates"] == 1


def test_trainset_names_a_missing_input_and_the_fix(tmp_path):
    cfg = trainset_stage.TrainsetConfig(base=BaseConfig())
    seed = make_set(tmp_path / "seed", [(1, 2, None)])
    with pytest.raises(FormatError, match=r"data/auto/round-1.*run the stage that writes it"):
        trainset_stage.run(cfg, seed, seed, tmp_path / "data/auto/round-1", tmp_path / "out", round_id=1)
    assert not (tmp_path / "out").exists()
