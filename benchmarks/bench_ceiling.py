"""What the embedded default lets a clean removal be: the autoencoder ceiling (GT through the analytic
autoencoder, composited) judged by the judge, per band and texture, for

1. the analytic autoencoder's down-scale ``f`` in {4 (today: 16x16 latent), 2, 1}, on the test split's
   scenes (400, the default synthetic config, regenerated in memory);
2. today's f = 4 on the test split's scenes drawn with ``synthetic.texture_scale`` K in {2, 3, 4}
   (every texture length x K, edges softened to K px: textures the 16x16 latent can hold).

    python benchmarks/bench_ceiling.py [--n 400]

No model or workspace is needed (seconds). The issue's bar: >= 95 % judged clean in each band.
"""

from __future__ import annotations

import argparse
from collections import defaultdict

import numpy as np
import torch

import rorem_core.data.synthetic as syn
from rorem_core.config.presets import SyntheticConfig
from rorem_core.evaluation.judge import judge
from rorem_core.models.analytic_ae import AnalyticAutoencoder


def ceiling_fill(ae, scene) -> np.ndarray:
    x = torch.from_numpy(scene.gt[None]).permute(0, 3, 1, 2) * 2 - 1
    with torch.no_grad():
        y = ae.decode(ae.encode(x).latent_dist.mode()).sample.clamp(-1, 1)
    y = ((y[0].permute(1, 2, 0).numpy() + 1) / 2).astype(np.float32)
    return np.where(scene.mask[..., None], y, scene.source).astype(np.float32)


def judged(scenes, factor: int) -> tuple[dict, dict]:
    ae = AnalyticAutoencoder(block_out_channels=(4,) * (int(np.log2(factor)) + 1))
    band, tex = defaultdict(lambda: [0, 0]), defaultdict(lambda: [0, 0])
    for sc in scenes:
        good = judge(sc.source, sc.mask, ceiling_fill(ae, sc), sc.gt).good
        for table, k in ((band, sc.info["band"]), (tex, sc.info["texture"])):
            table[k][0] += good
            table[k][1] += 1
    return band, tex


def line(label: str, band: dict, tex: dict) -> str:
    b = "  ".join(f"{k} {100 * g / n:5.1f}%" for k, (g, n) in sorted(band.items()))
    t = " ".join(f"{k} {g}/{n}" for k, (g, n) in sorted(tex.items()))
    return f"{label:<22}{b}   {t}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=400)
    args = ap.parse_args()
    cfg = SyntheticConfig()
    test = [sc for _, sc in syn._scenes(cfg, "test", args.n, cfg.test_hard_fraction)]
    for f in (4, 2, 1):
        print(line(f"test split, f={f}", *judged(test, f)))
    for k in (2, 3, 4, 5):
        scaled = cfg.model_copy(update={"texture_scale": float(k)})
        test = [sc for _, sc in syn._scenes(scaled, "test", args.n, cfg.test_hard_fraction)]
        print(line(f"texture_scale {k}, f=4", *judged(test, 4)))


if __name__ == "__main__":
    main()
