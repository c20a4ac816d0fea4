"""Fixtures of the online-RL tests: a random tiny remover at 32 px (seconds) and a small synthetic pool
with its hidden GT, a test split and a seed split, so the oracle reward and the stage's guard have data."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers import threads

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


@pytest.fixture(scope="session")
def rl_seed(tmp_path_factory) -> Path:
    """data/seed at 32 px: 5 synthetic triplets with GT (ids "seed-00000" ..), for train_rl.seed_inputs."""
    from rorem_core.data.synthetic import SyntheticConfig, write_triplets

    out = tmp_path_factory.mktemp("rl_seed") / "seed"
    write_triplets(out, SyntheticConfig(size=RES), "seed", 5, 0.5)
    return out


one_torch_thread = pytest.fixture(autouse=True)(threads.one_torch_thread)
