"""Label Studio throughput on the local server: push 10,000 tasks with pre-annotations, pull 10,000
annotations (export + freeze + convert + write the scored dataset). Prints seconds for each.

    .venv/bin/python benchmarks/bench_labelstudio.py [--n 10000] [--port 8765]

Uses the repository's .venv-ls and template (built on first use) and a throw-away project in a
temp dir. The 10,000 annotations are created by importing tasks with inline annotations: through
the per-annotation endpoint (what simulated annotators use, ~0.28 s each here) they would take ~45
minutes, which is not what this measures.
"""

from __future__ import annotations

import argparse
import json
import shutil
import socket
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from annotation.config import AnnotationConfig  # noqa: E402
from annotation.pull import pull_round  # noqa: E402
from annotation.push import build_round_tasks, ensure_project, ensure_storages, push_round  # noqa: E402
from annotation.server import LabelStudioServer  # noqa: E402
from rorem_core.data.formats import Candidate, write_candidates  # noqa: E402
from rorem_core.data.images import save_png  # noqa: E402


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make_manifest(data: Path, round_id: int, n: int) -> Path:
    """n candidates on n/2 inputs; all share three tiny PNGs (the benchmark is about the API)."""
    cdir = data / "candidates" / f"round-{round_id}"
    rng = np.random.default_rng(0)
    save_png(cdir / "src.png", rng.random((64, 64, 3)))
    mask = np.zeros((64, 64), dtype=bool)
    mask[16:48, 16:48] = True
    save_png(cdir / "mask.png", mask)
    save_png(cdir / "res.png", rng.random((64, 64, 3)))
    cands = [Candidate(id=f"r{round_id}-p{i // 2:05d}-s{i % 2}", round=round_id, input_id=f"p{i // 2:05d}",
                       seed=i % 2, model="bench", steps=4, source="src.png", mask="mask.png", result="res.png",
                       score=float(rng.random()), score_model="disc-bench") for i in range(n)]
    write_candidates(cdir / "candidates.json", cands)
    return cdir / "candidates.json"


def timed(label: str, fn, results: dict):
    t0 = time.perf_counter()
    out = fn()
    results[label] = time.perf_counter() - t0
    print(f"{label:<58} {results[label]:8.2f} s", flush=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=10_000)
    ap.add_argument("--port", type=int, default=0)
    args = ap.parse_args()
    shared = LabelStudioServer(root=REPO, cfg=AnnotationConfig())
    shared.ensure_template()
    root = Path(tempfile.mkdtemp(prefix="rorem-bench-ls-"))
    (root / "data").mkdir()
    cfg = AnnotationConfig(port=args.port or _free_port(), project_prefix="bench", pairwise=False, prefill=True,
                           start_timeout_s=300)
    server = LabelStudioServer(root=root, cfg=cfg, token="bench-token-0123456789")
    server.venv, server.template = shared.venv, shared.template
    res: dict[str, float] = {}
    print(f"Label Studio benchmark, n={args.n}, {cfg.url}, project {root}")
    try:
        timed("server start from the migrated template", server.start, res)
        client = server.client()
        manifest = make_manifest(root / "data", 1, args.n)
        push = timed(f"push {args.n} review tasks with pre-annotations", lambda: push_round(
            client, cfg, 1, manifest, root / "data"), res)
        assert push.created["review"] == args.n, push
        timed("push again (idempotent: lists tasks, creates none)",
              lambda: push_round(client, cfg, 1, manifest, root / "data"), res)
        # round 2: the same tasks arrive with one annotation each (setup for the pull measurement)
        manifest2 = make_manifest(root / "data", 2, args.n)
        built = build_round_tasks(cfg, 2, manifest2, root / "data")
        proj = ensure_project(client, cfg.project_title(2, "review"), "review", cfg)
        ensure_storages(client, proj["id"], built.dirs)
        admin = client.whoami()["id"]
        tasks = [dict(t, annotations=[{"result": [{"from_name": "quality", "to_name": "img_result",
                                                   "type": "choices", "value": {"choices": ["good" if i % 3 else "bad"]}}],
                                       "completed_by": admin, "lead_time": 1.0}])
                 for i, t in enumerate(built.tasks["review"][0])]
        timed(f"(setup) import {args.n} tasks with pre-annotations + one annotation each",
              lambda: [client.import_tasks(proj["id"], tasks[i:i + cfg.import_batch])
                       for i in range(0, len(tasks), cfg.import_batch)], res)
        out = root / "data" / "annotations" / "round-2"
        pulled = timed(f"pull {args.n} annotations (export, freeze, convert, write)",
                       lambda: pull_round(client, cfg, 2, manifest2, out), res)
        print(f"  scored triplets: {pulled.scored}, export size "
              f"{(out / pulled.snapshots['review']).stat().st_size / 1e6:.1f} MB")
        timed("pull again (identical: nothing rewritten)", lambda: pull_round(client, cfg, 2, manifest2, out), res)
        timed("  of which: server export + download alone", lambda: client.export_snapshot(proj["id"], "b"), res)
        print(json.dumps({k: round(v, 2) for k, v in res.items()}, indent=1))
    finally:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
