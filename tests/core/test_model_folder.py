"""Bad model folders fail before any data is touched, with one error naming the file and the fix:
a missing part, a UNet config of the wrong architecture, weights of the wrong shape. A folder holding
only the fp16 variant files (as the hub's fp16 download and the SDXL stand-in) loads."""

import json
import shutil
from pathlib import Path

import pytest
import torch

from rorem_core.models.folders import ModelFolderError, check_model_dir, check_unet_folder, weights_variant
from rorem_core.models.loading import load_unet


@pytest.fixture
def model(random_tiny_model, tmp_path) -> Path:
    dst = tmp_path / "model"
    shutil.copytree(random_tiny_model(64), dst)
    return dst


def _edit_config(path: Path, **changes) -> None:
    cfg = json.loads(path.read_text())
    cfg.update(changes)
    path.write_text(json.dumps(cfg))


def test_a_complete_folder_passes(model):
    check_model_dir(model)


def test_missing_subfolder_is_named_with_the_fix(model):
    shutil.rmtree(model / "text_encoder_2")
    with pytest.raises(ModelFolderError, match=r"text_encoder_2/config\.json: missing.*build_sdxl_standin"):
        check_model_dir(model)


def test_missing_model_index_is_named(model):
    (model / "model_index.json").unlink()
    with pytest.raises(ModelFolderError, match=r"model_index\.json: missing"):
        check_model_dir(model)


def test_four_channel_unet_config_is_refused(model):
    _edit_config(model / "unet" / "config.json", in_channels=4)
    with pytest.raises(ModelFolderError, match=r"unet/config\.json: .*in_channels=4.*9-channel inpainting"):
        check_model_dir(model)


def test_weights_of_the_wrong_shape_name_the_file_and_key(model):
    # the config now implies wider cross-attention than the saved weights have
    _edit_config(model / "unet" / "config.json", cross_attention_dim=96)
    with pytest.raises(ModelFolderError, match=r"diffusion_pytorch_model\.safetensors: weight '.*attn2\.to_k\.weight' "
                                               r"has shape \[\d+, 64\].*implies \[\d+, 96\]"):
        check_unet_folder(model / "unet")


def test_load_unet_checks_before_reading_weights(model):
    _edit_config(model / "unet" / "config.json", in_channels=4)
    with pytest.raises(ModelFolderError, match="in_channels=4"):
        load_unet(model)


def test_fp16_variant_only_folder_loads_in_fp32(model):
    from diffusers import UNet2DConditionModel

    unet = UNet2DConditionModel.from_pretrained(model / "unet")
    shutil.rmtree(model / "unet")
    unet.half().save_pretrained(model / "unet", variant="fp16")
    assert weights_variant(model / "unet") == "fp16"
    check_model_dir(model)
    loaded = load_unet(model, dtype=torch.float32)
    assert next(loaded.parameters()).dtype == torch.float32
    torch.testing.assert_close(loaded.conv_in.weight, unet.conv_in.weight.float())


def test_sdxl_bootstrap_refuses_a_broken_folder_before_writing_data(model, tmp_path):
    from rorem_core.config import stage_config
    from rorem_core.stages import bootstrap

    shutil.rmtree(model / "vae")
    cfg = stage_config("bootstrap", {"base": {"resolution": 64}, "bootstrap": {"preset": "sdxl", "sdxl_pretrained": str(model)}})
    with pytest.raises(ModelFolderError, match=r"bootstrap\.sdxl_pretrained.*vae/config\.json: missing"):
        bootstrap.run(cfg, tmp_path / "models" / "base", tmp_path / "data")
    assert not (tmp_path / "data").exists() and not (tmp_path / "models").exists()
