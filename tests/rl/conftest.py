"""Fixtures of the online-RL tests: a random tiny remover at 32 px (seconds) and a small synthetic pool
with its hidden GT and a test split, so the oracle reward and the stage's guard have data."""

from __future__ import annotations

from pathlib import Path

import pytest

RES = 32


@pytest.fixture(scope="session")
def rl_model(random_tiny_model) -> Path:
    return random_tiny_model(RES)


@pytest.fixture(scope="session")
def rl_data(tmp_path_factory) -> Path:
    """data/{pools,hidden}/round-1 (12 inputs) and data/test (8 triplets) at 32 px."""
    from rorem_core.data.synthetic import SyntheticConfig, write_pool, write_triplets

    root = tmp_path_factory.mktemp("rl_data")
    cfg = SyntheticConfig(size=RES, pool_size=12)
    write_pool(root / "pools" / "round-1", root / "hidden" / "round-1", cfg, 1)
    write_triplets(root / "test", cfg, "test", 8, 0.5)
    return root


def rl_params(tmp: Path, **section) -> dict:
    base = {"cache_dir": str(tmp / "cache"), "work_dir": str(tmp / "work"), "wandb_mode": "disabled",
            "device": "cpu", "resolution": RES, "seed": 0}
    small = {"reward": "oracle", "steps": 4, "batch_size": 8, "inputs_per_epoch": 3, "num_samples": 2,
             "sampler_steps": 4, "test_images": 4, "checkpoint_every": 2, "log_every": 1, "lora_rank": 4,
             "heldout_fraction": 0.25, "lr": 1e-3}
    return {"base": base, "train_rl": {**small, **section}}


@pytest.fixture(autouse=True)
def one_torch_thread():
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
