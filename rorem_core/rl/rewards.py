"""Reward models for online RL, chosen by name through ``REWARDS`` (a user plugs another by adding a
loader here or calling ``register``).

A reward model scores composited removals: ``reward(results, sources, masks, ids) -> [B]`` with
images (B, 3, R, R) in [-1, 1] (the result already pasted into the source outside the mask, as the
generate stage writes it), masks (B, 1, R, R) in {0, 1} and the input ids: pool ids, and with
``train_rl.seed_inputs`` seed-split ids prefixed ``seed:`` (every reward gets both kinds alike).

* ``discriminator``: the round's discriminator score (calibrated probability with loss "bce"), the
  same VAE encoding and input layout as auto-scoring. Its base must be the remover's base: its
  encoder reads the remover's latent space.
* ``oracle`` (synthetic data only): masked PSNR (dB) against the hidden ground truth, the quantity
  the evaluation's oracle success thresholds (``rorem_core.evaluation.metrics``); for seed inputs,
  against the seed split's own GT (``seed_gt``). An upper-bound ablation: real pools have no ground truth.
* ``judge`` (synthetic data only): the judge's graded score against the same GT (docs/judge.md): the
  oracle as a person would judge, where ``oracle`` is the lenient PSNR rule.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Protocol, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from rorem_core.data.formats import dataset_file, read_hidden_gt
from rorem_core.data.images import load_rgb
from rorem_core.data.latents import image_to_tensor
from rorem_core.evaluation.metrics import masked_psnr
from rorem_core.models.loading import load_vae, resolve_ref


class RewardModel(Protocol):
    name: str
    success_threshold: float   # a reward >= this counts as a success (for the logged success rate)

    def __call__(self, results: torch.Tensor, sources: torch.Tensor, masks: torch.Tensor,
                 ids: Sequence[str]) -> torch.Tensor: ...


def to_unit(x: torch.Tensor) -> np.ndarray:
    """(3, R, R) in [-1, 1] -> (R, R, 3) in [0, 1], as the evaluation stage reads images."""
    return ((x.permute(1, 2, 0).float().cpu().numpy() + 1) / 2).clip(0, 1)


def same_base(a: str | Path, b: str | Path) -> bool:
    pa, pb = Path(a), Path(b)
    if pa.exists() and pb.exists():
        return pa.resolve() == pb.resolve()
    return str(a) == str(b)


class DiscriminatorReward:
    name = "discriminator"

    def __init__(self, disc, vae):
        self.disc, self.vae = disc, vae
        self.success_threshold = disc.info.threshold

    @classmethod
    def load(cls, path: str | Path, *, remover: str | Path, cache_dir: str, resolution: int, device) -> "DiscriminatorReward":
        from rorem_core.reward.discriminator import is_no_discriminator, load_discriminator, read_info

        if is_no_discriminator(path):
            raise ValueError(f"train_rl.reward=discriminator but {path} holds no discriminator (round 0's marker "
                             "or none given); pass --discriminator models/discriminator/round-N, or set "
                             "train_rl.reward: oracle on synthetic data")
        remover_base = resolve_ref(remover).base
        info = read_info(path, base=remover_base, resolution=resolution)
        # compared where the VAE comes from: the discriminator's init may itself be a ref (the SDXL
        # preset's models/base = the inpainting pipeline + bootstrap.sdxl_unet), the remover's base is resolved
        disc_base = resolve_ref(info.base).base
        if not same_base(disc_base, remover_base):
            raise ValueError(f"train_rl: the reward model {path} was trained on base {disc_base!r} but the remover "
                             f"{remover} is built on {remover_base!r}; its scores mean nothing on this remover's "
                             "latents. Pass the discriminator trained for this base (train_discriminator --init "
                             "<the same base>), or set train_rl.reward: oracle")
        disc = load_discriminator(path, cache_dir=cache_dir, base=remover_base, resolution=resolution).to(device)
        return cls(disc, load_vae(info.base).to(device))

    @torch.no_grad()
    def __call__(self, results, sources, masks, ids):
        r = self.disc.info.resolution
        if results.shape[-1] != r:   # the discriminator's own resolution, as auto-scoring resizes
            results, sources = (F.interpolate(x, size=(r, r), mode="bilinear", align_corners=False)
                                for x in (results, sources))
            masks = F.interpolate(masks, size=(r, r), mode="nearest")
        return self.disc.score_images(self.vae, results, sources, masks).float().cpu()


class OracleReward:
    """Masked PSNR (dB) vs the GT of each input (pool: hidden GT; seed: the seed split's GT);
    success = PSNR >= success_db."""

    name = "oracle"

    def __init__(self, gts: dict[str, torch.Tensor], success_threshold: float):
        self.gts, self.success_threshold = gts, success_threshold

    @classmethod
    def load(cls, hidden: str | Path | None, *, resolution: int, success_db: float = 20.0,
             seed_gt: dict[str, torch.Tensor] | None = None, **_) -> "OracleReward":
        if not hidden or not dataset_file(hidden).is_file():
            raise ValueError(f"train_rl.reward={cls.name} needs the pool's hidden ground truth (--hidden "
                             f"data/hidden/round-N, got {hidden}); it exists for synthetic data only. On real "
                             "data set train_rl.reward: discriminator")
        gts = {i: image_to_tensor(load_rgb(p), resolution) for i, p in read_hidden_gt(hidden).items()}
        # seed ids are prefixed: no pool id is overwritten
        return cls({**gts, **(seed_gt or {})}, cls.threshold(success_db))

    @staticmethod
    def threshold(success_db: float) -> float:
        return success_db

    @staticmethod
    def score(result: np.ndarray, gt: np.ndarray, mask: np.ndarray, source: np.ndarray) -> float:
        return masked_psnr(result, gt, mask)

    def __call__(self, results, sources, masks, ids):
        missing = [i for i in ids if i not in self.gts]
        if missing:
            raise ValueError(f"{self.name} reward: no GT for inputs {missing[:3]}; pass the hidden folder of the "
                             "same round as --pool (seed inputs take theirs from --seed)")
        return torch.tensor([self.score(to_unit(results[i]), to_unit(self.gts[k]), masks[i, 0].numpy() > 0.5,
                                        to_unit(sources[i])) for i, k in enumerate(ids)], dtype=torch.float32)


class JudgeReward(OracleReward):
    """The judge's graded score vs the GT (``rorem_core.evaluation.judge``: 1 - the largest of its
    normalised badness measures; > 0 exactly when it calls the removal clean): what a person would
    say, graded, as the oracle of issue 13's judge. Synthetic data only, as ``oracle``."""

    name = "judge"

    @staticmethod
    def threshold(success_db: float) -> float:
        return 0.0   # score > 0 <=> the judge calls it clean; >= 0 counts the boundary, measure zero

    @staticmethod
    def score(result: np.ndarray, gt: np.ndarray, mask: np.ndarray, source: np.ndarray) -> float:
        from rorem_core.evaluation.judge import judge

        return judge(source, mask, result, gt).score


Loader = Callable[..., RewardModel]
REWARDS: dict[str, Loader] = {
    "discriminator": lambda *, discriminator, remover, cache_dir, resolution, device, **_:
        DiscriminatorReward.load(discriminator, remover=remover, cache_dir=cache_dir, resolution=resolution,
                                 device=device),
    "oracle": lambda *, hidden, resolution, success_db, seed_gt=None, **_:
        OracleReward.load(hidden, resolution=resolution, success_db=success_db, seed_gt=seed_gt),
    "judge": lambda *, hidden, resolution, seed_gt=None, **_:
        JudgeReward.load(hidden, resolution=resolution, seed_gt=seed_gt),
}


def register(name: str, loader: Loader) -> None:
    """Add a reward model: ``loader(**kw) -> RewardModel``, kw = discriminator, hidden, remover,
    cache_dir, resolution, device, success_db, seed_gt ({seed input id: GT (3, R, R) in [-1, 1]}, empty
    without seed inputs) (take what you need, accept ``**_``)."""
    REWARDS[name] = loader


def load_reward(name: str, **kw) -> RewardModel:
    if name not in REWARDS:
        raise ValueError(f"train_rl.reward={name!r} is not a registered reward model; use one of "
                         f"{', '.join(sorted(REWARDS))} (or register one in rorem_core.rl.rewards)")
    return REWARDS[name](**kw)
