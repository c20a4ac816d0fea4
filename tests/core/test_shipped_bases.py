"""Shipped tiny bases: one per scene config, picked by the key of the bootstrap params."""

import pytest
import yaml

from rorem_core.config import stage_config
from rorem_core.stages import bootstrap

REPO = bootstrap.ASSETS.parents[1]


def _cfg(**synthetic):
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["bootstrap"]["synthetic"].update(synthetic)
    return stage_config("bootstrap", params)


def test_every_shipped_base_is_found_by_its_key_and_the_default_has_one():
    shipped = bootstrap.shipped_bases()
    assert bootstrap.shipped_key(_cfg()) in shipped
    assert len({d.name for d in shipped.values()}) == len(shipped)   # one key per folder


def test_the_texture_scale_5_base_is_shipped_under_its_own_key():
    default, coarse = bootstrap.shipped_key(_cfg()), bootstrap.shipped_key(_cfg(texture_scale=5.0))
    assert default != coarse
    assert bootstrap.shipped_bases()[coarse].name == "tiny_base_tex5"


def test_params_without_a_shipped_base_are_refused_with_the_keys_that_exist(tmp_path):
    cfg = _cfg(texture_scale=3.0)
    with pytest.raises(FileNotFoundError, match=r"no shipped tiny base matches.*tiny_base_tex5.*base_unet: train"):
        bootstrap.build_tiny(cfg, tmp_path / "base")


def _fill_cfg(fill: str, preset: str = "tiny", **synthetic):
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["bootstrap"]["synthetic"].update(synthetic)
    params["bootstrap"].update(masked_fill=fill, preset=preset, base_unet="random")
    return stage_config("bootstrap", params)


def test_a_harmonic_fill_base_has_its_own_key_and_says_its_fill(tmp_path):
    from rorem_core.models.loading import masked_fill_of

    zero, harm = _fill_cfg("zero"), _fill_cfg("harmonic")
    assert bootstrap.shipped_key(zero) == bootstrap.shipped_key(_cfg())   # zero keeps the keys of before
    assert bootstrap.shipped_key(harm) != bootstrap.shipped_key(zero)
    bootstrap.build_tiny(harm, tmp_path / "h")
    bootstrap.build_tiny(zero, tmp_path / "z")
    assert masked_fill_of(tmp_path / "h") == "harmonic" and masked_fill_of(tmp_path / "z") == "zero"


def test_sdxl_with_a_harmonic_fill_is_refused_naming_the_parameter():
    from rorem_core.config import ConfigError

    with pytest.raises(ConfigError, match=r"bootstrap.masked_fill: harmonic needs a UNet pretrained.*masked_fill: zero"):
        _fill_cfg("harmonic", preset="sdxl")


def test_the_harmonic_fill_base_is_shipped_for_texture_scale_5():
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["bootstrap"]["synthetic"]["texture_scale"] = 5.0
    params["bootstrap"]["masked_fill"] = "harmonic"
    params["bootstrap"]["pretrain"]["steps"] = 9600     # its recipe: twice the grey-fill bases' steps
    key = bootstrap.shipped_key(stage_config("bootstrap", params))
    assert bootstrap.shipped_bases()[key].name == "tiny_base_tex5_harmonic"
