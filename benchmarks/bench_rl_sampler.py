"""How clean are the RL sampler's fills, per (steps, eta), next to the evaluation's Euler sampler?
(issue 16: the policy can only learn from clean samples if its sampler makes some)

  PYTHONPATH=. python benchmarks/bench_rl_sampler.py --model W/models/base --test W/data/test \
      [--images 100] [--grid 10:1.0,25:1.0,50:1.0,50:0.5]

For each ``steps:eta`` of the grid, train_rl's stochastic DDIM sampler (rorem_core/rl/sampler.py, the
remover's own masked fill and conditioning) samples the first ``--images`` test images with the guard's
fixed seeds (rl/rollout.py ``test_oracle``: scored as the evaluation scores); one row of the evaluation's
sampler (Euler, evaluate's steps) on the same images with evaluate's seeds. Prints judged success and
masked PSNR per row, and the judged success per band. No training: seconds to minutes per row.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))


def parse_grid(text: str) -> list[tuple[int, float]]:
    """"10:1.0,50:0.5" -> [(10, 1.0), (50, 0.5)]; eta must be > 0 (train_rl refuses 0: no density)."""
    out = []
    for part in text.split(","):
        steps, sep, eta = part.partition(":")
        try:
            row = (int(steps), float(eta))
        except ValueError:
            raise SystemExit(f"error: --grid item {part!r}: expected STEPS:ETA, e.g. 50:0.5") from None
        if not sep or row[0] < 1 or row[1] <= 0:
            raise SystemExit(f"error: --grid item {part!r}: steps >= 1 and eta > 0 (eta 0 has no density)")
        out.append(row)
    return out


def rl_rows(model: Path, test: Path, n: int, grid: list[tuple[int, float]], res: int, seed: int = 0) -> list[dict]:
    import torch

    from rorem_core.data.formats import read_triplets
    from rorem_core.models.conditioning import load_prompt_embeds
    from rorem_core.models.loading import load_scheduler_config, load_unet_fused, load_vae, masked_fill_of
    from rorem_core.preference.dpo import StepContext
    from rorem_core.rl.rollout import Sampling, load_test_inputs, test_oracle
    from rorem_core.rl.sampler import DDIMSchedule

    vae, unet = load_vae(model), load_unet_fused(model).eval()
    inputs = load_test_inputs(test, vae, res, n, masked_fill_of(model))
    bands = [getattr(t, "band", None) for t in read_triplets(test / "meta.json")[:n]]
    ctx = StepContext.from_scheduler(load_scheduler_config(model), load_prompt_embeds(model, _params(res)["base"]["cache_dir"]),
                                     res, torch.device("cpu"))
    rows = []
    for steps, eta in grid:
        smp = Sampling(cond=ctx.cond, sched=DDIMSchedule.make(ctx.alphas_cumprod, steps, ctx.prediction_type),
                       alphas_cumprod=ctx.alphas_cumprod, eta=eta, vae=vae, resolution=res, device=torch.device("cpu"))
        o = test_oracle(unet, smp, inputs, seed, 20.0)
        rows.append(_row(f"RL DDIM {steps} steps, eta {eta:g}", o["judged"], o["masked_psnr"], bands))
    return rows


def _row(name: str, judged, psnr, bands) -> dict:
    by = {b: [j for j, bb in zip(judged, bands) if bb == b] for b in ("easy", "hard")}
    return {"sampler": name, "n": len(judged), "judged": float(np.mean(judged)), "psnr": float(np.mean(psnr)),
            **{b: float(np.mean(v)) if v else None for b, v in by.items()}}


def _params(res: int | None = None) -> dict:
    from benchmarks.common import scratch_params

    return scratch_params(Path("/tmp/rorem-bench-rl-sampler"), **({"resolution": res} if res else {}))


def euler_row(model: Path, test: Path, n: int, out: Path, res: int) -> dict:
    import json

    from rorem_core.config import stage_config
    from rorem_core.stages import evaluate

    params = _params(res)
    cfg = stage_config("evaluate", params, {"judge": "judge", "references": False, "max_images": n})
    evaluate.run(cfg, model, test, out)
    per = json.loads((out / "per_image.json").read_text())
    return _row(f"Euler {cfg.steps} steps (evaluate)", [r["judge_good"] for r in per], [r["masked_psnr"] for r in per],
                [r.get("band") for r in per])


def main(argv: list[str] | None = None) -> int:
    import tempfile

    import torch

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", type=Path, required=True, help="a remover folder, e.g. W/models/base")
    p.add_argument("--test", type=Path, required=True, help="a test split with GT, e.g. W/data/test")
    p.add_argument("--images", type=int, default=100)
    p.add_argument("--grid", default="10:1.0,25:1.0,50:1.0,50:0.5")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--resolution", type=int, help="working resolution (default: params.yaml's base.resolution)")
    a = p.parse_args(argv)
    res = a.resolution or _params()["base"]["resolution"]
    torch.set_num_threads(a.threads)
    grid = parse_grid(a.grid)
    with tempfile.TemporaryDirectory() as tmp:
        rows = [euler_row(a.model, a.test, a.images, Path(tmp) / "eval", res),
                *rl_rows(a.model, a.test, a.images, grid, res)]
    pct = lambda v: "n/a" if v is None else f"{100 * v:.1f} %"   # noqa: E731
    print("| sampler | images | judged clean | easy | hard | masked PSNR (dB) |\n|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['sampler']} | {r['n']} | {pct(r['judged'])} | {pct(r['easy'])} | {pct(r['hard'])} | {r['psnr']:.2f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
