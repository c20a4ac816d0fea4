"""A stochastic DDIM sampler with exact per-step log-probabilities, for policy-gradient training.

Each denoising step is a Gaussian policy  x_{t'} ~ N(mu_theta(x_t, t), sigma_t^2 I)  (DDIM, Song et
al. eq. 12), so the probability of the step the sampler took can be scored again later under new
weights (DDPO, Black et al. 2023). Notation: abar = alphas_cumprod, t' = the next (smaller) timestep.

    x0_hat, eps_hat = the UNet's estimates at (x_t, t)   (epsilon: SDXL; v_prediction: tiny)
    sigma_t^2 = (1 - abar_t') / (1 - abar_t) * (1 - abar_t / abar_t')
    std       = eta * sigma_t                             (eta = 1: DDPM ancestral variance)
    mu        = sqrt(abar_t') x0_hat + sqrt(1 - abar_t' - std^2) eps_hat
    log p     = mean over (C, H, W) of log N(x_{t'}; mu, std^2)       [B]

The log-prob is AVERAGED over latent dims (as DDPO), at sampling and at training time through the
same function, so ratios exp(logp_new - logp_old) are exact. eta must be > 0: eta = 0 is the
deterministic DDIM, which has no density. The last step goes to abar_0 = alphas_cumprod[0], not to 1
(DDIM's ``set_alpha_to_one=False``), so every step keeps std > 0 and a density. That last x_{t'}
still holds noise of std sqrt(1 - abar_0) (~0.03 in latent units, plus eta's sampling noise), which the
tiny autoencoder decodes as speckle the judge rejects (0 % judged clean at any steps / eta, where the
same UNet's Euler samples are 27 %: benchmarks/bench_rl_sampler.py). So the IMAGE of a trajectory is
the last step's x0_hat (``Trajectory.x0``), as DDIM's ``pred_original_sample``; the chain and its
log-probs are unchanged.

Shapes: latents (B, 4, h, w); timesteps [S] (descending); a trajectory stores S + 1 latents.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import torch

from rorem_core.models.conditioning import PromptEmbeds
from rorem_core.models.unet import unet_forward
from rorem_core.preference.lcm import predicted_eps, predicted_x0

LOG_SQRT_2PI = 0.5 * math.log(2 * math.pi)


@dataclass(frozen=True)
class DDIMSchedule:
    """S sampling steps on a T-step training schedule ("leading" spacing + offset, as diffusers)."""

    timesteps: torch.Tensor    # [S] long, descending
    abar: torch.Tensor         # [S] fp32, abar at each step's t
    abar_prev: torch.Tensor    # [S] fp32, abar at the step's target t' (abar_0 for the last)
    prediction_type: str

    @classmethod
    def make(cls, alphas_cumprod: torch.Tensor, steps: int, prediction_type: str, offset: int = 1) -> "DDIMSchedule":
        T = len(alphas_cumprod)
        if not 1 <= steps <= T:
            raise ValueError(f"sampler steps={steps} must be in [1, {T}] (the training schedule's length)")
        ratio = T // steps
        ts = (torch.arange(steps - 1, -1, -1) * ratio + offset).clamp(max=T - 1).long()
        prev = ts - ratio
        ac = alphas_cumprod.float().cpu()
        abar_prev = torch.where(prev >= 0, ac[prev.clamp(min=0)], ac[0])
        return cls(timesteps=ts, abar=ac[ts], abar_prev=abar_prev, prediction_type=prediction_type)

    def std(self, index: torch.Tensor, eta: float) -> torch.Tensor:
        """eta * sigma_t for step indices [B] -> [B]."""
        a, ap = self.abar[index], self.abar_prev[index]
        var = (1 - ap) / (1 - a) * (1 - a / ap)
        return eta * var.clamp(min=0).sqrt()


def _bc(x: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return x.to(like.device).reshape(-1, *([1] * (like.ndim - 1)))


def step_mean_std(model_output: torch.Tensor, x_t: torch.Tensor, index: torch.Tensor, sched: DDIMSchedule,
                  eta: float, alphas_cumprod: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(mu (B, C, h, w), std (B, 1, 1, 1)) of the step from x_t at step indices ``index`` [B] (module doc)."""
    if not eta > 0:
        raise ValueError(f"eta={eta}: a deterministic DDIM step (eta = 0) has no density; use eta > 0 (DDPO: 1.0)")
    t = sched.timesteps[index].to(x_t.device)
    out, x = model_output.float(), x_t.float()
    x0 = predicted_x0(out, x, t, alphas_cumprod, sched.prediction_type)
    eps = predicted_eps(out, x, t, alphas_cumprod, sched.prediction_type)
    ap = _bc(sched.abar_prev[index], x)
    std = _bc(sched.std(index, eta), x)
    mean = ap.sqrt() * x0 + (1 - ap - std**2).clamp(min=0).sqrt() * eps
    return mean, std


def gaussian_log_prob(x: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """mean over (C, H, W) of log N(x; mean, std^2), in fp32: (B, C, h, w) -> [B]."""
    x, mean, std = x.float(), mean.float(), std.float().expand_as(mean)
    lp = -((x - mean) ** 2) / (2 * std**2) - std.log() - LOG_SQRT_2PI
    return lp.mean(dim=tuple(range(1, lp.ndim)))


@dataclass
class Trajectory:
    """A batch of sampled chains: ``latents`` (B, S+1, C, h, w) [x_T ... x_0'], ``log_probs`` (B, S)
    of each step under the sampling weights, ``timesteps`` [S], and ``x0`` (B, C, h, w): the last
    step's x0_hat, the latent of the result image (module doc)."""

    latents: torch.Tensor
    log_probs: torch.Tensor
    timesteps: torch.Tensor
    x0: torch.Tensor

    @property
    def final(self) -> torch.Tensor:
        return self.latents[:, -1]


def row_noise(seeds: Sequence[int], steps: int, shape: tuple[int, ...]) -> torch.Tensor:
    """(B, S+1, *shape) standard normals, row i drawn only from seeds[i]: a sample is the same whatever
    batch it is drawn in. [:, 0] is x_T, [:, j+1] the noise of step j."""
    return torch.stack([torch.randn((steps + 1, *shape), generator=torch.Generator().manual_seed(int(s)))
                        for s in seeds])


@torch.no_grad()
def sample_with_log_prob(unet, cond: PromptEmbeds, batch: dict, seeds: Sequence[int], sched: DDIMSchedule, *,
                         eta: float, alphas_cumprod: torch.Tensor, resolution: int) -> Trajectory:
    """Run the stochastic sampler on ``batch`` (``mask`` (B,1,h,w), ``masked`` (B,4,h,w)) from x_T ~ N(0, I)."""
    dev = batch["masked"].device
    noise = row_noise(seeds, len(sched.timesteps), tuple(batch["masked"].shape[1:])).to(dev)
    x = noise[:, 0]
    lats, lps = [x], []
    for j, t in enumerate(sched.timesteps):
        idx = torch.full((len(x),), j, dtype=torch.long)
        out = unet_forward(unet, x, t.to(dev).expand(len(x)), batch, cond, resolution)
        x0 = predicted_x0(out.float(), x.float(), t.to(dev).expand(len(x)), alphas_cumprod, sched.prediction_type)
        mean, std = step_mean_std(out, x, idx, sched, eta, alphas_cumprod)
        x = mean + std * noise[:, j + 1]
        lps.append(gaussian_log_prob(x, mean, std))
        lats.append(x)
    return Trajectory(latents=torch.stack(lats, 1), log_probs=torch.stack(lps, 1), timesteps=sched.timesteps.clone(),
                      x0=x0)


def transition_log_prob(unet, cond: PromptEmbeds, batch: dict, x_t: torch.Tensor, x_prev: torch.Tensor,
                        index: torch.Tensor, sched: DDIMSchedule, *, eta: float, alphas_cumprod: torch.Tensor,
                        resolution: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(log p(x_prev | x_t) [B], mu, std) under ``unet`` for stored transitions at step indices [B]:
    the training-time twin of one sampler step (same mean, std and reduction)."""
    t = sched.timesteps[index].to(x_t.device)
    out = unet_forward(unet, x_t, t, batch, cond, resolution)
    mean, std = step_mean_std(out, x_t, index, sched, eta, alphas_cumprod)
    return gaussian_log_prob(x_prev, mean, std), mean, std
