"""Fixtures of the preference tests: a small random SDXL-architecture model (32 px, built in code,
seconds), a few synthetic triplets and preference pairs on them; the slow learning tests use the
session ``tiny_workspace`` (shipped pretrained base) through the benchmark module's functions."""

from __future__ import annotations

from pathlib import Path

import pytest

from rorem_core.data.formats import Pair, read_triplets, write_entries
from tests.helpers import threads

REPO = Path(__file__).resolve().parents[2]
RES = 32


@pytest.fixture(scope="session")
def small_model(random_tiny_model) -> Path:
    """A random tiny remover dir (diffusers layout, v-prediction, analytic autoencoder) at 32 px."""
    return random_tiny_model(RES)


@pytest.fixture(scope="session")
def small_data(tmp_path_factory) -> Path:
    """12 synthetic triplets at 32 px plus ``pairs.json`` (preferred = GT, rejected = the source,
    i.e. "leave the object") in the same folder; returns the folder."""
    from rorem_core.data.synthetic import SyntheticConfig, write_triplets

    root = tmp_path_factory.mktemp("pref_data") / "set"
    write_triplets(root, SyntheticConfig(size=RES), "pref", 12, 0.5)
    pairs = [Pair(source=t.source, mask=t.mask, preferred=t.GT, rejected=t.source, rule="good_bad")
             for t in read_triplets(root / "meta.json")]
    write_entries(root / "pairs.json", pairs)
    return root


def make_params(tmp: Path, **sections) -> dict:
    """params dict: scratch dirs under ``tmp``, CPU, wandb off, 32 px; plus stage sections."""
    base = {"cache_dir": str(tmp / "cache"), "work_dir": str(tmp / "work"), "wandb_mode": "disabled",
            "device": "cpu", "resolution": RES, "seed": 0}
    return {"base": base, **sections}


@pytest.fixture
def params(tmp_path):
    return lambda **sections: make_params(tmp_path, **sections)


@pytest.fixture(scope="session")
def bench():
    """The benchmark module (its experiment functions are what the slow tests assert on)."""
    from benchmarks import bench_preference

    return bench_preference


one_torch_thread = pytest.fixture(autouse=True)(threads.one_torch_thread)
