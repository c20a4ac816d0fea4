"""Diffusion-DPO / KTO at the level of a training step and of the train_dpo stage (small random
model, seconds): ln 2 at init, adapter-disabled reference == a frozen deep copy (loss and
gradients), shared (t, eps), KTO at init, LoRA output accepted by diffusers, fused LoRA inits."""

from __future__ import annotations

import copy
import json
import math

import pytest
import torch

from rorem_core.config import TrainDPOConfig, stage_config
from rorem_core.data.latents import LatentCache
from rorem_core.models.conditioning import load_prompt_embeds
from rorem_core.models.loading import load_scheduler_config, load_unet, load_vae
from rorem_core.models.unet import add_lora
from rorem_core.preference.dpo import (
    StepContext,
    adapters_disabled,
    frozen_copy,
    load_policy_unet,
    make_preference_loss,
    pair_errors,
)
from rorem_core.preference.pairs import load_pair_batch, pair_entries
from rorem_core.stages import train_dpo
from rorem_core.training.losses import LN2, get_loss

RES = 32


def _ctx(model, cache_dir, masked=False):
    return StepContext.from_scheduler(load_scheduler_config(model), load_prompt_embeds(model, cache_dir), RES,
                                      "cpu", masked=masked)


@pytest.fixture(scope="module")
def pair_batch(small_model, small_data, tmp_path_factory):
    cache = LatentCache(tmp_path_factory.mktemp("lat"), load_vae(small_model), RES)
    train, val = pair_entries(cache, [small_data / "pairs.json"], 0.0)
    assert len(train) == 12 and val == []
    return load_pair_batch(train[:6])


def _cfg(**kw):
    return TrainDPOConfig(base={"device": "cpu", "resolution": RES}, augment_dihedral=False, **kw)


def _perturb_lora(unet, seed=0):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for n, p in unet.named_parameters():
            if "lora_B" in n:
                p.copy_(0.05 * torch.randn(p.shape, generator=g))


def test_step_loss_is_ln2_at_init_with_implicit_accuracy_one_half(small_model, pair_batch, tmp_path):
    unet, _, fused = load_policy_unet(small_model, 4, ["to_q", "to_k", "to_v", "to_out.0"])
    assert not fused
    step = make_preference_loss(unet, _ctx(small_model, tmp_path), _cfg())
    loss, m = step(pair_batch, torch.Generator().manual_seed(0))
    assert loss.item() == pytest.approx(LN2, abs=1e-7)
    assert m["implicit_acc"].item() == 0.5 and m["reward_margin"].item() == 0.0
    assert m["policy_err_w"].item() == m["ref_err_w"].item() > 0


@pytest.mark.parametrize("masked", [False, True])
def test_adapter_disabled_reference_equals_a_frozen_deep_copy(small_model, pair_batch, tmp_path, masked):
    """The naive implementation: a separate frozen UNet (copied before the LoRA was added) as the
    reference. Same loss and LoRA gradients to 1e-6, with a LoRA that is not the identity."""
    ctx = _ctx(small_model, tmp_path, masked)
    unet = load_unet(small_model)
    ref_copy = copy.deepcopy(unet).requires_grad_(False)
    trainable = add_lora(unet, 4)
    _perturb_lora(unet)
    results = []
    for reference in (adapters_disabled, frozen_copy(ref_copy)):
        step = make_preference_loss(unet, ctx, _cfg(), reference=reference)
        loss, m = step(pair_batch, torch.Generator().manual_seed(3))
        grads = torch.autograd.grad(loss, trainable)
        results.append((loss.detach(), m, grads))
    (l1, m1, g1), (l2, m2, g2) = results
    assert l1.item() != pytest.approx(LN2, abs=1e-4)            # the LoRA moved the policy
    torch.testing.assert_close(l1, l2, atol=1e-6, rtol=0)
    for k in ("ref_err_w", "ref_err_l", "policy_err_w", "policy_err_l"):
        torch.testing.assert_close(m1[k], m2[k], atol=1e-7, rtol=1e-6)
    for a, b in zip(g1, g2):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-5)
    assert all(p.requires_grad for p in trainable) and not any(p.requires_grad for p in ref_copy.parameters())


def test_one_timestep_and_noise_per_pair_shared_by_w_l_policy_and_reference(small_model, pair_batch, tmp_path):
    """Preferred == rejected makes every pair's four errors equal only if t and eps are shared."""
    unet, _, _ = load_policy_unet(small_model, 4, ["to_q", "to_v"])
    _perturb_lora(unet, 1)
    same = {**pair_batch, "l": pair_batch["w"].clone()}
    pw, pl, rw, rl = pair_errors(unet, same, torch.Generator().manual_seed(0), _ctx(small_model, tmp_path))
    torch.testing.assert_close(pw, pl, atol=0, rtol=0)
    torch.testing.assert_close(rw, rl, atol=0, rtol=0)
    assert not torch.equal(pw, rw)
    loss, _ = get_loss("dpo")(pw, pl, rw, rl, beta=5000.0)
    assert loss.item() == pytest.approx(LN2, abs=1e-7)


def test_kto_step_at_init_is_half_the_mean_weight(small_model, pair_batch, tmp_path):
    unet, _, _ = load_policy_unet(small_model, 4, ["to_q"])
    batch = {"target": torch.cat([pair_batch["w"], pair_batch["l"]]), "mask": pair_batch["mask"].repeat(2, 1, 1, 1),
             "masked": pair_batch["masked"].repeat(2, 1, 1, 1), "label": torch.tensor([1.0] * 6 + [0.0] * 6)}
    cfg = _cfg(loss="kto", kto_desirable_weight=1.0, kto_undesirable_weight=3.0)
    loss, m = make_preference_loss(unet, _ctx(small_model, tmp_path), cfg)(batch, torch.Generator().manual_seed(0))
    assert loss.item() == pytest.approx((6 * 1.0 + 6 * 3.0) / 12 / 2, abs=1e-7)   # h = sigmoid(0) = 1/2
    assert m["kl"].item() == 0.0


def _stage_params(params, **dpo):
    return params(train_dpo={"steps": 2, "batch_size": 4, "lr": 1e-3, "log_every": 1, "lora_rank": 4,
                             "val_fraction": 0.3, **dpo})


def test_stage_trains_every_lora_parameter_and_writes_a_diffusers_lora(small_model, small_data, params, tmp_path):
    from diffusers import StableDiffusionXLInpaintPipeline
    from safetensors.torch import load_file

    cfg = stage_config("train_dpo", _stage_params(params))
    out = tmp_path / "dpo"
    res = train_dpo.run(cfg, small_model, out, pairs=[small_data])
    assert res.steps == 2 and res.n_train + res.n_val == 12 and res.n_val > 0
    assert res.val_before["implicit_acc"] == 0.5 and math.isfinite(res.val_after["reward_margin"])
    ref = json.loads((out / "rorem_model.json").read_text())
    assert ref["loras"] == ["lora"] and ref["unet"] is None
    saved = load_file(str(out / "lora" / "pytorch_lora_weights.safetensors"))
    ups = {k: v for k, v in saved.items() if "lora_B" in k or "lora.up" in k}
    assert ups and all(v.abs().sum() > 0 for v in ups.values()), "a LoRA up-projection did not train"
    pipe = StableDiffusionXLInpaintPipeline.from_pretrained(str(small_model))
    pipe.load_lora_weights(str(out / "lora"))
    mine = load_unet(out)
    theirs = {n: p for n, p in pipe.unet.named_parameters() if "lora" in n}
    assert theirs and all(torch.equal(p, dict(mine.named_parameters())[n.replace("default_0", "default")])
                          for n, p in theirs.items())


def test_kto_stage_from_pairs_and_a_lora_init_is_fused_under_the_adapter(small_model, small_data, params, tmp_path):
    p = _stage_params(params, loss="kto", val_fraction=0.0)
    first = tmp_path / "first"
    train_dpo.run(stage_config("train_dpo", p), small_model, first, pairs=[small_data])
    # a LoRA remover as init: fused under the new adapter, so "adapters disabled" is exactly that
    # remover; the output stores only its adapter, stacked on the init's (tests/preference/test_lora_stack.py)
    second = tmp_path / "second"
    res = train_dpo.run(stage_config("train_dpo", _stage_params(params)), first, second, pairs=[small_data])
    ref = json.loads((second / "rorem_model.json").read_text())
    assert res.loss == "dpo" and ref["unet"] is None and ref["loras"] == ["../first/lora", "lora"]
    init, fused, _ = load_unet(first), *load_policy_unet(first, 2, ["to_q"])[:1], None
    fused.disable_adapters()
    x = torch.randn(1, 9, 8, 8)
    hidden, added = torch.zeros(1, 77, 64), {"text_embeds": torch.zeros(1, 32), "time_ids": torch.zeros(1, 6)}
    with torch.no_grad():
        torch.testing.assert_close(fused(x, 10, encoder_hidden_states=hidden, added_cond_kwargs=added).sample,
                                   init(x, 10, encoder_hidden_states=hidden, added_cond_kwargs=added).sample,
                                   atol=1e-5, rtol=1e-4)


def test_config_is_lora_only_and_needs_inputs(small_model, params, tmp_path):
    with pytest.raises(ValueError, match="LoRA-only"):
        TrainDPOConfig(base={}, mode="full")
    with pytest.raises(ValueError, match="needs --pairs"):
        train_dpo.run(stage_config("train_dpo", _stage_params(params)), small_model, tmp_path / "x")
