"""Success on the test split by the old rule (masked PSNR >= 20 dB) and by the judge, side by side,
per band, for the shipped tiny base remover, the reference fills and the autoencoder ceiling.

    python benchmarks/bench_judge.py [--workspace DIR] [--max-images N]

The workspace (bootstrap: shipped tiny base + the default synthetic data, test split of 400) is
created on first use and reused. Prints the table, writes ``judge_bench.json`` and a blind sample sheet
(``blind_sheet.png``: source | result pairs of remover and ceiling fills, numbered, no verdicts) with
its key ``blind_key.json`` in the workspace, to check the judge's verdicts by eye.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from rorem_core.config import stage_config

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:   # run as a script: the repo root for `benchmarks.common`
    sys.path.insert(0, str(REPO))
METHODS = ("remover", "ae_ceiling", "telea", "harmonic", "ring_mean", "leave_object")



def _common():
    """benchmarks.common, imported once the repo root is on sys.path (these files also run as scripts)."""
    from benchmarks import common

    return common

def workspace(root: Path) -> dict:
    return _common().tiny_workspace(root)


def table(metrics: dict) -> str:
    lines = [f"{'method':<14}{'band':<6}{'n':>5}{'PSNR>=20':>10}{'judge':>8}  judge 95% CI"]
    for name in METHODS:
        for band in ("easy", "hard"):
            a = metrics[name][f"band_{band}"]
            lo, hi = a["judged_success_ci95"]
            lines.append(f"{name:<14}{band:<6}{a['n']:>5}{100 * a['psnr_success_rate']:>9.1f}%"
                         f"{100 * a['judged_success_rate']:>7.1f}%  [{100 * lo:.1f}, {100 * hi:.1f}]")
    return "\n".join(lines)


def blind_sheet(ws: Path, params: dict, k: int = 12) -> None:
    """k remover results + k ceiling fills from the test split, shuffled, as numbered source | result."""
    from PIL import Image, ImageDraw

    from rorem_core.data.formats import read_triplets
    from rorem_core.data.images import load_rgb

    rows = json.loads((ws / "eval/per_image.json").read_text())
    pick = np.random.default_rng(7).permutation(len(rows))[:k]
    entries = read_triplets(ws / "data/test/meta.json")
    fills = json.loads((ws / "eval/fills.json").read_text())
    items = [(m, int(i)) for i in pick for m in ("remover", "ae_ceiling")]
    order = np.random.default_rng(8).permutation(len(items))
    tile, key = [], []
    for n, j in enumerate(order):
        method, i = items[j]
        e = entries[i]
        src = load_rgb(ws / "data/test" / e.source)
        res = load_rgb(ws / "eval" / fills[method][i])
        pair = np.concatenate([src, np.ones((64, 2, 3), np.float32), res], 1)
        tile.append(np.repeat(np.repeat(pair, 3, 0), 3, 1))
        key.append({"n": n, "method": method, "index": i, "band": e.band})
    w, h = tile[0].shape[1], tile[0].shape[0]
    sheet = Image.new("RGB", (2 * (w + 20), (len(tile) + 1) // 2 * (h + 22)), (60, 60, 60))
    draw = ImageDraw.Draw(sheet)
    for n, t in enumerate(tile):
        x, y = (n % 2) * (w + 20), (n // 2) * (h + 22)
        sheet.paste(Image.fromarray((t * 255).round().astype(np.uint8)), (x + 10, y + 18))
        draw.text((x + 12, y + 3), f"{n:02d}", fill=(255, 255, 0))
    sheet.save(ws / "blind_sheet.png")
    (ws / "blind_key.json").write_text(json.dumps(key, indent=1))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workspace", type=Path, default=Path(".rorem/bench_judge"))
    ap.add_argument("--max-images", type=int, default=None)
    args = ap.parse_args()
    from rorem_core.stages import evaluate

    ws = args.workspace.resolve()
    ws.mkdir(parents=True, exist_ok=True)
    params = workspace(ws)
    cfg = stage_config("evaluate", params, {"max_images": args.max_images, "num_grid": 16})
    res = evaluate.run(cfg, ws / "models/base", ws / "data/test", ws / "eval", save_fills=True)
    (ws / "judge_bench.json").write_text(json.dumps(res.metrics, indent=1))
    print(table(res.metrics))
    blind_sheet(ws, params)
    print(f"\nblind sheet: {ws / 'blind_sheet.png'} (key: {ws / 'blind_key.json'})")


if __name__ == "__main__":
    main()
