"""The harmonic-fill base through the real stages: bootstrap takes the shipped tiny_base_tex5_harmonic and
marks the base, a round's fine-tune trains on harmonic-filled masked latents, and the evaluation of
both judges some fills clean (the grey-fill K = 5 base: none of 400, docs/judge.md)."""

from __future__ import annotations

import json

import yaml

from rorem_core.config import stage_config
from rorem_core.models.loading import masked_fill_of
from rorem_core.stages import bootstrap, evaluate, train_remover
from tests.conftest import tiny_params


def test_a_harmonic_fill_round_trains_and_is_judged_from_the_shipped_base(tmp_path):
    params = tiny_params(tmp_path, n_seed=24, n_test=24, pool_size=4, n_pools=1, texture_scale=5.0)
    params["bootstrap"].update(masked_fill="harmonic")
    params["bootstrap"]["pretrain"]["steps"] = 9600      # the shipped harmonic base's recipe
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    base, data = tmp_path / "models/base", tmp_path / "data"
    bootstrap.run(stage_config("bootstrap", params), base, data)
    assert masked_fill_of(base) == "harmonic"

    tcfg = stage_config("train_remover", params, {"steps": 2, "batch_size": 8, "lr_warmup_steps": 0,
                                                  "checkpoint_every": 2})
    train_remover.run(tcfg, base, [data / "seed"], tmp_path / "round-1")
    assert masked_fill_of(tmp_path / "round-1") == "harmonic"        # inherited through the ref
    latents = tmp_path / ".rorem/cache/latents"
    assert [d.name.endswith("-harmonic") for d in latents.iterdir()] == [True]   # trained on harmonic latents

    ecfg = stage_config("evaluate", params, {"steps": 20, "batch_size": 24, "judge": "judge", "references": False})
    for model, out in ((base, "eval_base"), (tmp_path / "round-1", "eval_round")):
        m = evaluate.run(ecfg, model, data / "test", tmp_path / out).metrics["remover"]["all"]
        assert m["n"] == 24 and m["judged_success_rate"] > 0, (out, m)
    rows = json.loads((tmp_path / "eval_base/per_image.json").read_text())
    assert {r["judge_reason"] for r in rows if not r["judge_good"]} <= {"smudge", "texture_broken", "artifacts",
                                                                          "object_remains"}
