"""Anchors: labelled examples the discriminator gets for free from triplets with ground truth (the seed set).

Per drawn triplet (source, mask, GT):
- ``anchor_gt``     (source, mask, GT)     good: the clean removal;
- ``anchor_leave``  (source, mask, source) bad: the object left in place;
- with ``smudges = s`` > 0, s pairs of NEAR MISSES made from the GT, the failure the round's remover
  actually makes (docs/judge.md: its failed candidates are smudges a few % of intensity deep):
  ``anchor_smudge`` (bad, a visible smudge) and ``anchor_faint`` (good, the same kind of error too faint
  to see).

Why near misses: "object left" and GT differ in the whole hole, so they teach the discriminator which
INPUT it looks at as much as what the removal is like; the round's discriminators ordered the K candidates
of one input at chance (within-input AUC 0.43-0.62) although the 16x16 latent holds the difference. A
smudge and a faint error of the SAME input differ only in how visible the error is.

A near miss is ``GT + a * e``, where ``e`` is one of two error shapes in the hole grown by 1 px
(units: image intensity, [0, 1] per channel):
- ``tone``:  a random colour direction times a smooth random field in [0.3, 1] (a tone blob);
- ``ghost``: the object's own difference ``source - GT``, blurred (sigma 1.5 px): a faded object.
The amplitude ``a`` is set by visibility, not by intensity, with the judge's contrast-masking model
(rorem_core/evaluation/judge.py): the low-pass error's 95th percentile over the grown hole divided by
(the ring's activity + FLOOR) is ``r x SMUDGE_MAX``, with r ~ U[SMUDGE_R] for a smudge and U[FAINT_R] for a
faint one. So a busy background gets a larger error than a flat one, as a person would see it. The
images are written once under ``work_dir`` (content-addressed, atomically) and read like any labelled
sample; they join the training side only.
"""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np

from rorem_core.data.formats import read_triplets, resolve_in_root
from rorem_core.data.images import load_mask, load_rgb, save_png
from rorem_core.data.masks import dilate
from rorem_core.evaluation import judge as J
from rorem_core.io import atomic_dir, sha256_bytes, write_json_atomic

VERSION = 1
SMUDGE_R = (1.3, 4.0)    # x SMUDGE_MAX: visible (the judge calls r > 1 a smudge); round failures: median 1.34
FAINT_R = (0.0, 0.6)     # x SMUDGE_MAX: invisible
SHAPES = ("tone", "ghost")


def _blur(x: np.ndarray, sigma: float) -> np.ndarray:
    return cv2.GaussianBlur(x.astype(np.float32), (0, 0), sigma, borderType=cv2.BORDER_REFLECT)


def error_shape(source: np.ndarray, mask: np.ndarray, gt: np.ndarray, shape: str,
                rng: np.random.Generator) -> np.ndarray:
    """Unit-less error field (H, W, 3), zero outside the hole grown by 1 px."""
    near = dilate(mask, 1).astype(np.float32)[..., None]
    if shape == "tone":
        colour = rng.normal(size=3)
        field = _blur(rng.normal(size=mask.shape), 4.0)
        field = 0.3 + 0.7 * (field - field.min()) / (np.ptp(field) + 1e-8)     # smooth, in [0.3, 1]
        e = field[..., None] * (colour / np.linalg.norm(colour))
    elif shape == "ghost":
        e = _blur(source - gt, 1.5)
    else:
        raise ValueError(f"unknown error shape {shape!r}; one of {SHAPES}")
    return _blur(e * near, 1.0) * near     # soft inside, nothing beyond the grown hole


def visibility(source: np.ndarray, mask: np.ndarray, gt: np.ndarray, err: np.ndarray) -> float:
    """The judge's smudge measure of the result ``gt + err``, in units of SMUDGE_MAX (> 1: visible)."""
    return J.features(source, mask, gt + err, gt)["smudge"] / J.SMUDGE_MAX


def near_miss(source: np.ndarray, mask: np.ndarray, gt: np.ndarray, r: float, shape: str,
              rng: np.random.Generator) -> np.ndarray:
    """``GT + a * e`` with ``a`` chosen so the error's visibility is ``r`` (before uint8 rounding and clipping)."""
    e = error_shape(source, mask, gt, shape, rng)
    unit = visibility(source, mask, gt, e)
    a = r / unit if unit > 0 else 0.0
    return np.clip(gt + a * e, 0.0, 1.0)     # e is 0 beyond the grown hole: elsewhere exactly the GT


def _pick(n_entries: int, n: int, seed: int) -> list[int]:
    return sorted(int(j) for j in np.random.default_rng([seed, 17]).permutation(n_entries)[:n])


def write_near_misses(meta: Path, n: int, smudges: int, seed: int, work_dir: Path) -> Path:
    """The near misses of the ``n`` drawn triplets, under ``work_dir/anchors/<key>`` (reused when present):
    a ``labels.json`` [{source, mask, result, label, kind}] with absolute paths. Returns that file."""
    entries = read_triplets(meta)
    picks = _pick(len(entries), n, seed)
    files = [[resolve_in_root(meta.parent, r, where=f"{meta} entry {i}") for r in (entries[i].source,
              entries[i].mask, entries[i].GT)] for i in picks]
    key = sha256_bytes(json.dumps([VERSION, smudges, seed, SMUDGE_R, FAINT_R]).encode(),
                       *(f.read_bytes() for fs in files for f in fs))[:20]
    out = Path(work_dir) / "anchors" / key
    if (out / "labels.json").is_file():
        return out / "labels.json"
    rows = []
    with atomic_dir(out) as tmp:
        for i, (src_p, mask_p, gt_p) in zip(picks, files):
            src, mask, gt = load_rgb(src_p), load_mask(mask_p), load_rgb(gt_p)
            rng = np.random.default_rng([seed, 23, i])
            for j in range(smudges):
                shape = SHAPES[j % len(SHAPES)]
                for kind, (lo, hi), label in (("anchor_smudge", SMUDGE_R, 0.0), ("anchor_faint", FAINT_R, 1.0)):
                    name = f"{i:06d}-{j}-{kind[7:]}.png"
                    save_png(tmp / name, near_miss(src, mask, gt, float(rng.uniform(lo, hi)), shape, rng))
                    rows.append({"source": str(src_p), "mask": str(mask_p), "result": str(out / name),
                                 "label": label, "kind": kind, "shape": shape})
        write_json_atomic(tmp / "labels.json", rows)
    return out / "labels.json"


def read_anchors(meta: Path, n: int, seed: int, smudges: int = 0,
                 work_dir: Path | None = None) -> list[tuple[Path, Path, Path, float, str]]:
    """(source, mask, result, label, kind) of the anchors of ``n`` drawn triplets (module docstring)."""
    entries = read_triplets(meta)
    out = []
    for i in _pick(len(entries), n, seed):
        t = entries[i]
        src, mask, gt = (resolve_in_root(meta.parent, r, where=f"{meta} entry {i}") for r in (t.source, t.mask, t.GT))
        out += [(src, mask, gt, 1.0, "anchor_gt"), (src, mask, src, 0.0, "anchor_leave")]
    if smudges:
        if work_dir is None:
            raise ValueError("near-miss anchors are written files: pass work_dir")
        rows = json.loads(write_near_misses(meta, n, smudges, seed, work_dir).read_text())
        out += [(Path(r["source"]), Path(r["mask"]), Path(r["result"]), r["label"], r["kind"]) for r in rows]
    return out
