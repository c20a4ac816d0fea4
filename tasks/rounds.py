"""Rounds as data: where round N's files live, the ``rounds:`` entries of params.yaml, and the small
state file ``rorem status`` reads (``.rorem/rounds/round-N.json``).

Round N's entry and paths are the round contract's (``rorem_core.contract``); this module adds the
scratch files of a run (``.rorem/``) and the params.yaml edit that declares the next round.
"""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path
from typing import Any

from rorem_core.contract import RoundPaths, hidden_for_pool, round_entry  # noqa: F401  (re-exported)
from rorem_core.io import write_json_atomic, write_text_atomic


def declared_rounds(params_path: Path) -> dict[int, dict]:
    """``rounds:`` of params.yaml as {N: entry}, validated (rorem_core.config.RoundSpec)."""
    import yaml

    from rorem_core.config import parse_rounds

    data = yaml.safe_load(Path(params_path).read_text()) or {}
    return {n: spec.model_dump() for n, spec in parse_rounds(data.get("rounds"), str(params_path)).items()}


def add_round(params_path: Path, n: int) -> bool:
    """Append round ``n`` to ``rounds:`` (comments and layout kept); False if it is already there.

    Only the next round may be added (n = last + 1): a gap would make DVC stages without inputs.
    """
    from ruamel.yaml import YAML
    from ruamel.yaml.scalarstring import DoubleQuotedScalarString

    have = declared_rounds(params_path)
    if n in have:
        return False
    last = max(have, default=0)
    if n != last + 1:
        raise ValueError(f"{params_path}: cannot add round {n}; the last declared round is {last}, "
                         f"so the next one is {last + 1}")
    yml = YAML()          # round-trip: keeps comments, key order and quoting of the rest of the file
    yml.preserve_quotes = True
    yml.width = 4096
    data = yml.load(Path(params_path).read_text())
    if data.get("rounds") is None:
        data["rounds"] = {}
    data["rounds"][DoubleQuotedScalarString(str(n))] = round_entry(n)
    from io import StringIO

    buf = StringIO()
    yml.dump(data, buf)
    write_text_atomic(params_path, buf.getvalue())
    return True


def simulated_refusal(root: Path, n: int, pool: str) -> str | None:
    """Why SIMULATED annotators cannot label round n's pool (it has no ground truth), else None.

    They judge each candidate by its masked PSNR against the pool's hidden GT; a pool of photos
    imported without GT has none, so the round must stop before any work and say what to use instead.
    The bootstrap's own pools (data/pools/round-K) get their hidden GT from the bootstrap stage."""
    try:
        hidden = Path(root) / hidden_for_pool(pool) / "meta.json"
    except ValueError:
        hidden = None
    if hidden is not None and hidden.is_file():
        return None
    if Path(pool).parts[:2] == ("data", "pools") and not (Path(root) / pool / "meta.json").is_file():
        return None     # not bootstrapped yet: the bootstrap stage writes the pool and its hidden GT together
    return (f"round {n}: --annotators simulated needs ground truth for the pool, but {pool} has none "
            f"({hidden or 'no hidden GT folder'} is missing): simulated annotators judge every candidate against "
            f"the hidden GT, so they cannot label photos without it. Use people instead: `rorem serve`, then "
            f"`rorem round {n} --annotators human` (docs/own-data.md); or, for an unattended run, import a pool "
            f"that has a gt/ folder: `rorem import pool PATH --round {n}`")


class Layout:
    """Paths of round ``n`` relative to the project root (the stage contract)."""

    def __init__(self, root: Path, n: int, pool: str | None = None):
        self.root, self.n = Path(root), n
        self.paths = RoundPaths(n)
        self.pool = pool or round_entry(n)["pool"]

    def path(self, rel: str) -> Path:
        return self.root / rel

    @property
    def candidates(self) -> Path:
        return self.root / self.paths.candidates

    @property
    def selection(self) -> Path:
        return self.root / self.paths.selection

    @property
    def annotations(self) -> Path:
        return self.root / self.paths.annotations

    @property
    def frozen(self) -> Path:
        """The ``.dvc`` file of the frozen export: its presence means the human part is done."""
        return self.root / self.paths.frozen

    @property
    def hidden(self) -> Path:
        return self.root / hidden_for_pool(self.pool) / "meta.json"

    @property
    def push_manifest(self) -> Path:
        """The selected candidates as a manifest for push (scratch; paths point into the candidates)."""
        return self.root / f".rorem/rounds/round-{self.n}/selected_candidates.json"

    @property
    def state(self) -> Path:
        return self.root / f".rorem/rounds/round-{self.n}.json"

    def logs(self) -> Path:
        return self.root / f".rorem/logs/round-{self.n}"


# ---------------------------------------------------------------------------- state file


def read_state(path: Path) -> dict[str, Any]:
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return {}


def update_state(path: Path, **fields: Any) -> dict[str, Any]:
    """Merge ``fields`` into the round's state file (atomic; ``updated`` = now, epoch seconds)."""
    state = {**read_state(path), **fields, "updated": time.time()}
    write_json_atomic(path, state)
    return state


def tag_exists(root: Path, tag: str) -> bool:
    r = subprocess.run(["git", "rev-parse", "-q", "--verify", f"refs/tags/{tag}"], cwd=root,
                       capture_output=True, text=True)
    return r.returncode == 0


def completed(root: Path, n: int) -> bool:
    """Round n finished: its state says so or its ``round-N`` tag exists."""
    return read_state(Layout(root, n).state).get("status") == "completed" or tag_exists(root, f"round-{n}")


def next_round(root: Path, params_path: Path) -> int:
    """The first declared round that has not completed, else the one after the last."""
    rounds = sorted(declared_rounds(params_path))
    for n in rounds:
        if not completed(root, n):
            return n
    return (rounds[-1] if rounds else 0) + 1
