"""Label Studio tasks: the only tasks with retries (network). Each is idempotent on the server side
(push and simulated labelling add only what is missing, pull writes identical files twice), so a
retry or a rerun of the round never duplicates anything; none is cached by Prefect."""

from __future__ import annotations

import json
import os
from pathlib import Path

from prefect import task
from prefect.cache_policies import NO_CACHE

from annotation.cli import load_config
from annotation.client import LabelStudioClient
from annotation.config import AnnotationConfig
from annotation.server import LabelStudioServer
from rorem_core.contract import RoundPaths
from rorem_core.data.formats import read_candidates, write_candidates
from tasks.rounds import Layout

NETWORK = {"retries": 3, "retry_delay_seconds": [2, 10, 30], "cache_policy": NO_CACHE}


def annotation_config(root: Path, **overrides) -> AnnotationConfig:
    """``annotation:`` of params.yaml with the flow's overrides (e.g. min_labels)."""
    cfg = load_config(Path(root))
    return cfg.model_copy(update={k: v for k, v in overrides.items() if v is not None})


def client(root: Path, url: str | None = None) -> LabelStudioClient:
    """The managed server's client, or one for ``url`` (token from the environment or .rorem/secrets)."""
    server = LabelStudioServer(root=Path(root), cfg=annotation_config(root))
    if url is None:
        return server.client()
    c = server.cfg
    return LabelStudioClient(url, server.api_token(), timeout_s=c.timeout_s, retries=c.retries,
                             backoff_s=c.backoff_s, backoff_max_s=c.backoff_max_s)


def write_push_manifest(layout: Layout) -> tuple[Path, dict[str, float]]:
    """The selected candidates (all when there is no selection) as a manifest next to the round's
    scratch state, paths rebased onto the candidates folder, the selection's score as pre-annotation.
    Returns (manifest, priorities by candidate id)."""
    cands = read_candidates(layout.candidates)
    items = None
    if layout.selection.is_file():
        sel = json.loads(layout.selection.read_text())
        items = {str(it["id"]): it for it in sel.get("items", [])}
        disc = sel.get("discriminator")
    out, base = layout.push_manifest, layout.candidates.parent
    rel = lambda p: os.path.relpath(base / p, out.parent)
    chosen = []
    for c in cands:
        it = (items or {}).get(c.id)
        if items is not None and it is None:
            continue
        upd = {"source": rel(c.source), "mask": rel(c.mask), "result": rel(c.result)}
        if it and it.get("score") is not None and c.score is None:
            upd.update(score=float(it["score"]), score_model=str(disc or "discriminator"))
        chosen.append(c.model_copy(update=upd))
    out.parent.mkdir(parents=True, exist_ok=True)
    write_candidates(out, chosen)
    return out, {c.id: float((items or {}).get(c.id, {}).get("priority") or 0.0) for c in chosen}


@task(**NETWORK)
def ensure_label_studio(root: str, url: str | None = None) -> str:
    """Start the managed Label Studio unless ``url`` names an external one; returns its URL."""
    if url:
        if not client(Path(root), url).health():
            raise RuntimeError(f"Label Studio at {url} does not answer /health; start it or fix the URL")
        return url
    server = LabelStudioServer(root=Path(root), cfg=annotation_config(Path(root)))
    return server.start()["url"]


@task(**NETWORK)
def push_selection(root: str, n: int, pool: str, url: str | None = None) -> dict:
    """Create/extend round n's review and pairwise projects with the selected candidates."""
    from annotation.push import push_round

    layout = Layout(Path(root), n, pool)
    manifest, prio = write_push_manifest(layout)
    try:   # gold answers: the pool's hidden GT (synthetic pools only) and the previous round's labels
        hidden = layout.hidden if layout.hidden.is_file() else None
    except ValueError:
        hidden = None
    prev_labels = Path(root) / RoundPaths(n - 1).labels
    with client(Path(root), url) as c:
        res = push_round(c, annotation_config(Path(root)), n, manifest, Path(root) / "data", priorities=prio,
                         hidden_meta=hidden, prev_labels=prev_labels)
    return {"projects": res.projects, "created": res.created, "existing": res.existing, "gold": res.gold}


@task(**NETWORK)
def simulate_labels(root: str, n: int, pool: str, url: str | None = None) -> dict:
    """SIMULATED annotators label the round's tasks through the API from the hidden ground truth."""
    from annotation.simulated import simulate_round

    layout = Layout(Path(root), n, pool)
    with client(Path(root), url) as c:
        rep = simulate_round(c, annotation_config(Path(root)), n, layout.candidates, layout.hidden,
                             setup=layout.annotations / "push.json")
    return {"created": rep.created, "skipped": rep.skipped, "already": rep.already}


@task(**NETWORK)
def annotation_progress(root: str, n: int, url: str | None = None, min_labels: int | None = None) -> dict:
    from annotation.progress import round_progress

    with client(Path(root), url) as c:
        return round_progress(c, annotation_config(Path(root), min_labels=min_labels), n)


@task(**NETWORK)
def pull_annotations(root: str, n: int, pool: str, url: str | None = None,
                     min_labels: int | None = None) -> dict:
    """Frozen exports + scored triplets + human pairs + summary into data/annotations/round-n."""
    from annotation.pull import pull_round

    layout = Layout(Path(root), n, pool)
    with client(Path(root), url) as c:
        res = pull_round(c, annotation_config(Path(root), min_labels=min_labels), n, layout.candidates,
                         layout.annotations)
    return {"out_dir": str(res.out_dir), "snapshots": res.snapshots, "scored": res.scored, "pairs": res.pairs}


def target_reached(progress: dict, fraction: float) -> bool:
    """done >= ceil(fraction * total) over the round's projects, with at least one task."""
    import math

    total = int(progress.get("total") or 0)
    return total > 0 and int(progress.get("done") or 0) >= math.ceil(fraction * total - 1e-9)
