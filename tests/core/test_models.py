"""Tiny preset: SDXL-architecture parts saved in the diffusers layout and loaded back like real weights."""

import json

import numpy as np
import pytest
import torch

from rorem_core.models.analytic_ae import AnalyticAutoencoder
from rorem_core.models.conditioning import encode_empty_prompt, load_prompt_embeds
from rorem_core.models.loading import load_unet, load_vae, resolve_ref, vae_scale_factor, write_ref
from rorem_core.models.tiny import TinyPresetConfig, build_tiny_model


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    return build_tiny_model(tmp_path_factory.mktemp("tiny") / "model", TinyPresetConfig(), 64)


def test_tiny_parts_have_sdxl_inpainting_architecture(tiny_dir):
    unet = load_unet(tiny_dir)
    assert unet.config.in_channels == 9 and unet.config.out_channels == 4
    assert unet.config.addition_embed_type == "text_time"
    assert unet.config.cross_attention_dim == 64  # te1.hidden + te2.hidden
    index = json.loads((tiny_dir / "model_index.json").read_text())
    assert index["text_encoder_2"] == ["transformers", "CLIPTextModelWithProjection"]
    for sub in ("unet", "vae", "text_encoder", "text_encoder_2", "tokenizer", "tokenizer_2", "scheduler"):
        assert (tiny_dir / sub).is_dir(), sub


def test_build_is_deterministic(tmp_path, tiny_dir):
    again = build_tiny_model(tmp_path / "again", TinyPresetConfig(), 64)
    a, b = load_unet(tiny_dir).state_dict(), load_unet(again).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_vae_scale_factor_comes_from_config(tiny_dir):
    vae = load_vae(tiny_dir)
    assert isinstance(vae, AnalyticAutoencoder)
    assert vae_scale_factor(vae) == 4            # not SDXL's hard-coded 8
    f8 = AnalyticAutoencoder(block_out_channels=(4, 4, 4, 4))
    assert vae_scale_factor(f8) == 8
    assert f8.encode(torch.zeros(1, 3, 64, 64)).latent_dist.mode().shape == (1, 4, 8, 8)


def test_analytic_autoencoder_reconstructs_smooth_images_well():
    ae = AnalyticAutoencoder()
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, 64), torch.linspace(-1, 1, 64), indexing="ij")
    x = torch.stack([xx, yy, xx * yy]).unsqueeze(0) * 0.8
    y = ae.decode(ae.encode(x).latent_dist.sample()).sample
    psnr = -10 * torch.log10(((y - x) / 2).pow(2).mean())
    assert psnr > 35, psnr


def test_autoencoder_rejects_sizes_not_divisible_by_factor():
    with pytest.raises(ValueError, match="not divisible"):
        AnalyticAutoencoder().encode(torch.zeros(1, 3, 30, 30))


def test_diffusers_pipeline_loads_the_tiny_dir_offline(tiny_dir):
    from diffusers import StableDiffusionXLInpaintPipeline
    from PIL import Image

    pipe = StableDiffusionXLInpaintPipeline.from_pretrained(str(tiny_dir))
    assert pipe.vae_scale_factor == 4
    img = Image.fromarray((np.random.default_rng(0).random((64, 64, 3)) * 255).astype(np.uint8))
    mask = Image.fromarray(np.full((64, 64), 255, np.uint8))
    out = pipe(prompt="", image=img, mask_image=mask, num_inference_steps=2, guidance_scale=1.0,
               height=64, width=64, output_type="np").images
    assert out.shape == (1, 64, 64, 3) and np.isfinite(out).all()


def test_empty_prompt_embeddings_shapes_and_cache(tiny_dir, tmp_path):
    emb = encode_empty_prompt(str(tiny_dir))
    assert emb.hidden.shape == (1, 77, 64) and emb.pooled.shape == (1, 32)
    hidden, added = emb.batch(5, (64, 64))
    assert hidden.shape == (5, 77, 64) and added["time_ids"].shape == (5, 6)
    assert added["time_ids"][0].tolist() == [64, 64, 0, 0, 64, 64]
    cached = load_prompt_embeds(tiny_dir, tmp_path)           # computed once, then read back
    assert any((tmp_path / "prompt").iterdir())
    assert torch.allclose(load_prompt_embeds(tiny_dir, tmp_path).hidden, cached.hidden)


def test_model_ref_points_round_remover_at_base_parts(tiny_dir, tmp_path):
    out = tmp_path / "remover"
    load_unet(tiny_dir).save_pretrained(out / "unet")
    write_ref(out, tiny_dir, unet="unet", lora=None)
    ref = resolve_ref(out)
    assert ref.base == str(tiny_dir.resolve()) and ref.unet == str((out / "unet").resolve())
    hub = tmp_path / "hubref"
    write_ref(hub, "diffusers/stable-diffusion-xl-1.0-inpainting-0.1", unet=None, lora=None)
    assert resolve_ref(hub).base == "diffusers/stable-diffusion-xl-1.0-inpainting-0.1"


def test_unet_with_wrong_channels_is_refused(tmp_path):
    from diffusers import UNet2DConditionModel

    UNet2DConditionModel(sample_size=8, in_channels=4, out_channels=4, block_out_channels=(32, 32),
                         down_block_types=("DownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "UpBlock2D"),
                         layers_per_block=1, norm_num_groups=8).save_pretrained(tmp_path / "m" / "unet")
    with pytest.raises(ValueError, match="needs 9"):
        load_unet(tmp_path / "m")
