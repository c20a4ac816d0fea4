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
