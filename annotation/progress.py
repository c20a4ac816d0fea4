"""Annotation progress of a round: done/total per project and labels per annotator (for the human gate)."""

from __future__ import annotations

from collections import Counter

from annotation.client import LabelStudioClient
from annotation.config import AnnotationConfig


def project_progress(client: LabelStudioClient, project_id: int, min_labels: int) -> dict:
    """A task is done when it holds at least ``min_labels`` submitted (not skipped) annotations.

    ``per_annotator`` counts the tasks each user submitted or skipped (Label Studio's ``annotators``).
    """
    users = {u["id"]: u.get("email") or f"user-{u['id']}" for u in client.users()}
    total = done = annotations = skipped = 0
    per: Counter = Counter()
    for task in client.iter_tasks(project_id, include="id,total_annotations,cancelled_annotations,annotators"):
        total += 1
        n = int(task.get("total_annotations") or 0)
        annotations += n
        skipped += int(task.get("cancelled_annotations") or 0)
        done += n >= min_labels
        per.update(users.get(uid, f"user-{uid}") for uid in set(task.get("annotators") or []))
    return {"project_id": project_id, "total": total, "done": done, "annotations": annotations,
            "skipped": skipped, "per_annotator": dict(sorted(per.items()))}


def round_progress(client: LabelStudioClient, cfg: AnnotationConfig, round_id: int) -> dict:
    """``{"review": {...}, "pairwise": {...}, "done", "total", "complete"}``; a missing project counts 0/0."""
    out: dict = {"round": round_id, "min_labels": cfg.min_labels}
    kinds = ("review", "pairwise") if cfg.pairwise else ("review",)
    for kind in kinds:
        proj = client.find_project(cfg.project_title(round_id, kind))
        out[kind] = (project_progress(client, proj["id"], cfg.min_labels) if proj
                     else {"project_id": None, "total": 0, "done": 0, "annotations": 0, "skipped": 0,
                           "per_annotator": {}})
    out["done"] = sum(out[k]["done"] for k in kinds)
    out["total"] = sum(out[k]["total"] for k in kinds)
    out["complete"] = out["total"] > 0 and out["done"] == out["total"]
    return out
