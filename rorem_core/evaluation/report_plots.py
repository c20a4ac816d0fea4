"""The round report's figures (matplotlib, headless): success per round, the discriminator's
reliability diagram on held-out human labels, and the training loss curves. Each returns the PNG's
file name, or None when there is nothing to draw (or no matplotlib)."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")   # files only, never a display (CI, servers)
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> str:
    # no "Software"/date metadata: identical inputs give identical bytes
    fig.savefig(path, dpi=80, bbox_inches="tight", metadata={"Software": None})
    _pyplot().close(fig)
    return path.name


def plot_rounds(rows: Sequence[dict], path: Path) -> str | None:
    """Success rates (humans, discriminator, the test split by the PSNR rule and by the judge) and test
    masked PSNR per round; a line with no value in any round is left out."""
    keys = ("success_human", "success_disc", "test_success", "test_judged", "test_psnr")
    rows = [r for r in rows if r["round"] > 0]
    if not any(r[k] is not None for r in rows for k in keys):
        return None
    plt = _pyplot()
    fig, (a, b) = plt.subplots(1, 2, figsize=(9, 3.2))
    x = [r["round"] for r in rows]
    lines = (("success_human", "humans"), ("success_disc", "discriminator"), ("test_success", "test (PSNR rule)"),
             ("test_judged", "test (judge)"))
    for key, label in lines:
        if all(r.get(key) is None for r in rows):
            continue
        y = [r[key] if r.get(key) is not None else float("nan") for r in rows]
        a.plot(x, y, marker="o", label=label)
    a.set(xlabel="round", ylabel="success rate", ylim=(0, 1), xticks=x, title="success rate")
    a.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=2)   # below: never over a line
    b.plot(x, [r["test_psnr"] if r["test_psnr"] is not None else float("nan") for r in rows], marker="o")
    b.set(xlabel="round", ylabel="dB", xticks=x, title="test masked PSNR")
    return _save(fig, path)


def reliability(labels: Sequence[float], scores: Sequence[float], bins: int) -> list[tuple[float, float, int]]:
    """(mean score, mean label, count) of each non-empty equal-width score bin on [0, 1]."""
    out = []
    for b in range(bins):
        lo, hi = b / bins, (b + 1) / bins
        sel = [(s, y) for s, y in zip(scores, labels) if lo <= min(max(s, 0.0), 1.0) < hi or (b == bins - 1 and s >= 1.0)]
        if sel:
            out.append((sum(s for s, _ in sel) / len(sel), sum(y for _, y in sel) / len(sel), len(sel)))
    return out


def plot_calibration(heldout: dict[int, list[dict]], path: Path, bins: int = 10) -> str | None:
    """Reliability diagram (held-out human label rate vs discriminator score), one line per round."""
    heldout = {n: r for n, r in heldout.items() if r}
    if not heldout:
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(4, 4))
    ax.plot([0, 1], [0, 1], ls="--", c="grey", lw=1, label="perfect")
    for n, rows in sorted(heldout.items()):
        pts = reliability([r["label"] for r in rows], [r["score"] for r in rows], bins)
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=f"round {n}")
    ax.set(xlabel="discriminator score", ylabel="fraction judged good", xlim=(0, 1), ylim=(0, 1),
           title="calibration (held-out)")
    ax.legend(fontsize=8)
    return _save(fig, path)


def plot_curves(curves: dict[str, dict[int, list]], path: Path) -> str | None:
    """Training loss vs step: one panel per model kind (remover, discriminator, DPO, RWD), a line per round."""
    kinds = [k for k, per in curves.items() if any(per.values())]
    if not kinds:
        return None
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(kinds), figsize=(3.6 * len(kinds), 3), squeeze=False)
    for ax, kind in zip(axes[0], kinds):
        for n, losses in sorted(curves[kind].items()):
            if losses:
                ax.plot([s for s, _ in losses], [v for _, v in losses], label=f"round {n}")
        ax.set(xlabel="step", ylabel="loss", title=kind)
        ax.legend(fontsize=8)
    return _save(fig, path)
