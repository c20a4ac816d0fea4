"""The iteration flow: one HITL round, stage by stage (the order of ``rorem_core.contract``), then
versioning: wandb summary row -> dvc push -> git commit + tag round-N.

ML stages are the ones declared in dvc.yaml, run by name (:mod:`tasks.stages`); the flow owns the
order, the human wait (:mod:`flows.gate`) and the round's bookkeeping, nothing else. Killed at any
point and started again, it skips what completed (DVC + the content-keyed task cache) and finishes.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Literal

from prefect import flow, get_run_logger
from pydantic import BaseModel, Field

from flows.gate import annotation_gate
from flows.worker import project_root
from rorem_core import contract
from tasks.annotation import annotation_config
from tasks.rounds import Layout, add_round, declared_rounds, next_round, simulated_refusal, update_state
from tasks.stages import StageResult, read_metrics, run_stage, runner
from tasks.tracking import RoundTracker, tracker_settings
from tasks.versioning import commit_round, push_data, tag_round

# the stage order is the round contract's (rorem_core.contract); the flow only runs it
BEFORE_GATE = contract.ONCE + contract.BEFORE_GATE   # bootstrap is cached after round 1
AFTER_GATE, FINAL, REQUIRED = contract.AFTER_GATE, contract.FINAL, set(contract.REQUIRED)


class RoundParams(BaseModel):
    """Parameters of one round (the Prefect UI renders this as the run form)."""

    round: int | None = Field(None, ge=1, description="round to run; empty = the next unfinished one")
    annotators: Literal["simulated", "human"] = Field(
        "simulated", description="simulated: SIMULATED annotators label via the API (unattended); human: wait for people")
    root: str = Field(".", description="project root (params.yaml, dvc.yaml, .git); \".\" on a `rorem worker` = its --root")
    label_studio_url: str | None = Field(None, description="external Label Studio; empty = the managed one")
    min_labels: int | None = Field(None, ge=1, description="labels a task needs; empty = params.yaml annotation.min_labels")
    target_fraction: float = Field(1.0, gt=0, le=1, description="share of tasks that must be done to go on")
    gate_timeout_hours: float = Field(336.0, gt=0, description="how long to wait for annotators (default 14 days)")
    poll_interval_s: float = Field(30.0, gt=0, description="progress polling period without a server")
    use_cache: bool = Field(True, description="reuse cached results of finished stages (DVC still decides)")
    commit: bool = Field(True, description="git commit dvc.lock, params.yaml and .dvc files after the round")
    tag: bool = Field(True, description="git tag round-N (needs commit)")
    dvc_push: bool = Field(True, description="dvc push to the default remote (a local folder unless configured)")
    dvc_remote: str | None = Field(None, description="remote URL/path; empty = the repo's default or .rorem/dvc-remote")


class RoundSummary(BaseModel):
    round: int
    stages: dict[str, str]            # target -> ran | cached | up to date | not declared
    stage_seconds: dict[str, float]   # target -> wall time of its `dvc repro` (0 when cached)
    command_seconds: dict[str, float] = {}   # target -> its stage commands' own time (DVC excluded)
    gate: dict
    gate_seconds: float = 0.0         # push + labels + pull + dvc add
    versioning_seconds: float = 0.0   # dvc push + git commit + tag
    report: str | None = None
    row: dict = {}
    commit: str | None = None
    tag: str | None = None
    pushed: str | None = None
    seconds: float = 0.0


def resolve_round(root: Path, requested: int | None) -> tuple[int, str]:
    """(round, its pool): the requested or next round, appended to params.yaml when missing."""
    params = root / "params.yaml"
    n = requested or next_round(root, params)
    add_round(params, n)
    pool = declared_rounds(params)[n].get("pool") or f"data/pools/round-{n}"
    return n, pool


class StageDriver:
    """Runs the declared stages of one round and keeps what happened for the summary."""

    def __init__(self, root: Path, n: int, use_cache: bool):
        self.root, self.n, self.use_cache = root, n, use_cache
        self.runner = runner(root, reload=True)       # params.yaml may have just gained round n
        self.declared = self.runner.declared()
        self.status: dict[str, str] = {}
        self.seconds: dict[str, float] = {}
        self.own: dict[str, float] = {}

    def target(self, name: str) -> str | None:
        for t in (f"{name}@{self.n}", name):
            if t in self.declared:
                return t
        if name in REQUIRED:
            raise RuntimeError(f"dvc.yaml declares no stage {name}@{self.n}; is round {self.n} in params.yaml "
                               f"rounds? declared: {sorted(self.declared)}")
        return None

    def run(self, name: str) -> StageResult | None:
        target, log = self.target(name), get_run_logger()
        if target is None:
            log.warning("stage %s is not declared in dvc.yaml: skipped", name)
            self.status[name] = "not declared"
            return None
        update_state(Layout(self.root, self.n).state, stage=target, status="running")
        key, valid = self.runner.cache_key(target)
        logfile = Layout(self.root, self.n).logs() / f"{target.replace('@', '-')}.log"
        state = run_stage.with_options(refresh_cache=not (self.use_cache and valid))(
            str(self.root), target, key, str(logfile), return_state=True)
        res: StageResult = state.result()
        cached = state.name == "Cached"
        self.status[target] = "cached" if cached else ("ran" if res.ran else "up to date")
        self.seconds[target] = 0.0 if cached else res.seconds
        self.own[target] = 0.0 if cached else sum(res.own_seconds.values())
        return res


def summary_row(root: Path, n: int) -> dict:
    """Round n's Table-1, discriminator and preference rows from the report's summary.json."""
    s = read_metrics(root / "reports" / "summary.json") or {}
    pick = lambda rows: next((r for r in rows or [] if r.get("round") == n), {})
    pref = {k: v for k, v in pick(s.get("preference")).items() if not isinstance(v, (list, tuple))}
    disc = {f"disc_{k}": v for k, v in pick(s.get("discriminator")).items() if k != "round"}
    return {**pick(s.get("table1")), **disc, **pref}


def log_summary(root: Path, n: int, row: dict) -> None:
    import yaml

    mode, project = tracker_settings(yaml.safe_load((root / "params.yaml").read_text()) or {})
    reports = root / "reports"
    images = {p.stem: p for p in sorted(reports.glob("*.png"))} if reports.is_dir() else {}
    RoundTracker(root, n, mode=mode, project=project).log(row, images)


def finish_round(p: RoundParams, root: Path, n: int, summary: RoundSummary) -> None:
    """Push the data first, so a commit or tag never names data the remote lacks; then commit + tag."""
    msg = f"round {n}: " + ", ".join(f"{k} {v}" for k, v in summary.stages.items() if v != "not declared")
    if p.dvc_push:
        summary.pushed = push_data(str(root), p.dvc_remote)
    if p.commit:
        summary.commit = commit_round(str(root), n, msg[:2000])
        if p.tag:
            summary.tag = tag_round(str(root), n, f"HITL round {n}")


@flow(name="rorem-round", persist_result=True, log_prints=True)
def rorem_round(params: RoundParams | None = None) -> RoundSummary:
    """One HITL round (module docstring). Returns what ran, the gate's outcome and the round's row."""
    p = params or RoundParams()
    root = project_root(p.root)      # "." on a worker = its project (flows.worker)
    annotation_config(root)          # a bad params.yaml (e.g. annotation.gold.share: 1) stops here, not at the gate
    t0 = time.perf_counter()
    n, pool = resolve_round(root, p.round)
    if p.annotators == "simulated" and (why := simulated_refusal(root, n, pool)):
        raise ValueError(why)      # before any stage runs (the CLI checks this before the flow even starts)
    state = Layout(root, n, pool).state
    update_state(state, round=n, status="running", started=time.time(), annotators=p.annotators, error=None)
    try:
        drive = StageDriver(root, n, p.use_cache)
        for name in BEFORE_GATE:
            drive.run(name)
        t_gate = time.perf_counter()
        gate = annotation_gate(p, root, n, pool)
        t_gate = time.perf_counter() - t_gate
        for name in AFTER_GATE + FINAL:
            drive.run(name)
        report = root / "reports" / "report.md"
        summary = RoundSummary(round=n, stages=drive.status, stage_seconds=drive.seconds, command_seconds=drive.own,
                               gate=gate, gate_seconds=t_gate, report=str(report) if report.is_file() else None,
                               row=summary_row(root, n))
        log_summary(root, n, summary.row)
        update_state(state, stage="versioning")
        t_ver = time.perf_counter()
        finish_round(p, root, n, summary)
        summary.versioning_seconds = time.perf_counter() - t_ver
    except Exception as e:
        update_state(state, status="failed", error=f"{type(e).__name__}: {e}"[:2000])
        raise
    summary.seconds = time.perf_counter() - t0
    update_state(state, status="completed", stage=None, waiting_for=None, report=summary.report,
                 stages=summary.stages, tag=summary.tag)
    print(f"round {n} completed in {summary.seconds:.0f} s; report: {summary.report or 'n/a'}")
    return summary


@flow(name="rorem-bootstrap", persist_result=True, log_prints=True)
def rorem_bootstrap(root: str = ".", use_cache: bool = True) -> dict[str, str]:
    """Round 0: the base model, seed triplets, pools and the test split (``dvc repro bootstrap``)."""
    drive = StageDriver(Path(root).resolve(), 0, use_cache)
    drive.run("bootstrap")
    return drive.status
