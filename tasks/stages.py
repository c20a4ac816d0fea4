"""The one task that runs ML: a DVC stage by name (``dvc repro <stage>@N``), so dvc.lock records every
artifact the flow makes. Cached by content (see :mod:`tasks.dvc`), never retried: a failed training
is a bug or a resource problem, and a rerun of the round resumes it from its checkpoint anyway."""

from __future__ import annotations

import importlib
import json
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from prefect import task
from prefect.cache_policies import INPUTS, TASK_SOURCE
from pydantic import BaseModel

from tasks.dvc import DvcRunner, StageRunner

RunnerFactory = Callable[[Path], StageRunner]
RUNNER_ENV = "ROREM_STAGE_RUNNER"   # "module:Class": another executor (tests, a cluster submitter)
_factory: RunnerFactory | None = None
_runners: dict[str, StageRunner] = {}


class StageResult(BaseModel):
    target: str                     # e.g. "train_remover@2"
    ran: list[str]                  # stages DVC ran for it ([] = up to date, nothing recomputed)
    seconds: float                  # wall time of `dvc repro` (DVC overhead included)
    own_seconds: dict[str, float] = {}   # stage -> its command's own time (DVC overhead excluded)
    log: str | None = None          # the stage's log file


@contextmanager
def use_runner(factory: RunnerFactory) -> Iterator[None]:
    """Run stages with another runner (tests: a fake that records calls)."""
    global _factory
    old, _factory = _factory, factory
    _runners.clear()
    try:
        yield
    finally:
        _factory = old
        _runners.clear()


def runner(root: str | Path, *, reload: bool = False) -> StageRunner:
    """The runner of ``root`` (stage definitions loaded once; ``reload`` after params.yaml changed)."""
    key = str(Path(root).resolve())
    if reload or key not in _runners:
        _runners[key] = (_factory or default_factory())(Path(key))
    return _runners[key]


def default_factory() -> RunnerFactory:
    """DvcRunner, or the class named by $ROREM_STAGE_RUNNER (it also reaches served flow-run processes)."""
    spec = os.environ.get(RUNNER_ENV)
    if not spec:
        return DvcRunner
    mod, _, name = spec.partition(":")
    return getattr(importlib.import_module(mod), name)


@task(cache_policy=INPUTS + TASK_SOURCE, persist_result=True, task_run_name="{target}")
def run_stage(root: str, target: str, key: str, log: str) -> StageResult:
    """``dvc repro target``; ``key`` (content hash of cmd, params, deps) is what the cache is keyed on."""
    r = runner(root).run(target, Path(log), key)
    return StageResult(target=target, ran=r.ran, seconds=r.seconds, own_seconds=r.own_seconds, log=r.log)


def read_metrics(path: Path) -> dict | None:
    """A stage's metrics JSON, fresh from disk (cached task results may predate a forced rerun)."""
    return json.loads(path.read_text()) if path.is_file() else None
