"""The ``rorem`` command. Subcommands import their layer lazily, so ``rorem validate`` stays fast
and never loads prefect or the Label Studio SDK.

  rorem validate PATH [--kind K]        check a dataset before spending GPU hours (exit 1 if bad)
  rorem stage NAME [ARGS...]            run one pipeline stage (what dvc.yaml calls)
  rorem demo [--params P]               the embedded-default job: dvc repro of the declared stages,
                                        then print the evaluation table
  rorem labelstudio up|down|status|add-user ...   the local Label Studio service
"""

from __future__ import annotations

import importlib
import json
import subprocess
import sys
from pathlib import Path

STAGE_MODULES = "rorem_core.stages."


def _validate(argv: list[str]) -> int:
    from rorem_core.validate import main as validate_main

    return validate_main(argv)


def _stage(argv: list[str]) -> int:
    if not argv:
        print("usage: rorem stage NAME [ARGS...]", file=sys.stderr)
        return 2
    try:
        mod = importlib.import_module(STAGE_MODULES + argv[0])
    except ModuleNotFoundError:
        print(f"error: no stage {argv[0]!r} (see rorem_core/stages/)", file=sys.stderr)
        return 2
    return mod.main(argv[1:])


def _labelstudio(argv: list[str]) -> int:
    from annotation.cli import main as ls_main

    return ls_main(argv)


def _demo(argv: list[str]) -> int:
    """dvc repro of every declared stage, then the evaluation tables of each round."""
    dvc = Path(sys.executable).with_name("dvc")
    rc = subprocess.call([str(dvc) if dvc.exists() else "dvc", "repro", *argv])
    if rc:
        return rc
    for metrics in sorted(Path("results/evaluate").glob("round-*/metrics.json")):
        from rorem_core.evaluation import format_table

        print(f"\n{metrics.parent.name}: {metrics}  (samples: {metrics.parent / 'samples.png'})")
        print(format_table(json.loads(metrics.read_text())))
    return 0


COMMANDS = {"validate": _validate, "stage": _stage, "labelstudio": _labelstudio, "demo": _demo}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in COMMANDS:
        print(__doc__)
        return 0 if argv and argv[0] in ("-h", "--help") else 2
    return COMMANDS[argv[0]](argv[1:])


if __name__ == "__main__":
    raise SystemExit(main())
