"""Evaluation on a test split without ground truth, the way RORem measured success on real photos.

With no GT there is no masked PSNR and no oracle. What can be measured (and each number says where
it comes from, never mixed with GT figures):

* **discriminator estimate** (here): the round's discriminator scores every test result; the
  estimated success rate is the share with score > its threshold (``est_success_rate``, source
  "discriminator");
* **humans** (train_discriminator's held-out report, not here): on inputs whose labels the
  discriminator never trained on, the human success rate next to the discriminator's estimate for the
  same results and their deviation (RORem: "deviations less than 3% in most cases"). That deviation
  is how far to trust the estimate above.

Without a discriminator (round 1 before any label, train_discriminator not run) the estimate is n/a.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import torch

from rorem_core.data.formats import read_pool, resolve_in_root
from rorem_core.data.images import load_mask, load_rgb, save_png
from rorem_core.data.latents import image_to_tensor, mask_to_tensor
from rorem_core.models.remover import composite


def has_gt(test_meta: Path) -> bool:
    import json

    raw = json.loads(test_meta.read_text(encoding="utf-8"))
    return bool(raw) and all(isinstance(e, dict) and "GT" in e for e in raw)


def evaluate_without_gt(cfg, model, test_meta: Path, discriminator: Path | None) -> tuple[dict, list, list, list]:
    """(metrics {"remover": {"all": {...}}}, per-image rows, gallery rows (entry, row, result square),
    sample-grid rows (source, mask, result, black: no GT), all at the working resolution)."""
    from rorem_core.reward.discriminator import is_no_discriminator

    entries = read_pool(test_meta)[: cfg.max_images]
    scorer = None
    if discriminator is not None and not is_no_discriminator(discriminator):
        from rorem_core.reward.selection import Scorer

        scorer = Scorer.load(discriminator, cfg.base, batch_size=cfg.batch_size, dtype=cfg.dtype)
    rows, gallery, grid, res = [], [], [], cfg.base.resolution
    with tempfile.TemporaryDirectory(prefix="rorem-eval-") as tmp:
        triples = []
        for lo in range(0, len(entries), cfg.batch_size):
            chunk = entries[lo:lo + cfg.batch_size]
            f = lambda rel: resolve_in_root(test_meta.parent, rel, where=str(test_meta))  # noqa: E731
            src = torch.stack([image_to_tensor(load_rgb(f(e.source)), res) for e in chunk])
            msk = torch.stack([mask_to_tensor(load_mask(f(e.mask)), res) for e in chunk])
            out = model.remove(src, msk, [cfg.eval_seed + lo + i for i in range(len(chunk))], steps=cfg.steps,
                               scheduler=cfg.scheduler, strength=cfg.strength, batch_size=cfg.batch_size)
            out = composite(out, src, msk) if cfg.composite else out
            for i, e in enumerate(chunk):
                sq = ((out[i].permute(1, 2, 0).numpy() + 1) / 2).clip(0, 1)
                p = Path(tmp) / f"{lo + i:06d}.png"
                save_png(p, sq)     # scored at the working resolution, as the discriminator sees it
                triples.append((f(e.source), f(e.mask), p))
                rows.append({"id": e.id, "source": "discriminator"})
                if len(gallery) < cfg.num_grid:
                    gallery.append((e, rows[-1], sq))
                    src_sq = ((src[i].permute(1, 2, 0).numpy() + 1) / 2).clip(0, 1)
                    grid.append((src_sq, msk[i, 0].numpy() > 0.5, sq, np.zeros_like(sq)))
        scores = scorer.score_files(triples) if scorer else None
    thr = scorer.threshold if scorer else None
    for r, s in zip(rows, scores if scores is not None else [None] * len(rows)):
        r.update(disc_score=None if s is None else float(s), disc_success=None if s is None else bool(s > thr))
    est = float(np.mean(scores > thr)) if scores is not None and len(scores) else None
    agg = {"n": len(rows), "gt": False, "success_rate": None, "masked_psnr": None,
           "est_success_rate": est, "est_source": "discriminator" if scorer else None,
           "disc_threshold": thr, "disc_score_mean": float(np.mean(scores)) if scores is not None and len(scores) else None}
    return {"remover": {"all": agg}}, rows, gallery, grid
