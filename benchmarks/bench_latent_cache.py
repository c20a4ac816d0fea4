"""Remover training throughput and peak memory: latent cache vs re-encoding every step (RORem).

Same tiny UNet, same data, same step count; each variant runs in its own process so peak memory
is measured cleanly. Two autoencoders: the tiny preset's analytic one (encoding is nearly free, so
this isolates image decode/resize I/O) and a tiny learned AutoencoderKL (SDXL-VAE architecture
from small configs: what a real VAE encoder costs per step).

  python benchmarks/bench_latent_cache.py [--steps 30] [--batch 32] [--n 256]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 2**20


def _setup(root: Path, n: int, vae_kind: str):
    from rorem_core.data.synthetic import SyntheticConfig, write_triplets
    from rorem_core.models.tiny import TinyPresetConfig, build_tiny_model

    model = root / "model"
    if not (model / "model_index.json").is_file():
        build_tiny_model(model, TinyPresetConfig(), 64)
        write_triplets(root / "data", SyntheticConfig(), "bench", n, 0.5)
    if vae_kind == "learned":
        from diffusers import AutoencoderKL

        torch.manual_seed(0)
        return model, AutoencoderKL(block_out_channels=(32, 32, 32), layers_per_block=1, latent_channels=4,
                                    norm_num_groups=8, down_block_types=("DownEncoderBlock2D",) * 3,
                                    up_block_types=("UpDecoderBlock2D",) * 3, scaling_factor=0.13025).eval()
    from rorem_core.models.loading import load_vae

    return model, load_vae(model)


def worker(root: Path, variant: str, vae_kind: str, steps: int, batch: int, n: int) -> dict:
    from diffusers import DDPMScheduler

    from rorem_core.config import stage_config
    from rorem_core.data.images import load_mask, load_rgb
    from rorem_core.data.latents import (
        LatentCache,
        encode_images,
        image_to_tensor,
        mask_to_latent,
        mask_to_tensor,
    )
    from rorem_core.models.conditioning import encode_empty_prompt
    from rorem_core.models.loading import load_scheduler_config, load_unet, vae_scale_factor
    from rorem_core.training.sft import make_remover_loss, triplet_files
    from rorem_core.training.trainer import BatchPlan

    torch.manual_seed(0)
    model, vae = _setup(root, n, vae_kind)
    files = triplet_files([root / "data" / "meta.json"])
    cfg = stage_config("train_remover", {"base": {"wandb_mode": "disabled", "cache_dir": str(root / "cache")},
                                         "train_remover": {"batch_size": batch, "augment_dihedral": False}})
    unet = load_unet(model)
    opt = torch.optim.AdamW(unet.parameters(), lr=1e-4)
    loss_fn = make_remover_loss(unet, DDPMScheduler.from_config(load_scheduler_config(model)),
                                encode_empty_prompt(str(model)), cfg, torch.device("cpu"))
    cache_s = 0.0
    if variant == "cache":
        t = time.perf_counter()
        entries = LatentCache(root / "cache" / vae_kind, vae, 64).ensure(files)
        cache_s = time.perf_counter() - t
        plan = BatchPlan(entries, batch, 0)
        get = plan.batch
    else:
        plan = BatchPlan(files, batch, 0)
        f = vae_scale_factor(vae)

        def get(k):  # the RORem way: decode, resize and VAE-encode every image at every step
            src, msk, tgt = zip(*[plan.entries[i] for i in plan.indices(k)])
            s = torch.stack([image_to_tensor(load_rgb(p), 64) for p in src])
            m = torch.stack([mask_to_tensor(load_mask(p), 64) for p in msk])
            g = torch.stack([image_to_tensor(load_rgb(p), 64) for p in tgt])
            z = encode_images(vae, torch.cat([g, s * (1 - m)]))
            return {"target": z[:len(g)], "masked": z[len(g):], "mask": mask_to_latent(m, f)}

    def step(k):
        loss, _ = loss_fn(get(k), plan.generator(k))
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    step(0)  # warm-up (allocator, kernels) is not timed
    rss0 = _rss_mb()
    t = time.perf_counter()
    for k in range(1, steps + 1):
        step(k)
    dt = time.perf_counter() - t
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"variant": variant, "vae": vae_kind, "samples_per_s": steps * batch / dt, "cache_build_s": cache_s,
            "peak_rss_mb": peak, "step_rss_growth_mb": max(0.0, peak - rss0)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--n", type=int, default=256)
    p.add_argument("--worker", nargs=3, metavar=("ROOT", "VARIANT", "VAE"))
    a = p.parse_args()
    if a.worker:
        print(json.dumps(worker(Path(a.worker[0]), a.worker[1], a.worker[2], a.steps, a.batch, a.n)))
        return
    root = Path(tempfile.mkdtemp(prefix="bench-cache-"))
    rows = []
    for vae_kind in ("analytic", "learned"):
        for variant in ("cache", "reencode"):
            out = subprocess.run([sys.executable, __file__, "--worker", str(root), variant, vae_kind, "--steps",
                                  str(a.steps), "--batch", str(a.batch), "--n", str(a.n)],
                                 capture_output=True, text=True, check=True).stdout
            rows.append(json.loads(out.strip().splitlines()[-1]))
    print(f"remover training, batch {a.batch}, {a.steps} steps, {a.n} triplets at 64 px, torch threads "
          f"{torch.get_num_threads()}")
    print(f"{'autoencoder':<10}{'variant':<10}{'samples/s':>11}{'peak RSS MB':>13}{'step growth MB':>16}{'cache build s':>15}")
    for r in rows:
        print(f"{r['vae']:<10}{r['variant']:<10}{r['samples_per_s']:>11.1f}{r['peak_rss_mb']:>13.0f}"
              f"{r['step_rss_growth_mb']:>16.1f}{r['cache_build_s']:>15.2f}")
    for vae_kind in ("analytic", "learned"):
        c, r = [x for x in rows if x["vae"] == vae_kind]
        print(f"{vae_kind}: cache / re-encode throughput = {c['samples_per_s'] / r['samples_per_s']:.2f}x, "
              f"peak RSS ratio = {c['peak_rss_mb'] / r['peak_rss_mb']:.2f}")


if __name__ == "__main__":
    main()
