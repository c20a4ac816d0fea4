"""Online-RL cost vs DPO on the same UNet, printed side by side from one run (CPU, one thread):

    python benchmarks/bench_rl.py [--steps 10] [--threads 1]

  rollouts/s      samples per second of the stochastic DDIM sampler (no grad), S steps each
  PPO step        time and peak RSS of one PPO step on B transitions (policy forward+backward, the
                  adapter-disabled reference forward for the KL to the reference, AdamW)
  DPO step        time and peak RSS of one Diffusion-DPO step on B pairs (2B policy rows + 2B reference rows)
  trajectory      bytes stored per sample (latents x_T..x_0, log-probs, trained-step indices), and what
                  the same formula gives for SDXL at 1024 px (128 x 128 latents) and 50 steps
Each variant runs in a fresh subprocess, so peak RSS is its own. Figures go in docs/rl.md.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

CONFIGS = (([32, 64, 64], 16, 16), ([128, 256, 512], 4, 16))   # (UNet channels, batch, latent side)


def _unet(channels: list[int], latent: int):
    from diffusers import UNet2DConditionModel

    from rorem_core.models.conditioning import PromptEmbeds
    from rorem_core.models.tiny import TinyPresetConfig, _unet_config
    from rorem_core.models.unet import add_lora

    torch.manual_seed(0)
    tiny = TinyPresetConfig(unet_channels=channels)
    unet = UNet2DConditionModel(**_unet_config(tiny, latent))
    trainable = add_lora(unet, 8)
    cond = PromptEmbeds(hidden=torch.randn(1, 77, 2 * tiny.text_hidden), pooled=torch.randn(1, tiny.text_hidden))
    return unet, trainable, cond


def _rss_mb() -> float:
    return int(Path("/proc/self/statm").read_text().split()[1]) * resource.getpagesize() / 2**20


def probe(kind: str, channels: list[int], batch: int, latent: int, steps: int, sampler_steps: int) -> dict:
    """One variant in this process: median step time and peak RSS above the imports."""
    from diffusers import DDPMScheduler

    from rorem_core.config import TrainDPOConfig
    from rorem_core.models.tiny import scheduler_config
    from rorem_core.preference.dpo import StepContext, make_preference_loss
    from rorem_core.rl.sampler import DDIMSchedule, sample_with_log_prob, transition_log_prob
    from rorem_core.training.losses import gaussian_kl_same_std, ppo_loss

    base_mb = _rss_mb()
    unet, trainable, cond = _unet(channels, latent)
    res = latent * 4
    ac = DDPMScheduler.from_config(scheduler_config("v_prediction")).alphas_cumprod.float()
    sched = DDIMSchedule.make(ac, sampler_steps, "v_prediction")
    opt = torch.optim.AdamW(trainable, lr=1e-4)
    z = lambda c, n=batch: torch.randn(n, c, latent, latent)  # noqa: E731
    cond_b = {"masked": z(4), "mask": (z(1) > 0).float()}
    times, extra = [], {}
    if kind == "rollout":
        for i in range(steps + 1):
            t0 = time.perf_counter()
            tr = sample_with_log_prob(unet, cond, cond_b, list(range(i * batch, (i + 1) * batch)), sched, eta=1.0,
                                      alphas_cumprod=ac, resolution=res)
            times.append(time.perf_counter() - t0)
        per_sample = (tr.latents[0].numel() * 4 + tr.log_probs[0].numel() * 4 + sampler_steps // 2 * 8 + 3 * 4)
        extra = {"rollouts_per_s": batch / float(np.median(times[1:])), "bytes_per_sample": per_sample}
    elif kind == "ppo":
        from rorem_core.preference.dpo import adapters_disabled

        x_t, x_prev, idx = z(4), z(4), torch.randint(0, sampler_steps, (batch,))
        old = torch.zeros(batch)
        adv = torch.randn(batch)
        for _ in range(steps + 1):
            t0 = time.perf_counter()
            lp, mean, std = transition_log_prob(unet, cond, cond_b, x_t, x_prev, idx, sched, eta=1.0,
                                                alphas_cumprod=ac, resolution=res)
            with torch.no_grad(), adapters_disabled(unet) as ref:
                _, ref_mean, _ = transition_log_prob(ref, cond, cond_b, x_t, x_prev, idx, sched, eta=1.0,
                                                     alphas_cumprod=ac, resolution=res)
            loss, _ = ppo_loss(lp, old, adv, kl=gaussian_kl_same_std(mean, ref_mean, std), kl_coef=0.1)
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
            times.append(time.perf_counter() - t0)
    else:
        ctx = StepContext.from_scheduler(scheduler_config("v_prediction"), cond, res, "cpu")
        loss_fn = make_preference_loss(unet, ctx, TrainDPOConfig(base={}, augment_dihedral=False))
        data = {"w": z(4), "l": z(4), **cond_b}
        for i in range(steps + 1):
            t0 = time.perf_counter()
            loss, _ = loss_fn(data, torch.Generator().manual_seed(i))
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
            times.append(time.perf_counter() - t0)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"kind": kind, "step_ms": 1000 * float(np.median(times[1:])), "peak_above_imports_mb": peak - base_mb,
            "unet_params_mb": sum(p.numel() * 4 for p in unet.parameters()) / 2**20, **extra}


def run_all(steps: int, threads: int, sampler_steps: int) -> list[dict]:
    rows = []
    for channels, batch, latent in CONFIGS:
        row = {"channels": channels, "batch": batch, "latent": latent}
        for kind in ("rollout", "ppo", "dpo"):
            cmd = [sys.executable, __file__, "--probe", kind, "--channels", ",".join(map(str, channels)),
                   "--batch", str(batch), "--latent", str(latent), "--steps", str(steps), "--threads", str(threads),
                   "--sampler-steps", str(sampler_steps)]
            out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.strip().splitlines()[-1]
            row[kind] = json.loads(out)
        rows.append(row)
    return rows


def print_rows(rows: list[dict], sampler_steps: int) -> None:
    print(f"== online RL vs DPO on the same UNet (CPU, {sampler_steps} sampler steps, fresh process per variant)")
    for r in rows:
        ro, p, d = r["rollout"], r["ppo"], r["dpo"]
        print(f"UNet {r['channels']} ({p['unet_params_mb']:.1f} MB fp32), latent {r['latent']}^2, batch {r['batch']}:")
        print(f"  rollouts: {ro['rollouts_per_s']:.1f} samples/s ({ro['step_ms']:.0f} ms per batch of {r['batch']}), "
              f"peak {ro['peak_above_imports_mb']:.0f} MB")
        print(f"  PPO step ({r['batch']} transitions + KL ref): {p['step_ms']:.0f} ms, peak {p['peak_above_imports_mb']:.0f} MB"
              f" | DPO step ({r['batch']} pairs): {d['step_ms']:.0f} ms, peak {d['peak_above_imports_mb']:.0f} MB"
              f" | PPO/DPO time {p['step_ms'] / d['step_ms']:.2f}x, memory "
              f"{p['peak_above_imports_mb'] / max(d['peak_above_imports_mb'], 1e-9):.2f}x")
        print(f"  trajectory storage: {ro['bytes_per_sample'] / 1024:.1f} KiB per sample "
              f"(= {ro['bytes_per_sample'] / (r['latent'] ** 2 * 4 * 4):.1f} x one fp32 latent)")
    sdxl = (50 + 1) * 4 * 128 * 128 * 4 + 50 * 4
    print(f"SDXL, 1024 px (128^2 latents), 50 steps, fp32: {sdxl / 2**20:.1f} MiB per sample; "
          f"256 samples per rollout = {256 * sdxl / 2**30:.2f} GiB")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--sampler-steps", type=int, default=10)
    ap.add_argument("--probe", choices=["rollout", "ppo", "dpo"])
    ap.add_argument("--channels", default="32,64,64")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--latent", type=int, default=16)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    if a.probe:
        print(json.dumps(probe(a.probe, [int(c) for c in a.channels.split(",")], a.batch, a.latent, a.steps,
                               a.sampler_steps)))
        return
    print_rows(run_all(a.steps, a.threads, a.sampler_steps), a.sampler_steps)


if __name__ == "__main__":
    main()
