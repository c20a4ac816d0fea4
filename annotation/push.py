"""Push a round's selected candidates to Label Studio: one review and one pairwise project.

Idempotent: projects are found by title (``<prefix> round <N> review|pairwise``) and tasks are
keyed by ``candidate_id`` / ``pair_id`` in their data, so pushing twice creates nothing new, and
pushing a grown selection adds only the new tasks. Review is blind by default (``annotation.prefill``):
the discriminator's verdicts go to ``push.json``, not into the tasks; gold tasks with known answers are
mixed into the review project (:mod:`annotation.gold`) and instructions are set on both projects.
Every image path is checked to lie inside the served root *before* any call. Tasks are imported
highest priority first; with sequential sampling that is the order annotators get them. The images
a task shows (overlay, review copies: :mod:`annotation.overlays`) are written just before its batch
is imported, while Label Studio imports the previous batch (docs/scaling.md).
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import time
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Callable, Mapping

from annotation.client import LabelStudioClient, LabelStudioError
from annotation.config import AnnotationConfig
from annotation.convert import BAD, GOOD, PREF, QUALITY
from annotation.gold import GoldPlan, decoy_priority, gold_candidates, neutral_copy, plan_gold
from annotation.instructions import instructions_html
from annotation.overlays import TaskImages
from annotation.paths import PathRefused, RootCheck, local_files_url, unique_names
from rorem_core.data.formats import Candidate, read_candidates
from rorem_core.io import write_json_atomic


def label_config(kind: str) -> str:
    """The versioned labeling config ``annotation/configs/<kind>.xml``."""
    return resources.files("annotation").joinpath("configs", f"{kind}.xml").read_text(encoding="utf-8")


@dataclass
class PushResult:
    round: int
    projects: dict[str, int] = field(default_factory=dict)   # kind -> project id
    created: dict[str, int] = field(default_factory=dict)    # kind -> tasks created now
    existing: dict[str, int] = field(default_factory=dict)   # kind -> tasks already there
    gold: str = ""                                            # what the gold plan did (or why no gold)


def _resolve_all(cands: list[Candidate], base: Path, check: RootCheck) -> dict[str, dict[str, Path]]:
    """Every candidate's source/mask/result, checked inside the served root; all offenders at once."""
    paths, bad, seen = {}, [], {}
    for c in cands:
        entry = {}
        for kind in ("source", "mask", "result"):
            raw = os.path.join(base, getattr(c, kind))
            try:
                if raw not in seen:  # inputs share source and mask: check each file once
                    seen[raw] = check(raw)
                entry[kind] = seen[raw]
            except PathRefused as e:
                bad.append(f"candidate {c.id} {kind}: {e}")
        paths[c.id] = entry
    if bad:
        raise PathRefused(f"{len(bad)} image path(s) refused before import (served root {check.doc_root}):\n  "
                          + "\n  ".join(bad[:20]))
    return paths


def _overlay_paths(cands: list[Candidate], paths: dict, images: TaskImages) -> dict[str, Path]:
    """One overlay per distinct (source, mask), named after an input id; written by ``images`` on demand."""
    keys = {c.id: f"{paths[c.id]['source']}|{paths[c.id]['mask']}" for c in cands}
    names = unique_names([(c.input_id, keys[c.id]) for c in cands])
    done: dict[str, Path] = {}
    for c in cands:
        if keys[c.id] not in done:
            done[keys[c.id]] = images.overlay(names[keys[c.id]], paths[c.id]["source"], paths[c.id]["mask"])
    return {c.id: done[keys[c.id]] for c in cands}


def _review_task(c: Candidate, p: dict, overlay: Path, root: Path, prio: float, cfg: AnnotationConfig) -> dict:
    task = {"data": {"original": local_files_url(p["source"], root), "overlay": local_files_url(overlay, root),
                     "result": local_files_url(p["result"], root), "candidate_id": c.id,
                     "input_id": c.input_id, "round": c.round, "priority": prio}}
    if c.score is not None and cfg.prefill:   # blind (default): no prediction in Label Studio (docs/annotation.md)
        task["predictions"] = [{"model_version": c.score_model or cfg.model_version, "score": float(c.score),
                                "result": [{"from_name": QUALITY, "to_name": "img_result", "type": "choices",
                                            "value": {"choices": [GOOD if c.score >= 0.5 else BAD]}}]}]
    return task


def pair_tasks(cands: list[Candidate], paths: dict, overlays: dict, root: Path,
               prio: Mapping[str, float], cfg: AnnotationConfig) -> list[dict]:
    """Pairs of results of the same input; left/right fixed by a hash of the pair id (no position bias).

    A pre-annotation (when both scores exist) picks the higher score with confidence
    0.5 + |s_a - s_b| / 2.
    """
    by_input: dict[str, list[Candidate]] = {}
    for c in sorted(cands, key=lambda c: c.id):
        by_input.setdefault(c.input_id, []).append(c)
    tasks = []
    for group in by_input.values():
        pairs = sorted(itertools.combinations(group, 2),
                       key=lambda ab: (-(prio.get(ab[0].id, 0.0) + prio.get(ab[1].id, 0.0)), ab[0].id, ab[1].id))
        for a, b in pairs[: cfg.max_pairs_per_input]:
            pair_id = f"{a.id}__vs__{b.id}"
            if hashlib.sha256(pair_id.encode()).digest()[0] & 1:
                a, b = b, a
            task = {"data": {"overlay": local_files_url(overlays[a.id], root),
                             "result_left": local_files_url(paths[a.id]["result"], root),
                             "result_right": local_files_url(paths[b.id]["result"], root),
                             "pair_id": pair_id, "candidate_left": a.id, "candidate_right": b.id,
                             "input_id": a.input_id, "round": a.round,
                             "priority": (prio.get(a.id, 0.0) + prio.get(b.id, 0.0)) / 2}}
            if a.score is not None and b.score is not None and cfg.prefill:
                side = "left" if a.score >= b.score else "right"
                task["predictions"] = [{"model_version": a.score_model or cfg.model_version,
                                        "score": 0.5 + abs(a.score - b.score) / 2,
                                        "result": [{"from_name": PREF, "to_name": "left", "type": "pairwise",
                                                    "value": {"selected": side}}]}]
            tasks.append(task)
    return tasks


def ensure_project(client: LabelStudioClient, title: str, kind: str, cfg: AnnotationConfig,
                   instructions: str = "") -> dict:
    """Find the project by title or create it; align its config, overlap, prefill mode and instructions.

    ``show_collab_predictions`` = ``cfg.prefill``. Blind review (the default) also keeps predictions out of
    the tasks: Label Studio 1.23's editor pre-fills a task opened from the Data Manager from its first
    prediction whatever this setting says (it only governs the "Label All Tasks" stream).
    """
    xml = label_config(kind)
    wanted = {"maximum_annotations": cfg.overlap, "show_collab_predictions": cfg.prefill,
              "expert_instruction": instructions, "show_instruction": bool(cfg.instructions and instructions)}
    proj = client.find_project(title)
    if proj is None:
        return client.create_project(title=title, label_config=xml, overlap_cohort_percentage=100,
                                     sampling="Sequential sampling", show_skip_button=True, **wanted,
                                     description=f"rorem {kind} tasks; labeling config annotation/configs/{kind}.xml")
    changes = {k: v for k, v in wanted.items() if proj.get(k) != v}
    if proj.get("label_config", "").strip() != xml.strip():
        changes["label_config"] = xml
    return client.update_project(proj["id"], **changes) if changes else proj


def ensure_storages(client: LabelStudioClient, project_id: int, dirs: set[Path]) -> None:
    """One never-synced local-files storage per image folder: it authorises serving that folder only."""
    have = {s.get("path") for s in client.local_storages(project_id)}
    for d in sorted(dirs):
        if str(d) not in have:
            client.create_local_storage(project_id, str(d), title=f"rorem {d.name}")


def import_missing(client: LabelStudioClient, project_id: int, tasks: list[dict], key: str,
                   cfg: AnnotationConfig, prepare: Callable[[list[dict]], None] | None = None) -> tuple[int, int]:
    """Import tasks whose ``data[key]`` is not on the server yet; returns (created, existing).

    ``prepare(batch)`` runs before a batch is sent (the push writes the batch's images there) while
    the server still imports the previous batch: one import in flight at a time, in priority order.
    After a failed batch the server state is re-read before resending, so a batch that the server
    committed but did not confirm is never imported twice.
    """
    def on_server() -> set:
        return {t["data"].get(key) for t in client.iter_tasks(project_id, include="id,data")}

    present = on_server()
    todo = [t for t in tasks if t["data"][key] not in present]
    missing_at_start, attempt = len(todo), 0
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="ls-import") as pool:
        while todo:
            try:
                _send_batches(pool, client, project_id, todo, cfg.import_batch, prepare)
                todo = []
            except LabelStudioError as e:
                if attempt >= cfg.retries or (e.status is not None and e.status < 500):
                    raise
                time.sleep(min(cfg.backoff_s * 2 ** attempt, cfg.backoff_max_s))
                attempt += 1
                present = on_server()
                todo = [t for t in todo if t["data"][key] not in present]
    return missing_at_start, len(tasks) - missing_at_start


def _send_batches(pool: ThreadPoolExecutor, client: LabelStudioClient, project_id: int, todo: list[dict],
                  size: int, prepare: Callable[[list[dict]], None] | None) -> None:
    """Send ``todo`` in batches of ``size``, preparing batch k+1 while batch k is imported.

    Returns only when no import is in flight (also when raising), so the caller may re-read the server."""
    in_flight: Future | None = None
    try:
        for start in range(0, len(todo), size):
            batch = todo[start:start + size]
            if prepare is not None:
                prepare(batch)
            if in_flight is not None:
                in_flight.result()          # raises the previous batch's error before sending more
            in_flight = pool.submit(client.import_tasks, project_id, batch)
        if in_flight is not None:
            in_flight.result()
    finally:
        if in_flight is not None:
            wait([in_flight])


@dataclass
class RoundTasks:
    """Everything a push sends: tasks per project kind (with their key field), image folders, the gold
    plan and the instructions per project kind."""

    tasks: dict[str, tuple[list[dict], str]]
    dirs: set[Path]
    gold: GoldPlan | None = None
    instructions: dict[str, str] = field(default_factory=dict)
    images: TaskImages | None = None    # writes the files tasks show; see build_round_tasks(defer_images)

    def prepare(self, tasks: list[dict]) -> None:
        if self.images is not None:
            self.images.prepare(tasks)


def _neutral_paths(cands: list[Candidate], paths: dict, folder: Path, round_id: int, images: TaskImages) -> dict:
    """Review images (source shown as "original", result) copied under opaque names into one folder, so
    a gold task's URLs look like any other task's (its result may be the GT or the source itself)."""
    return {c.id: {**paths[c.id], "source": images.neutral(paths[c.id]["source"], folder, round_id, "original"),
                   "result": images.neutral(paths[c.id]["result"], folder, round_id, "result")} for c in cands}


def build_round_tasks(cfg: AnnotationConfig, round_id: int, candidates_path: Path, doc_root: Path,
                      priorities: Mapping[str, float] | None = None,
                      overlay_dir: Path | None = None, *, hidden_meta: Path | None = None,
                      prev_labels: Path | None = None, previous_gold: dict | None = None,
                      defer_images: bool = False) -> RoundTasks:
    """Check every path, render the overlays, build review (+ gold) (+ pairwise) tasks, highest priority first.

    ``defer_images``: leave the overlays and review copies to :meth:`RoundTasks.prepare` (the push
    writes each batch's images just before importing it); by default they are all written here.

    Gold tasks (:mod:`annotation.gold`) are drawn from ``hidden_meta`` (the pool's hidden GT) and, with
    ``gold.unanimous``, from ``prev_labels`` (an earlier round's labels folder)."""
    candidates_path, doc_root = Path(candidates_path), Path(doc_root).resolve()
    cands = read_candidates(candidates_path)
    prio = dict(priorities or {})
    plan = (GoldPlan.from_json(previous_gold) if previous_gold else
            plan_gold(cfg.gold, round_id, cands, candidates_path.parent, hidden_meta=hidden_meta, prev_labels=prev_labels))
    golds = gold_candidates(plan, round_id, cands)
    ranked = sorted(prio.values())
    prio.update({g.id: decoy_priority(g.id, ranked) for g in golds})
    everyone = sorted(cands + golds, key=lambda c: (-prio.get(c.id, 0.0), c.id))
    check = RootCheck(doc_root)
    paths = _resolve_all(everyone, candidates_path.parent, check)
    round_dir = doc_root / "annotations" / f"round-{round_id}"
    overlay_dir = Path(overlay_dir or round_dir / "overlays")
    images = TaskImages(doc_root, overlay_dir, check)
    overlays = _overlay_paths(everyone, paths, images)
    shown = _neutral_paths(everyone, paths, round_dir / "review", round_id, images)
    # storages authorise serving: the real candidates' folders (pairwise shows them), the overlays and
    # the review copies; never the hidden GT's folder (gold shows only its copy under an opaque name)
    dirs = ({p.parent for c in cands for p in paths[c.id].values()} | {o.parent for o in overlays.values()}
            | {round_dir / "review"})
    for d in dirs:   # Label Studio refuses a storage whose folder does not exist, and images come later
        d.mkdir(parents=True, exist_ok=True)
    kinds = {"review": ([_review_task(c, shown[c.id], overlays[c.id], doc_root, prio.get(c.id, 0.0), cfg)
                         for c in everyone], "candidate_id")}
    if cfg.pairwise:
        ptasks = pair_tasks(cands, paths, overlays, doc_root, prio, cfg)
        ptasks.sort(key=lambda t: (-t["data"]["priority"], t["data"]["pair_id"]))
        kinds["pairwise"] = (ptasks, "pair_id")
    examples = [(g, neutral_copy(Path(g.result), round_dir / "review", round_id, "example"),
                 images.example_overlay(g.key, Path(g.source), Path(g.mask))) for g in plan.examples]
    text = {kind: instructions_html(kind, [(g.answer, local_files_url(r, doc_root), local_files_url(o, doc_root))
                                           for g, r, o in examples], cfg.prefill) for kind in kinds}
    if not defer_images:
        images.prepare_all()
    return RoundTasks(kinds, dirs, plan, text if cfg.instructions else {}, images)


def write_setup(path: Path, round_id: int, cfg: AnnotationConfig, plan: GoldPlan | None,
                predictions: dict[str, dict]) -> None:
    """``push.json``: the round's review mode, the discriminator's verdict per candidate (what a blind
    push keeps out of Label Studio) and the gold tasks with their answers (never sent to Label Studio).
    The pull reads it to separate gold from real labels and to compare the discriminator with the
    humans; it is frozen with the export."""
    data = {"round": round_id, "mode": "prefilled" if cfg.prefill else "blind",
            "gold_share": cfg.gold.share, "gold": plan.as_json() if plan else None,
            "predictions": predictions}
    old = json.loads(path.read_text()) if path.is_file() else None
    if old != data:
        write_json_atomic(path, data)


def read_setup(path: Path) -> dict | None:
    """The ``push.json`` of a round, or None before its first push."""
    return json.loads(Path(path).read_text()) if Path(path).is_file() else None


def push_round(client: LabelStudioClient, cfg: AnnotationConfig, round_id: int, candidates_path: Path,
               doc_root: Path, priorities: Mapping[str, float] | None = None,
               overlay_dir: Path | None = None, *, hidden_meta: Path | None = None,
               prev_labels: Path | None = None) -> PushResult:
    """Create/extend the round's projects with one review task per candidate and its pairs.

    ``priorities``: candidate id -> priority (higher is labelled first; missing = 0), e.g. the
    discriminator's uncertainty ``-|p - 0.5|``. Overlays go to ``overlay_dir`` (default
    ``<doc_root>/annotations/round-N/overlays``), which must lie inside the served root.
    ``hidden_meta`` / ``prev_labels``: where gold answers come from (:func:`build_round_tasks`);
    the review mode and gold answers are written to ``<doc_root>/annotations/round-N/push.json``.
    """
    setup = Path(doc_root).resolve() / "annotations" / f"round-{round_id}" / "push.json"
    old = read_setup(setup)   # a re-push keeps the round's gold: its answers are what annotators saw
    built = build_round_tasks(cfg, round_id, candidates_path, doc_root, priorities, overlay_dir,
                              hidden_meta=hidden_meta, prev_labels=prev_labels,
                              previous_gold=(old or {}).get("gold"), defer_images=True)
    preds = {**(old or {}).get("predictions", {}), **{
        c.id: {"score": c.score, "model_version": c.score_model or cfg.model_version}
        for c in read_candidates(Path(candidates_path)) if c.score is not None}}
    write_setup(setup, round_id, cfg, built.gold, dict(sorted(preds.items())))
    result = PushResult(round_id, gold=built.gold.message if built.gold else "")
    for kind, (tasks, key) in built.tasks.items():
        proj = ensure_project(client, cfg.project_title(round_id, kind), kind, cfg, built.instructions.get(kind, ""))
        ensure_storages(client, proj["id"], built.dirs)
        result.projects[kind] = proj["id"]
        result.created[kind], result.existing[kind] = import_missing(client, proj["id"], tasks, key, cfg,
                                                                     prepare=built.prepare)
    built.images.prepare_all()   # the images of tasks that were on the server already (restored if deleted)
    return result
