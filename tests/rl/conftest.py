"""Fixtures of the online-RL tests: a random tiny remover at 32 px (seconds) and a small synthetic pool
with its hidden GT and a test split, so the oracle reward and the stage's guard have data."""

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


one_torch_thread = pytest.fixture(autouse=True)(threads.one_torch_thread)
