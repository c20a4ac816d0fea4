"""What happens to candidates after generation: batched discriminator scoring, automatic acceptance
(score > threshold -> a training triplet with the result as GT) and the choice of what humans label
(a mix of random and most-uncertain candidates; random only while no discriminator exists).

Uncertainty of a score s with threshold t:  u = 1 - |s - t| / max(t, 1 - t), clipped to [0, 1], so
u = 1 at the threshold and 0 at the most confident score (0 or 1 for probabilities).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from pydantic import BaseModel

from rorem_core.config import BaseConfig
from rorem_core.data.formats import Candidate, resolve_in_root
from rorem_core.data.images import load_mask, load_rgb
from rorem_core.data.latents import (
    image_to_tensor,
    mask_to_tensor,
)
from rorem_core.device import resolve_device
from rorem_core.models.loading import load_vae
from rorem_core.models.unet import DTYPES
from rorem_core.parallel import flatten_in_order, shards
from rorem_core.reward.discriminator import Discriminator, load_discriminator


class Scorer:
    """Batched scoring of (source, mask, result) image files: per batch one VAE call (result and source
    together) and one discriminator call. Images are resized to the discriminator's resolution."""

    def __init__(self, disc: Discriminator, vae, batch_size: int):
        self.disc, self.vae, self.batch_size = disc, vae, batch_size
        self.resolution = disc.info.resolution

    @classmethod
    def load(cls, disc_dir: str | Path, base: BaseConfig, *, batch_size: int, dtype: str = "fp32") -> Scorer:
        dev, dt = resolve_device(base.device), DTYPES[dtype]
        # base / resolution only matter for a RORem checkpoint, which does not record them
        disc = load_discriminator(disc_dir, cache_dir=base.cache_dir, base=base.model_dir,
                                  resolution=base.resolution, dtype=dt).to(dev)
        vae = load_vae(disc.info.base, dtype=torch.float32 if dtype == "fp16" else dt).to(dev)
        return cls(disc, vae, batch_size)

    @property
    def threshold(self) -> float:
        return self.disc.info.threshold

    def _tensors(self, triples):
        r = self.resolution
        src = torch.stack([image_to_tensor(load_rgb(s), r) for s, _, _ in triples])
        mask = torch.stack([mask_to_tensor(load_mask(m), r) for _, m, _ in triples])
        res = torch.stack([image_to_tensor(load_rgb(x), r) for _, _, x in triples])
        return src, mask, res

    @torch.no_grad()
    def score_batch(self, triples: Sequence[tuple[Path, Path, Path]]) -> np.ndarray:
        """Scores [n] of one batch of (source, mask, result) files."""
        src, mask, res = self._tensors(triples)
        return self.disc.score_images(self.vae, res, src, mask).cpu().numpy()

    def score_files(self, triples: Sequence[tuple[Path, Path, Path]]) -> np.ndarray:
        """Scores of every triple, in order, on every process: under N processes each scores every N-th
        batch and they exchange them (rorem_core.parallel); the batches are those of one process."""
        sh = shards()
        mine = [(lo, self.score_batch(triples[lo:hi]).tolist()) for lo, hi in sh.blocks(len(triples), self.batch_size)]
        return np.asarray(flatten_in_order(sh.gather(mine)), dtype=np.float32)

    def score_candidates(self, manifest: Path, cands: Sequence[Candidate]) -> np.ndarray:
        root = manifest.parent
        triples = [tuple(resolve_in_root(root, rel, where=f"{manifest} candidate {c.id}")
                         for rel in (c.source, c.mask, c.result)) for c in cands]
        return self.score_files(triples)


# ------------------------------------------------------------------------------ selection


class SelectedItem(BaseModel):
    id: str                        # candidate id
    input_id: str
    priority: float                # uncertainty in [0, 1] (annotate high first); 0 without a discriminator
    reason: Literal["uncertain", "random"]
    score: float | None = None     # discriminator score, when one exists (pre-annotation)


def uncertainty(scores: np.ndarray, threshold: float) -> np.ndarray:
    """u = 1 - |s - t| / max(t, 1 - t), clipped to [0, 1] (module docstring)."""
    s = np.asarray(scores, np.float64)
    return np.clip(1.0 - np.abs(s - threshold) / max(threshold, 1.0 - threshold), 0.0, 1.0)


def n_units(total: int, n_select: int | None, fraction: float) -> int:
    return min(total, n_select if n_select is not None else max(1, round(fraction * total)))


def select(cands: Sequence[Candidate], scores: np.ndarray | None, *, n: int, uncertain_fraction: float,
           threshold: float, seed: int, unit: str = "candidate") -> list[SelectedItem]:
    """Pick ``n`` units (candidates, or inputs with all their candidates): round(n * uncertain_fraction)
    most uncertain (ties broken at random), the rest uniformly at random among the others. Without
    scores (round 1) all are random. Returned most uncertain first."""
    rng = np.random.default_rng([seed, 17])
    keys = [c.id if unit == "candidate" else c.input_id for c in cands]
    units = list(dict.fromkeys(keys))                                     # first-seen order
    u_cand = uncertainty(scores, threshold) if scores is not None else np.zeros(len(cands))
    u_unit = {k: 0.0 for k in units}
    for k, u in zip(keys, u_cand):
        u_unit[k] = max(u_unit[k], float(u))                              # an input is as uncertain as its worst
    order = rng.permutation(len(units))                                   # random tie-break / random pick
    n = min(n, len(units))
    n_unc = round(n * uncertain_fraction) if scores is not None else 0
    by_unc = sorted(order, key=lambda i: -u_unit[units[i]])               # stable: ties stay in random order
    chosen = {units[i]: "uncertain" for i in by_unc[:n_unc]}
    for i in order:
        if len(chosen) >= n:
            break
        chosen.setdefault(units[i], "random")
    items = [SelectedItem(id=c.id, input_id=c.input_id, priority=float(u), reason=chosen[k],
                          score=None if scores is None else float(scores[j]))
             for j, (c, k, u) in enumerate(zip(cands, keys, u_cand)) if k in chosen]
    return sorted(items, key=lambda it: (-it.priority, it.id))


def accepted(cands: Sequence[Candidate], scores: np.ndarray, threshold: float,
             exclude: set[str] = frozenset()) -> list[Candidate]:
    """Candidates with score > threshold, minus ``exclude`` (ids already sent to humans)."""
    return [c for c, s in zip(cands, scores) if s > threshold and c.id not in exclude]


def read_selection_ids(path: Path) -> set[str]:
    """Candidate ids of a selection JSON ({"items": [{"id"}, ...]}) or of a list of entries with "id"."""
    import json

    data = json.loads(Path(path).read_text())
    items = data.get("items") if isinstance(data, dict) else data
    if not isinstance(items, list) or not all(isinstance(x, dict) and "id" in x for x in items):
        raise ValueError(f"{path}: expected a selection JSON {{\"items\": [{{\"id\": ...}}]}} or a list of "
                         "entries with an \"id\"; pass the select stage's output")
    return {str(x["id"]) for x in items}
