"""The stochastic DDIM sampler: its steps equal diffusers' DDIMScheduler (eta > 0, same noise), its
log-probs equal torch.distributions.Normal reduced the same way, for v- and epsilon-prediction, and a
stored transition re-scored under unchanged weights gives back its log-prob (ratio 1)."""

from __future__ import annotations

import pytest
import torch

from rorem_core.models.conditioning import load_prompt_embeds
from rorem_core.models.loading import load_scheduler_config, load_unet
from rorem_core.rl.sampler import (
    DDIMSchedule,
    gaussian_log_prob,
    sample_with_log_prob,
    step_mean_std,
    transition_log_prob,
)

RES, STEPS = 32, 5


@pytest.fixture(scope="module")
def parts(rl_model, tmp_path_factory):
    from diffusers import DDPMScheduler

    sched_cfg = load_scheduler_config(rl_model)
    ac = DDPMScheduler.from_config(sched_cfg).alphas_cumprod.float()
    unet = load_unet(rl_model).eval()
    cond = load_prompt_embeds(rl_model, tmp_path_factory.mktemp("cache"))
    g = torch.Generator().manual_seed(0)
    batch = {"mask": (torch.rand(3, 1, RES // 4, RES // 4, generator=g) > 0.5).float(),
             "masked": torch.randn(3, 4, RES // 4, RES // 4, generator=g)}
    return unet, cond, ac, batch, sched_cfg


@pytest.mark.parametrize("prediction_type", ["v_prediction", "epsilon"])
def test_step_log_prob_equals_torch_normal_reduced_the_same_way(parts, prediction_type):
    unet, cond, ac, batch, _ = parts
    sched = DDIMSchedule.make(ac, STEPS, prediction_type)
    tr = sample_with_log_prob(unet, cond, batch, [1, 2, 3], sched, eta=1.0, alphas_cumprod=ac, resolution=RES)
    assert tr.latents.shape == (3, STEPS + 1, 4, RES // 4, RES // 4) and tr.log_probs.shape == (3, STEPS)
    for j in range(STEPS):
        x_t, x_prev = tr.latents[:, j], tr.latents[:, j + 1]
        with torch.no_grad():
            out = unet(torch.cat([x_t, batch["mask"], batch["masked"]], 1), sched.timesteps[j].expand(3),
                       encoder_hidden_states=cond.batch(3, (RES, RES))[0],
                       added_cond_kwargs=cond.batch(3, (RES, RES))[1]).sample
        mean, std = step_mean_std(out, x_t, torch.full((3,), j), sched, 1.0, ac)
        want = torch.distributions.Normal(mean, std.expand_as(mean)).log_prob(x_prev).mean(dim=(1, 2, 3))
        torch.testing.assert_close(tr.log_probs[:, j], want, atol=1e-5, rtol=0)
        torch.testing.assert_close(gaussian_log_prob(x_prev, mean, std), want, atol=1e-5, rtol=0)


@pytest.mark.parametrize("prediction_type", ["v_prediction", "epsilon"])
@pytest.mark.parametrize("eta", [1.0, 0.5])
def test_steps_equal_diffusers_ddim_with_the_same_noise(parts, prediction_type, eta):
    """Our mean + std * z is diffusers' DDIMScheduler.step(eta, variance_noise=z) with
    set_alpha_to_one=False ("leading" spacing, steps_offset 1, as the presets' schedulers)."""
    from diffusers import DDIMScheduler

    unet, cond, ac, batch, cfg = parts
    ddim = DDIMScheduler.from_config({**cfg, "prediction_type": prediction_type}, set_alpha_to_one=False,
                                     timestep_spacing="leading", steps_offset=1, clip_sample=False)
    ddim.set_timesteps(STEPS)
    sched = DDIMSchedule.make(ac, STEPS, prediction_type)
    assert sched.timesteps.tolist() == ddim.timesteps.tolist()
    g = torch.Generator().manual_seed(5)
    x = torch.randn(3, 4, RES // 4, RES // 4, generator=g)
    for j, t in enumerate(sched.timesteps):
        out = torch.randn(x.shape, generator=g)      # any model output: the step algebra is what is compared
        z = torch.randn(x.shape, generator=g)
        mean, std = step_mean_std(out, x, torch.full((3,), j), sched, eta, ac)
        ours = mean + std * z
        theirs = ddim.step(out, int(t), x, eta=eta, variance_noise=z).prev_sample
        torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=1e-5)
        x = ours


def test_rescoring_a_stored_transition_gives_back_its_log_prob(parts):
    unet, cond, ac, batch, _ = parts
    sched = DDIMSchedule.make(ac, STEPS, "v_prediction")
    tr = sample_with_log_prob(unet, cond, batch, [7, 8, 9], sched, eta=1.0, alphas_cumprod=ac, resolution=RES)
    idx = torch.tensor([0, 3, 4])              # a different step per row, as a training minibatch mixes them
    rows = torch.arange(3)
    with torch.no_grad():
        lp, _, _ = transition_log_prob(unet, cond, batch, tr.latents[rows, idx], tr.latents[rows, idx + 1], idx,
                                       sched, eta=1.0, alphas_cumprod=ac, resolution=RES)
    torch.testing.assert_close(lp, tr.log_probs[rows, idx], atol=1e-5, rtol=0)


def test_a_sample_does_not_depend_on_its_batch(parts):
    unet, cond, ac, batch, _ = parts
    sched = DDIMSchedule.make(ac, STEPS, "v_prediction")
    full = sample_with_log_prob(unet, cond, batch, [1, 2, 3], sched, eta=1.0, alphas_cumprod=ac, resolution=RES)
    one = sample_with_log_prob(unet, cond, {k: v[1:2] for k, v in batch.items()}, [2], sched, eta=1.0,
                               alphas_cumprod=ac, resolution=RES)
    torch.testing.assert_close(one.final, full.final[1:2], atol=1e-5, rtol=0)


def test_eta_zero_has_no_density_and_is_refused(parts):
    unet, cond, ac, batch, _ = parts
    sched = DDIMSchedule.make(ac, STEPS, "v_prediction")
    with pytest.raises(ValueError, match=r"eta=0.*no density.*eta > 0"):
        sample_with_log_prob(unet, cond, batch, [1, 2, 3], sched, eta=0.0, alphas_cumprod=ac, resolution=RES)


def test_the_result_latent_is_the_last_steps_x0_prediction_not_the_noisy_last_latent(parts):
    """The last step lands on abar_0 < 1 with std > 0, so x_0' still holds noise; the image of a
    trajectory is decoded from the last step's x0_hat (module doc), computed by hand here."""
    from rorem_core.models.unet import unet_forward
    from rorem_core.preference.lcm import predicted_x0

    unet, cond, ac, batch, _ = parts
    sched = DDIMSchedule.make(ac, STEPS, "v_prediction")
    tr = sample_with_log_prob(unet, cond, batch, [4, 5, 6], sched, eta=1.0, alphas_cumprod=ac, resolution=RES)
    t = sched.timesteps[-1].expand(3)
    with torch.no_grad():
        out = unet_forward(unet, tr.latents[:, -2], t, batch, cond, RES)
    # v-prediction by hand: x0 = sqrt(abar_t) x_t - sqrt(1 - abar_t) v
    a = ac[sched.timesteps[-1]].float()
    torch.testing.assert_close(tr.x0, a.sqrt() * tr.latents[:, -2] - (1 - a).sqrt() * out.float(), atol=1e-5, rtol=0)
    torch.testing.assert_close(tr.x0, predicted_x0(out.float(), tr.latents[:, -2], t, ac, "v_prediction"))
    assert (tr.final - tr.x0).abs().mean() > 1e-3            # the last latent is not the result
