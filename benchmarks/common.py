"""What several benchmarks share: a tiny workspace bootstrapped once from the shipped params.yaml, and
a scratch copy of the project's files."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import yaml

from rorem_core.config import stage_config

REPO = Path(__file__).resolve().parents[1]


def scratch_params(root: Path, **base) -> dict:
    """The shipped params.yaml with its cache and work dirs under ``root``, on CPU, wandb off; ``base``
    overrides more of its ``base`` section (e.g. resolution=64)."""
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["base"].update(cache_dir=str(Path(root) / ".rorem/cache"), work_dir=str(Path(root) / ".rorem/work"),
                          wandb_mode="disabled", device="cpu", **base)
    return params


def tiny_workspace(root: Path, **synthetic) -> dict:
    """params of a tiny workspace under ``root`` (models/base, data/), bootstrapped on first use from
    the shipped params.yaml: scratch dirs under ``root``, CPU, wandb off, ``synthetic`` overriding
    ``bootstrap.synthetic`` (e.g. n_seed=400). params.yaml is written last: it marks a finished bootstrap."""
    from rorem_core.stages import bootstrap

    root = Path(root)
    path = root / "params.yaml"
    if path.is_file():
        return yaml.safe_load(path.read_text())
    params = scratch_params(root)
    params["bootstrap"]["synthetic"].update(synthetic)
    root.mkdir(parents=True, exist_ok=True)
    bootstrap.run(stage_config("bootstrap", params), root / "models/base", root / "data")
    path.write_text(yaml.safe_dump(params))
    return params


def copy_project_files(root: Path) -> None:
    """This project's tracked (and untracked, not ignored) files into ``root``, without tests/ and .dvc/
    (a scratch project inits its own DVC)."""
    files = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=REPO,
                           capture_output=True, text=True, check=True).stdout.split()
    for rel in files:
        if not rel.startswith(("tests/", ".dvc/")) and (REPO / rel).is_file():
            (Path(root) / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / rel, Path(root) / rel)
