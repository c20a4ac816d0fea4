"""Rollouts: pool inputs (and optionally a few seed-split inputs) as tensors, K sampled removals per
input with their trajectories, rewards, group advantages, and the fixed-seed evaluations of the
reward-hacking guard.

A rollout of epoch e holds, for G inputs x K samples (N = G K rows, input-major):
    latents (N, S+1, 4, h, w)  the sampled chain x_T .. x_0      log_probs (N, S) under the sampling weights
    input_index [N]            row -> pool input                  rewards [N], advantages [N]
    steps (N, S_train)         the sampler steps trained on (a random subset per row, DDPO's timestep_fraction)
It is written to the run's work dir when sampled, so a run resumed in the middle of an epoch trains on
exactly the rollout the killed run drew (the weights that sampled it are gone by then).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from rorem_core.data.fill import masked_source
from rorem_core.data.formats import Triplet, dataset_file, read_pool, read_triplets, resolve_in_root
from rorem_core.data.images import load_mask, load_rgb
from rorem_core.data.latents import encode_images, image_to_tensor, mask_to_latent, mask_to_tensor
from rorem_core.io import atomic_path, check_safetensors
from rorem_core.models.loading import vae_scale_factor
from rorem_core.models.remover import composite
from rorem_core.parallel import flatten_in_order, shards
from rorem_core.rl.rewards import RewardModel, to_unit
from rorem_core.rl.sampler import DDIMSchedule, sample_with_log_prob
from rorem_core.training.losses import group_advantages


def row_seed(*parts: int) -> int:
    return int(np.random.default_rng([int(p) for p in parts]).integers(2**31))


@dataclass
class Inputs:
    """Removal inputs at the working resolution: pixels for rewards, latents for the UNet."""

    ids: list[str]
    src: torch.Tensor      # (N, 3, R, R) in [-1, 1]
    mask: torch.Tensor     # (N, 1, R, R) in {0, 1}
    lat_mask: torch.Tensor  # (N, 1, h, w)
    masked: torch.Tensor   # (N, 4, h, w) latent of the masked source
    gt: torch.Tensor | None = None  # (N, 3, R, R): triplet splits (test, seed) only

    def __len__(self) -> int:
        return len(self.ids)

    def subset(self, idx) -> "Inputs":
        idx = torch.as_tensor(idx, dtype=torch.long)
        return Inputs([self.ids[i] for i in idx.tolist()], self.src[idx], self.mask[idx], self.lat_mask[idx],
                      self.masked[idx], None if self.gt is None else self.gt[idx])

    def cond(self, idx, device) -> dict:
        idx = torch.as_tensor(idx, dtype=torch.long)
        return {"mask": self.lat_mask[idx].to(device), "masked": self.masked[idx].to(device)}

    def join(self, other: "Inputs") -> "Inputs":
        """self's rows then other's (row indices into self stay valid); GT only where both have it."""
        clash = sorted(set(self.ids) & set(other.ids))
        if clash:
            raise ValueError(f"train_rl: rollout input ids {clash[:3]} occur twice (pool and seed split); every "
                             f"input needs its own id (seed inputs are prefixed {SEED_PREFIX!r}): rename them")
        gt = None if self.gt is None or other.gt is None else torch.cat([self.gt, other.gt])
        return Inputs(self.ids + other.ids, *(torch.cat([a, b]) for a, b in
                                              ((self.src, other.src), (self.mask, other.mask),
                                               (self.lat_mask, other.lat_mask), (self.masked, other.masked))), gt)

    @classmethod
    def encode(cls, vae, ids, src, mask, gt=None, fill: str = "zero") -> "Inputs":
        """``fill``: what the remover was trained to see in the hole (``masked_fill_of`` its init)."""
        return cls(list(ids), src, mask, mask_to_latent(mask, vae_scale_factor(vae)),
                   encode_images(vae, masked_source(src, mask, fill)), gt)


def load_pool_inputs(pool: Path, vae, resolution: int, fill: str = "zero") -> Inputs:
    meta = pool / "meta.json" if pool.is_dir() else pool
    items = read_pool(meta)
    if not items:
        raise ValueError(f"train_rl: the pool {meta} has no inputs; pass the round's pool (--pool "
                         "data/pools/round-N) with at least 2 inputs")
    where = lambda it: f"{meta} entry {it.id}"  # noqa: E731
    src = torch.stack([image_to_tensor(load_rgb(resolve_in_root(meta.parent, it.source, where=where(it))), resolution)
                       for it in items])
    mask = torch.stack([mask_to_tensor(load_mask(resolve_in_root(meta.parent, it.mask, where=where(it))), resolution)
                        for it in items])
    return Inputs.encode(vae, [it.id for it in items], src, mask, fill=fill)


def load_test_inputs(test: Path, vae, resolution: int, max_images: int | None, fill: str = "zero") -> Inputs:
    meta = test / "meta.json" if test.is_dir() else test
    ts = read_triplets(meta)[:max_images]
    return load_triplet_inputs(meta, [triplet_id(t, i) for i, t in enumerate(ts)], ts, vae, resolution, fill)


def triplet_id(t: Triplet, i: int) -> str:
    """A triplet's id (synthetic splits write one; an imported split may not: its index then)."""
    return getattr(t, "id", None) or str(i)


def load_triplet_inputs(meta: Path, ids: Sequence[str], ts: Sequence[Triplet], vae, resolution: int,
                        fill: str = "zero") -> Inputs:
    """Triplets of the split ``meta`` (paths relative to its folder) as Inputs with their GT."""
    f = lambda rel: resolve_in_root(meta.parent, rel, where=str(meta))  # noqa: E731
    src = torch.stack([image_to_tensor(load_rgb(f(t.source)), resolution) for t in ts])
    mask = torch.stack([mask_to_tensor(load_mask(f(t.mask)), resolution) for t in ts])
    gt = torch.stack([image_to_tensor(load_rgb(f(t.GT)), resolution) for t in ts])
    return Inputs.encode(vae, ids, src, mask, gt, fill)


# Seed inputs (train_rl.seed_inputs): a few triplets of the seed split join the rollout inputs. Their ids
# carry this prefix so they never clash with pool ids ("r1-p0007"), and the oracle reward finds their GT
# in the seed split itself (the pool's hidden GT has none of them).
SEED_PREFIX = "seed:"


def pick_seed_triplets(seed_split: Path | None, n: int, base_seed: int) -> tuple[Path | None, list[str], list[Triplet]]:
    """(the seed split's meta.json, rollout ids, triplets) of the ``n`` seed inputs. Chosen from
    ``base_seed`` and the split alone, so a resumed run and `dvc repro` pick the same ones. Reads only the
    split's meta.json: the refusals come before any model or image is loaded."""
    if n == 0:
        return None, [], []
    if seed_split is None:
        raise ValueError(f"train_rl.seed_inputs={n} but no seed split was given; pass --seed data/seed (dvc.yaml's "
                         "train_rl passes ${data.seed}), or set train_rl.seed_inputs: 0")
    meta = dataset_file(seed_split)
    ts = read_triplets(meta)
    if len(ts) < n:
        raise ValueError(f"train_rl.seed_inputs={n} but the seed split {meta} has {len(ts)} triplets; set "
                         f"train_rl.seed_inputs to at most {len(ts)} (or import a bigger seed split)")
    rows = sorted(np.random.default_rng([base_seed, 17]).choice(len(ts), size=n, replace=False).tolist())
    ids = [SEED_PREFIX + triplet_id(ts[i], i) for i in rows]
    twice = sorted({i for i in ids if ids.count(i) > 1})
    if twice:   # the oracle finds a GT by id: two triplets under one id would share one GT
        raise ValueError(f"train_rl.seed_inputs: the seed split {meta} repeats the ids {twice[:3]}; give every "
                         "triplet its own id in that meta.json")
    return meta, ids, [ts[i] for i in rows]


def with_seed_inputs(pool: Inputs, rollout_rows: Sequence[int], seed: Inputs | None) -> tuple[Inputs, list[int]]:
    """(pool + seed inputs, rollout rows + the seed rows). The held-out rows (pool rows, from ``split_heldout``)
    stay valid and never include a seed input: the guard measures the pool's distribution."""
    if seed is None or not len(seed):
        return pool, list(rollout_rows)
    return pool.join(seed), list(rollout_rows) + list(range(len(pool), len(pool) + len(seed)))


def split_heldout(ids: Sequence[str], fraction: float, seed: int, max_heldout: int | None) -> tuple[list[int], list[int]]:
    """(rollout indices, held-out indices): held-out inputs are never sampled for training."""
    order = np.random.default_rng([seed, 16]).permutation(len(ids))
    n_h = int(round(fraction * len(ids)))
    n_h = min(n_h, max_heldout) if max_heldout is not None else n_h
    if len(ids) - n_h < 1:
        raise ValueError(f"train_rl.heldout_fraction={fraction} leaves no rollout input in a pool of {len(ids)}; "
                         "lower it or use a bigger pool")
    return sorted(order[n_h:].tolist()), sorted(order[:n_h].tolist())


@dataclass
class Sampling:
    """What sampling needs besides the weights: conditioning, schedule, eta, decoder, resolution."""

    cond: object
    sched: DDIMSchedule
    alphas_cumprod: torch.Tensor
    eta: float
    vae: torch.nn.Module
    resolution: int
    device: torch.device
    batch_size: int = 64

    @torch.no_grad()
    def decode(self, z: torch.Tensor) -> torch.Tensor:
        shift = getattr(self.vae.config, "shift_factor", None) or 0.0
        z = z / self.vae.config.scaling_factor + shift
        return self.vae.decode(z.to(self.vae.device, self.vae.dtype)).sample.float().clamp(-1, 1).cpu()

    def sample(self, unet, inputs: Inputs, rows: Sequence[int], seeds: Sequence[int]):
        """(trajectories (latents, log_probs) on CPU, composited images) for input ``rows`` with ``seeds``.
        Under N data-parallel processes each samples every N-th batch and all gather them (the batches
        and seeds of one process: the same rollout); every process must call this together."""
        sh = shards()
        mine = [(lo, [self._sample_batch(unet, inputs, list(rows[lo:hi]), seeds[lo:hi])])
                for lo, hi in sh.blocks(len(rows), self.batch_size)]
        parts = flatten_in_order(sh.gather(mine))
        return tuple(torch.cat([p[i] for p in parts]) for i in range(3))

    def _sample_batch(self, unet, inputs: Inputs, r: list[int], s: Sequence[int]):
        tr = sample_with_log_prob(unet, self.cond, inputs.cond(r, self.device), s, self.sched, eta=self.eta,
                                  alphas_cumprod=self.alphas_cumprod, resolution=self.resolution)
        idx = torch.as_tensor(r)
        return tr.latents.cpu(), tr.log_probs.cpu(), composite(self.decode(tr.x0), inputs.src[idx], inputs.mask[idx])


def collect_rollout(unet, smp: Sampling, inputs: Inputs, chosen: Sequence[int], k: int, reward: RewardModel, *,
                    seed: int, epoch: int, n_train_steps: int, adv_clip: float) -> dict:
    """Sample K results for each chosen input, score them, and return the rollout (module doc)."""
    rows = [i for i in chosen for _ in range(k)]
    seeds = [row_seed(seed, 1, epoch, i, j) for i in chosen for j in range(k)]
    lats, lps, imgs = smp.sample(unet, inputs, rows, seeds)
    idx = torch.as_tensor(rows)
    rewards = reward(imgs, inputs.src[idx], inputs.mask[idx], [inputs.ids[i] for i in rows]).float()
    adv, m = group_advantages(rewards.view(len(chosen), k), clip=adv_clip)
    n_steps = lps.shape[1]
    g = torch.Generator().manual_seed(row_seed(seed, 2, epoch))
    steps = torch.stack([torch.randperm(n_steps, generator=g)[:n_train_steps] for _ in rows])
    metrics = {k2: float(v) for k2, v in m.items()}
    metrics["reward_success"] = float((rewards >= reward.success_threshold).float().mean())
    return {"latents": lats, "log_probs": lps, "input_index": idx, "rewards": rewards,
            "advantages": adv.flatten(), "steps": steps, "metrics": metrics}


def save_rollout(path: Path, rollout: dict, extra: dict) -> None:
    tensors = {k: v.contiguous() for k, v in rollout.items() if isinstance(v, torch.Tensor)}
    meta = {"metrics": json.dumps({**rollout.get("metrics", {}), **extra})}
    with atomic_path(path, suffix=".safetensors") as tmp:
        save_file(tensors, str(tmp), metadata=meta)


def load_rollout(path: Path) -> tuple[dict, dict]:
    from safetensors import safe_open

    check_safetensors(path, fix=f"delete {path}; it is sampled again from the checkpoint's weights")
    with safe_open(str(path), "pt") as f:
        extra = json.loads(f.metadata()["metrics"])
    return load_file(str(path)), extra


def trajectory_bytes(rollout: dict) -> int:
    """Bytes stored per sample (latents + log-probs + steps + scalars)."""
    n = len(rollout["rewards"])
    return sum(v.numel() * v.element_size() for v in rollout.values() if isinstance(v, torch.Tensor)) // n


@torch.no_grad()
def heldout_rewards(unet, smp: Sampling, inputs: Inputs, rows: Sequence[int], reward: RewardModel, seed: int) -> torch.Tensor:
    """One sample per held-out input with FIXED seeds (paired across evaluations) -> rewards [n]
    ([0] for no held-out input: a small pool, e.g. the SDXL rehearsal's 4 inputs at fraction 0.1)."""
    if not rows:
        return torch.zeros(0)
    seeds = [row_seed(seed, 3, i) for i in rows]
    _, _, imgs = smp.sample(unet, inputs, rows, seeds)
    idx = torch.as_tensor(list(rows))
    return reward(imgs, inputs.src[idx], inputs.mask[idx], [inputs.ids[i] for i in rows]).float()


@torch.no_grad()
def test_oracle(unet, smp: Sampling, test: Inputs, seed: int, success_db: float) -> dict:
    """Per-image masked PSNR, oracle success (PSNR >= success_db) and the judge's verdict (docs/judge.md)
    on the test split, fixed seeds (paired before/after); scored as the evaluation scores."""
    from rorem_core.evaluation.scoring import score_image

    rows = list(range(len(test)))
    _, _, imgs = smp.sample(unet, test, rows, [row_seed(seed, 4, i) for i in rows])
    scores = [score_image(to_unit(imgs[i]), to_unit(test.gt[i]), test.mask[i, 0].numpy() > 0.5, success_db,
                          source=to_unit(test.src[i])) for i in rows]
    return {"masked_psnr": [r["masked_psnr"] for r in scores], "success": [float(r["psnr_success"]) for r in scores],
            "judged": [float(r["judge_good"]) for r in scores]}
