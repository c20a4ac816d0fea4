"""params.yaml loads into typed stage configs; typos, wrong types and impossible combinations fail
with the key named."""

from pathlib import Path

import pytest
import yaml

from rorem_core.config import STAGES, ConfigError, load_params, load_stage_config, stage_config

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("stage", ["bootstrap", "train_remover", "generate", "evaluate"])
def test_repo_params_load_for_every_stage(stage):
    cfg = load_stage_config(stage, REPO / "params.yaml")
    assert cfg.base.resolution == 64


def test_every_registered_stage_section_exists_in_params():
    params = load_params(REPO / "params.yaml")
    for stage in STAGES:       # the explicit registry, complete without importing any stage module
        assert stage in params, f"params.yaml lacks a [{stage}] section"


def test_unknown_key_is_rejected_with_its_name():
    with pytest.raises(ConfigError, match=r"train_remover\.lrr"):
        stage_config("train_remover", {"train_remover": {"lrr": 1e-4}})


def test_unknown_base_key_is_rejected():
    with pytest.raises(ConfigError, match="resolutoin"):
        stage_config("generate", {"base": {"resolutoin": 64}})


def test_wrong_type_names_key_and_value():
    with pytest.raises(ConfigError, match=r"train_remover\.steps.*'many'"):
        stage_config("train_remover", {"train_remover": {"steps": "many"}})


def test_impossible_combination_quotes_both_values():
    with pytest.raises(ConfigError, match="lr_warmup_steps=50 must be < steps=10"):
        stage_config("train_remover", {"train_remover": {"steps": 10, "lr_warmup_steps": 50}})


def test_unknown_stage_lists_known_ones():
    with pytest.raises(ConfigError, match="known: .*bootstrap"):
        stage_config("trian", {})


def test_invalid_yaml_names_the_file(tmp_path):
    bad = tmp_path / "params.yaml"
    bad.write_text("base: [unclosed\n")
    with pytest.raises(ConfigError, match=str(bad)):
        load_params(bad)


def test_sdxl_params_file_is_valid():
    """The SDXL preset differs from tiny only in its params file."""
    params = yaml.safe_load((REPO / "params.sdxl.yaml").read_text())
    for stage in ("bootstrap", "train_remover", "generate", "evaluate"):
        cfg = stage_config(stage, params)
        assert cfg.base.resolution == 1024 or cfg.base.resolution == 512
    assert stage_config("bootstrap", params).preset == "sdxl"
