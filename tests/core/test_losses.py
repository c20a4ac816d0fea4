"""Pure tests of rorem_core.training.losses: hand-computed values on tiny tensors, invariants, the registry,
and Diffusion-DPO with a peft LoRA-disabled reference vs a naive frozen deep copy."""

from __future__ import annotations

import copy
import math

import peft
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from rorem_core.preference import lcm
from rorem_core.training.losses import (
    LN2,
    LOSSES,
    bce_loss,
    diffusion_loss,
    dpo_loss,
    get_loss,
    kto_loss,
    lcm_huber_loss,
    lcm_l2_loss,
    lcm_per_sample,
    per_sample_error,
    pos_weight_from_labels,
    reward_term,
    reward_weights,
    sibling_rank_loss,
    softplus_mse_loss,
)


def t_(*values):
    return torch.tensor(values, dtype=torch.float32)


# ------------------------------------------------------------------ mse / per-sample error

def test_per_sample_error_and_mse_hand_values():
    pred = torch.tensor([[[[1.0, 2.0]]], [[[0.0, 0.0]]]])  # (B=2, C=1, H=1, W=2)
    target = torch.tensor([[[[0.0, 0.0]]], [[[1.0, 3.0]]]])
    # e0 = (1 + 4) / 2 = 2.5 ; e1 = (1 + 9) / 2 = 5.0
    torch.testing.assert_close(per_sample_error(pred, target), t_(2.5, 5.0))
    loss, metrics = diffusion_loss(pred, target)
    assert loss.item() == pytest.approx(3.75)
    loss_w, metrics_w = diffusion_loss(pred, target, weights=t_(0.0, 2.0))
    assert loss_w.item() == pytest.approx((0.0 * 2.5 + 2.0 * 5.0) / 2)  # 5.0
    assert metrics["mse"].item() == pytest.approx(3.75) == metrics_w["mse"].item()


def test_per_sample_error_is_fp32_for_half_inputs():
    pred = torch.full((1, 1, 2, 2), 1.0, dtype=torch.float16)
    err = per_sample_error(pred, torch.zeros_like(pred))
    assert err.dtype == torch.float32 and err.shape == (1,)


def test_masked_variant_normalises_by_hole_area():
    # (B=2, C=2, H=1, W=2); sample 0 hole = pixel 0 only, sample 1 hole = both pixels
    pred = torch.tensor([[[[1.0, 3.0]], [[2.0, 4.0]]]] * 2)
    mask = torch.tensor([[[[1.0, 0.0]]], [[[1.0, 1.0]]]])  # (B, 1, h, w)
    err = per_sample_error(pred, torch.zeros_like(pred), mask=mask)
    # s0: (1^2 + 2^2) / (1 pixel * 2 channels) = 5 / 2 = 2.5 (not 5 / 4 = 1.25 as a plain mean)
    # s1: (1 + 9 + 4 + 16) / 4 = 7.5
    torch.testing.assert_close(err, t_(2.5, 7.5))
    # a uniform error of 1 per element gives 1 whatever the hole size
    ones = per_sample_error(torch.ones(2, 2, 1, 2), torch.zeros(2, 2, 1, 2), mask=mask)
    torch.testing.assert_close(ones, t_(1.0, 1.0))


def test_masked_variant_rejects_empty_and_misshaped_masks():
    pred = torch.ones(2, 4, 2, 2)
    empty = torch.zeros(2, 1, 2, 2)
    empty[0, 0, 0, 0] = 1.0
    with pytest.raises(ValueError, match=r"empty mask for batch samples \[1\]"):
        per_sample_error(pred, pred, mask=empty)
    with pytest.raises(ValueError, match="interpolate"):
        per_sample_error(pred, pred, mask=torch.ones(2, 1, 16, 16))


# ------------------------------------------------------------------ discriminator losses

def test_bce_hand_values_and_pos_weight():
    logits, labels = t_(math.log(3.0), math.log(3.0)), t_(1.0, 0.0)  # p = 3/4 for both
    loss, metrics = bce_loss(logits, labels)
    # [-ln(3/4) - ln(1/4)] / 2 = (0.287682 + 1.386294) / 2
    assert loss.item() == pytest.approx(0.8369882167858357, abs=1e-6)
    assert metrics["accuracy"].item() == 0.5 and metrics["prob_mean"].item() == pytest.approx(0.75)
    loss_pw, _ = bce_loss(logits, labels, pos_weight=2.0)
    assert loss_pw.item() == pytest.approx((2 * 0.2876820724517809 + 1.3862943611198906) / 2, abs=1e-6)


def test_pos_weight_scales_positive_gradient_only():
    logits = t_(0.0, 0.0).requires_grad_()
    bce_loss(logits, t_(1.0, 0.0), pos_weight=3.0)[0].backward()
    # d/dlogit of -pw*log(sigmoid) at 0 = -pw * 0.5 / B ; negative: +0.5 / B
    torch.testing.assert_close(logits.grad, t_(-3.0 * 0.5 / 2, 0.5 / 2))
    assert pos_weight_from_labels(t_(1, 0, 0, 0)) == 3.0
    assert pos_weight_from_labels(t_(1, 1)) == 1.0


def test_softplus_mse_hand_value():
    logits = t_(0.0, math.log(math.e - 1.0))  # softplus -> ln 2 = 0.693147, ln(e) = 1
    loss, metrics = softplus_mse_loss(logits, t_(0.0, 1.0))
    assert loss.item() == pytest.approx((0.6931471805599453**2 + 0.0) / 2, abs=1e-6)
    assert metrics["accuracy"].item() == 0.5  # 0.693 > 0.5 but labelled 0; 1.0 > 0.5 labelled 1


def test_sibling_rank_loss_hand_values_and_gradient():
    # input 0: good z=2 vs bad 0 and bad 1 (diffs 2, 1); input 1: good -1 vs bad 0.5 (diff -1.5, wrong order)
    z, y, g = t_(2.0, 0.0, 1.0, -1.0, 0.5).requires_grad_(), t_(1, 0, 0, 1, 0), torch.tensor([0, 0, 0, 1, 1])
    loss, m = sibling_rank_loss(z, y, g)
    # [softplus(-2) + softplus(-1) + softplus(1.5)] / 3 = (0.126928 + 0.313262 + 1.701413) / 3
    assert loss.item() == pytest.approx(0.713868, abs=1e-6)
    assert m["rank_pairs"].item() == 3 and m["rank_acc"].item() == pytest.approx(2 / 3)
    loss.backward()
    # d/d diff of softplus(-diff) = -sigmoid(-diff); the good one gets it, the bad one its negative, / 3 pairs
    s = lambda d: 1 / (1 + math.exp(d))   # noqa: E731  sigmoid(-d)
    torch.testing.assert_close(z.grad, t_(-(s(2) + s(1)) / 3, s(2) / 3, s(1) / 3, -s(-1.5) / 3, s(-1.5) / 3))
    # siblings of one class, or clean and failed candidates of DIFFERENT inputs: no pair, loss 0
    none, m0 = sibling_rank_loss(t_(1.0, 5.0, -2.0), t_(1, 1, 0), torch.tensor([0, 0, 1]))
    assert none.item() == 0.0 and m0["rank_pairs"].item() == 0


# ------------------------------------------------------------------ DPO

def test_dpo_hand_value():
    loss, m = dpo_loss(t_(0.10, 0.20), t_(0.12, 0.10), t_(0.11, 0.15), t_(0.11, 0.15), beta=100.0)
    # s0: z = -50 * ((0.10 - 0.12) - 0) = +1 -> ln(1 + e^-1) = 0.313262
    # s1: z = -50 * ((0.20 - 0.10) - 0) = -5 -> ln(1 + e^5) = 5.006715
    assert loss.item() == pytest.approx((0.31326168751822286 + 5.006715348489118) / 2, abs=1e-4)
    assert m["implicit_acc"].item() == 0.5
    assert m["reward_margin"].item() == pytest.approx((1.0 - 5.0) / 2, abs=1e-4)
    assert m["policy_err_w"].item() == pytest.approx(0.15) and m["ref_err_l"].item() == pytest.approx(0.13)


def test_dpo_is_ln2_at_init_with_expected_gradient():
    errs_w, errs_l = t_(0.3, 0.5).requires_grad_(), t_(0.4, 0.1).requires_grad_()
    ref_w, ref_l = t_(0.3, 0.5).requires_grad_(), t_(0.4, 0.1).requires_grad_()
    loss, m = dpo_loss(errs_w, errs_l, ref_w, ref_l, beta=5000.0)
    assert loss.item() == pytest.approx(LN2) == pytest.approx(0.6931471805599453)
    assert m["implicit_acc"].item() == 0.5  # HF tie rule: z == 0 counts half
    loss.backward()
    # dL/de_w = -(1/B) * sigmoid(-0) * (-beta/2) = 5000 / (4 * 2) = 625 ; dL/de_l = -625
    torch.testing.assert_close(errs_w.grad, t_(625.0, 625.0))
    torch.testing.assert_close(errs_l.grad, t_(-625.0, -625.0))
    assert ref_w.grad is None and ref_l.grad is None  # the reference carries no gradient


def test_dpo_rejects_non_per_sample_inputs():
    with pytest.raises(ValueError, match="per_sample_error"):
        dpo_loss(torch.ones(2, 4), torch.ones(2, 4), torch.ones(2, 4), torch.ones(2, 4))


class TinyDenoiser(nn.Module):
    """UNet-like stand-in: conv in, additive time embedding, conv out."""

    def __init__(self):
        super().__init__()
        self.conv_in = nn.Conv2d(4, 8, 3, padding=1)
        self.time_proj = nn.Linear(1, 8)
        self.conv_out = nn.Conv2d(8, 4, 3, padding=1)

    def forward(self, x, t):
        h = self.conv_in(x) + self.time_proj(t.to(x.dtype)[:, None] / 1000.0)[:, :, None, None]
        return self.conv_out(F.silu(h))


def _pair_errors(model, z_w, z_l, eps, t, abar):
    """One (t, eps) per pair, shared by w and l; epsilon target."""
    x_w, x_l = lcm.add_noise(z_w, eps, t, abar), lcm.add_noise(z_l, eps, t, abar)
    return per_sample_error(model(x_w, t), eps), per_sample_error(model(x_l, t), eps)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_dpo_lora_disabled_reference_equals_frozen_copy(dtype):
    torch.manual_seed(0)
    base = TinyDenoiser().to(dtype)
    frozen_ref = copy.deepcopy(base).requires_grad_(False)  # the naive way: a second model
    config = peft.LoraConfig(r=2, lora_alpha=2, init_lora_weights=False,
                             target_modules=["conv_in", "time_proj", "conv_out"])
    policy = peft.get_peft_model(base, config)
    with torch.no_grad():  # small random adapters so policy != reference but z stays O(1)
        for name, p in policy.named_parameters():
            if "lora_B" in name:
                p.mul_(0.02)
    lora_params = {n: p for n, p in policy.named_parameters() if p.requires_grad}
    assert lora_params and all("lora_" in n for n in lora_params)
    abar = torch.cumprod(1 - torch.linspace(0.00085**0.5, 0.012**0.5, 1000, dtype=dtype) ** 2, 0)
    z_w, z_l, eps = torch.randn(3, 2, 4, 4, 4, dtype=dtype).unbind(0)
    t, beta = torch.tensor([100, 700]), 2000.0

    # (a) production path: same module with adapters disabled, under no_grad
    with torch.no_grad(), policy.disable_adapter():
        ref_w, ref_l = _pair_errors(policy, z_w, z_l, eps, t, abar)
    loss_a, _ = dpo_loss(*_pair_errors(policy, z_w, z_l, eps, t, abar), ref_w, ref_l, beta=beta)
    loss_a.backward()
    grads_a = {n: p.grad.clone() for n, p in lora_params.items()}
    policy.zero_grad()

    # (b) naive: frozen deep copy as reference, loss written out by hand (model dtype; the fp32
    # case pins the production numerics, the fp64 case the maths without rounding noise x beta)
    x_w, x_l = lcm.add_noise(z_w, eps, t, abar), lcm.add_noise(z_l, eps, t, abar)
    mse = lambda out: ((out - eps) ** 2).mean(dim=(1, 2, 3))  # noqa: E731
    with torch.no_grad():
        r_w, r_l = mse(frozen_ref(x_w, t)), mse(frozen_ref(x_l, t))
    inside = -0.5 * beta * ((mse(policy(x_w, t)) - mse(policy(x_l, t))) - (r_w - r_l))
    loss_b = -F.logsigmoid(inside).mean()
    loss_b.backward()

    assert abs(loss_a.item() - LN2) > 1e-2 and loss_a.item() < 5.0  # informative, not saturated
    assert loss_a.item() == pytest.approx(loss_b.item(), abs=1e-6)
    for n, p in lora_params.items():
        torch.testing.assert_close(grads_a[n], p.grad, rtol=1e-6, atol=1e-6)
        assert grads_a[n].abs().sum() > 0, n


# ------------------------------------------------------------------ KTO

def test_kto_hand_value_with_batch_reference_point():
    policy, ref, labels = t_(0.10, 0.10, 0.30), t_(0.11, 0.12, 0.31), t_(1, 0, 1)
    loss, m = kto_loss(policy, ref, labels, beta=100.0, desirable_weight=1.0, undesirable_weight=2.0)
    # g = ref - policy = [0.01, 0.02, 0.01]; kl = max(0, 0.04 / 3) = 0.013333
    # inner = [+100 * (-0.003333), -100 * (+0.006667), +100 * (-0.003333)] = [-1/3, -2/3, -1/3]
    # losses = w * (1 - sigmoid(inner)) = [0.582570, 2 * 0.660756, 0.582570]
    assert m["kl"].item() == pytest.approx(0.04 / 3, abs=1e-6)
    assert loss.item() == pytest.approx((0.5825702 + 1.3215127 + 0.5825702) / 3, abs=1e-5)
    assert m["implicit_acc"].item() == 0.0
    assert m["reward_good"].item() == pytest.approx(0.01, abs=1e-6)
    assert m["reward_bad"].item() == pytest.approx(0.02, abs=1e-6)


def test_kto_reference_point_clamped_and_overridable():
    # g = 0.1 - 0.2 = -0.1 < 0 -> kl = 0; inner = +10 * (-0.1) = -1 -> 1 - sigmoid(-1) = 0.731059
    loss, m = kto_loss(t_(0.2), t_(0.1), t_(1), beta=10.0)
    assert m["kl"].item() == 0.0 and loss.item() == pytest.approx(0.7310585786300049, abs=1e-6)
    # explicit reference point 0.05: inner = 10 * (-0.1 - 0.05) = -1.5 -> 1 - sigmoid(-1.5) = 0.817574
    loss, _ = kto_loss(t_(0.2), t_(0.1), t_(1), beta=10.0, reference_point=0.05)
    assert loss.item() == pytest.approx(0.8175744761936437, abs=1e-6)


def test_kto_at_init_and_label_validation():
    e = t_(0.3, 0.2, 0.1, 0.4)
    loss, _ = kto_loss(e, e, t_(1, 1, 0, 0), desirable_weight=1.0, undesirable_weight=3.0)
    assert loss.item() == pytest.approx((1 + 1 + 3 + 3) / 4 * 0.5)  # h = 1/2 everywhere
    with pytest.raises(ValueError, match="labels must be 0"):
        kto_loss(e, e, t_(1, 0.5, 0, 0))


# ------------------------------------------------------------------ LCM losses and reward weighting

def test_lcm_l2_and_huber_hand_values():
    pred, target = torch.tensor([[[[0.0, 3.0]]]]), torch.zeros(1, 1, 1, 2)
    assert lcm_l2_loss(pred, target)[0].item() == pytest.approx((0 + 9) / 2)
    # c = 1: [sqrt(0 + 1) - 1 + sqrt(9 + 1) - 1] / 2 = (0 + 2.162278) / 2
    assert lcm_huber_loss(pred, target, huber_c=1.0)[0].item() == pytest.approx(1.0811388, abs=1e-6)
    # default c = 0.001: (0 + sqrt(9.000001) - 0.001) / 2
    assert lcm_huber_loss(pred, target)[0].item() == pytest.approx(1.4995001, abs=1e-6)
    with pytest.raises(ValueError, match="'l2' or 'huber'"):
        lcm_per_sample(pred, target, loss_type="l1")


def test_lcm_weighted_mean_hand_value():
    pred = torch.tensor([[[[1.0]]], [[[2.0]]]])  # per-sample l2 = [1, 4]
    loss, m = lcm_l2_loss(pred, torch.zeros_like(pred), weights=t_(1.5, 0.5))
    assert loss.item() == pytest.approx((1.5 * 1 + 0.5 * 4) / 2)  # 1.75
    assert m["distill_unweighted"].item() == pytest.approx(2.5)


def test_reward_weights_clamp_mean_one_and_threshold():
    w, m = reward_weights(t_(0.2, 0.6, 1.4, -0.3), mode="clamp")
    # clamp -> [0.2, 0.6, 1.0, 0.0], mean 0.45 -> [0.444444, 1.333333, 2.222222, 0]
    torch.testing.assert_close(w, t_(0.2 / 0.45, 0.6 / 0.45, 1.0 / 0.45, 0.0))
    assert w.mean().item() == pytest.approx(1.0) and m["kept_fraction"].item() == 0.75
    w, m = reward_weights(t_(0.2, 0.6, 0.8, 0.4), mode="clamp", threshold=0.5)
    torch.testing.assert_close(w, t_(0.0, 0.6 / 0.35, 0.8 / 0.35, 0.0))  # kept [0, .6, .8, 0], mean .35
    assert m["fallback"].item() == 0.0


def test_reward_weights_softmax_temperature():
    scores = t_(0.0, 0.1, 0.2)
    w_cold, _ = reward_weights(scores, mode="softmax", temperature=0.1)
    # u = exp([-2, -1, 0]) = [0.135335, 0.367879, 1]; mean 0.501071
    torch.testing.assert_close(w_cold, t_(0.2700912, 0.7341836, 1.9957252), rtol=1e-5, atol=1e-6)
    w_hot, m_hot = reward_weights(scores, mode="softmax", temperature=100.0)
    assert w_hot.mean().item() == pytest.approx(1.0) and w_cold.mean().item() == pytest.approx(1.0)
    assert (w_hot - 1).abs().max() < 2e-3  # tau = 100: exp(+-0.001) -> within 0.1 % of uniform
    assert w_cold.max() > w_hot.max() and m_hot["ess_fraction"].item() > 0.999
    with pytest.raises(ValueError, match="temperature"):
        reward_weights(scores, mode="softmax", temperature=0.0)
    with pytest.raises(ValueError, match="'clamp' or 'softmax'"):
        reward_weights(scores, mode="rank")


@pytest.mark.parametrize("mode", ["clamp", "softmax"])
def test_reward_weights_all_equal_are_exactly_one(mode):
    for value in (0.3, 0.7, 3.0):
        w, m = reward_weights(torch.full((7,), value), mode=mode, temperature=0.1)
        assert torch.equal(w, torch.ones(7)) and m["fallback"].item() == 0.0


@pytest.mark.parametrize("mode", ["clamp", "softmax"])
def test_reward_weights_all_below_threshold_fall_back_to_uniform(mode):
    w, m = reward_weights(t_(0.1, 0.2, 0.3), mode=mode, threshold=0.5)
    assert torch.equal(w, torch.ones(3)) and m["fallback"].item() == 1.0
    w, m = reward_weights(t_(-1.0, -2.0), mode="clamp")  # everything clamps to 0
    assert torch.equal(w, torch.ones(2)) and m["fallback"].item() == 1.0


@pytest.mark.parametrize("loss_fn", [lcm_l2_loss, lcm_huber_loss])
def test_rwd_with_equal_scores_is_exactly_plain_distillation(loss_fn):
    torch.manual_seed(1)
    pred, target = torch.randn(5, 4, 8, 8), torch.randn(5, 4, 8, 8)
    weights, _ = reward_weights(torch.full((5,), 0.8), mode="softmax", temperature=0.15)
    assert torch.equal(loss_fn(pred, target, weights=weights)[0], loss_fn(pred, target)[0])


def test_reward_term_hand_value():
    reward = t_(0.2, 0.6).requires_grad_()
    loss, m = reward_term(reward, scale=0.5)
    assert loss.item() == pytest.approx(-0.5 * 0.4) and m["reward_mean"].item() == pytest.approx(0.4)
    loss.backward()
    torch.testing.assert_close(reward.grad, t_(-0.25, -0.25))  # -scale / B


# ------------------------------------------------------------------ registry

def test_registry_lookup_and_unknown_name():
    assert set(LOSSES) == {"mse", "bce", "softplus_mse", "dpo", "kto", "lcm_l2", "lcm_huber", "ppo", "reinforce"}
    assert get_loss("dpo") is dpo_loss and get_loss("mse") is diffusion_loss
    with pytest.raises(ValueError) as err:
        get_loss("dpo2")
    message = str(err.value)
    assert "'dpo2'" in message and all(name in message for name in LOSSES)


def test_metrics_are_detached_tensors():
    pred = torch.randn(2, 4, 2, 2, requires_grad=True)
    for loss, metrics in (diffusion_loss(pred, torch.zeros_like(pred)),
                          dpo_loss(*per_sample_error(pred, torch.zeros_like(pred)).repeat(2, 1),
                                   t_(1.0, 1.0), t_(1.0, 1.0))):
        assert loss.requires_grad
        assert all(not v.requires_grad and v.ndim == 0 for v in metrics.values())


# ------------------------------------------------------------------ online RL (ppo / reinforce)

from rorem_core.training.losses import (  # noqa: E402
    gaussian_kl_same_std,
    group_advantages,
    ppo_loss,
    reinforce_loss,
)


def test_group_advantages_hand_values_clip_and_equal_groups():
    # group 1: [1, 3] -> mean 2, population std 1 -> A = [-1, 1]; group 2: all equal -> A = 0
    adv, m = group_advantages(t_(1, 3, 5, 5).view(2, 2), clip=5.0, eps=0.0 + 1e-12)
    torch.testing.assert_close(adv, t_(-1, 1, 0, 0).view(2, 2))
    assert float(m["reward_mean"]) == pytest.approx(3.5) and float(m["reward_std"]) == pytest.approx(0.5)
    # one outlier among K = 4: z = (10 - 2.5) / std([0, 0, 0, 10]) = 7.5 / 4.3301 = 1.7320, clipped at 1.5
    adv, m = group_advantages(t_(0, 0, 0, 10).view(1, 4), clip=1.5)
    assert float(adv[0, 3]) == pytest.approx(1.5) and float(adv[0, 0]) == pytest.approx(-2.5 / math.sqrt(18.75), rel=1e-5)
    assert float(m["adv_clipped"]) == pytest.approx(0.25)


def test_group_advantages_refuse_groups_of_one():
    with pytest.raises(ValueError, match="num_samples"):
        group_advantages(t_(1, 2, 3).view(3, 1))


def test_ppo_clipped_hand_values_above_and_below_the_range_for_both_signs():
    """clip c = 0.2; ratios 1.5 (above), 0.5 (below), each with A = +1 and A = -1:
    A=+1, rho=1.5: max(-1.5, -1.2) = -1.2 (clipped: no incentive to push further up)
    A=+1, rho=0.5: max(-0.5, -0.8) = -0.5 (unclipped: pulled back up)
    A=-1, rho=1.5: max( 1.5,  1.2) =  1.5 (unclipped: pulled back down)
    A=-1, rho=0.5: max( 0.5,  0.8) =  0.8 (clipped)             mean = (-1.2 - 0.5 + 1.5 + 0.8) / 4 = 0.15"""
    lp_old = torch.zeros(4)
    lp = torch.log(t_(1.5, 0.5, 1.5, 0.5)).requires_grad_(True)
    adv = t_(1, 1, -1, -1)
    loss, m = ppo_loss(lp, lp_old, adv, clip_range=0.2)
    assert float(loss.detach()) == pytest.approx(0.15, abs=1e-6)
    loss.backward()
    # only the unclipped terms carry gradient: d/dlp (-A rho) / 4 = -A rho / 4
    torch.testing.assert_close(lp.grad, t_(0, -0.5 / 4, 1.5 / 4, 0))
    assert float(m["clipfrac"]) == 1.0
    assert float(m["approx_kl"]) == pytest.approx(0.5 * float((torch.log(t_(1.5, 0.5)) ** 2).mean()), rel=1e-6)


def test_at_ratio_one_ppo_equals_reinforce_in_value_and_gradient():
    g = torch.Generator().manual_seed(0)
    lp0 = torch.randn(6, generator=g)
    adv = torch.randn(6, generator=g)
    grads, values = [], []
    for fn in (ppo_loss, reinforce_loss):
        lp = lp0.clone().requires_grad_(True)
        loss, m = fn(lp, lp0.clone(), adv, clip_range=1e-4)
        assert float(m["ratio_mean"]) == 1.0 and float(m["clipfrac"]) == 0.0 and float(m["approx_kl"]) == 0.0
        loss.backward()
        values.append(loss.detach())
        grads.append(lp.grad)
    assert float(values[0]) == float(values[1]) == pytest.approx(-float(adv.mean()))
    torch.testing.assert_close(grads[0], grads[1], rtol=0, atol=0)
    torch.testing.assert_close(grads[0], -adv / 6)       # REINFORCE: -A grad logp, batch mean


def test_reinforce_is_unclipped_importance_weighted():
    lp = torch.log(t_(2.0, 0.5))
    loss, m = reinforce_loss(lp, torch.zeros(2), t_(1, -1), clip_range=0.2)
    assert float(loss) == pytest.approx((-2.0 + 0.5) / 2) and float(m["clipfrac"]) == 1.0


def test_gaussian_kl_same_std_hand_value_and_penalty():
    mp, mq = torch.zeros(1, 1, 1, 2), t_(0.1, 0.3).view(1, 1, 1, 2)
    std = torch.full((1, 1, 1, 1), 0.5)
    kl = gaussian_kl_same_std(mp, mq, std)          # mean(0.01, 0.09) / (2 * 0.25) = 0.05 / 0.5 = 0.1
    assert kl.shape == (1,) and float(kl) == pytest.approx(0.1, rel=1e-6)
    # equals the KL of torch.distributions, averaged over dims
    ref = torch.distributions.kl_divergence(torch.distributions.Normal(mp, std), torch.distributions.Normal(mq, std))
    assert float(kl) == pytest.approx(float(ref.mean()), rel=1e-6)
    loss, m = ppo_loss(torch.zeros(1), torch.zeros(1), t_(1.0), kl=kl, kl_coef=2.0)
    assert float(loss) == pytest.approx(-1.0 + 0.2) and float(m["kl_ref"]) == pytest.approx(0.1)


def test_rl_losses_are_registered():
    assert LOSSES["ppo"] is ppo_loss and get_loss("reinforce") is reinforce_loss
