"""Pure tests of rorem_core.preference.lcm: boundary scalings, the skip-step DDIM grid, x0/eps conversions."""

from __future__ import annotations

import math

import pytest
import torch
from diffusers import DDPMScheduler

from rorem_core.preference import lcm


def sdxl_alphas_cumprod() -> torch.Tensor:
    """scaled_linear betas 0.00085 -> 0.012 over 1000 steps (SDXL's schedule), built by hand."""
    betas = torch.linspace(0.00085**0.5, 0.012**0.5, 1000, dtype=torch.float32) ** 2
    return torch.cumprod(1.0 - betas, dim=0)


def test_boundary_scalings_hand_values():
    c_skip, c_out = lcm.boundary_scalings(torch.tensor([0, 1]))
    # t = 0: 0.25 / 0.25 = 1 and 0 ; t = 1: (10 t)^2 = 100 -> 0.25 / 100.25, 10 / sqrt(100.25)
    torch.testing.assert_close(c_skip, torch.tensor([1.0, 0.0024937656]))
    torch.testing.assert_close(c_out, torch.tensor([0.0, 0.9987523389]))
    c_skip, c_out = lcm.boundary_scalings(999)
    assert c_skip.item() < 1e-7 and c_out.item() == pytest.approx(1.0, abs=1e-7)


def test_consistency_output_is_identity_at_t0():
    x_t, x0_hat = torch.randn(2, 4, 3, 3), torch.randn(2, 4, 3, 3)
    torch.testing.assert_close(lcm.consistency_output(x0_hat, x_t, torch.tensor([0, 0])), x_t)
    out = lcm.consistency_output(x0_hat, x_t, torch.tensor([0, 999]))
    torch.testing.assert_close(out[1], x0_hat[1], atol=1e-6, rtol=0)


def test_ddim_solver_grid_and_previous_timesteps():
    abar = sdxl_alphas_cumprod()
    solver = lcm.DDIMSolver(abar, num_ddim_timesteps=50)
    assert solver.step_ratio == 20
    assert solver.timesteps.tolist() == list(range(19, 1000, 20))  # [19, 39, ..., 999], 50 entries
    start, prev = solver.timesteps_for(torch.tensor([0, 1, 2, 49]))
    assert start.tolist() == [19, 39, 59, 999]
    assert prev.tolist() == [0, 19, 39, 979]  # t - 20, clamped at 0 for the first grid point
    # abar_prev[i] = abar[grid[i] - 20] (abar[0] for i = 0), as diffusers' DDIMSolver
    assert torch.equal(solver.alphas_cumprod_prev[[0, 1, 49]], abar[[0, 19, 979]])
    idx = solver.sample_indices(256, generator=torch.Generator().manual_seed(0))
    assert idx.dtype == torch.long and idx.min() >= 0 and idx.max() <= 49
    with pytest.raises(ValueError, match="num_ddim_timesteps"):
        lcm.DDIMSolver(abar, num_ddim_timesteps=0)


def test_ddim_step_hand_value_and_solver_step():
    x0, eps = torch.full((1, 1, 1, 1), 1.0), torch.full((1, 1, 1, 1), 2.0)
    # sqrt(0.36) * 1 + sqrt(0.64) * 2 = 0.6 + 1.6 = 2.2
    assert lcm.ddim_step(x0, eps, torch.tensor([0.36])).item() == pytest.approx(2.2)
    abar = sdxl_alphas_cumprod()
    solver = lcm.DDIMSolver(abar)
    x0, eps = torch.randn(2, 4, 2, 2), torch.randn(2, 4, 2, 2)
    index = torch.tensor([3, 40])
    _, prev = solver.timesteps_for(index)
    # one solver step == re-noising x0 with the same eps at t_prev
    torch.testing.assert_close(solver.step(x0, eps, index), lcm.add_noise(x0, eps, prev, abar))


def test_predicted_x0_and_eps_hand_values():
    abar = torch.tensor([0.64])  # a = 0.8, s = 0.6
    x_t, out, t = torch.full((1, 1, 1, 1), 1.0), torch.full((1, 1, 1, 1), 0.5), torch.tensor([0])
    # epsilon: (1 - 0.6 * 0.5) / 0.8 = 0.875 ; v: 0.8 * 1 - 0.6 * 0.5 = 0.5 ; sample: 0.5
    assert lcm.predicted_x0(out, x_t, t, abar, "epsilon").item() == pytest.approx(0.875)
    assert lcm.predicted_x0(out, x_t, t, abar, "v_prediction").item() == pytest.approx(0.5)
    assert lcm.predicted_x0(out, x_t, t, abar, "sample").item() == pytest.approx(0.5)
    # eps from v: 0.6 * 1 + 0.8 * 0.5 = 1.0 ; from sample: (1 - 0.8 * 0.5) / 0.6 = 1.0
    assert lcm.predicted_eps(out, x_t, t, abar, "v_prediction").item() == pytest.approx(1.0)
    assert lcm.predicted_eps(out, x_t, t, abar, "sample").item() == pytest.approx(1.0)
    assert lcm.predicted_eps(out, x_t, t, abar, "epsilon").item() == pytest.approx(0.5)
    with pytest.raises(ValueError, match="v_prediction"):
        lcm.predicted_x0(out, x_t, t, abar, "flow")


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction", "sample"])
def test_predicted_x0_eps_invert_the_forward_process(prediction_type):
    gen = torch.Generator().manual_seed(0)
    abar = sdxl_alphas_cumprod()
    x0, eps = torch.randn(4, 4, 3, 3, generator=gen), torch.randn(4, 4, 3, 3, generator=gen)
    t = torch.tensor([0, 19, 500, 999])
    x_t = lcm.add_noise(x0, eps, t, abar)
    perfect = lcm.training_target(x0, eps, t, abar, prediction_type)  # what an exact model outputs
    torch.testing.assert_close(lcm.predicted_x0(perfect, x_t, t, abar, prediction_type), x0,
                               atol=2e-4, rtol=1e-4)
    if prediction_type != "sample":  # eps from x0 divides by s_0 = 0.029 at t = 0
        torch.testing.assert_close(lcm.predicted_eps(perfect, x_t, t, abar, prediction_type), eps,
                                   atol=2e-4, rtol=1e-4)


def test_add_noise_and_velocity_match_diffusers():
    sched = DDPMScheduler(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012,
                          beta_schedule="scaled_linear", prediction_type="v_prediction")
    abar = sdxl_alphas_cumprod()
    torch.testing.assert_close(abar, sched.alphas_cumprod, rtol=1e-5, atol=1e-6)
    gen = torch.Generator().manual_seed(1)
    x0, eps = torch.randn(3, 4, 2, 2, generator=gen), torch.randn(3, 4, 2, 2, generator=gen)
    t = torch.tensor([5, 250, 990])
    torch.testing.assert_close(lcm.add_noise(x0, eps, t, abar), sched.add_noise(x0, eps, t))
    torch.testing.assert_close(lcm.velocity(x0, eps, t, abar), sched.get_velocity(x0, eps, t))
    assert math.isclose(lcm.boundary_scalings(0)[0].item(), 1.0)
