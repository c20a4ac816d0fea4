"""Stage 12 (part), evaluate: the remover on the held-out test split (ground truth known) next to
reference fills (leave the object, ring-mean, OpenCV Telea) and the autoencoder ceiling."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from pydantic import BaseModel

from rorem_core.config import EvaluateConfig
from rorem_core.data.formats import dataset_file, read_triplets, resolve_in_root
from rorem_core.data.images import load_mask, load_rgb, save_png
from rorem_core.data.latents import image_to_tensor, mask_to_tensor
from rorem_core.device import resolve_device
from rorem_core.evaluation.scoring import format_table, reference_fills, sample_grid, score_image, summarise
from rorem_core.io import write_json_atomic
from rorem_core.models.remover import Remover, ae_ceiling, composite
from rorem_core.parallel import flatten_in_order, shards
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


def run(cfg: EvaluateConfig, remover: Path, test: Path, out_dir: Path, discriminator: Path | None = None, *,
        save_fills: bool = False) -> EvaluateResult:
    """With GT: the oracle (masked PSNR, success) next to reference fills. Without GT (an imported test
    split of photos): the ``discriminator``'s estimate only (evaluation/no_gt.py). ``save_fills``: also
    write the remover's and the ceiling's fills as PNGs (``fills.json`` lists them)."""
    if (remover / "skipped.json").is_file():   # a stage switched off (train_rl.enabled: false): nothing to score
        out_dir.mkdir(parents=True, exist_ok=True)
        write_json_atomic(out_dir / "per_image.json", [])
        z = np.zeros((1, 1, 3))
        sample_grid([(z, np.zeros((1, 1), bool), z, z)], out_dir / "samples.png")   # a 1x4 px placeholder
        write_gallery(Path(test), [], out_dir / "gallery", cfg.base.resolution)      # an empty index
        return EvaluateResult(metrics={}, table=f"{remover}: skipped (its training stage is disabled)")
    from rorem_core.evaluation.no_gt import evaluate_without_gt, has_gt

    test_meta = dataset_file(test)
    model = Remover.load(remover, cache_dir=cfg.base.cache_dir, resolution=cfg.base.resolution, dtype=cfg.dtype,
                         device=resolve_device(cfg.base.device), prompt=cfg.prompt, negative_prompt=cfg.negative_prompt,
                         guidance_scale=cfg.guidance_scale, lora=cfg.lora)
    if not has_gt(test_meta):
        metrics, per_image, gallery, grid = evaluate_without_gt(cfg, model, test_meta, discriminator)
        out_dir.mkdir(parents=True, exist_ok=True)
        write_json_atomic(out_dir / "per_image.json", per_image)
        write_gallery(test_meta, gallery, out_dir / "gallery", cfg.base.resolution)
        sample_grid(grid, out_dir / "samples.png")     # source | mask | result | black (no GT)
        a = metrics["remover"]["all"]
        est = "n/a (no discriminator yet)" if a["est_success_rate"] is None else f"{100 * a['est_success_rate']:.1f}%"
        return EvaluateResult(metrics=metrics, table=f"test split WITHOUT GT: {a['n']} images; no PSNR, no oracle; "
                              f"success estimated by the discriminator: {est}")
    rows, fills, shown = _score_with_gt(cfg, model, test_meta, out_dir if save_fills else None)
    metrics = {name: summarise(r) for name, r in rows.items()}
    if shards().main:      # data-parallel: every process holds the gathered rows, the main one writes
        out_dir.mkdir(parents=True, exist_ok=True)
        write_json_atomic(out_dir / "per_image.json", rows["remover"])
        sample_grid([(s, m, r, g) for e, row, s, m, r, g in shown], out_dir / "samples.png")
        if save_fills:
            write_json_atomic(out_dir / "fills.json", fills)
        write_gallery(test_meta, [(e, row, r) for e, row, s, m, r, g in shown], out_dir / "gallery", cfg.base.resolution)
    return EvaluateResult(metrics=metrics, table=format_table(metrics))


def _score_with_gt(cfg: EvaluateConfig, model: Remover, test_meta: Path, fills_dir: Path | None):
    """(rows {method: per-image rows}, fills {method: files}, shown: the first ``num_grid`` images as
    (entry, remover row, source, mask, result, GT)), in test-split order. Under N processes each scores
    every N-th batch (the batches of one process, same seeds: the same numbers) and all gather them."""
    entries = read_triplets(test_meta)[: cfg.max_images]
    refs = reference_fills() if cfg.references else {}
    sh = shards()
    mine = [(lo, [_score_batch(cfg, model, test_meta, entries[lo:hi], lo, refs, fills_dir)])
            for lo, hi in sh.blocks(len(entries), cfg.batch_size)]
    parts = flatten_in_order(sh.gather(mine))
    names = ["remover", *refs, *(["ae_ceiling"] if refs else [])]
    rows = {name: [r for part in parts for r in part["rows"][name]] for name in names}
    fills: dict[str, list[str]] = {}
    for part in parts:
        for name, files in part["fills"].items():
            fills.setdefault(name, []).extend(files)
    shown = [x for part in parts for x in part["shown"]][: cfg.num_grid]
    return rows, fills, shown


def _score_batch(cfg: EvaluateConfig, model: Remover, test_meta: Path, chunk, lo: int, refs: dict,
                 fills_dir: Path | None) -> dict:
    """One UNet batch of the test split (images lo..lo+len(chunk)): per-method rows, the fills written
    under ``fills_dir`` (when given), and the images of the sample grid among them."""
    src, msk, gt = _load_chunk(test_meta, chunk, cfg.base.resolution)
    seeds = [cfg.eval_seed + lo + i for i in range(len(chunk))]
    out = model.remove(src, msk, seeds, steps=cfg.steps, scheduler=cfg.scheduler, strength=cfg.strength,
                       batch_size=cfg.batch_size)
    out = composite(out, src, msk) if cfg.composite else out
    ceiling = ae_ceiling(model.vae, gt, src, msk) if refs else None
    part: dict = {"rows": {"remover": [], **{k: [] for k in refs}, **({"ae_ceiling": []} if refs else {})},
                  "fills": {}, "shown": []}
    for i, e in enumerate(chunk):
        s, m, g, r = _np(src[i]), msk[i, 0].numpy() > 0.5, _np(gt[i]), _np(out[i])
        band = getattr(e, "band", None)
        score = lambda pred: score_image(pred, g, m, cfg.success_db, source=s, rule=cfg.judge)  # noqa: E731
        part["rows"]["remover"].append({"id": getattr(e, "id", str(lo + i)), "band": band, **score(r)})
        for name, fill in refs.items():
            part["rows"][name].append({"band": band, **score(fill(s, m))})
        if refs:
            part["rows"]["ae_ceiling"].append({"band": band, **score(_np(ceiling[i]))})
        if fills_dir is not None:
            for name, img in (("remover", r), ("ae_ceiling", _np(ceiling[i]) if refs else None)):
                if img is not None:
                    rel = f"fills/{name}/{lo + i:04d}.png"
                    save_png(fills_dir / rel, img)
                    part["fills"].setdefault(name, []).append(rel)
        if lo + i < cfg.num_grid:
            part["shown"].append((e, part["rows"]["remover"][-1], s, m, r, g))
    return part


def write_gallery(test_meta: Path, rows: list, out: Path, resolution: int) -> None:
    """The grid's inputs as files for the report's HTML gallery: source, mask, GT and this model's
    result, at each photo's own size (pasted back); ``index.json`` = [{id, source, mask, GT, result, ...}]."""
    from rorem_core.data.fullres import default_feather, paste_back
    from rorem_core.data.images import save_png
    from rorem_core.io import atomic_dir

    with atomic_dir(out) as tmp:
        index = []
        for i, (e, score, square) in enumerate(rows):
            f = lambda rel: resolve_in_root(test_meta.parent, rel, where=str(test_meta))  # noqa: E731
            gt_rel = getattr(e, "GT", None)
            src, m = load_rgb(f(e.source)), load_mask(f(e.mask))
            res = paste_back(src, square, m, feather=default_feather(*m.shape, resolution)) \
                if src.shape[:2] != (resolution, resolution) else square
            iid = str(getattr(e, "id", None) or i)
            names = {k: f"{i:03d}_{k}.png" for k in ("source", "mask", "GT", "result") if k != "GT" or gt_rel}
            arrays = {"source": src, "mask": m, "result": res, **({"GT": load_rgb(f(gt_rel))} if gt_rel else {})}
            for k, name in names.items():
                save_png(tmp / name, arrays[k])
            index.append({"id": iid, **names, "masked_psnr": score.get("masked_psnr"), "success": score.get("success"),
                          "disc_score": score.get("disc_score"), "disc_success": score.get("disc_success")})
        write_json_atomic(tmp / "index.json", index)


def main(argv: list[str] | None = None) -> int:
    p = _cli.parser("evaluate", __doc__)
    p.add_argument("--remover", type=Path, required=True)
    p.add_argument("--test", type=Path, default=Path("data/test"))
    p.add_argument("--out", type=Path, required=True, help="folder for per-image scores and the sample grid")
    p.add_argument("--metrics", type=Path, required=True)
    p.add_argument("--discriminator", type=Path, help="the round's discriminator: scores a test split WITHOUT GT")
    p.add_argument("--section", default="evaluate", choices=["evaluate", "evaluate_dpo", "evaluate_lcm", "evaluate_rl"],
                   help="params.yaml section (sampler, steps): one per evaluated model kind")
    args = p.parse_args(argv)

    def body(cfg):
        res = run(cfg, args.remover, args.test, args.out, args.discriminator)
        _cli.write_metrics(args.metrics, res.metrics)
        print(res.table)
        return None

    return _cli.run_main(args.section, args, body)


if __name__ == "__main__":
    raise SystemExit(main())
