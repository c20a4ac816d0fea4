"""The ``rorem`` command. Subcommands import their layer lazily, so ``rorem validate`` and
``rorem status`` stay fast and never load prefect.

  rorem round [N] [--annotators simulated|human] [options]   run the next (or the given) round
  rorem status [--json]                 current round, its stage, annotation progress, what it waits for
  rorem serve [--port 4200]             Prefect server + round deployment + Label Studio + gate watcher
  rorem worker [--api URL] [--pool rorem]  run the rounds of `rorem serve`'s work pool on this machine
  rorem resume [--round N] [--note T]   resume a round suspended at the human gate (under `rorem serve`)
  rorem report                          rebuild reports/report.md (the report stage) and print its path
  rorem bootstrap                       round 0: base model, seed triplets, pools, test split
  rorem demo [round options]            the main job: a full round on the embedded default with
                                        SIMULATED annotators through a local Label Studio; prints the report
  rorem validate PATH [--kind K]        check a dataset before spending GPU hours (exit 1 if bad)
  rorem judge LIST.json                 judge removals {source, mask, result, GT}: one JSON line each
  rorem import seed|pool|test PATH [--round N]   bring your own photos + masks (docs/own-data.md)
  rorem remove IMAGE MASK [-o OUT] [--model M]   one-shot removal at full resolution (or two folders)
  rorem export --round N --model sft|dpo|lcm|rl OUT  a self-contained diffusers folder with a model card
  rorem stage NAME [ARGS...]            run one pipeline stage (what dvc.yaml calls)
  rorem labelstudio up|down|status|add-user ...   the local Label Studio service
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
from pathlib import Path

from flows import cli_data
from flows.cli_data import project_dir

STAGE_MODULES = "rorem_core.stages."


def _root(path: str | None) -> Path:
    return project_dir(path)


def _validate(argv: list[str]) -> int:
    from rorem_core.data.validate import main as validate_main

    return validate_main(argv)


def _judge(argv: list[str]) -> int:
    from rorem_core.evaluation.judge_list import main as judge_main

    return judge_main(argv)


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


def round_parser(prog: str = "rorem round") -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=prog, description="run one HITL round (the next unfinished one by default)")
    p.add_argument("round", type=int, nargs="?", help="round number (default: the next unfinished round)")
    p.add_argument("--annotators", choices=("simulated", "human"), default="simulated")
    p.add_argument("--root", help="project root (default: nearest folder with params.yaml or .git)")
    p.add_argument("--label-studio-url", help="external Label Studio (default: the managed one)")
    p.add_argument("--min-labels", type=int, help="labels per task (default: params.yaml annotation.min_labels)")
    p.add_argument("--target-fraction", type=float, default=1.0, help="share of tasks done before going on")
    p.add_argument("--timeout-hours", type=float, default=336.0, help="how long to wait for annotators")
    p.add_argument("--poll", type=float, default=30.0, help="progress polling period, seconds")
    p.add_argument("--no-cache", action="store_true", help="ignore cached task results (DVC still skips)")
    p.add_argument("--no-commit", action="store_true", help="no git commit / tag after the round")
    p.add_argument("--no-push", action="store_true", help="no dvc push after the round")
    p.add_argument("--dvc-remote", help="remote URL/path for dvc push (default: the repo's, else .rorem/dvc-remote)")
    p.add_argument("--local", action="store_true", help="run here even when `rorem serve` is running")
    p.add_argument("--on", choices=("serve", "worker"), default="serve",
                   help="with a served Prefect: run in `rorem serve` (default) or on a `rorem worker` machine")
    return p


def round_params(args: argparse.Namespace, root: Path):
    from flows.round import RoundParams

    return RoundParams(round=args.round, annotators=args.annotators, root=str(root),
                       label_studio_url=args.label_studio_url, min_labels=args.min_labels,
                       target_fraction=args.target_fraction, gate_timeout_hours=args.timeout_hours,
                       poll_interval_s=args.poll, use_cache=not args.no_cache, commit=not args.no_commit,
                       tag=not args.no_commit, dvc_push=not args.no_push, dvc_remote=args.dvc_remote)


def _round(argv: list[str]) -> int:
    return run_round(round_parser().parse_args(argv))


def run_round(args: argparse.Namespace) -> int:
    """In this process (Prefect's ephemeral server unless one runs), or submitted to `rorem serve`
    when annotators are human and it runs (so the run can suspend at the gate)."""
    root = _root(args.root)
    if why := _params_refusal(root):
        print(f"error: {why}", file=sys.stderr)
        return 1
    if args.annotators == "simulated" and (why := _simulated_refusal(root, args.round)):
        print(f"error: {why}", file=sys.stderr)
        return 1
    from flows.settings import prefect_env

    env = prefect_env(root)
    params = round_params(args, root)
    on_worker = getattr(args, "on", "serve") == "worker"
    if on_worker and not env.get("PREFECT_API_URL"):
        print("error: --on worker needs a Prefect server (`rorem serve`, or PREFECT_API_URL of a team server)",
              file=sys.stderr)
        return 1
    if env.get("PREFECT_API_URL") and (args.annotators == "human" or on_worker) and not args.local:
        from prefect.deployments import run_deployment

        from flows.serve import DEPLOYMENT
        from flows.worker import WORKER_DEPLOYMENT

        if on_worker:     # the worker's own checkout: root "." (flows.worker.project_root)
            params = params.model_copy(update={"root": "."})
        run = run_deployment(WORKER_DEPLOYMENT if on_worker else DEPLOYMENT,
                             parameters={"params": params.model_dump()}, timeout=0)
        where = "a `rorem worker` of the work pool" if on_worker else "`rorem serve`"
        print(f"submitted round run {run.id} to {where} ({env['PREFECT_API_URL'].removesuffix('/api')}); "
              "it suspends at the human gate and resumes when the annotators are done; see `rorem status`")
        return 0
    from flows.round import rorem_round

    summary = rorem_round(params)
    print(f"round {summary.round}: " + ", ".join(f"{k} {v}" for k, v in summary.stages.items()))
    print(f"report: {summary.report or 'n/a'}" + (f"; tagged {summary.tag}" if summary.tag else ""))
    return 0


def _params_refusal(root: Path) -> str | None:
    """Why params.yaml cannot run a round (e.g. ``annotation.gold.share: 1``), else None: checked before
    any stage, since the annotation section is otherwise first read at the gate, after the heavy stages."""
    from annotation.cli import load_config
    from rorem_core.config import ConfigError

    try:
        load_config(root)
    except ConfigError as e:
        return str(e)
    return None


def _simulated_refusal(root: Path, requested: int | None) -> str | None:
    """tasks.rounds.simulated_refusal for the round `rorem round` would run; params.yaml is not touched."""
    from rorem_core.contract import round_entry
    from tasks.rounds import declared_rounds, next_round, simulated_refusal

    n = requested or next_round(root, root / "params.yaml")
    pool = declared_rounds(root / "params.yaml").get(n, round_entry(n) if n >= 1 else {}).get("pool")
    return simulated_refusal(root, n, pool) if pool else None


def _status(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="rorem status")
    p.add_argument("--root")
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    from flows.status import collect, format_status

    s = collect(_root(args.root))
    print(json.dumps(s, indent=2, default=str) if args.json else format_status(s))
    return 0


def _serve(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="rorem serve", description="Prefect server + deployment + Label Studio + watcher")
    p.add_argument("--root")
    p.add_argument("--port", type=int, default=4200, help="Prefect server port (127.0.0.1)")
    p.add_argument("--poll", type=float, default=30.0, help="watcher period, seconds")
    p.add_argument("--no-label-studio", action="store_true")
    args = p.parse_args(argv)
    from flows.serve import serve

    serve(_root(args.root), port=args.port, label_studio=not args.no_label_studio, poll_s=args.poll)
    return 0


def _worker(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="rorem worker", description="run the rounds of a work pool on this machine "
                                "(a Prefect process worker + the gate watcher; docs/scaling.md)")
    p.add_argument("--root", help="this machine's checkout of the project")
    p.add_argument("--api", help="Prefect API URL (default: PREFECT_API_URL, else this project's `rorem serve`)")
    p.add_argument("--pool", default="rorem", help="work pool to poll")
    p.add_argument("--limit", type=int, default=1, help="rounds at once on this machine")
    p.add_argument("--poll", type=float, default=30.0, help="gate watcher period, seconds")
    args = p.parse_args(argv)
    root = _root(args.root)
    import os

    from flows.settings import served_url
    from flows.worker import WorkerError, run_worker

    api = args.api or os.environ.get("PREFECT_API_URL") or served_url(root)
    if not api:
        print("error: no Prefect server to take rounds from: pass --api http://HOST:4200/api (the machine running "
              "`rorem serve`) or set PREFECT_API_URL", file=sys.stderr)
        return 1
    try:
        return run_worker(root, api, pool=args.pool, limit=args.limit, poll_s=args.poll)
    except WorkerError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1


def _resume(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="rorem resume", description="resume rounds suspended at the human gate")
    p.add_argument("--root")
    p.add_argument("--round", type=int, help="only this round (default: every waiting round)")
    p.add_argument("--note", default="", help="kept in the round's state file")
    args = p.parse_args(argv)
    root = _root(args.root)
    from flows.settings import prefect_env

    if not prefect_env(root).get("PREFECT_API_URL"):
        print("error: no Prefect server; suspended rounds live in `rorem serve`'s server: start it first",
              file=sys.stderr)
        return 1
    from flows.serve import RunGone, resume, waiting_rounds

    done = []
    for st in waiting_rounds(root):
        if args.round not in (None, st["round"]):
            continue
        try:
            if resume(st["flow_run_id"], "cli", args.note):
                done.append(st["round"])
        except RunGone as e:
            print(f"round {st['round']}: {e}", file=sys.stderr)
    print(f"resumed round(s) {done}" if done else "no suspended round to resume")
    return 0 if done else 1


def _report(argv: list[str]) -> int:
    """The report stage: through DVC when declared (so dvc.lock records it), else directly."""
    p = argparse.ArgumentParser(prog="rorem report")
    p.add_argument("--root")
    args = p.parse_args(argv)
    root = _root(args.root)
    import subprocess

    from tasks.dvc import dvc_exe, venv_env

    declared = "report" in (subprocess.run([dvc_exe(), "stage", "list", "--name-only"], cwd=root, env=venv_env(),
                                           capture_output=True, text=True).stdout.split())
    cmd = [dvc_exe(), "repro", "report"] if declared else [sys.executable, "-m", STAGE_MODULES + "report"]
    rc = subprocess.call(cmd, cwd=root, env=venv_env())
    if rc == 0:
        print(f"report: {root / 'reports' / 'report.md'}")
    return rc


def _bootstrap(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="rorem bootstrap")
    p.add_argument("--root")
    args = p.parse_args(argv)
    root = _root(args.root)
    from flows.settings import prefect_env

    prefect_env(root)
    from flows.round import rorem_bootstrap

    print(rorem_bootstrap(str(root)))
    return 0


def _demo(argv: list[str]) -> int:
    """A full round, unattended (simulated annotators via the real Label Studio), then the report."""
    args = round_parser("rorem demo").parse_args(argv)
    args.annotators, args.local = "simulated", True
    root = _root(args.root)
    from annotation.cli import load_config
    from annotation.server import LabelStudioServer

    ls = LabelStudioServer(root=root, cfg=load_config(root))
    was_running = ls.status()["running"]
    try:
        rc = run_round(args)
    finally:   # the demo leaves no Label Studio behind unless one was already running
        if not was_running and not args.label_studio_url:
            ls.stop()
    report = root / "reports" / "report.md"
    if rc == 0 and report.is_file():
        text = report.read_text()
        start = text.find("## Rounds")
        print("\n" + text[start:text.find("\n## ", start + 3)].strip() + f"\n\nfull report: {report}")
    elif rc == 0:   # no report stage declared: the evaluation tables, as before
        from rorem_core.evaluation.scoring import format_table

        for metrics in sorted((root / "results/evaluate").glob("round-*/metrics.json")):
            print(f"\n{metrics.parent.name}: {metrics}\n" + format_table(json.loads(metrics.read_text())))
    return rc


COMMANDS = {"validate": _validate, "stage": _stage, "labelstudio": _labelstudio, "demo": _demo,
            "round": _round, "status": _status, "serve": _serve, "worker": _worker, "resume": _resume, "report": _report,
            "bootstrap": _bootstrap, "judge": _judge}
COMMANDS.update(cli_data.COMMANDS)     # own data: import, remove, export (docs/own-data.md)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in COMMANDS:
        print(__doc__)
        return 0 if argv and argv[0] in ("-h", "--help") else 2
    return COMMANDS[argv[0]](argv[1:])


if __name__ == "__main__":
    raise SystemExit(main())
