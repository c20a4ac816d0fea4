"""Fixtures for the discriminator tests: a tiny random model dir (seconds) and a small synthetic round
whose candidates are classic fills (no remover sampling), labelled by the simulated oracle."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from rorem_core.config import BaseConfig
from rorem_core.data.formats import Candidate, read_pool, write_candidates
from rorem_core.data.images import load_mask, load_rgb, save_png
from rorem_core.data.synthetic import SyntheticConfig, write_pool
from rorem_core.evaluation.baselines import leave_object, telea
from tests.helpers import threads

FILLS = {"telea": telea, "leave": leave_object}


one_torch_thread = pytest.fixture(autouse=True)(threads.one_torch_thread)


@pytest.fixture(scope="session")
def tiny_model(random_tiny_model) -> Path:
    """Random tiny SDXL-inpainting model dir (64 px, analytic autoencoder, 16x16 latents, 4x4 mid map)."""
    return random_tiny_model(64)


@dataclass
class Round:
    root: Path
    pool: Path
    hidden: Path
    candidates: Path      # folder holding candidates.json


def make_round(root: Path, round_id: int = 1, pool_size: int = 12) -> Round:
    """Pool + hidden GT (synthetic), and two candidates per input: a Telea fill and the source itself."""
    cfg = SyntheticConfig(pool_size=pool_size, n_pools=1)
    pool, hidden, cdir = root / "pool", root / "hidden", root / "candidates"
    write_pool(pool, hidden, cfg, round_id)
    cands = []
    for it in read_pool(pool / "meta.json"):
        src, mask = load_rgb(pool / it.source), load_mask(pool / it.mask)
        save_png(cdir / "inputs" / f"{it.id}_source.png", src)
        save_png(cdir / "inputs" / f"{it.id}_mask.png", mask)
        for k, (name, fill) in enumerate(FILLS.items()):
            cid = f"r{round_id}-{it.id}-k{k}"
            save_png(cdir / "results" / f"{cid}.png", fill(src, mask))
            cands.append(Candidate(id=cid, round=round_id, input_id=it.id, seed=k, model=name, steps=0,
                                   source=f"inputs/{it.id}_source.png", mask=f"inputs/{it.id}_mask.png",
                                   result=f"results/{cid}.png"))
    write_candidates(cdir / "candidates.json", cands)
    return Round(root=root, pool=pool, hidden=hidden, candidates=cdir)


@pytest.fixture(scope="session")
def small_round(tmp_path_factory) -> Round:
    return make_round(tmp_path_factory.mktemp("disc_round"))


def base_cfg(tmp: Path, model_dir: Path, **kw) -> BaseConfig:
    return BaseConfig(seed=0, resolution=64, model_dir=str(model_dir), cache_dir=str(tmp / "cache"),
                      work_dir=str(tmp / "work"), device="cpu", wandb_mode="disabled", **kw)


def rng_latents(seed: int, n: int = 2, h: int = 16, w: int = 16):
    """(result, mask, source) latents: (n,4,h,w), (n,1,h,w) binary, (n,4,h,w)."""
    import torch

    g = torch.Generator().manual_seed(seed)
    return (torch.randn(n, 4, h, w, generator=g), (torch.rand(n, 1, h, w, generator=g) > 0.5).float(),
            torch.randn(n, 4, h, w, generator=g))
