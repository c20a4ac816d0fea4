"""The foundation's learning check, shared by the slow test and the benchmark: evaluate the base
remover, fine-tune it for one default round, evaluate again, compare per image (paired)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from rorem_core.config import stage_config
from rorem_core.stages import evaluate, train_remover


def paired_delta(before: list[dict], after: list[dict]) -> dict:
    """Per-image masked-PSNR change with its standard error, and the success-rate change."""
    a = np.array([r["masked_psnr"] for r in before])
    b = np.array([r["masked_psnr"] for r in after])
    d = b - a
    return {"delta_db": float(d.mean()), "delta_db_sem": float(d.std(ddof=1) / np.sqrt(len(d))),
            "delta_success": float(np.mean([r["success"] for r in after]) - np.mean([r["success"] for r in before]))}


def run_check(params: dict, model_dir: Path, data: Path, out: Path) -> dict:
    """Base figures, a round's fine-tune (params' train_remover on data/seed), figures after."""
    ev_cfg = stage_config("evaluate", params)
    base = evaluate.run(ev_cfg, model_dir, data / "test", out / "eval_base")
    base_rows = json.loads((out / "eval_base" / "per_image.json").read_text())
    tr = train_remover.run(stage_config("train_remover", params), model_dir, [data / "seed"], out / "round-1")
    after = evaluate.run(ev_cfg, out / "round-1", data / "test", out / "eval_round1")
    after_rows = json.loads((out / "eval_round1" / "per_image.json").read_text())
    summary = json.loads((out / "round-1" / "train_summary.json").read_text())
    return {"base": base.metrics, "base_table": base.table, "after": after.metrics["remover"],
            "after_table": after.table, "paired": paired_delta(base_rows, after_rows),
            "loss_before": summary["fixed_loss_before"], "loss_after": summary["fixed_loss_after"],
            "train": tr.model_dump()}
