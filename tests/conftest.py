"""Test-wide environment: no model hub, wandb offline, Prefect in a temp home without telemetry."""

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from tests.helpers.browser import browser  # noqa: F401  (the browser tests' fixture, one chromium per module)

_PREFECT_HOME = tempfile.mkdtemp(prefix="rorem-prefect-")
for key, value in {
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "WANDB_MODE": "offline",
    "WANDB_SILENT": "true",
    "PREFECT_HOME": _PREFECT_HOME,
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "DO_NOT_TRACK": "1",
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "90",
    "TOKENIZERS_PARALLELISM": "false",
}.items():
    os.environ.setdefault(key, value)

# --------------------------------------------------------------------------------------------
# Shared tiny workspace: bootstrap once per session (shipped tiny base, synthetic data), reused by
# every test that needs real models or data. Tests must not modify it; copy what they change.
# --------------------------------------------------------------------------------------------

REPO = Path(__file__).resolve().parents[1]


@dataclass
class Workspace:
    root: Path
    params_path: Path
    params: dict

    @property
    def model_dir(self) -> Path:
        return self.root / "models" / "base"

    @property
    def data(self) -> Path:
        return self.root / "data"

    def config(self, stage: str, **overrides):
        from rorem_core.config import stage_config

        return stage_config(stage, self.params, overrides)


def tiny_params(root: Path, **sizes) -> dict:
    """The repo's params.yaml with scratch dirs under ``root``, wandb off and smaller splits."""
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["base"].update(cache_dir=str(root / ".rorem" / "cache"), work_dir=str(root / ".rorem" / "work"),
                          wandb_mode="disabled", device="cpu")
    # the test split keeps its default size (400): learning checks are judged on it
    params["bootstrap"]["synthetic"].update({"n_seed": 400, "pool_size": 40, "n_pools": 2, **sizes})
    return params


@pytest.fixture(scope="session")
def tiny_workspace(tmp_path_factory) -> Workspace:
    from rorem_core.config import stage_config
    from rorem_core.stages import bootstrap

    root = tmp_path_factory.mktemp("tiny_ws")
    params = tiny_params(root)
    path = root / "params.yaml"
    path.write_text(yaml.safe_dump(params))
    # ROREM_TEST_BASE_UNET=random lets smoke tests run without the shipped base (never in CI)
    params["bootstrap"]["base_unet"] = os.environ.get("ROREM_TEST_BASE_UNET", "shipped")
    cfg = stage_config("bootstrap", params)
    bootstrap.run(cfg, root / "models" / "base", root / "data")
    return Workspace(root=root, params_path=path, params=params)


@pytest.fixture(scope="session")
def random_tiny_model(tmp_path_factory):
    """``random_tiny_model(size) -> Path``: a random tiny SDXL-inpainting model dir (diffusers layout,
    analytic autoencoder, prompt embeddings) at ``size`` px, built once per size per session
    (seconds). Read-only for the tests: copy it to change it."""
    from rorem_core.models.conditioning import (
        EMBED_FILE,
        encode_empty_prompt,
        save_prompt_embeds,
    )
    from rorem_core.models.tiny import TinyPresetConfig, build_tiny_model

    built: dict[int, Path] = {}

    def get(size: int) -> Path:
        if size not in built:
            out = tmp_path_factory.mktemp(f"random_tiny_{size}") / "base"
            build_tiny_model(out, TinyPresetConfig(), size)
            save_prompt_embeds(out / EMBED_FILE, encode_empty_prompt(str(out)))
            built[size] = out
        return built[size]

    return get


def _copy_project(dst: Path) -> Path:
    """Copy the project's files (tracked or untracked-but-not-ignored; without tests/ and .dvc/) to
    ``dst``: a fresh project to init git + DVC in, as a user's checkout would be."""
    import shutil
    import subprocess

    files = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=REPO,
                           capture_output=True, text=True, check=True).stdout.split()
    for rel in files:
        if rel.startswith(("tests/", ".dvc/")) or not (REPO / rel).is_file():
            continue
        (dst / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / rel, dst / rel)
    return dst


@pytest.fixture(scope="session")
def copy_project():
    """``copy_project(dst) -> dst``: the project's files copied to ``dst`` (see _copy_project)."""
    return _copy_project


# --------------------------------------------------------------------------------------------
# `make test` runs two pytest-xdist workers, one file per work unit (`--dist loadfile
# --no-loadscope-reorder`), dispensed in collection order as workers free up. The few files of
# minute-long learning checks and rehearsals come first, so they spread over both workers and the
# many quick files fill in after them; otherwise the longest file can start last and run alone.
# --------------------------------------------------------------------------------------------

_HEAVY = ("slow", "sdxl_rehearsal")


def pytest_collection_modifyitems(config, items):
    heavy = {item.path for item in items if any(item.get_closest_marker(m) for m in _HEAVY)}
    items.sort(key=lambda item: item.path not in heavy)      # stable: files stay whole and in order
