"""Evaluation on a test split with ground truth: masked PSNR (removal), unmasked PSNR (background
kept), oracle success rate with a 95 % interval, per difficulty band, next to reference fills."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Callable, Iterable

import numpy as np

from rorem_core.evaluation.metrics import masked_psnr, oracle_success, proportion_ci95, unmasked_psnr


def score_image(pred: np.ndarray, gt: np.ndarray, mask: np.ndarray, success_db: float,
                source: np.ndarray | None = None, rule: str = "psnr") -> dict:
    """Scores of one removal; ``success`` follows ``rule`` (``psnr``: masked PSNR >= ``success_db``;
    ``judge``: :func:`rorem_core.evaluation.judge.judge`, which needs ``source``). With ``source``
    both rules are recorded (``psnr_success``, ``judge_good`` / ``judge_reason`` / ``judge_score``)."""
    row = {"masked_psnr": masked_psnr(pred, gt, mask), "unmasked_psnr": unmasked_psnr(pred, gt, mask),
           "psnr_success": bool(oracle_success(pred, gt, mask, success_db))}
    if source is not None:
        from rorem_core.evaluation.judge import judge

        v = judge(source, mask, pred, gt)
        row.update(judge_good=v.good, judge_reason=v.reason, judge_score=round(v.score, 4))
    elif rule == "judge":
        raise ValueError("score_image: rule 'judge' needs the source image; pass source=")
    row["success"] = row["judge_good"] if rule == "judge" else row["psnr_success"]
    return row


def summarise(rows: Iterable[dict]) -> dict:
    """Aggregate per-image rows ({band, masked_psnr, unmasked_psnr, success}) overall and by band."""
    rows = list(rows)
    groups: dict[str, list[dict]] = defaultdict(list)
    for r in rows:
        groups["all"].append(r)
        groups[f"band_{r.get('band') or 'none'}"].append(r)
    return {name: _agg(g) for name, g in sorted(groups.items())}


def _agg(rows: list[dict]) -> dict:
    n, wins = len(rows), sum(r["success"] for r in rows)
    lo, hi = proportion_ci95(wins, n)
    mp = np.array([r["masked_psnr"] for r in rows])
    out = {"n": n, "masked_psnr": float(mp.mean()), "masked_psnr_sem": float(mp.std(ddof=1) / np.sqrt(n)) if n > 1 else 0.0,
           "unmasked_psnr": float(np.mean([r["unmasked_psnr"] for r in rows])),
           "success_rate": wins / n, "success_ci95": [lo, hi]}
    for key, name in (("psnr_success", "psnr_success"), ("judge_good", "judged_success")):
        if all(key in r for r in rows):   # both rules side by side, whichever one `success` follows
            k = sum(bool(r[key]) for r in rows)
            out[f"{name}_rate"], out[f"{name}_ci95"] = k / n, list(proportion_ci95(k, n))
    return out


def reference_fills() -> dict[str, Callable[[np.ndarray, np.ndarray], np.ndarray]]:
    from rorem_core.evaluation.baselines import harmonic, leave_object, ring_mean, telea

    return {"leave_object": leave_object, "ring_mean": ring_mean, "telea": telea, "harmonic": harmonic}


def sample_grid(rows: list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]], path: Path) -> None:
    """PNG grid, one row per sample: source | mask | result | GT (each (H, W, 3) in [0,1])."""
    from rorem_core.data.images import save_png

    if not rows:
        return
    lines = [np.concatenate([s, np.repeat(m[..., None].astype(np.float32), 3, -1), r, g], axis=1)
             for s, m, r, g in rows]
    save_png(path, np.concatenate(lines, axis=0))


def format_table(methods: dict[str, dict]) -> str:
    """Plain-text side-by-side table of the 'all' aggregate of each method."""
    head = f"{'method':<22}{'masked PSNR':>12}{'gain':>8}{'unmasked':>10}{'success':>9}  95% CI"
    base = methods.get("leave_object", {}).get("all", {}).get("masked_psnr")
    lines = [head]
    for name, s in methods.items():
        a = s["all"]
        gain = f"{a['masked_psnr'] - base:+.2f}" if base is not None else "n/a"
        lines.append(f"{name:<22}{a['masked_psnr']:>12.2f}{gain:>8}{a['unmasked_psnr']:>10.2f}"
                     f"{100 * a['success_rate']:>8.1f}%  [{100 * a['success_ci95'][0]:.1f}, {100 * a['success_ci95'][1]:.1f}]")
    return "\n".join(lines)
