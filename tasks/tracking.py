"""The round's summary row for wandb (training curves are logged by each stage through accelerate).

A thin wrapper so the flow's logging can be tested without reading wandb's binary offline files:
``RoundTracker.logged`` keeps what was sent. Runs are grouped by round (``group="round-N"``) with
``job_type`` = the stage, as the training stages do; offline unless params.yaml says otherwise.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any


class RoundTracker:
    """One wandb run per (round, stage) that logs a flat row and images; ``mode="disabled"`` is free."""

    def __init__(self, root: Path, n: int, *, mode: str = "offline", project: str = "rorem-loop",
                 stage: str = "summary"):
        self.root, self.n, self.mode, self.project, self.stage = Path(root), n, mode, project, stage
        self.logged: list[dict[str, Any]] = []

    def log(self, row: dict[str, Any], images: dict[str, Path] | None = None) -> dict[str, Any]:
        """Log ``row`` (numbers and strings; None dropped) and the PNGs in ``images``; returns the row."""
        flat = {k: v for k, v in row.items() if v is not None and isinstance(v, (int, float, str, bool))}
        pics = {k: Path(p) for k, p in (images or {}).items() if p and Path(p).is_file()}
        self.logged.append({"row": flat, "images": sorted(pics)})
        if self.mode == "disabled":
            return flat
        import wandb

        os.environ.setdefault("WANDB_SILENT", "true")
        run = wandb.init(project=self.project, dir=str(self.root), mode=self.mode, group=f"round-{self.n}",
                         job_type=self.stage, name=f"round-{self.n}/{self.stage}", reinit="finish_previous",
                         config={"round": self.n})
        try:
            run.log({**flat, **{k: wandb.Image(str(p)) for k, p in pics.items()}})
            run.summary.update(flat)
        finally:
            run.finish()
        return flat


def tracker_settings(params: dict) -> tuple[str, str]:
    """(mode, project) from params.yaml ``base``; WANDB_MODE in the environment wins (CI: offline)."""
    base = params.get("base") or {}
    return os.environ.get("WANDB_MODE") or base.get("wandb_mode", "offline"), base.get("wandb_project", "rorem-loop")
