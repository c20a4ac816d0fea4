"""Stage 12 (part), evaluate: the remover on the held-out test split (ground truth known) next to
reference fills (leave the object, ring-mean, OpenCV Telea) and the autoencoder ceiling."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from pydantic import BaseModel

from rorem_core.config import EvaluateConfig
from rorem_core.data.formats import read_triplets, resolve_in_root
from rorem_core.data.images import load_mask, load_rgb
from rorem_core.data.latents import encode_images, image_to_tensor, mask_to_tensor
from rorem_core.device import resolve_device
from rorem_core.evaluation.scoring import format_table, reference_fills, sample_grid, score_image, summarise
from rorem_core.io import write_json_atomic
from rorem_core.models.remover import Remover, composite
from rorem_core.stages import _cli


class EvaluateResult(BaseModel):
    metrics: dict            # method -> {all, band_easy, band_hard} aggregates
    table: str


def _np(x: torch.Tensor) -> np.ndarray:
    return ((x.permute(1, 2, 0).numpy() + 1) / 2).clip(0, 1)


def _load_chunk(test_meta: Path, entries, res: int):
    src, msk, gt = [], [], []
    for e in entries:
        f = lambda rel: resolve_in_root(test_meta.parent, rel, where=str(test_meta))  # noqa: E731
        src.append(image_to_tensor(load_rgb(f(e.source)), res))
        msk.append(mask_to_tensor(load_mask(f(e.mask)), res))
        gt.append(image_to_tensor(load_rgb(f(e.GT)), res))
    return torch.stack(src), torch.stack(msk), torch.stack(gt)


def run(cfg: EvaluateConfig, remover: Path, test: Path, out_dir: Path) -> EvaluateResult:
    if (remover / "skipped.json").is_file():   # a stage switched off (train_rl.enabled: false): nothing to score
        out_dir.mkdir(parents=True, exist_ok=True)
        write_json_atomic(out_dir / "per_image.json", [])
        z = np.zeros((1, 1, 3))
        sample_grid([(z, np.zeros((1, 1), bool), z, z)], out_dir / "samples.png")   # a 1x4 px placeholder
        return EvaluateResult(metrics={}, table=f"{remover}: skipped (its training stage is disabled)")
    test_meta = test / "meta.json" if test.is_dir() else test
    entries = read_triplets(test_meta)[: cfg.max_images]
    model = Remover.load(remover, cache_dir=cfg.base.cache_dir, resolution=cfg.base.resolution, dtype=cfg.dtype,
                         device=resolve_device(cfg.base.device))
    refs = reference_fills() if cfg.references else {}
    rows: dict[str, list[dict]] = {"remover": [], **{k: [] for k in refs}, **({"ae_ceiling": []} if refs else {})}
    grid = []
    for lo in range(0, len(entries), cfg.batch_size):
        chunk = entries[lo:lo + cfg.batch_size]
        src, msk, gt = _load_chunk(test_meta, chunk, cfg.base.resolution)
        seeds = [cfg.eval_seed + lo + i for i in range(len(chunk))]
        out = model.remove(src, msk, seeds, steps=cfg.steps, scheduler=cfg.scheduler, strength=cfg.strength,
                           batch_size=cfg.batch_size)
        out = composite(out, src, msk) if cfg.composite else out
        ceiling = composite(model.vae.decode(encode_images(model.vae, gt) / model.vae.config.scaling_factor)
                            .sample.float().clamp(-1, 1), src, msk) if refs else None
        for i, e in enumerate(chunk):
            s, m, g = _np(src[i]), msk[i, 0].numpy() > 0.5, _np(gt[i])
            band = getattr(e, "band", None)
            rows["remover"].append({"id": getattr(e, "id", str(lo + i)), "band": band,
                                    **score_image(_np(out[i]), g, m, cfg.success_db)})
            for name, fill in refs.items():
                rows[name].append({"band": band, **score_image(fill(s, m), g, m, cfg.success_db)})
            if refs:
                rows["ae_ceiling"].append({"band": band, **score_image(_np(ceiling[i]), g, m, cfg.success_db)})
            if len(grid) < cfg.num_grid:
                grid.append((s, m, _np(out[i]), g))
    metrics = {name: summarise(r) for name, r in rows.items()}
    out_dir.mkdir(parents=True, exist_ok=True)
    write_json_atomic(out_dir / "per_image.json", rows["remover"])
    sample_grid(grid, out_dir / "samples.png")
    return EvaluateResult(metrics=metrics, table=format_table(metrics))


def main(argv: list[str] | None = None) -> int:
    p = _cli.parser("evaluate", __doc__)
    p.add_argument("--remover", type=Path, required=True)
    p.add_argument("--test", type=Path, default=Path("data/test"))
    p.add_argument("--out", type=Path, required=True, help="folder for per-image scores and the sample grid")
    p.add_argument("--metrics", type=Path, required=True)
    p.add_argument("--section", default="evaluate", choices=["evaluate", "evaluate_dpo", "evaluate_lcm", "evaluate_rl"],
                   help="params.yaml section (sampler, steps): one per evaluated model kind")
    args = p.parse_args(argv)

    def body(cfg):
        res = run(cfg, args.remover, args.test, args.out)
        _cli.write_metrics(args.metrics, res.metrics)
        print(res.table)
        return None

    return _cli.run_main(args.section, args, body)


if __name__ == "__main__":
    raise SystemExit(main())
