"""A stand-in for ``tasks.dvc.DvcRunner`` that runs no ML: it records calls, keeps a fake lock in
<root>/dvc.lock (so round commits have lineage), can fail once at a named stage, and for
``generate@N`` writes a tiny candidates manifest + hidden GT (the annotation tests' ``make_round``)
so the real Label Studio gate has something to push.

Used in-process by tests/flows/conftest.py's ``fake_runner`` fixture and, via
``ROREM_STAGE_RUNNER=tests.helpers.fake_stages:FakeRunner`` with the repository on PYTHONPATH, inside
served flow-run processes (tests/flows/test_gate_served.py). Its stages are the round contract's."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import yaml

from rorem_core.contract import ROUND_STAGES
from tasks.dvc import StageRun
from tests.helpers import rounds


def make_round(data_root: Path, n: int, n_inputs: int = 3):
    return rounds.make_round(data_root, n, n_inputs, scores=False)


class FakeRunner:
    calls: list[str] = []
    fail_at: set[str] = set()
    missing: set[str] = set()       # stage names not declared

    def __init__(self, root: Path):
        self.root = Path(root)
        rounds = (yaml.safe_load((self.root / "params.yaml").read_text()) or {}).get("rounds") or {}
        names = {"bootstrap", "report"} | {f"{s}@{k}" for k in rounds for s in ROUND_STAGES}
        self.addresses = {a for a in names if a.split("@")[0] not in self.missing}

    @classmethod
    def reset(cls) -> None:
        cls.calls, cls.fail_at, cls.missing = [], set(), set()

    def _lock(self) -> dict:
        p = self.root / "dvc.lock"
        return json.loads(p.read_text()) if p.is_file() else {}

    def declared(self) -> set[str]:
        return set(self.addresses)

    def cache_key(self, target: str) -> tuple[str, bool]:
        key = hashlib.sha256(f"{target}:{(self.root / 'params.yaml').read_text()}".encode()).hexdigest()
        return key, self._lock().get(target) == key

    def run(self, target: str, log: Path, key: str | None = None) -> StageRun:
        FakeRunner.calls.append(target)
        if target in FakeRunner.fail_at:
            FakeRunner.fail_at.discard(target)
            raise RuntimeError(f"killed during {target}")
        name, _, n = target.partition("@")
        if name == "generate":
            make_round(self.root / "data", int(n))
        lock = {**self._lock(), target: key}
        (self.root / "dvc.lock").write_text(json.dumps(lock, indent=1, sort_keys=True))
        return StageRun(target, [target], 0.01, None)
