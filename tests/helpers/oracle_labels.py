"""Simulated oracle labels, the direct path for tests and benchmarks (no Label Studio).

Builds a scored RORem ``meta.json`` from a candidates manifest and the pool's hidden ground truth:
every candidate is labelled by ``rorem_core.evaluation.metrics`` (good iff masked PSNR vs the hidden GT >= 20 dB),
and per input known-good (the GT itself) and known-bad (``leave``: the source with the object left;
``noise``: ring-mean fill plus blotchy Gaussian noise in 4-px blocks) results are added. With ``noise_db > 0`` the simulated
annotator is noisy near the threshold: P(good) = sigmoid((psnr - threshold_db) / noise_db).
The annotation layer has its own simulated annotators that go through Label Studio.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from rorem_core.data.formats import Triplet, read_candidates, resolve_in_root, write_entries
from rorem_core.data.images import load_mask, load_rgb, save_png
from rorem_core.evaluation.baselines import ring_mean
from rorem_core.evaluation.metrics import ORACLE_PSNR_DB, masked_psnr
from rorem_core.io import atomic_dir, link_or_copy

KNOWN = ("gt", "leave", "noise")
NOISE_BLOCK = 4   # px


def _resized(img: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    if img.shape[:2] == shape:
        return img
    pil = Image.fromarray(np.clip(np.rint(img * 255), 0, 255).astype(np.uint8))
    return np.asarray(pil.resize((shape[1], shape[0]), Image.BICUBIC), np.float32) / 255.0


def oracle_label(psnr: float, rng: np.random.Generator, *, threshold_db: float, noise_db: float) -> int:
    """1 (good) / 0 (bad): deterministic at noise_db = 0, else Bernoulli(sigmoid((psnr - thr) / noise_db))."""
    if noise_db <= 0:
        return int(psnr >= threshold_db)
    return int(rng.random() < 1.0 / (1.0 + np.exp(-(psnr - threshold_db) / noise_db)))


def _known_result(kind: str, src: np.ndarray, gt: np.ndarray, mask: np.ndarray, rng, noise_std: float):
    if kind == "gt":
        return gt
    if kind == "leave":
        return src
    # blotchy noise in 4-px blocks (what a diffusion artifact looks like; survives a x4-8 autoencoder)
    h, w = src.shape[:2]
    blocks = rng.normal(0.0, noise_std, (-(-h // NOISE_BLOCK), -(-w // NOISE_BLOCK), 3)).astype(np.float32)
    noise = np.kron(blocks, np.ones((NOISE_BLOCK, NOISE_BLOCK, 1), np.float32))[:h, :w]
    return np.where(mask[..., None], np.clip(ring_mean(src, mask) + noise, 0, 1), src)


def build_oracle_labels(manifest: Path, hidden: Path, out_dir: Path, *, known: Sequence[str] = KNOWN,
                        noise_db: float = 0.0, seed: int = 0, threshold_db: float = ORACLE_PSNR_DB,
                        noise_std: float = 0.25) -> dict:
    """Write ``out_dir/{meta.json, inputs/, results/, known/}`` (atomically); returns label counts.

    meta.json entries: source, mask, GT (= the judged result), score (0/1) plus id, input_id, band,
    kind ("candidate" or one of ``known``) and psnr (masked PSNR vs the hidden GT, dB)."""
    hidden_meta = hidden / "meta.json" if hidden.is_dir() else hidden
    gts = {h["id"]: h for h in json.loads(hidden_meta.read_text())}
    cands = read_candidates(manifest)
    root, rows, done_inputs = manifest.parent, [], set()
    with atomic_dir(out_dir) as tmp:
        for c in cands:
            if c.input_id not in gts:
                raise KeyError(f"{hidden_meta}: no hidden GT for input {c.input_id!r} of candidate {c.id}; "
                               "pass the hidden folder of the same pool round")
            f = {k: resolve_in_root(root, getattr(c, k), where=f"{manifest} {c.id}") for k in ("source", "mask", "result")}
            for k in ("source", "mask", "result"):
                link_or_copy(f[k], tmp / getattr(c, k))
            src, mask, res = load_rgb(f["source"]), load_mask(f["mask"]), load_rgb(f["result"])
            h = gts[c.input_id]
            gt = _resized(load_rgb(resolve_in_root(hidden_meta.parent, h["GT"], where=str(hidden_meta))), mask.shape)
            items = [("candidate", c.id, c.result, res)]
            if c.input_id not in done_inputs:
                done_inputs.add(c.input_id)
                krng = np.random.default_rng([seed, 3, len(done_inputs)])
                for kind in known:
                    rel = f"known/{c.input_id}-{kind}.png"
                    save_png(tmp / rel, _known_result(kind, src, gt, mask, krng, noise_std))
                    items.append((kind, f"{c.input_id}-{kind}", rel, load_rgb(tmp / rel)))
            for kind, sid, rel, img in items:
                psnr = masked_psnr(img, gt, mask)
                rng = np.random.default_rng([seed, int(hashlib.sha256(sid.encode()).hexdigest()[:12], 16)])
                y = oracle_label(psnr, rng, threshold_db=threshold_db, noise_db=noise_db)
                rows.append(Triplet(source=c.source, mask=c.mask, GT=rel, score=float(y), id=sid,
                                    input_id=c.input_id, band=h.get("band"), kind=kind, psnr=round(psnr, 3)))
        write_entries(tmp / "meta.json", rows)
    kinds = sorted({r.kind for r in rows})
    return {"n": len(rows), "n_good": int(sum(r.score for r in rows)),
            **{f"good_rate_{k}": float(np.mean([r.score for r in rows if r.kind == k])) for k in kinds}}


def simulate_labels(remover: Path, sources: Sequence[tuple[str, Path, Path]], out_root: Path, gen_cfg, *,
                    round_id: int = 1, noise_db: float = 0.0, seed: int = 0) -> list[Path]:
    """For each (name, pool folder, hidden-GT folder): generate candidates with ``remover`` (the generate
    stage) and label them with the oracle; returns the label folders ``out_root/labels/<name>``.
    A triplet split with ids (e.g. data/test) serves as both pool and hidden GT. Reuses finished folders."""
    from rorem_core.stages import generate

    labels = []
    for k, (name, pool, hidden) in enumerate(sources):
        cand, lab = out_root / "candidates" / name, out_root / "labels" / name
        if not (cand / "candidates.json").is_file():
            generate.run(gen_cfg, remover, pool, cand, round_id)
        if not (lab / "meta.json").is_file():
            build_oracle_labels(cand / "candidates.json", hidden, lab, noise_db=noise_db, seed=seed + k)
        labels.append(lab)
    return labels
