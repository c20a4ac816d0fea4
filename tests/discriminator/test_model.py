"""The discriminator model: encoder equals the UNet's own forward, head geometry at several
resolutions, explicit init, what trains (head + LoRA) and what stays frozen, save/load in our layout
and in RORem's (``pytorch_lora_weights.safetensors`` + ``cls_pred_branch.pt``)."""

from __future__ import annotations

import pytest
import torch

from rorem_core.models.conditioning import load_prompt_embeds
from rorem_core.models.loading import load_unet
from rorem_core.reward.discriminator import (
    HEAD_FILE,
    INFO_FILE,
    LORA_FILE,
    DiscriminatorHead,
    DiscriminatorInfo,
    RORem_HEAD_FILE,
    build_discriminator,
    load_discriminator,
    make_trainable,
    save_discriminator,
    save_rorem_layout,
)

from .conftest import rng_latents


def make(tiny_model, tmp_path, **info):
    return build_discriminator(tiny_model, cache_dir=tmp_path / "cache",
                               info=DiscriminatorInfo(base=str(tiny_model), resolution=64, **info))


def test_encoder_matches_unet_forward_mid_block(tiny_model, tmp_path):
    disc = make(tiny_model, tmp_path)
    full = load_unet(tiny_model)
    seen = {}
    full.mid_block.register_forward_hook(lambda m, i, o: seen.setdefault("mid", o))
    r, m, s = rng_latents(0)
    hidden, added = load_prompt_embeds(tiny_model, tmp_path / "cache").batch(2, (64, 64))
    with torch.no_grad():
        full(torch.cat([r, m, s], 1), torch.zeros(2, dtype=torch.long), encoder_hidden_states=hidden,
             added_cond_kwargs=added)
        mid = disc.encode(torch.cat([r, m, s], 1))
    assert mid.shape == (2, 64, 4, 4)                                  # C = block_out_channels[-1]
    torch.testing.assert_close(mid, seen["mid"], rtol=0, atol=0)
    assert len(disc.unet.up_blocks) == 0 and disc.unet.conv_out is None


@pytest.mark.parametrize("hw", [(16, 16), (24, 40), (64, 64)])
def test_logits_at_any_resolution(tiny_model, tmp_path, hw):
    disc = make(tiny_model, tmp_path)
    r, m, s = rng_latents(1, 3, *hw)
    with torch.no_grad():
        logits = disc(r, m, s)
    assert logits.shape == (3,) and torch.isfinite(logits).all()


def test_residual_view_input(tiny_model, tmp_path):
    """view residual: channels [result - filled | mask | filled], filled = the latent of the source with its hole
    filled harmonically in pixels (encode_triples makes all four latents from images). A result that IS that
    fill gives zero residual channels; a +0.2 grey bump inside the hole shows only around the hole; without
    filled the residual view refuses, naming the fix; view rorem is RORem's [result | mask | source]."""
    from rorem_core.data.fill import harmonic_fill
    from rorem_core.models.loading import load_vae
    from rorem_core.reward.discriminator import encode_triples, encoder_input

    g = torch.Generator().manual_seed(0)
    src = torch.rand(2, 3, 64, 64, generator=g) * 2 - 1
    mask = torch.zeros(2, 1, 64, 64)
    mask[..., 20:36, 24:44] = 1.0
    vae = load_vae(tiny_model)
    smooth = harmonic_fill(src, mask)
    r, m, s, f = encode_triples(vae, smooth, src, mask, "residual", 4)
    assert r.shape == f.shape == (2, 4, 16, 16) and m.shape == (2, 1, 16, 16) and m.unique().tolist() == [0.0, 1.0]
    torch.testing.assert_close(r, f)                                     # the fill itself: no residual
    x = encoder_input("residual", r, m, s, f)
    assert x.shape == (2, 9, 16, 16) and x[:, :4].abs().max() == 0
    bumped, *_ = encode_triples(vae, smooth + 0.2 * mask, src, mask, "residual", 4)
    resid = encoder_input("residual", bumped, m, s, f)[:, :4]
    assert resid[..., 6:8, 7:10].abs().min() > 0.1 and resid[..., :3, :].abs().max() < 1e-6
    assert encode_triples(vae, smooth, src, mask, "rorem", 4)[3] is None
    torch.testing.assert_close(encoder_input("rorem", r, m, s), torch.cat([r, m, s], 1))
    with pytest.raises(ValueError, match="encode_triples"):
        make(tiny_model, tmp_path, view="residual")(r, m, s)
    with torch.no_grad():
        assert torch.isfinite(make(tiny_model, tmp_path, view="residual")(r, m, s, f)).all()


def test_head_geometry_and_init():
    head = DiscriminatorHead(64, 8)
    assert [type(m).__name__ for m in head] == ["Conv2d", "GroupNorm", "SiLU"] * 3 + ["Conv2d"]
    assert head[0].weight.shape == (64, 64, 4, 4) and head[9].weight.shape == (1, 64, 1, 1)
    assert head[1].num_groups == 8
    for hw in [(16, 16), (4, 4), (32, 32), (3, 7)]:
        assert head(torch.randn(2, 64, *hw)).shape == (2,)
    # explicit init: finite, last layer small, so the first logits are near 0 (p ~ 0.5)
    assert all(torch.isfinite(p).all() for p in head.parameters())
    assert head[9].weight.abs().max() < 0.1 and head[9].bias.abs().max() == 0
    assert head(torch.randn(8, 64, 16, 16)).abs().max() < 1.0
    with pytest.raises(ValueError, match="divisible"):
        DiscriminatorHead(60, 8)


def test_head_and_lora_train_encoder_stays_frozen(tiny_model, tmp_path):
    disc = make(tiny_model, tmp_path, lora_rank=4)
    trainable = make_trainable(disc)
    names = {n for n, p in disc.named_parameters() if p.requires_grad}
    assert all(p.requires_grad for p in disc.head.parameters())         # after peft injection
    assert any("lora_A" in n for n in names) and not any("base_layer" in n for n in names)
    before = {n: p.detach().clone() for n, p in disc.named_parameters()}
    opt = torch.optim.AdamW(trainable, lr=1e-2)
    labels = torch.tensor([1.0, 0.0, 1.0, 0.0])
    for step in range(3):                                               # lora_B starts at 0: A moves from step 2
        r, m, s = rng_latents(10 + step, 4)
        loss = torch.nn.functional.binary_cross_entropy_with_logits(disc(r, m, s), labels)
        opt.zero_grad()
        loss.backward()
        opt.step()
    changed = {n for n, p in disc.named_parameters() if not torch.equal(p, before[n])}
    assert {n for n in names if n.startswith("head.")} <= changed         # every head tensor moved
    assert {n for n in names if "lora_" in n} <= changed                 # every LoRA tensor moved
    assert changed <= names                                             # frozen encoder weights did not


def _perturb_lora(disc):
    with torch.no_grad():
        for n, p in disc.named_parameters():
            if "lora_B" in n:
                p.add_(0.05 * torch.randn_like(p))


def test_save_load_roundtrip_ours(tiny_model, tmp_path):
    disc = make(tiny_model, tmp_path, lora_rank=2, threshold=0.4, view="residual")
    make_trainable(disc)
    _perturb_lora(disc)
    disc.info = disc.info.model_copy(update={"logit_offset": -0.3})
    save_discriminator(disc, tmp_path / "d", tiny_model)
    assert {LORA_FILE, HEAD_FILE, INFO_FILE} <= {p.name for p in (tmp_path / "d").iterdir()}
    back = load_discriminator(tmp_path / "d", cache_dir=tmp_path / "cache")
    assert back.info.threshold == 0.4 and back.info.lora_rank == 2 and back.info.logit_offset == -0.3
    assert back.info.view == "residual"
    r, m, s = rng_latents(3, 2)
    with torch.no_grad():
        disc.eval()
        f = s.flip(-1)                                                 # any latent as the filled source
        torch.testing.assert_close(back(r, m, s, f), disc(r, m, s, f), rtol=0, atol=1e-6)
        torch.testing.assert_close(back.score(back(r, m, s, f)), disc.score(disc(r, m, s, f)))


def test_save_load_roundtrip_full_mode(tiny_model, tmp_path):
    disc = make(tiny_model, tmp_path, mode="full")
    make_trainable(disc)
    with torch.no_grad():
        disc.unet.conv_in.weight.add_(0.01)
    save_discriminator(disc, tmp_path / "d", tiny_model)
    back = load_discriminator(tmp_path / "d", cache_dir=tmp_path / "cache")
    r, m, s = rng_latents(4, 2)
    with torch.no_grad():
        torch.testing.assert_close(back(r, m, s), disc.eval()(r, m, s), rtol=0, atol=1e-6)


def test_rorem_layout_roundtrip(tiny_model, tmp_path):
    disc = make(tiny_model, tmp_path, lora_rank=4)
    make_trainable(disc)
    _perturb_lora(disc)
    save_rorem_layout(disc, tmp_path / "rorem")
    assert {p.name for p in (tmp_path / "rorem").iterdir()} == {LORA_FILE, RORem_HEAD_FILE}
    head = torch.load(tmp_path / "rorem" / RORem_HEAD_FILE, weights_only=True)
    assert set(head) == {f"cls_pred_branch.{i}.{w}" for i in (0, 1, 3, 4, 6, 7, 9) for w in ("weight", "bias")}
    from safetensors.torch import load_file

    lora_keys = list(load_file(str(tmp_path / "rorem" / LORA_FILE)))
    assert lora_keys and all(k.startswith("unet.") and (".lora.down." in k or ".lora.up." in k) for k in lora_keys)
    with pytest.raises(ValueError, match="base"):
        load_discriminator(tmp_path / "rorem", cache_dir=tmp_path / "cache")
    back = load_discriminator(tmp_path / "rorem", cache_dir=tmp_path / "cache", base=tiny_model, resolution=64)
    assert back.info.loss == "softplus_mse" and back.info.threshold == 0.5 and back.info.lora_rank == 4
    r, m, s = rng_latents(5, 2)
    with torch.no_grad():
        torch.testing.assert_close(back(r, m, s), disc.eval()(r, m, s), rtol=0, atol=1e-6)
        assert (back.score(back(r, m, s)) >= 0).all()                  # softplus score


def test_load_refuses_unknown_dir_and_wrong_base(tiny_model, tmp_path):
    with pytest.raises(FileNotFoundError, match="cls_pred_branch"):
        load_discriminator(tmp_path, cache_dir=tmp_path / "cache")
    disc = make(tiny_model, tmp_path, lora_rank=4)
    make_trainable(disc)
    save_rorem_layout(disc, tmp_path / "rorem")
    from safetensors.torch import load_file, save_file

    sd = load_file(str(tmp_path / "rorem" / LORA_FILE))
    sd = {k.replace("down_blocks.1", "down_blocks.7"): v for k, v in sd.items()}   # keys of another UNet
    save_file(sd, str(tmp_path / "rorem" / LORA_FILE))
    with pytest.raises(ValueError, match="do not match"):
        load_discriminator(tmp_path / "rorem", cache_dir=tmp_path / "cache", base=tiny_model)
