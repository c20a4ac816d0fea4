"""Build the judge's calibration set: anonymised source | result pairs for blind human judgement.

Scenes come from the synthetic generator with their own salt (``judge-calibration``), so they share
no scene with the seed, pools or test split. Each scene gets several fills of different quality:
the untouched GT, the shipped base remover at 50 / 8 / 2 Euler steps, OpenCV Telea, ring-mean,
the autoencoder ceiling (GT through the analytic autoencoder, composited) and the unedited source.
Items are shuffled and written as ``items/NNN.png`` (source | result at 3x, no method, no score);
the key (method, band, texture, masked PSNR) goes to ``key.json``, which the judge of the images
must not open until every verdict is recorded in ``verdicts.json``. The raw 64 px arrays go to
``raw/`` (per scene ``sNN_source/mask/gt.png``, per item ``NNN_result.png``) with ``list.json`` in the
``rorem judge`` input format, so the automatic judge is fitted and checked on exactly what was judged.

Usage: OMP_NUM_THREADS=1 python scripts/make_judge_calibration.py OUT_DIR [--scenes 28]
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import numpy as np
import torch
import yaml

from rorem_core.config import stage_config
from rorem_core.data.images import save_png
from rorem_core.data.latents import encode_images, image_to_tensor, mask_to_tensor
from rorem_core.data.synthetic import make_scene
from rorem_core.evaluation.baselines import leave_object, ring_mean, telea
from rorem_core.evaluation.metrics import masked_psnr
from rorem_core.models.remover import Remover, composite

REPO = Path(__file__).resolve().parents[1]
SALT = "judge-calibration"
SCALE = 3


def _np(x: torch.Tensor) -> np.ndarray:
    return ((x.permute(1, 2, 0).numpy() + 1) / 2).clip(0, 1).astype(np.float32)


def base_model(scratch: Path, texture_scale: float = 1.0) -> Path:
    """Bootstrap the tiny preset's model dir (the shipped base UNet of ``texture_scale``) in ``scratch``."""
    from rorem_core.stages import bootstrap

    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["bootstrap"]["synthetic"]["texture_scale"] = texture_scale
    params["base"].update(cache_dir=str(scratch / "cache"), work_dir=str(scratch / "work"),
                          wandb_mode="disabled", device="cpu")
    params["bootstrap"]["synthetic"].update({"n_seed": 8, "n_test": 8, "pool_size": 4, "n_pools": 1})
    cfg = stage_config("bootstrap", params)
    bootstrap.run(cfg, scratch / "models" / "base", scratch / "data")
    return scratch / "models" / "base", params


def fills(scenes, model: Remover) -> dict[str, list[np.ndarray]]:
    src = torch.stack([image_to_tensor(s.source, 64) for s in scenes])
    msk = torch.stack([mask_to_tensor(s.mask, 64) for s in scenes])
    gt = torch.stack([image_to_tensor(s.gt, 64) for s in scenes])
    seeds = list(range(len(scenes)))
    out = {"gt": [s.gt for s in scenes], "leave": [leave_object(s.source, s.mask) for s in scenes],
           "telea": [telea(s.source, s.mask) for s in scenes],
           "ring_mean": [ring_mean(s.source, s.mask) for s in scenes]}
    with torch.no_grad():
        dec = model.vae.decode(encode_images(model.vae, gt) / model.vae.config.scaling_factor).sample
        out["ae_ceiling"] = [_np(x) for x in composite(dec.float().clamp(-1, 1), src, msk)]
    for steps in (50, 8, 2):
        res = composite(model.remove(src, msk, seeds, steps=steps, scheduler="euler"), src, msk)
        out[f"remover_{steps}"] = [_np(x) for x in res]
    return out


def near_clean_fills(scenes) -> dict[str, list[np.ndarray]]:
    """Batch 2: fills near the judge's boundary: the autoencoder ceiling at down-scale 4 (today's) and 2."""
    from rorem_core.models.analytic_ae import AnalyticAutoencoder

    src = torch.stack([image_to_tensor(s.source, 64) for s in scenes])
    msk = torch.stack([mask_to_tensor(s.mask, 64) for s in scenes])
    gt = torch.stack([image_to_tensor(s.gt, 64) for s in scenes])
    out = {"gt": [s.gt for s in scenes]}
    for name, channels in (("ae_ceiling", (4, 4, 4)), ("ae_ceiling_f2", (4, 4))):
        ae = AnalyticAutoencoder(block_out_channels=channels)
        with torch.no_grad():
            dec = ae.decode(ae.encode(gt).latent_dist.mode()).sample.clamp(-1, 1)
        out[name] = [_np(x) for x in composite(dec, src, msk)]
    return out


def operating_point_fills(scenes, model: Remover) -> dict[str, list[np.ndarray]]:
    """Batch 3: scenes of ``texture_scale`` 5 and the fills of its base remover, the range where a
    clean and a not-clean fill differ by a few grey levels: the remover (Euler 50); the same with the
    mean colour error inside the hole removed; the remover started from the GT noised to strength 0.3
    and 0.6 (SDEdit: near-GT fills with the model's own small errors); the ceiling; the GT."""
    src = torch.stack([image_to_tensor(s.source, 64) for s in scenes])
    msk = torch.stack([mask_to_tensor(s.mask, 64) for s in scenes])
    gt = torch.stack([image_to_tensor(s.gt, 64) for s in scenes])
    seeds = list(range(len(scenes)))
    out = {"gt": [s.gt for s in scenes]}
    with torch.no_grad():
        dec = model.vae.decode(encode_images(model.vae, gt) / model.vae.config.scaling_factor).sample
        out["ae_ceiling"] = [_np(x) for x in composite(dec.float().clamp(-1, 1), src, msk)]
    res = [_np(x) for x in composite(model.remove(src, msk, seeds, steps=50, scheduler="euler"), src, msk)]
    out["remover_50"] = res
    out["remover_50_offset_removed"] = [_without_offset(r, s) for r, s in zip(res, scenes)]
    for strength in (0.3, 0.6):
        fill = model.remove(gt, msk, seeds, steps=50, scheduler="euler", strength=strength)
        out[f"sdedit_{strength}"] = [_np(x) for x in composite(fill, src, msk)]
    return out


def _without_offset(result: np.ndarray, scene) -> np.ndarray:
    """``result`` with the mean colour error inside the hole (vs the GT) subtracted there."""
    m = scene.mask
    out = result.copy()
    out[m] = np.clip(result[m] - (result[m] - scene.gt[m]).mean(0), 0, 1)
    return out


def pair_png(source: np.ndarray, result: np.ndarray) -> np.ndarray:
    gap = np.ones((source.shape[0], 2, 3), np.float32)
    img = np.concatenate([source, gap, result], axis=1)
    return np.repeat(np.repeat(img, SCALE, 0), SCALE, 1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", type=Path)
    ap.add_argument("--scenes", type=int, default=28, help="scenes per set; half easy, half hard")
    ap.add_argument("--batch2", type=int, default=0, metavar="N",
                    help="append batch 2 instead: N more scenes with near-clean fills (GT, ceiling at f=4 and f=2)")
    ap.add_argument("--batch3", type=int, default=0, metavar="N",
                    help="append batch 3 instead: N more scenes of texture_scale 5 after batches 1-2 (--scenes, "
                         "--batch2 give their sizes) with its base remover's fills")
    args = ap.parse_args()
    torch.manual_seed(0)
    out, appended = args.out, bool(args.batch2 or args.batch3)
    first = len(json.loads((out / "key.json").read_text())) if appended else 0
    lo = args.scenes + (args.batch2 if args.batch3 else 0) if appended else 0
    hi = lo + (args.batch3 or args.batch2 or args.scenes)
    scale = 5.0 if args.batch3 else 1.0
    scenes = {i: make_scene(i, size=64, band="easy" if i % 2 == 0 else "hard", salt=SALT, texture_scale=scale)
              for i in range(lo, hi)}
    if args.batch3:
        scratch = Path(tempfile.mkdtemp(prefix="judge-cal-"))
        model_dir, params = base_model(scratch, texture_scale=scale)
        model = Remover.load(model_dir, cache_dir=params["base"]["cache_dir"], resolution=64, device="cpu")
        methods = {m: dict(zip(scenes, v)) for m, v in operating_point_fills(list(scenes.values()), model).items()}
    elif args.batch2:
        methods = {m: dict(zip(scenes, v)) for m, v in near_clean_fills(list(scenes.values())).items()}
    else:
        scratch = Path(tempfile.mkdtemp(prefix="judge-cal-"))
        model_dir, params = base_model(scratch)
        model = Remover.load(model_dir, cache_dir=params["base"]["cache_dir"], resolution=64, device="cpu")
        methods = {m: dict(zip(scenes, v)) for m, v in fills(list(scenes.values()), model).items()}
    items = [(m, i) for m in methods for i in scenes]
    order = np.random.default_rng(15 if args.batch3 else 14 if args.batch2 else 13).permutation(len(items))
    (out / "items").mkdir(parents=True, exist_ok=True)
    (out / "raw").mkdir(exist_ok=True)
    for i, s in scenes.items():
        for name, a in (("source", s.source), ("mask", s.mask), ("gt", s.gt)):
            save_png(out / "raw" / f"s{i:02d}_{name}.png", a.astype(np.float32))
    key = json.loads((out / "key.json").read_text()) if appended else []
    listing = json.loads((out / "list.json").read_text()) if appended else []
    for n, k in enumerate(order, start=first):
        method, i = items[k]
        s, res = scenes[i], methods[method][i]
        save_png(out / "items" / f"{n:03d}.png", pair_png(s.source, res))
        key.append({"item": f"{n:03d}", "method": method, "scene": i, "band": s.info["band"],
                    "texture": s.info["texture"], "shadow": s.info["shadow"], "texture_scale": scale,
                    "masked_psnr": round(masked_psnr(res, s.gt, s.mask), 2)})
        save_png(out / "raw" / f"{n:03d}_result.png", res)
        listing.append({"item": f"{n:03d}", "source": f"raw/s{i:02d}_source.png", "mask": f"raw/s{i:02d}_mask.png",
                        "result": f"raw/{n:03d}_result.png", "GT": f"raw/s{i:02d}_gt.png"})
    (out / "key.json").write_text(json.dumps(key, indent=1))
    (out / "list.json").write_text(json.dumps(listing, indent=1))
    print(f"{len(key)} items -> {out}")


if __name__ == "__main__":
    main()
