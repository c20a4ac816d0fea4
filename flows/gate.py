"""The human gate of a round: push the selection, wait for labels, pull and freeze the export.

  simulated        SIMULATED annotators label through the real Label Studio API, then go on.
  human, served    (a deployment run under ``rorem serve``) the flow suspends: no process, no GPU
                   held, state in the Prefect server's DB. ``rorem serve``'s watcher resumes it when
                   the projects reach the target; ``rorem resume`` or the UI's Resume button resume it
                   by hand. The serve runner then re-runs the flow from the top: every finished
                   stage is a cache hit and ``suspend_flow_run`` returns the stored input.
  human, no server polls progress until the target or the timeout (then fails; run it again later).

A round whose export is already frozen (``data/annotations/round-N.dvc`` exists) skips the gate:
the labels it trained on are data now, and pulling newer labels would change a finished round.
"""

from __future__ import annotations

import time
from pathlib import Path

from prefect.context import FlowRunContext
from prefect.flow_runs import suspend_flow_run
from prefect.input import RunInput

from tasks.annotation import (
    annotation_progress,
    ensure_label_studio,
    pull_annotations,
    push_selection,
    simulate_labels,
    target_reached,
)
from tasks.rounds import Layout, read_state, update_state
from tasks.versioning import freeze_annotations


class AnnotationDone(RunInput):
    """What resumes a suspended round (the UI renders it as the Resume form)."""

    source: str = "ui"        # who resumed it: ui | cli | watcher | webhook
    note: str = ""            # free text, kept in the round's state file


class GateTimeout(TimeoutError):
    """The annotators did not reach the target in time; nothing is lost, run the round again."""


def gate_key(n: int) -> str:
    """The suspend key of round n's gate (one gate per round: a resumed run does not wait twice)."""
    return f"annotation-gate-round-{n}"


def is_served() -> bool:
    """True inside a deployment run (``flow.serve``), where suspending is possible."""
    ctx = FlowRunContext.get()
    return bool(ctx and ctx.flow_run and ctx.flow_run.deployment_id)


def _describe(prog: dict, fraction: float) -> str:
    return (f"annotations of round {prog.get('round')}: {prog.get('done', 0)}/{prog.get('total', 0)} tasks "
            f"done (target {fraction:.0%}, min {prog.get('min_labels')} label(s) each)")


def wait_for_humans(p, root: Path, n: int) -> dict:
    """Block (poll), or suspend when served, until the round's projects reach ``p.target_fraction``."""
    state = Layout(root, n).state
    prog = annotation_progress(str(root), n, p.label_studio_url, p.min_labels)
    run_id = str(FlowRunContext.get().flow_run.id) if is_served() else None
    # a served run that suspended here before re-runs from the top after its resume: pass the gate
    # through suspend_flow_run again, which returns the stored AnnotationDone (who resumed it)
    resumed = run_id is not None and read_state(state).get("flow_run_id") == run_id
    if target_reached(prog, p.target_fraction) and not resumed:
        return {**prog, "resumed_by": "target already reached"}
    timeout_s = p.gate_timeout_hours * 3600
    if run_id is not None:
        if not resumed:   # what the watcher and `rorem resume` need to find and judge this run
            update_state(state, status="waiting", waiting_for=_describe(prog, p.target_fraction), progress=prog,
                         flow_run_id=run_id, target_fraction=p.target_fraction, min_labels=p.min_labels,
                         label_studio_url=p.label_studio_url)
        got = suspend_flow_run(wait_for_input=AnnotationDone, timeout=int(timeout_s), key=gate_key(n))
        update_state(state, status="running", waiting_for=None, flow_run_id=None, resumed_by=got.source,
                     resume_note=got.note)
        return {**annotation_progress(str(root), n, p.label_studio_url, p.min_labels), "resumed_by": got.source}
    update_state(state, status="waiting", waiting_for=_describe(prog, p.target_fraction), progress=prog)
    deadline = time.monotonic() + timeout_s
    while not target_reached(prog, p.target_fraction):
        if time.monotonic() > deadline:
            raise GateTimeout(f"{_describe(prog, p.target_fraction)} after {p.gate_timeout_hours:g} h; the "
                              "annotators can keep labelling: run the round again to keep waiting (finished "
                              "stages are skipped), or serve it (`rorem serve`) to wait without a process")
        time.sleep(p.poll_interval_s)
        # plain call (no task run per poll): the client retries transient errors itself
        prog = annotation_progress.fn(str(root), n, p.label_studio_url, p.min_labels)
        update_state(state, waiting_for=_describe(prog, p.target_fraction), progress=prog)
    update_state(state, status="running", waiting_for=None)
    return {**prog, "resumed_by": "poll"}


def annotation_gate(p, root: Path, n: int, pool: str) -> dict:
    """Push -> labels (simulated or human) -> pull -> ``dvc add``; returns what happened."""
    layout = Layout(root, n, pool)
    if layout.frozen.is_file():
        return {"status": "frozen earlier", "frozen": str(layout.frozen.relative_to(root))}
    update_state(layout.state, stage="push")
    ensure_label_studio(str(root), p.label_studio_url)
    pushed = push_selection(str(root), n, pool, p.label_studio_url)
    update_state(layout.state, stage="gate", pushed=pushed)
    if p.annotators == "simulated":
        labelled = simulate_labels(str(root), n, pool, p.label_studio_url)
        prog = {**annotation_progress(str(root), n, p.label_studio_url, p.min_labels), "simulated": labelled}
    else:
        prog = wait_for_humans(p, root, n)
    update_state(layout.state, stage="pull", progress=prog)
    pulled = pull_annotations(str(root), n, pool, p.label_studio_url, p.min_labels)
    frozen = freeze_annotations(str(root), n)
    return {"status": "pulled", "pushed": pushed, "progress": prog, "pulled": pulled, "frozen": frozen}
