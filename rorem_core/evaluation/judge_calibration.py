"""Fit the judge's thresholds on the human-judged calibration set and measure its held-out agreement.

The set (``tests/fixtures/judge_calibration``, made by ``scripts/make_judge_calibration.py``) holds
416 removals from 72 scenes with blind human verdicts. It is split **by scene**: scenes whose pair
index ``scene // 2`` is even (18 easy + 18 hard) form the fit half, the others the held-out half, so no
scene is in both. On the fit half:

- ``FLOOR`` is chosen by leave-one-scene-out cross-validation inside the fit half (Cohen's kappa of
  the pooled out-of-scene predictions), from a small fixed grid;
- each threshold is the max-margin cut (geometric midpoint between adjacent values at the best
  balanced accuracy) of its own measure, between the good items and the bad items whose reason is
  that measure's (smudge; texture_broken / artifacts).

Usage: ``python -m rorem_core.evaluation.judge_calibration [DIR]`` prints the fitted thresholds and
the agreement of the judge and of the masked-PSNR >= 20 dB rule on the held-out half.
"""

from __future__ import annotations

import json
import re
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from rorem_core.data.formats import resolve_in_root
from rorem_core.data.images import load_mask, load_rgb
from rorem_core.evaluation.judge import features, verdict
from rorem_core.evaluation.metrics import ORACLE_PSNR_DB, masked_psnr

FLOOR_GRID = (0.001, 0.002, 0.003, 0.005, 0.01)
DEFAULT_DIR = Path(__file__).resolve().parents[2] / "tests" / "fixtures" / "judge_calibration"


@dataclass
class Item:
    item: str
    scene: int
    good: bool                     # the human verdict
    reason: str | None
    arrays: tuple                  # (source, mask, result, GT)

    @property
    def fit_half(self) -> bool:
        return (self.scene // 2) % 2 == 0


def cohen_kappa(y: list[bool], p: list[bool]) -> float:
    """Cohen's kappa of two binary raters: (p_o - p_e) / (1 - p_e), p_e from the marginals."""
    y, p = np.asarray(y, float), np.asarray(p, float)
    po = float(np.mean(y == p))
    pe = float(y.mean() * p.mean() + (1 - y.mean()) * (1 - p.mean()))
    return 0.0 if pe >= 1 else (po - pe) / (1 - pe)


def load(directory: Path = DEFAULT_DIR) -> list[Item]:
    """The calibration items with their verdicts (``list.json`` + ``verdicts.json``)."""
    directory = Path(directory)
    verdicts = {v["item"]: v for v in json.loads((directory / "verdicts.json").read_text())}
    items = []
    for row in json.loads((directory / "list.json").read_text()):
        f = lambda k: resolve_in_root(directory, row[k], where=str(directory / "list.json"))  # noqa: E731
        scene = int(re.search(r"s(\d+)_", row["source"]).group(1))
        v = verdicts[row["item"]]
        items.append(Item(row["item"], scene, v["good"], v["reason"],
                          (load_rgb(f("source")), load_mask(f("mask")), load_rgb(f("result")), load_rgb(f("GT")))))
    return items


def _max_margin_cut(values: np.ndarray, good: np.ndarray) -> float:
    """The cut t (good when value < t) of best balanced accuracy, midway (geometric) in its gap."""
    v = np.unique(values)
    cuts = np.concatenate([[v[0] / 2], np.sqrt(v[:-1] * np.maximum(v[1:], 1e-12)), [v[-1] * 2]])
    bal = [np.mean((values < t)[good]) + np.mean((values >= t)[~good]) for t in cuts]
    best = [t for t, b in zip(cuts, bal) if b >= max(bal) - 1e-12]
    return float(np.sqrt(best[0] * best[-1]))


def fit_thresholds(feats: list[dict], items: list[Item]) -> tuple[float, float]:
    """(SMUDGE_MAX, TEXTURE_MAX), each fitted on its own reason's bad items against the good ones."""
    good = np.array([it.good for it in items])
    smudge = np.array([it.good or it.reason == "smudge" for it in items])
    texture = np.array([it.good or it.reason in ("texture_broken", "artifacts") for it in items])
    s = _max_margin_cut(np.array([f["smudge"] for f in feats])[smudge], good[smudge])
    t = _max_margin_cut(np.array([f["texture"] for f in feats])[texture], good[texture])
    return s, t


def _predict(feats, s, t) -> list[bool]:
    return [verdict(f, s, t).good for f in feats]


def fit(items: list[Item]) -> dict:
    """FLOOR by leave-one-scene-out CV on ``items`` (the fit half), then the two thresholds."""
    scenes = sorted({it.scene for it in items})
    cv = {}
    for floor in FLOOR_GRID:
        feats = [features(*it.arrays, floor=floor) for it in items]
        pred = [False] * len(items)
        for sc in scenes:
            train = [i for i, it in enumerate(items) if it.scene != sc]
            s, t = fit_thresholds([feats[i] for i in train], [items[i] for i in train])
            for i, it in enumerate(items):
                if it.scene == sc:
                    pred[i] = verdict(feats[i], s, t).good
        cv[floor] = cohen_kappa([it.good for it in items], pred)
    floor = max(FLOOR_GRID, key=lambda f: (cv[f], -FLOOR_GRID.index(f)))
    feats = [features(*it.arrays, floor=floor) for it in items]
    s, t = fit_thresholds(feats, items)
    return {"floor": floor, "smudge_max": s, "texture_max": t, "cv_kappa": cv}


def agreement(items: list[Item], floor: float, s: float, t: float) -> dict:
    """Accuracy and kappa of the judge and of the PSNR rule against the human verdicts on ``items``."""
    y = [it.good for it in items]
    judged = _predict([features(*it.arrays, floor=floor) for it in items], s, t)
    psnr = [masked_psnr(it.arrays[2], it.arrays[3], it.arrays[1]) >= ORACLE_PSNR_DB for it in items]
    return {"n": len(items), "human_good": int(sum(y)),
            "judge": {"accuracy": float(np.mean(np.equal(y, judged))), "kappa": cohen_kappa(y, judged),
                      "called_good": int(sum(judged))},
            "psnr_rule": {"accuracy": float(np.mean(np.equal(y, psnr))), "kappa": cohen_kappa(y, psnr),
                          "called_good": int(sum(psnr))}}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    items = load(Path(argv[0]) if argv else DEFAULT_DIR)
    fit_part = [it for it in items if it.fit_half]
    held = [it for it in items if not it.fit_half]
    params = fit(fit_part)
    report = {"fitted": params,
              "fit_half": agreement(fit_part, params["floor"], params["smudge_max"], params["texture_max"]),
              "held_out_half": agreement(held, params["floor"], params["smudge_max"], params["texture_max"])}
    print(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
