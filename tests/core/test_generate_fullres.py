"""Generation on imported photos of any size: candidates (what annotators see) are at the photo's size,
pasted back, identical to the photo outside the feathered mask."""

import json
import shutil
from pathlib import Path

import numpy as np
from PIL import Image

from rorem_core.config import stage_config
from rorem_core.data.fullres import changed_region, default_feather
from rorem_core.data.importer import import_dataset
from rorem_core.stages import generate
from tests.conftest import tiny_params
from tests.helpers.photos import write_folder

REPO = Path(__file__).resolve().parents[2]


def test_generate_on_imported_photos_writes_full_size_candidates(tmp_path, random_tiny_model):
    root = tmp_path / "proj"
    root.mkdir()
    shutil.copy(REPO / "params.yaml", root / "params.yaml")
    res = import_dataset(root, "pool", write_folder(tmp_path / "photos", gt=False), round_n=1)
    params = tiny_params(tmp_path)
    params["generate"].update(num_seeds=2, steps=2)
    out = tmp_path / "cands"
    generate.run(stage_config("generate", params), random_tiny_model(64), root / res.path, out)
    cands = json.loads((out / "candidates.json").read_text())["candidates"]
    assert len(cands) == 10
    pool = {e["id"]: e for e in json.loads((root / res.path / "meta.json").read_text())}
    for c in cands:
        photo = np.asarray(Image.open(root / res.path / pool[c["input_id"]]["source"]))
        result, source = (np.asarray(Image.open(out / c[k])) for k in ("result", "source"))
        assert result.shape == photo.shape and np.array_equal(source, photo)
        m = np.asarray(Image.open(root / res.path / pool[c["input_id"]]["mask"])) >= 128
        outside = ~changed_region(m, 0, default_feather(*m.shape, 64))
        assert np.array_equal(result[outside], photo[outside])


def test_evaluate_on_imported_photos_writes_a_full_size_gallery(tmp_path, random_tiny_model):
    from rorem_core.stages import evaluate

    root = tmp_path / "proj"
    root.mkdir()
    shutil.copy(REPO / "params.yaml", root / "params.yaml")
    res = import_dataset(root, "test", write_folder(tmp_path / "photos"))
    params = tiny_params(tmp_path)
    params["evaluate"].update(steps=2, references=False, num_grid=3)
    out = tmp_path / "eval"
    r = evaluate.run(stage_config("evaluate", params), random_tiny_model(64), root / res.path, out)
    assert r.metrics["remover"]["all"]["n"] == 5
    index = json.loads((out / "gallery" / "index.json").read_text())
    assert len(index) == 3
    test = {e["id"]: e for e in json.loads((root / res.path / "meta.json").read_text())}
    for e in index:
        photo = Image.open(root / res.path / test[e["id"]]["source"])
        assert Image.open(out / "gallery" / e["result"]).size == photo.size == Image.open(out / "gallery" / e["GT"]).size


def test_generate_takes_an_extra_lora_and_rorems_prompts(tmp_path, random_tiny_model):
    import torch

    from rorem_core.models.loading import load_unet
    from rorem_core.models.oneshot import QUALITY_NEGATIVE, QUALITY_PROMPT
    from rorem_core.models.unet import add_lora, save_lora

    model = random_tiny_model(64)
    unet = load_unet(model)
    add_lora(unet, 4, ["to_q", "to_v", "conv1"], seed=5)
    with torch.no_grad():
        for n, p in unet.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.05)
    save_lora(unet, tmp_path / "lcm_lora")
    root = tmp_path / "proj"
    root.mkdir()
    shutil.copy(REPO / "params.yaml", root / "params.yaml")
    res = import_dataset(root, "pool", write_folder(tmp_path / "photos", gt=False, n_plain=1), round_n=1)
    params = tiny_params(tmp_path)
    outs = {}
    for name, extra in {"plain": {}, "lora": {"lora": str(tmp_path / "lcm_lora")},
                        "cfg": {"prompt": QUALITY_PROMPT, "negative_prompt": QUALITY_NEGATIVE, "guidance_scale": 3.0}
                        }.items():
        params["generate"] = {**params["generate"], "num_seeds": 1, "steps": 4, "scheduler": "lcm", "strength": 0.99,
                              **extra}
        generate.run(stage_config("generate", params), model, root / res.path, tmp_path / name)
        outs[name] = np.asarray(Image.open(tmp_path / name / "results" / "r1-plain0-k0.png"))
    assert not np.array_equal(outs["plain"], outs["lora"]) and not np.array_equal(outs["plain"], outs["cfg"])
