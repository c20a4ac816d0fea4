"""Label Studio at scale on the real local server: push 10,000 review tasks, pull 10,000 annotations.

    .venv/bin/python benchmarks/bench_labelstudio.py [--n 10000] [--baseline REF]

What is timed (each in a fresh Label Studio started from the migrated template, in a temp project):

- push: ``push_round`` of a round whose review project gets ``--n`` tasks, with what a push sends
  by default: blind review (no verdicts in Label Studio), gold tasks (``gold.share`` 0.1 of the
  tasks, drawn from the hidden GT), priorities (a spread of values), every image checked, overlays
  rendered, review images put under opaque names. Inputs are distinct 64 px images (two candidates
  per input), so overlays and links are per input as in a real round. The pairwise project is off:
  the goal is about review tasks.
- push again: the idempotent re-run (a killed push's resume): lists the tasks, creates none.
- push pre-filled: the same tasks into another project with ``prefill: true`` (the discriminator's
  verdict as a prediction on every task); images are already on disk, so this is mostly the import.
- pull: ``pull_round`` of ``--n`` annotated tasks (one annotation each, by two simulated users):
  export, freeze, convert, write the scored dataset. Annotations are created by importing the
  tasks with inline annotations (the per-annotation endpoint the simulated annotators use takes
  ~0.3 s each: 50 minutes for 10,000), which is setup, not timed.

``--baseline REF`` runs the same measurement on the code of git revision REF (its ``annotation`` and
``rorem_core``) right before this tree's, and prints both side by side with their ratio: one run,
same machine state. The goal of issue 17 is push and pull each under 10 s on this 2-core machine.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
GOAL_S = 10.0
ROUND = 1
LABELS = ("push", "push again (idempotent)", "push pre-filled (images on disk)", "pull",
          "pull again (nothing new)", "  of which: server export + download")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make_data(dest: Path, n: int, share: float) -> None:
    """A round whose review project holds ``n`` tasks: real candidates plus ``share`` of gold."""
    sys.path.insert(0, str(REPO))
    from tests.helpers.rounds import make_round

    n_real = int(round(n * (1 - share)))
    make_round(dest, ROUND, n_inputs=(n_real + 1) // 2)


def steps(root: Path, n: int):
    """The timed steps as (label, thunk), with whatever ``annotation`` package is first on sys.path;
    the untimed setup between them runs while the generator advances. Stops the server at the end."""
    import numpy as np

    from annotation.config import AnnotationConfig
    from annotation.pull import pull_round
    from annotation.push import build_round_tasks, ensure_project, ensure_storages, push_round
    from annotation.server import LabelStudioServer
    from annotation.simulated import ensure_simulated_users
    from rorem_core.data.formats import read_candidates

    cands = root / "data" / "candidates" / f"round-{ROUND}" / "candidates.json"
    hidden = root / "data" / "hidden" / f"round-{ROUND}" / "meta.json"
    cfg = AnnotationConfig(port=_free_port(), project_prefix="bench", pairwise=False, start_timeout_s=300)
    server = LabelStudioServer(root=root, cfg=cfg, token="bench-token-0123456789")
    rng = np.random.default_rng(0)
    prio = {c.id: float(-abs(rng.random() - 0.5)) for c in read_candidates(cands)}
    push = lambda c: push_round(server.client(), c, ROUND, cands, root / "data", prio, hidden_meta=hidden)  # noqa: E731
    try:
        yield "server start", server.start
        client = server.client()
        yield "push", lambda: _check(push(cfg).created["review"] == n, "push created fewer tasks")
        yield "push again (idempotent)", lambda: _check(push(cfg).created["review"] == 0, "re-push created tasks")
        yield "push pre-filled (images on disk)", lambda: push(cfg.model_copy(
            update={"prefill": True, "project_prefix": "prefilled"}))
        # annotated copy of the round's review tasks (same gold keys: push.json separates them at pull)
        ann = cfg.model_copy(update={"project_prefix": "annotated"})
        dest = root / "data" / "annotations" / f"round-{ROUND}"
        built = build_round_tasks(ann, ROUND, cands, root / "data", prio, hidden_meta=hidden,
                                  previous_gold=json.loads((dest / "push.json").read_text())["gold"])
        users = list(ensure_simulated_users(client, ann.simulated.names[:2]).values())
        proj = ensure_project(client, ann.project_title(ROUND, "review"), "review", ann)
        ensure_storages(client, proj["id"], built.dirs)
        answers = {g.key: g.answer for g in built.gold.items}   # annotators who get gold right are not flagged
        tasks = [dict(t, annotations=[_annotation(t["data"]["candidate_id"], answers, users[i % len(users)])])
                 for i, t in enumerate(built.tasks["review"][0])]
        for i in range(0, len(tasks), 1000):
            client.import_tasks(proj["id"], tasks[i:i + 1000])
        real = n - len(built.gold.items)   # gold never becomes a label
        yield "pull", lambda: _check(pull_round(client, ann, ROUND, cands, dest).scored == real, "pull lost labels")
        yield "pull again (nothing new)", lambda: pull_round(client, ann, ROUND, cands, dest)
        yield "  of which: server export + download", lambda: client.export_snapshot(proj["id"], "bench")
    finally:
        server.stop()


def _check(ok: bool, what: str) -> None:
    if not ok:
        raise AssertionError(what)


def child(data_src: Path, n: int) -> None:
    """Run one step per line read on stdin; answer each with ``{"label", "s"}`` on stdout."""
    root = Path(tempfile.mkdtemp(prefix="rorem-bench-ls-"))
    shutil.copytree(data_src, root / "data", copy_function=os.link)   # same inputs, own outputs
    gen = steps(root, n)
    try:
        while sys.stdin.readline():     # the setup before a step runs on its turn too, not during the other's
            label, fn = next(gen)
            t0 = time.perf_counter()
            fn()
            print(json.dumps({"label": label, "s": time.perf_counter() - t0}), flush=True)
    finally:
        gen.close()
        shutil.rmtree(root, ignore_errors=True)


def _annotation(candidate_id: str, gold: dict[str, str], user: int) -> dict:
    """One review label: a gold task's answer; else good for the candidates ending in s0 (GT + noise),
    bad with a reason otherwise."""
    good = gold[candidate_id] == "good" if candidate_id in gold else candidate_id.endswith("s0")
    result = [{"from_name": "quality", "to_name": "img_result", "type": "choices",
               "value": {"choices": ["good" if good else "bad"]}}]
    if not good:
        result.append({"from_name": "reason", "to_name": "img_result", "type": "choices",
                       "value": {"choices": ["object_remains"]}})
    return {"result": result, "completed_by": user, "lead_time": 2.5}


def _code_of(ref: str, dest: Path) -> Path:
    """The ``annotation`` and ``rorem_core`` packages of git revision ``ref``, unpacked under ``dest``."""
    archive = subprocess.run(["git", "-C", str(REPO), "archive", ref, "annotation", "rorem_core"],
                             capture_output=True, check=True).stdout
    subprocess.run(["tar", "-x", "-C", str(dest)], input=archive, check=True)
    return dest


def run_lockstep(codes: dict[str, Path], data: Path, n: int) -> dict[str, dict[str, float]]:
    """One child per code tree, each with its own server and data; every step runs in all of them
    before the next step starts, first in one order then in the other, so that both see the same
    machine state (other jobs on a shared machine come and go within minutes)."""
    kids = {name: subprocess.Popen([sys.executable, __file__, "--measure", str(data), "--n", str(n)],
                                   env={**os.environ, "PYTHONPATH": str(code)}, cwd=code, text=True,
                                   stdin=subprocess.PIPE, stdout=subprocess.PIPE)
            for name, code in codes.items()}
    runs: dict[str, dict[str, float]] = {name: {} for name in codes}
    try:
        for k in range(len(LABELS) + 1):
            for name in (list(kids) if k % 2 == 0 else list(reversed(kids))):
                kids[name].stdin.write("go\n")
                kids[name].stdin.flush()
                line = kids[name].stdout.readline()
                if not line:
                    raise SystemExit(f"the measurement of {name} ({codes[name]}) failed; see its traceback above")
                step = json.loads(line)
                runs[name][step["label"]] = step["s"]
                print(f"  {name[:14]:<14} {step['label']:<40} {step['s']:7.2f} s", flush=True)
    finally:
        for kid in kids.values():
            kid.stdin.close()
            kid.wait()
    return runs


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=10_000, help="review tasks pushed, annotations pulled")
    ap.add_argument("--baseline", help="git revision to measure side by side (e.g. the branch point)")
    ap.add_argument("--data", type=Path, help="keep the generated inputs in this folder and reuse them")
    ap.add_argument("--measure", type=Path, help=argparse.SUPPRESS)   # child: data folder to copy
    args = ap.parse_args()
    if args.measure:
        child(args.measure, args.n)
        return
    sys.path.insert(0, str(REPO))
    from annotation.config import AnnotationConfig
    from annotation.server import LabelStudioServer

    LabelStudioServer(root=REPO, cfg=AnnotationConfig()).ensure_template()
    work = Path(tempfile.mkdtemp(prefix="rorem-bench-ls-src-"))
    data = args.data or work / "data"
    try:
        t0 = time.perf_counter()
        if not (data / "hidden" / f"round-{ROUND}" / "meta.json").is_file():
            make_data(data, args.n, AnnotationConfig().gold.share)
        print(f"Label Studio at scale: n={args.n} review tasks / annotations; inputs made in "
              f"{time.perf_counter() - t0:.0f} s; {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f}")
        codes = {"this tree": REPO}
        if args.baseline:
            codes = {args.baseline: _code_of(args.baseline, Path(tempfile.mkdtemp(dir=work))), **codes}
        runs = run_lockstep(codes, data, args.n)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    _report(runs)


def _report(runs: dict[str, dict[str, float]]) -> None:
    names = list(runs)
    print("\n" + f"{'step (seconds)':<44}" + "".join(f"{n[:14]:>16}" for n in names)
          + (f"{'ratio':>9}" if len(names) == 2 else ""))
    for label in ("server start", *LABELS):
        row = [runs[n].get(label, float("nan")) for n in names]
        ratio = f"{row[0] / row[1]:8.1f}x" if len(row) == 2 and row[1] > 0 else ""
        print(f"{label:<44}" + "".join(f"{v:16.2f}" for v in row) + ratio)
    mine = runs["this tree"]
    for label in ("push", "pull"):
        verdict = "under" if mine[label] < GOAL_S else "OVER"
        print(f"goal: {label} {mine[label]:.2f} s, {verdict} the {GOAL_S:.0f} s goal")


if __name__ == "__main__":
    main()
