"""Tiny removal rounds on disk for the annotation and flow tests: inputs p000.. with two candidates
each (s0 good: GT + small noise; s1 bad: the object left), their hidden GT and a candidates manifest."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from rorem_core.data.formats import Candidate, write_candidates
from rorem_core.data.images import save_png

SIZE = 64


@dataclass
class RoundFiles:
    round_id: int
    candidates: Path            # data/candidates/round-N/candidates.json
    hidden: Path                # data/hidden/round-N/meta.json
    good: list[str]             # candidate ids the oracle calls good
    bad: list[str]


def _scene(i: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(source, mask, GT) for input i: a gradient background and a red square object."""
    yy, xx = np.mgrid[0:SIZE, 0:SIZE].astype(np.float32) / SIZE
    gt = np.stack([0.2 + 0.3 * xx, 0.3 + 0.2 * yy, 0.6 + 0.1 * xx * yy], axis=-1)
    y0, x0 = 12 + 7 * i, 16 + 5 * i
    src = gt.copy()
    src[y0:y0 + 16, x0:x0 + 16] = [0.9, 0.1, 0.1]
    mask = np.zeros((SIZE, SIZE), dtype=bool)
    mask[y0 - 2:y0 + 18, x0 - 2:x0 + 18] = True
    return src, mask, gt


def make_round(data_root: Path, round_id: int, n_inputs: int = 3, *, scores: bool = True) -> RoundFiles:
    """Inputs p000.. with two candidates each: s0 good (GT + small noise), s1 bad (object left)."""
    cdir, hdir = data_root / "candidates" / f"round-{round_id}", data_root / "hidden" / f"round-{round_id}"
    rng = np.random.default_rng(round_id)
    cands, hidden, good, bad = [], [], [], []
    for i in range(n_inputs):
        pid = f"p{i:03d}"
        src, mask, gt = _scene(i % 5)   # 5 distinct placements; more inputs reuse them
        save_png(cdir / "inputs" / "source" / f"{pid}.png", src)
        save_png(cdir / "inputs" / "mask" / f"{pid}.png", mask)
        save_png(hdir / "GT" / f"{pid}.png", gt)
        hidden.append({"id": pid, "GT": f"GT/{pid}.png"})
        results = {0: np.clip(gt + rng.normal(0, 0.01, gt.shape), 0, 1), 1: src}
        for seed, img in results.items():
            cid = f"r{round_id}-{pid}-s{seed}"
            save_png(cdir / "results" / f"{cid}.png", img)
            score = (0.8 if seed == 0 else 0.3) if scores and i != 0 else None
            cands.append(Candidate(id=cid, round=round_id, input_id=pid, seed=seed, model="test", steps=4,
                                   source=f"inputs/source/{pid}.png", mask=f"inputs/mask/{pid}.png",
                                   result=f"results/{cid}.png", score=score,
                                   score_model="disc-test" if score is not None else None))
            (good if seed == 0 else bad).append(cid)
    write_candidates(cdir / "candidates.json", cands)
    hdir.mkdir(parents=True, exist_ok=True)
    (hdir / "meta.json").write_text(json.dumps(hidden))
    return RoundFiles(round_id, cdir / "candidates.json", hdir / "meta.json", good, bad)
