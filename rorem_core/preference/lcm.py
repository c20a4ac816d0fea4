"""Latent-consistency distillation maths: noise schedule algebra, boundary scalings, skip-step DDIM.

Pure tensor functions, no models. Notation (DDPM, ``T`` = 1000 training steps):

    abar_t = alphas_cumprod[t],  a_t = sqrt(abar_t),  s_t = sqrt(1 - abar_t)
    x_t    = a_t * x0 + s_t * eps                       (forward process, ``add_noise``)
    v      = a_t * eps - s_t * x0                       (v-prediction target, ``velocity``)

Every function that reads a model output takes ``prediction_type`` in {"epsilon", "v_prediction",
"sample"} (the tiny preset predicts v, SDXL-inpainting predicts eps; both go through the same code).
Timesteps ``t`` are integer tensors [B] (or a python int); schedule values are gathered per sample and
broadcast as (B, 1, 1, 1). Arithmetic follows torch type promotion, so an fp32 ``alphas_cumprod``
lifts fp16 model outputs to fp32 (as in diffusers' LCM scripts).

Source of the algorithm: diffusers ``examples/consistency_distillation/train_lcm_distill_lora_sdxl.py``
(``DDIMSolver``, ``scalings_for_boundary_conditions``, ``get_predicted_original_sample``) and RORem
``train_RORem_lcm.py``; see docs/rorem.md and docs/preference.md.
"""

from __future__ import annotations

import torch

PREDICTION_TYPES = ("epsilon", "v_prediction", "sample")


def _check_prediction_type(prediction_type: str) -> None:
    if prediction_type not in PREDICTION_TYPES:
        raise ValueError(f"prediction_type={prediction_type!r} is not supported; use one of "
                         f"{PREDICTION_TYPES} (the scheduler config's `prediction_type`)")


def _a_s(alphas_cumprod: torch.Tensor, t, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Gather (a_t, s_t) = (sqrt(abar_t), sqrt(1 - abar_t)) shaped to broadcast against ``like``."""
    t = torch.as_tensor(t, device=alphas_cumprod.device).long()
    abar = alphas_cumprod[t].to(like.device)
    abar = abar.reshape(abar.shape + (1,) * (like.ndim - abar.ndim))  # [B] -> (B, 1, 1, 1)
    return abar.sqrt(), (1.0 - abar).sqrt()


def add_noise(x0: torch.Tensor, eps: torch.Tensor, t, alphas_cumprod: torch.Tensor) -> torch.Tensor:
    """x_t = sqrt(abar_t) * x0 + sqrt(1 - abar_t) * eps; x0, eps (B, C, H, W), t [B]."""
    a, s = _a_s(alphas_cumprod, t, x0)
    return a * x0 + s * eps


def velocity(x0: torch.Tensor, eps: torch.Tensor, t, alphas_cumprod: torch.Tensor) -> torch.Tensor:
    """v = sqrt(abar_t) * eps - sqrt(1 - abar_t) * x0 (the v-prediction training target)."""
    a, s = _a_s(alphas_cumprod, t, x0)
    return a * eps - s * x0


def training_target(x0: torch.Tensor, eps: torch.Tensor, t, alphas_cumprod: torch.Tensor,
                    prediction_type: str) -> torch.Tensor:
    """The regression target of a diffusion loss: eps, v or x0 according to ``prediction_type``."""
    _check_prediction_type(prediction_type)
    if prediction_type == "epsilon":
        return eps
    if prediction_type == "v_prediction":
        return velocity(x0, eps, t, alphas_cumprod)
    return x0


def predicted_x0(model_output: torch.Tensor, x_t: torch.Tensor, t, alphas_cumprod: torch.Tensor,
                 prediction_type: str) -> torch.Tensor:
    """Model's estimate of the clean latent x0 from its output at (x_t, t).

    epsilon:      x0 = (x_t - s_t * eps_hat) / a_t
    v_prediction: x0 = a_t * x_t - s_t * v_hat
    sample:       x0 = model_output
    Shapes: model_output, x_t (B, C, H, W); t [B]; returns (B, C, H, W).
    """
    _check_prediction_type(prediction_type)
    a, s = _a_s(alphas_cumprod, t, x_t)
    if prediction_type == "epsilon":
        return (x_t - s * model_output) / a
    if prediction_type == "v_prediction":
        return a * x_t - s * model_output
    return model_output


def predicted_eps(model_output: torch.Tensor, x_t: torch.Tensor, t, alphas_cumprod: torch.Tensor,
                  prediction_type: str) -> torch.Tensor:
    """Model's estimate of the noise eps from its output at (x_t, t).

    epsilon:      eps = eps_hat
    v_prediction: eps = s_t * x_t + a_t * v_hat
    sample:       eps = (x_t - a_t * x0_hat) / s_t
    """
    _check_prediction_type(prediction_type)
    a, s = _a_s(alphas_cumprod, t, x_t)
    if prediction_type == "epsilon":
        return model_output
    if prediction_type == "v_prediction":
        return s * x_t + a * model_output
    return (x_t - a * model_output) / s


def boundary_scalings(t, *, sigma_data: float = 0.5,
                      timestep_scaling: float = 10.0) -> tuple[torch.Tensor, torch.Tensor]:
    """LCM boundary-condition scalings of the consistency function f(x_t, t) = c_skip x_t + c_out x0.

    c_skip(t) = sigma_data^2 / ((k t)^2 + sigma_data^2),  c_out(t) = k t / sqrt((k t)^2 + sigma_data^2)
    with k = ``timestep_scaling``; at t = 0: c_skip = 1, c_out = 0 (f is the identity at the boundary).
    t: integer timesteps [B] (or a number); returns two fp32 tensors shaped like t.
    """
    scaled = timestep_scaling * torch.as_tensor(t, dtype=torch.float32)
    denom = scaled**2 + sigma_data**2
    return sigma_data**2 / denom, scaled / denom.sqrt()


def consistency_output(x0_hat: torch.Tensor, x_t: torch.Tensor, t, *, sigma_data: float = 0.5,
                       timestep_scaling: float = 10.0) -> torch.Tensor:
    """f(x_t, t) = c_skip(t) * x_t + c_out(t) * x0_hat; the student prediction and the target."""
    c_skip, c_out = boundary_scalings(t, sigma_data=sigma_data, timestep_scaling=timestep_scaling)
    c_skip = c_skip.to(x_t.device).reshape(c_skip.shape + (1,) * (x_t.ndim - c_skip.ndim))
    c_out = c_out.to(x_t.device).reshape(c_out.shape + (1,) * (x_t.ndim - c_out.ndim))
    return c_skip * x_t + c_out * x0_hat


def ddim_step(x0: torch.Tensor, eps: torch.Tensor, alpha_bar_prev: torch.Tensor) -> torch.Tensor:
    """Deterministic DDIM (eta = 0) step: x_prev = sqrt(abar_prev) * x0 + sqrt(1 - abar_prev) * eps.

    x0, eps (B, C, H, W); alpha_bar_prev [B] (or scalar), broadcast as (B, 1, 1, 1).
    """
    abar = torch.as_tensor(alpha_bar_prev).to(x0.device)
    abar = abar.reshape(abar.shape + (1,) * (x0.ndim - abar.ndim))
    return abar.sqrt() * x0 + (1.0 - abar).sqrt() * eps


class DDIMSolver:
    """Skip-step DDIM grid used by LCM distillation (one teacher ODE step spans ``step_ratio`` steps).

    With T training steps and N DDIM steps: step_ratio k = T // N and the grid is
    t_i = (i + 1) * k - 1 for i = 0..N-1, i.e. [19, 39, ..., 999] for T=1000, N=50.
    A training sample draws i ~ U{0..N-1}, starts at t_{n+k} = grid[i] and the solver lands on
    t_n = max(grid[i] - k, 0), whose abar is ``alphas_cumprod_prev[i]`` (= abar[0] for i = 0).
    """

    def __init__(self, alphas_cumprod: torch.Tensor, *, num_ddim_timesteps: int = 50):
        num_train = int(alphas_cumprod.shape[0])
        if not 1 <= num_ddim_timesteps <= num_train:
            raise ValueError(f"num_ddim_timesteps={num_ddim_timesteps} must be in [1, {num_train}] "
                             "(the scheduler's num_train_timesteps)")
        self.step_ratio = num_train // num_ddim_timesteps
        self.alphas_cumprod = alphas_cumprod.float()
        self.timesteps = torch.arange(1, num_ddim_timesteps + 1, dtype=torch.long) * self.step_ratio - 1
        prev = (self.timesteps - self.step_ratio).clamp(min=0)
        self.alphas_cumprod_prev = self.alphas_cumprod[prev]

    def sample_indices(self, batch_size: int, *, generator: torch.Generator | None = None,
                       device: torch.device | str | None = None) -> torch.Tensor:
        """Grid indices i ~ U{0..N-1}, one per sample: LongTensor [batch_size]."""
        idx = torch.randint(0, len(self.timesteps), (batch_size,), generator=generator)
        return idx.to(device) if device is not None else idx

    def timesteps_for(self, index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(t_start, t_prev) for grid indices [B]: t_start = grid[i], t_prev = max(t_start - k, 0)."""
        t_start = self.timesteps.to(index.device)[index]
        return t_start, (t_start - self.step_ratio).clamp(min=0)

    def step(self, x0: torch.Tensor, eps: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        """One skip-step DDIM move from t_start = grid[index] to t_prev (see ``ddim_step``)."""
        return ddim_step(x0, eps, self.alphas_cumprod_prev.to(index.device)[index])
