"""Test-wide environment: no model hub, wandb offline, Prefect in a temp home without telemetry."""

import os
import tempfile

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
from dataclasses import dataclass  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402
import yaml  # noqa: E402

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
