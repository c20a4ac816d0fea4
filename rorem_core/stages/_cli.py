"""Shared argv handling for stage ``main()``s: paths come from argv, hyperparameters never do
(they come from params.yaml, so DVC tracks them)."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path
from typing import Any, Callable

from rorem_core.config import ConfigError, load_stage_config
from rorem_core.io import write_json_atomic
from rorem_core.parallel import end_process_group


def parser(stage: str, doc: str | None) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=f"python -m rorem_core.stages.{stage}", description=doc)
    p.add_argument("--params", default="params.yaml", help="params file (base + one section per stage)")
    return p


def run_main(stage: str, args: argparse.Namespace, body: Callable[[Any], Any]) -> int:
    """Load the stage config, run ``body(cfg)``, print its result; config errors exit 2, cleanly."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        cfg = load_stage_config(stage, args.params)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    result = body(cfg)
    end_process_group()        # data-parallel stages: every process is past its last collective
    if result is not None:
        print(json.dumps(result.model_dump(mode="json") if hasattr(result, "model_dump") else result,
                         indent=2, default=str))
    return 0


def write_metrics(path: str | Path | None, metrics: dict) -> None:
    """The stage's metrics file, written by the main process only (data-parallel stages: rorem_core.parallel)."""
    if path and int(os.environ.get("RANK", "0")) == 0:
        write_json_atomic(path, metrics)
