"""What the tiny remover's fill error is made of, as the judge sees it (docs/judge.md, "the tiny base's
error"): one sample, the mean of S samples (the remover's own posterior mean, what its sampling noise
hides), the classical fills and the autoencoder ceiling, side by side on the same test images.

    python benchmarks/bench_fill_error.py [--workspace DIR] [--n 100] [--samples 8] [--set K=V ...]

Without --workspace a tiny workspace of the shipped params.yaml is bootstrapped under .rorem/ (its
shipped base); ``--set bootstrap.synthetic.texture_scale=5`` bootstraps K = 5 scenes and their base.
Per method and band: judged clean (%), masked PSNR (dB), RMS error in the hole (grey levels, 0-255);
for the remover also the mean absolute difference between two samples of one input (grey levels):
the part of its error that is sampling noise rather than a wrong mean.
"""

from __future__ import annotations

import argparse
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:   # run as a script: the repo root for `benchmarks.common`
    sys.path.insert(0, str(REPO))


def _unit(x: torch.Tensor) -> np.ndarray:
    return ((x.permute(1, 2, 0).numpy() + 1) / 2).clip(0, 1)


def fills(params: dict, model: Path, test: Path, n: int, samples: int) -> tuple[list, dict, np.ndarray, tuple]:
    """(test entries, {method: [(H, W, 3) fill per image]}, seed-to-seed |difference| per image in levels,
    the (source, mask, GT) tensors)."""
    from rorem_core.config import stage_config
    from rorem_core.data.formats import dataset_file, read_triplets
    from rorem_core.evaluation.scoring import reference_fills
    from rorem_core.models.remover import Remover, ae_ceiling, composite
    from rorem_core.stages.evaluate import _load_chunk

    cfg = stage_config("evaluate", params)
    meta = dataset_file(test)
    entries = read_triplets(meta)[:n]
    src, msk, gt = _load_chunk(meta, entries, cfg.base.resolution)
    model = Remover.load(model, cache_dir=cfg.base.cache_dir, resolution=cfg.base.resolution)
    runs = [composite(model.remove(src, msk, [cfg.eval_seed + 10_000 * k + i for i in range(len(entries))],
                                   steps=cfg.steps, scheduler=cfg.scheduler, batch_size=cfg.batch_size), src, msk)
            for k in range(samples)]
    ceiling = ae_ceiling(model.vae, gt, src, msk)
    out: dict[str, list] = {"remover (1 sample)": [_unit(r) for r in runs[0]],
                            f"remover (mean of {samples})": [_unit(r) for r in torch.stack(runs).mean(0)]}
    for name, fill in reference_fills().items():
        if name != "leave_object":
            out[name] = [fill(_unit(s), m[0].numpy() > 0.5) for s, m in zip(src, msk)]
    out["ae_ceiling"] = [_unit(c) for c in ceiling]
    diff = np.array([float((runs[0][i] - runs[1][i]).abs().permute(1, 2, 0).numpy()[msk[i, 0].numpy() > 0.5].mean())
                     * 127.5 for i in range(len(entries))])
    return entries, out, diff, (src, msk, gt)


def table(entries, out: dict, diff: np.ndarray, tensors) -> str:
    from rorem_core.evaluation.judge import judge
    from rorem_core.evaluation.metrics import masked_psnr

    src, msk, gt = tensors
    lines = [f"{'method':<22}{'band':<6}{'n':>4}{'judged clean':>14}{'PSNR dB':>9}{'hole RMS':>10}"]
    for name, imgs in out.items():
        rows = defaultdict(list)
        for i, e in enumerate(entries):
            s, m, g = _unit(src[i]), msk[i, 0].numpy() > 0.5, _unit(gt[i])
            rows[getattr(e, "band", None) or "all"].append(
                (judge(s, m, imgs[i], g).good, masked_psnr(imgs[i], g, m), np.sqrt(((imgs[i] - g)[m] ** 2).mean()) * 255))
        for band, r in sorted(rows.items()):
            a = np.array(r, dtype=float)
            lines.append(f"{name:<22}{band:<6}{len(a):>4}{100 * a[:, 0].mean():>13.1f}%{a[:, 1].mean():>9.2f}"
                         f"{a[:, 2].mean():>10.2f}")
    lines.append(f"two samples of one input differ by {diff.mean():.2f} grey levels on average inside the hole")
    return "\n".join(lines)


def main() -> None:
    from benchmarks import common

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workspace", type=Path, help="a bootstrapped project (params.yaml + models/base + data/test)")
    ap.add_argument("--n", type=int, default=100, help="test images (the split's first n)")
    ap.add_argument("--samples", type=int, default=8, help="samples per input for the remover's mean")
    ap.add_argument("--set", action="append", default=[], metavar="K=V",
                    help="bootstrap.synthetic override for a fresh workspace, e.g. bootstrap.synthetic.texture_scale=5")
    a = ap.parse_args()
    torch.set_num_threads(1)
    ws = a.workspace
    if ws is None:
        pairs = [s.split("=", 1) for s in a.set]
        bad = [k for k, *_ in pairs if not k.startswith("bootstrap.synthetic.")]
        if bad:
            ap.error(f"--set {bad[0]}: only bootstrap.synthetic.* keys shape a fresh workspace; "
                     "for anything else bootstrap one and pass --workspace")
        syn = {k.split(".")[-1]: float(v) for k, v in pairs}
        ws = REPO / ".rorem" / ("bench_fill_error" + "".join(f"-{k}{v:g}" for k, v in sorted(syn.items())))
        common.tiny_workspace(ws, **syn)
    import yaml

    params = yaml.safe_load((ws / "params.yaml").read_text())
    entries, out, diff, tensors = fills(params, ws / "models/base", ws / "data/test", a.n, a.samples)
    print(table(entries, out, diff, tensors))


if __name__ == "__main__":
    main()
