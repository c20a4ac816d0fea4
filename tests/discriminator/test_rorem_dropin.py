"""RORem drop-in: its UNet as a bare UNet folder or a pipeline folder (bootstrap.sdxl_unet), its LCM
LoRA fused for generation, and its discriminator (LoRA + cls_pred_branch.pt) adopted as a round's,
its LoRA always on the base pipeline's own UNet; a LoRA of another UNet is a clear error."""

from __future__ import annotations

import shutil

import pytest
import torch

from rorem_core.config import stage_config
from rorem_core.config.presets import TinyPresetConfig
from rorem_core.models.loading import load_unet, write_ref
from rorem_core.models.remover import Remover
from rorem_core.models.tiny import build_tiny_model
from rorem_core.models.unet import add_lora, save_lora
from rorem_core.reward.discriminator import (
    DiscriminatorInfo,
    build_discriminator,
    load_discriminator,
    make_trainable,
    save_rorem_layout,
)
from rorem_core.stages import train_discriminator
from tests.conftest import tiny_params

from .conftest import rng_latents


def _other_unet(tiny_model, dst):
    """A 'RORem UNet': the tiny base's UNet with different weights."""
    unet = load_unet(tiny_model)
    with torch.no_grad():
        for p in unet.parameters():
            p.add_(0.01)
    unet.save_pretrained(dst)
    return unet


def test_sdxl_unet_as_bare_folder_or_pipeline_folder(tiny_model, tmp_path):
    theirs = _other_unet(tiny_model, tmp_path / "bare")
    pipeline = tmp_path / "pipeline"
    shutil.copytree(tiny_model, pipeline)
    shutil.rmtree(pipeline / "unet")
    shutil.copytree(tmp_path / "bare", pipeline / "unet")
    want = theirs.state_dict()["conv_in.weight"]
    for i, unet_dir in enumerate((tmp_path / "bare", pipeline)):
        base = tmp_path / f"base{i}"
        write_ref(base, tiny_model, unet=str(unet_dir), lora=None)      # what bootstrap writes for sdxl
        assert torch.equal(load_unet(base).state_dict()["conv_in.weight"], want)
    (tmp_path / "empty").mkdir()
    write_ref(tmp_path / "bad", tiny_model, unet=str(tmp_path / "empty"), lora=None)
    with pytest.raises(FileNotFoundError, match="bootstrap.sdxl_unet"):
        load_unet(tmp_path / "bad")


def test_an_extra_lcm_lora_is_fused_for_generation(tiny_model, tmp_path):
    unet = load_unet(tiny_model)
    add_lora(unet, 4, ["to_q", "to_v", "conv1"], seed=3)
    with torch.no_grad():
        for n, p in unet.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.05)
    save_lora(unet, tmp_path / "lcm_lora")
    unet.fuse_lora()
    plain = Remover.load(tiny_model, cache_dir=str(tmp_path / "c"), resolution=64)
    fused = Remover.load(tiny_model, cache_dir=str(tmp_path / "c"), resolution=64, lora=tmp_path / "lcm_lora")
    name = "down_blocks.0.resnets.0.conv1.weight"
    got = dict(fused.unet.named_parameters())
    key = name.replace("conv1.weight", "conv1.base_layer.weight")      # the fused weight under the adapter
    assert not torch.equal(got[key], dict(plain.unet.named_parameters())[name])
    torch.testing.assert_close(got[key], dict(unet.named_parameters())[key], rtol=0, atol=1e-6)
    x, m = torch.rand(1, 3, 64, 64) * 2 - 1, torch.zeros(1, 1, 64, 64)
    m[..., 20:40, 20:40] = 1
    out = fused.remove(x, m, [0], steps=4, scheduler="lcm", strength=0.99)
    assert out.shape == (1, 3, 64, 64) and torch.isfinite(out).all()


def test_an_lcm_lora_that_fits_only_in_part_is_refused_not_loaded_in_part(tiny_model, tmp_path):
    """diffusers only logs LoRA keys it cannot place; an extra LoRA must fit tensor for tensor."""
    from safetensors.torch import load_file, save_file

    unet = load_unet(tiny_model)
    add_lora(unet, 4, ["to_q", "to_v"], seed=3)
    save_lora(unet, tmp_path / "lora")
    sd = load_file(str(tmp_path / "lora" / "pytorch_lora_weights.safetensors"))
    a = next(v for k, v in sd.items() if "lora_A" in k).clone()
    b = next(v for k, v in sd.items() if "lora_B" in k).clone()
    (tmp_path / "foreign").mkdir()      # two tensors for a module this UNet does not have
    save_file({**sd, "unet.extra_block.to_q.lora_A.weight": a, "unet.extra_block.to_q.lora_B.weight": b},
              str(tmp_path / "foreign" / "pytorch_lora_weights.safetensors"))
    with pytest.raises(ValueError, match=rf"foreign/pytorch_lora_weights.safetensors: only {len(sd)} of its "
                                         rf"{len(sd) + 2} LoRA tensors match a module of this UNet"):
        Remover.load(tiny_model, cache_dir=str(tmp_path / "c"), resolution=64, lora=tmp_path / "foreign")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="empty: no pytorch_lora_weights.safetensors"):
        Remover.load(tiny_model, cache_dir=str(tmp_path / "c"), resolution=64, lora=tmp_path / "empty")


def _rorem_checkpoint(tiny_model, tmp_path):
    disc = build_discriminator(tiny_model, cache_dir=tmp_path / "cache",
                               info=DiscriminatorInfo(base=str(tiny_model), resolution=64, lora_rank=4))
    make_trainable(disc)
    with torch.no_grad():
        for n, p in disc.named_parameters():
            if "lora_B" in n:
                p.add_(0.05 * torch.randn_like(p))
    save_rorem_layout(disc, tmp_path / "rorem_disc")
    return disc.eval()


def test_rorem_discriminator_adopted_as_round_1s_on_the_pipeline_unet(tiny_model, tmp_path):
    ours = _rorem_checkpoint(tiny_model, tmp_path)
    # models/base of the SDXL preset with RORem's UNet swapped in: same keys, other weights
    _other_unet(tiny_model, tmp_path / "rorem_unet")
    base = tmp_path / "models" / "base"
    write_ref(base, tiny_model, unet=str(tmp_path / "rorem_unet"), lora=None)
    params = tiny_params(tmp_path)
    params["train_discriminator"] = {**params["train_discriminator"], "use": str(tmp_path / "rorem_disc")}
    res = train_discriminator.run(stage_config("train_discriminator", params), base, [], tmp_path / "round-1")
    assert res.metrics["adopted"] == str(tmp_path / "rorem_disc") and res.metrics["heldout"] is None
    back = load_discriminator(tmp_path / "round-1", cache_dir=tmp_path / "cache")   # no base needed any more
    assert back.info.loss == "softplus_mse" and back.info.threshold == 0.5
    r, m, s = rng_latents(7, 2)
    with torch.no_grad():   # identical to the discriminator on the pipeline's own UNet, not on RORem's UNet
        torch.testing.assert_close(back(r, m, s), ours(r, m, s), rtol=0, atol=1e-6)


def test_a_lora_of_another_unet_is_a_clear_error(tiny_model, tmp_path):
    _rorem_checkpoint(tiny_model, tmp_path)
    other = tmp_path / "other_base"
    build_tiny_model(other, TinyPresetConfig(unet_channels=[32, 48, 48]), 64)
    with pytest.raises(ValueError, match="do not match the encoder of this base"):
        load_discriminator(tmp_path / "rorem_disc", cache_dir=tmp_path / "cache", base=other, resolution=64)


def test_a_hub_pipeline_repo_as_sdxl_unet_falls_back_to_its_unet_folder(tiny_model, tmp_path, monkeypatch):
    """No hub here: from_pretrained is replaced by a stand-in that only knows the repo's unet/ subfolder."""
    from diffusers import UNet2DConditionModel

    real, calls = UNet2DConditionModel.from_pretrained, []

    def fake(ref, subfolder=None, **kw):
        calls.append(subfolder)
        if ref == "LetsThink/RORem" and subfolder != "unet":
            raise OSError("LetsThink/RORem does not appear to have a file named config.json")
        return real(str(tiny_model), subfolder="unet", **kw)

    monkeypatch.setattr(UNet2DConditionModel, "from_pretrained", fake)
    write_ref(tmp_path / "base", tiny_model, unet="LetsThink/RORem", lora=None)
    assert load_unet(tmp_path / "base").config.in_channels == 9 and calls == [None, "unet"]
