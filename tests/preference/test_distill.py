"""LCM distillation and reward-weighted distillation at the level of a step and of the distill
stage (small random model): RWD with equal scores == plain distillation (loss and gradients), the
adapter-disabled teacher == a frozen copy, the RG-LCD term, the LCM sampler on v-prediction."""

from __future__ import annotations

import copy
import json

import pytest
import torch
from safetensors.torch import load_file

from rorem_core.config import DistillConfig, stage_config
from rorem_core.data.latents import LatentCache, load_batch
from rorem_core.models.conditioning import load_prompt_embeds
from rorem_core.models.loading import load_scheduler_config, load_unet, load_vae
from rorem_core.models.unet import add_lora
from rorem_core.preference import lcm
from rorem_core.preference.distill import LCMContext, lcm_step, make_distill_loss
from rorem_core.preference.dpo import StepContext, frozen_copy, load_policy_unet
from rorem_core.stages import distill
from rorem_core.training.sft import triplet_files

RES = 32


@pytest.fixture(scope="module")
def batch(small_model, small_data, tmp_path_factory):
    cache = LatentCache(tmp_path_factory.mktemp("lat"), load_vae(small_model), RES)
    return load_batch(cache.ensure(triplet_files([small_data / "meta.json"])[:6]))


def _lctx(model, tmp_path, guidance=False):
    step = StepContext.from_scheduler(load_scheduler_config(model), load_prompt_embeds(model, tmp_path), RES, "cpu")
    return LCMContext.build(step, 50, guidance=guidance)


def _cfg(**kw):
    kw = {"reward_mode": "none", **kw}   # plain distillation unless the test asks for RWD
    return DistillConfig(base={"device": "cpu", "resolution": RES}, augment_dihedral=False, lora_rank=4, **kw)


def _perturbed_student(model, seed=0):
    unet, trainable, _ = load_policy_unet(model, 4, ["to_q", "to_k", "to_v", "to_out.0", "conv1", "conv2"])
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for n, p in unet.named_parameters():
            if "lora_B" in n:
                p.copy_(0.05 * torch.randn(p.shape, generator=g))
    return unet, trainable


def _loss_and_grads(unet, trainable, batch, lctx, cfg, **kw):
    loss, m = make_distill_loss(unet, lctx, cfg, **kw)(batch, torch.Generator().manual_seed(7))
    return loss, m, torch.autograd.grad(loss, trainable)


@pytest.mark.parametrize("mode", ["clamp", "softmax"])
def test_rwd_with_equal_scores_is_exactly_plain_distillation(small_model, batch, tmp_path, mode):
    unet, trainable = _perturbed_student(small_model)
    lctx = _lctx(small_model, tmp_path)
    plain = _loss_and_grads(unet, trainable, batch, lctx, _cfg())
    scored = {**batch, "score": torch.full((6,), 0.7)}
    rwd = _loss_and_grads(unet, trainable, scored, lctx, _cfg(reward_mode=mode, reward_threshold=0.5))
    assert torch.equal(plain[0], rwd[0])
    assert all(torch.equal(a, b) for a, b in zip(plain[2], rwd[2]))
    assert rwd[1]["rwd_fallback"].item() == 0.0 and rwd[1]["rwd_weight_max"].item() == 1.0
    # unequal scores: a different loss, the same unweighted distillation error
    uneq = _loss_and_grads(unet, trainable, {**batch, "score": torch.linspace(0, 1, 6)}, lctx, _cfg(reward_mode=mode))
    assert not torch.equal(plain[0], uneq[0])
    torch.testing.assert_close(plain[1]["distill_unweighted"], uneq[1]["distill_unweighted"])


def test_adapter_disabled_teacher_equals_a_frozen_teacher_copy(small_model, batch, tmp_path):
    unet = load_unet(small_model)
    teacher = copy.deepcopy(unet).requires_grad_(False)
    trainable = add_lora(unet, 4, ["to_q", "to_v", "conv1"])
    with torch.no_grad():
        for n, p in unet.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.05, generator=torch.Generator().manual_seed(1))
    lctx, cfg = _lctx(small_model, tmp_path, guidance=True), _cfg(guidance_min=1.0, guidance_max=3.0)
    a = _loss_and_grads(unet, trainable, batch, lctx, cfg)
    b = _loss_and_grads(unet, trainable, batch, lctx, cfg, teacher=frozen_copy(teacher))
    torch.testing.assert_close(a[0], b[0], atol=1e-6, rtol=0)
    for x, y in zip(a[2], b[2]):
        torch.testing.assert_close(x, y, atol=1e-6, rtol=1e-5)
    c = _loss_and_grads(unet, trainable, batch, _lctx(small_model, tmp_path), _cfg())
    assert not torch.equal(a[0], c[0])   # guidance changes the teacher target


def test_reward_term_adds_minus_scale_times_mean_reward(small_model, batch, tmp_path):
    unet, trainable = _perturbed_student(small_model, 2)
    lctx = _lctx(small_model, tmp_path)
    # a differentiable toy reward: closeness of the student's prediction to the clean latent
    reward = lambda pred, b: -((pred - b["target"]) ** 2).mean(dim=(1, 2, 3))  # noqa: E731
    plain = lcm_step(unet, batch, torch.Generator().manual_seed(3), lctx, _cfg())[0]
    loss, m = lcm_step(unet, batch, torch.Generator().manual_seed(3), lctx, _cfg(reward_scale=0.5), reward_fn=reward)
    torch.testing.assert_close(loss, plain - 0.5 * m["reward_mean"], atol=1e-6, rtol=0)
    assert all(g.abs().sum() > 0 for g in torch.autograd.grad(loss, trainable) if g is not None)
    with pytest.raises(ValueError, match="reward model"):
        lcm_step(unet, batch, torch.Generator().manual_seed(3), lctx, _cfg(reward_scale=0.5))


def test_lcm_scheduler_uses_our_x0_parameterisation_for_v_prediction(small_model):
    from diffusers import LCMScheduler

    sched = LCMScheduler.from_config(load_scheduler_config(small_model))
    assert sched.config.prediction_type == "v_prediction" and not sched.config.clip_sample
    sched.set_timesteps(4)
    assert sched.timesteps.tolist() == [999, 759, 499, 259]
    x_t, v = torch.randn(1, 4, 4, 4), torch.randn(1, 4, 4, 4)
    t = int(sched.timesteps[-1])
    sched._step_index = 3   # the last step returns the denoised sample (no re-noising)
    denoised = sched.step(v, t, x_t).denoised
    x0 = lcm.predicted_x0(v, x_t, torch.tensor([t]), sched.alphas_cumprod, "v_prediction")
    torch.testing.assert_close(denoised, lcm.consistency_output(x0, x_t, torch.tensor([t])), atol=1e-5, rtol=1e-5)


def test_distill_stage_writes_an_lcm_lora_remover(small_model, small_data, params, tmp_path):
    from rorem_core.models.remover import Remover

    p = params(distill={"steps": 2, "batch_size": 4, "lr": 1e-3, "lora_rank": 4, "log_every": 1,
                        "reward_mode": "softmax", "reward_temperature": 0.2})
    out = tmp_path / "lcm"
    res = distill.run(stage_config("distill", p), small_model, out, train=[small_data])
    assert res.steps == 2 and res.n_train == 12 and res.data["triplets"] == 12
    assert res.train_last["rwd_weight_max"] == 1.0         # every GT triplet scores 1: uniform weights
    summary = json.loads((out / "train_summary.json").read_text())
    assert summary["sampler"] == {"scheduler": "lcm", "steps": 4}
    model = Remover.load(out, cache_dir=str(tmp_path / "cache"), resolution=RES)
    # every saved LoRA tensor (attention AND conv / time-embedding targets) is loaded back
    saved = load_file(str(out / "lora" / "pytorch_lora_weights.safetensors"))
    loaded = [n for n, _ in model.unet.named_parameters() if "lora" in n]
    assert len(loaded) == len(saved) and any("attn1.to_q.lora_A" in n for n in loaded)
    assert any("resnets.0.conv1.lora_A" in n for n in loaded)
    img = torch.rand(3, 3, RES, RES) * 2 - 1
    mask = torch.zeros(3, 1, RES, RES)
    mask[..., 8:20, 8:20] = 1
    a = model.remove(img, mask, [1, 2, 3], steps=4, scheduler="lcm", batch_size=3)
    b = model.remove(img[1:2], mask[1:2], [2], steps=4, scheduler="lcm")
    assert a.shape == (3, 3, RES, RES) and torch.isfinite(a).all()
    torch.testing.assert_close(a[1:2], b, atol=1e-5, rtol=0)   # a row depends on its own seed only


def test_distill_config_checks():
    with pytest.raises(ValueError, match="LoRA student"):
        DistillConfig(base={}, mode="full")
    with pytest.raises(ValueError, match="guidance_max"):
        DistillConfig(base={}, guidance_min=3.0, guidance_max=1.0)
    with pytest.raises(ValueError, match="no data"):
        distill.run(DistillConfig(base={}), None, None)


def test_rg_lcd_term_with_the_project_discriminator(small_model, small_data, params, tmp_path):
    """reward_scale > 0: the discriminator scores the student's composited one-step latent and the
    gradient reaches the student (the stage trains and logs the reward)."""
    from rorem_core.reward.discriminator import (
        DiscriminatorInfo,
        build_discriminator,
        make_trainable,
        save_discriminator,
    )

    disc = build_discriminator(small_model, cache_dir=tmp_path / "cache",
                               info=DiscriminatorInfo(base=str(small_model), resolution=RES))
    make_trainable(disc)   # adds its LoRA (saved in lora mode)
    save_discriminator(disc, tmp_path / "disc", small_model)
    p = params(distill={"steps": 2, "batch_size": 4, "lr": 1e-3, "lora_rank": 4, "log_every": 1,
                        "reward_scale": 0.1})
    with pytest.raises(ValueError, match="--reward-model"):
        distill.run(stage_config("distill", p), small_model, tmp_path / "x", train=[small_data])
    res = distill.run(stage_config("distill", p), small_model, tmp_path / "rg", train=[small_data],
                      reward_model=tmp_path / "disc")
    assert 0.0 < res.train_last["reward_mean"] <= 1.0
    assert res.train_last["loss"] == pytest.approx(res.train_last["distill_unweighted"]
                                                   - 0.1 * res.train_last["reward_mean"], abs=1e-6)


def test_a_ready_lcm_lora_is_adopted_as_the_rounds_4_step_model(small_model, params, tmp_path):
    """distill.use (RORem's LCM LoRA): nothing is trained; the round's LCM model is the teacher with that
    LoRA stacked, sampling exactly as the teacher with it fused (what generate.lora does); a LoRA made
    for another UNet is refused naming the file before anything is written."""
    from rorem_core.config.presets import TinyPresetConfig
    from rorem_core.models.remover import Remover
    from rorem_core.models.tiny import build_tiny_model
    from rorem_core.models.unet import save_lora

    unet, _ = _perturbed_student(small_model, seed=3)
    save_lora(unet, tmp_path / "rorem_lcm")
    p = params(distill={"use": str(tmp_path / "rorem_lcm")})
    out = tmp_path / "models" / "lcm"
    res = distill.run(stage_config("distill", p), small_model, out)          # no training data needed
    assert res.adopted == str(tmp_path / "rorem_lcm") and res.steps == 0 and res.first_loss is None
    assert json.loads((out / "train_summary.json").read_text())["sampler"] == {"scheduler": "lcm", "steps": 4}
    img = torch.rand(2, 3, RES, RES) * 2 - 1
    mask = torch.zeros(2, 1, RES, RES)
    mask[..., 8:20, 8:20] = 1
    run = lambda ref, **kw: Remover.load(ref, cache_dir=str(tmp_path / "c"), resolution=RES, **kw).remove(  # noqa: E731
        img, mask, [1, 2], steps=4, scheduler="lcm", batch_size=2)
    adopted = run(out)
    torch.testing.assert_close(adopted, run(small_model, lora=tmp_path / "rorem_lcm"), atol=1e-5, rtol=0)
    assert not torch.allclose(adopted, run(small_model), atol=1e-3)        # the LoRA is really in it
    other = tmp_path / "other_base"
    build_tiny_model(other, TinyPresetConfig(unet_channels=[32, 48, 48]), RES)
    with pytest.raises(ValueError, match=r"rorem_lcm/pytorch_lora_weights.safetensors: LoRA does not fit"):
        distill.run(stage_config("distill", p), other, tmp_path / "refused")
    assert not (tmp_path / "refused").exists()
