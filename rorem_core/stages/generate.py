"""Stage 2, generate: K candidates per pool input (different seeds, one batched pass), written as
images plus a candidates manifest with provenance (id, round, input id, seed, model, steps)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from pydantic import BaseModel

from rorem_core.config import GenerateConfig
from rorem_core.data.formats import Candidate, dataset_file, read_pool, resolve_in_root, write_candidates
from rorem_core.data.fullres import default_feather, paste_back
from rorem_core.data.images import load_mask, load_rgb, save_png
from rorem_core.data.latents import image_to_tensor, mask_to_tensor
from rorem_core.data.masks import dilate
from rorem_core.device import resolve_device
from rorem_core.models.remover import Remover, composite
from rorem_core.parallel import flatten_in_order, sharded_output_dir, shards
from rorem_core.stages import _cli


class GenerateResult(BaseModel):
    manifest: str
    n_inputs: int
    n_candidates: int


def candidate_seed(base_seed: int, round_id: int, index: int, k: int) -> int:
    """A stable per-candidate seed: the same input and k give the same seed in every run."""
    return int(np.random.default_rng([base_seed, round_id, index, k]).integers(2**31))


def load_inputs(pool_meta: Path, items, resolution: int, dilation: int, originals: list | None = None):
    """(images (N,3,R,R) in [-1,1], masks (N,1,R,R)) for a chunk of pool items. Photos of another
    size are letterboxed; with ``originals`` given, their full-size (image, mask) are appended to it."""
    imgs, masks = [], []
    for it in items:
        where = f"{pool_meta} entry {it.id}"
        img = load_rgb(resolve_in_root(pool_meta.parent, it.source, where=where))
        imgs.append(image_to_tensor(img, resolution))
        m = load_mask(resolve_in_root(pool_meta.parent, it.mask, where=where))
        masks.append(mask_to_tensor(dilate(m, dilation) if dilation else m, resolution))
        if originals is not None:
            originals.append((img, m) if img.shape[:2] != (resolution, resolution) else None)
    return torch.stack(imgs), torch.stack(masks)


def run(cfg: GenerateConfig, remover: Path, pool: Path, out_dir: Path, round_id: int = 1) -> GenerateResult:
    """Stream the pool in chunks of ``batch_size // num_seeds`` inputs (never all images in memory);
    under N processes each takes every N-th chunk and the main one writes the manifest (rorem_core.parallel)."""
    pool_meta = dataset_file(pool)
    items = read_pool(pool_meta)
    sh = shards()
    model = Remover.load(remover, cache_dir=cfg.base.cache_dir, resolution=cfg.base.resolution, dtype=cfg.dtype,
                         device=resolve_device(cfg.base.device), prompt=cfg.prompt, negative_prompt=cfg.negative_prompt,
                         guidance_scale=cfg.guidance_scale, lora=cfg.lora)
    chunk = max(1, cfg.batch_size // cfg.num_seeds)   # inputs per UNet batch of inputs x seeds
    with sharded_output_dir(out_dir, sh) as tmp:
        mine = [(lo, _generate_chunk(cfg, model, pool_meta, items, lo, hi, tmp, round_id, str(remover)))
                for lo, hi in sh.blocks(len(items), chunk)]
        cands = flatten_in_order(sh.gather(mine))
        if sh.main:
            write_candidates(tmp / "candidates.json", cands)
    return GenerateResult(manifest=str(out_dir / "candidates.json"), n_inputs=len(items), n_candidates=len(cands))


def _generate_chunk(cfg, model, pool_meta, items, lo, hi, tmp: Path, round_id: int, model_name: str):
    k = cfg.num_seeds
    originals: list = []
    imgs, masks = load_inputs(pool_meta, items[lo:hi], cfg.base.resolution, cfg.mask_dilation, originals)
    # rows are input-major with k seeds each: (n*k, ...), one UNet batch
    seeds = [candidate_seed(cfg.base.seed, round_id, i, j) for i in range(lo, lo + len(imgs)) for j in range(k)]
    rep_img, rep_mask = imgs.repeat_interleave(k, 0), masks.repeat_interleave(k, 0)
    out = model.remove(rep_img, rep_mask, seeds, steps=cfg.steps, scheduler=cfg.scheduler,
                       strength=cfg.strength, batch_size=cfg.batch_size)
    if cfg.composite:
        out = composite(out, rep_img, rep_mask)
    cands = []
    for i, it in enumerate(items[lo:hi]):
        full = originals[i]   # a photo of another size: everything a person sees is at its own size
        save_png(tmp / "inputs" / f"{it.id}_source.png", full[0] if full else _to_np(imgs[i]))
        save_png(tmp / "inputs" / f"{it.id}_mask.png",
                 dilate(full[1], cfg.mask_dilation) if full else masks[i, 0].numpy() > 0.5)
        for j in range(k):
            row, cid = i * k + j, f"r{round_id}-{it.id}-k{j}"
            result = _to_np(out[row])
            if full:
                feather = default_feather(*full[1].shape, cfg.base.resolution)
                result = paste_back(full[0], result, full[1], dilation=cfg.mask_dilation, feather=feather)
            save_png(tmp / "results" / f"{cid}.png", result)
            cands.append(Candidate(id=cid, round=round_id, input_id=it.id, seed=seeds[row], model=model_name,
                                   steps=cfg.steps, scheduler=cfg.scheduler, strength=cfg.strength,
                                   source=f"inputs/{it.id}_source.png", mask=f"inputs/{it.id}_mask.png",
                                   result=f"results/{cid}.png"))
    return cands


def _to_np(x: torch.Tensor) -> np.ndarray:
    """(3, R, R) in [-1, 1] -> (R, R, 3) in [0, 1]."""
    return ((x.permute(1, 2, 0).numpy() + 1.0) / 2.0).clip(0, 1)


def main(argv: list[str] | None = None) -> int:
    p = _cli.parser("generate", __doc__)
    p.add_argument("--round", type=int, default=1)
    p.add_argument("--remover", type=Path, required=True)
    p.add_argument("--pool", type=Path, required=True)
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args(argv)
    return _cli.run_main("generate", args, lambda cfg: run(cfg, args.remover, args.pool, args.out, args.round))


if __name__ == "__main__":
    raise SystemExit(main())
