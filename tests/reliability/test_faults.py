"""Faults (issue 7 §1) not covered elsewhere: Label Studio dropping the connection in the middle of a
push, the push or pull process dying half-way, and (slow) a SIGKILL during the discriminator, DPO and
distillation training stages. Each time the re-run completes, nothing is duplicated or lost, and the
outputs equal those of a run without the fault.

Label Studio is an in-memory fake here, for fast checks of every kill point's logic; the same faults
against the real server (killed push and pull processes, a server crash and restart in the middle of a
push) are in tests/annotation/test_ls_faults.py. The training stages run as real subprocesses.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from annotation.client import LabelStudioError
from annotation.config import AnnotationConfig
from annotation.push import push_round
from tests.helpers.kill import kill_after_first_checkpoint, max_weight_diff


class Killed(BaseException):
    """Stands for the process dying: no ``except Exception`` in the code under test can catch it."""


class FakeLabelStudioServer:
    """The projects / storages / tasks API that push_round uses, in memory. ``faults`` maps the n-th
    import call (1-based) to an exception raised *after* the server committed that import, as when
    the server restarts or the client is killed before the answer arrives."""

    url = "http://fake-label-studio"

    def __init__(self, faults: dict[int, BaseException] | None = None):
        self.projects: dict[int, dict] = {}
        self.tasks: dict[int, list[dict]] = {}
        self.storages: dict[int, list[dict]] = {}
        self.faults, self.imports = dict(faults or {}), 0

    def find_project(self, title: str) -> dict | None:
        return next((p for p in self.projects.values() if p["title"] == title), None)

    def create_project(self, **fields) -> dict:
        pid = len(self.projects) + 1
        self.projects[pid] = {"id": pid, **fields}
        self.tasks[pid], self.storages[pid] = [], []
        return self.projects[pid]

    def update_project(self, project_id: int, **fields) -> dict:
        self.projects[project_id].update(fields)
        return self.projects[project_id]

    def local_storages(self, project_id: int) -> list[dict]:
        return list(self.storages[project_id])

    def create_local_storage(self, project_id: int, path: str, title: str) -> dict:
        self.storages[project_id].append({"path": path, "title": title})
        return self.storages[project_id][-1]

    def iter_tasks(self, project_id: int, *, include: str | None = None, page_size: int = 1000):
        yield from (json.loads(json.dumps(t)) for t in self.tasks[project_id])

    def import_tasks(self, project_id: int, tasks: list[dict]) -> list[int]:
        self.imports += 1
        start = sum(len(t) for t in self.tasks.values())
        ids = list(range(start + 1, start + 1 + len(tasks)))
        self.tasks[project_id] += [{"id": i, **json.loads(json.dumps(t))} for i, t in zip(ids, tasks)]
        if self.imports in self.faults:                       # committed, but the answer never arrives
            raise self.faults.pop(self.imports)
        return ids

    def keys(self, kind: str) -> list[str]:
        pid = next(p["id"] for p in self.projects.values() if p["title"].endswith(kind))
        key = "candidate_id" if kind == "review" else "pair_id"
        return sorted(t["data"][key] for t in self.tasks[pid])


CFG = AnnotationConfig(import_batch=2, retries=2, backoff_s=0.0)


def _push(server, cands: Path):
    return push_round(server, CFG, 1, cands, cands.parents[2])


def test_label_studio_restart_mid_import_is_retried_without_duplicates(rel, ann_round):
    cands, _ = ann_round
    reference = FakeLabelStudioServer()
    _push(reference, cands)
    drop = LabelStudioError("Label Studio POST .../import failed: RemoteProtocolError (Server disconnected)")
    server = FakeLabelStudioServer({2: drop})                 # the second review batch: committed, then reset
    res = _push(server, cands)
    assert server.keys("review") == reference.keys("review") and len(server.keys("review")) == 4
    assert server.keys("pairwise") == reference.keys("pairwise")
    assert res.created["review"] == 4 and server.imports == reference.imports


@pytest.mark.parametrize("at", [1, 2, 3], ids=["first-review-batch", "second-review-batch", "pairwise-batch"])
def test_push_killed_after_a_committed_import_then_rerun_completes_without_duplicates(rel, ann_round, at):
    cands, _ = ann_round
    reference = FakeLabelStudioServer()
    _push(reference, cands)
    server = FakeLabelStudioServer({at: Killed()})
    inputs = rel.tree_hash(cands.parent)
    with pytest.raises(Killed):
        _push(server, cands)
    again = _push(server, cands)                                # the re-run
    for kind in ("review", "pairwise"):
        assert server.keys(kind) == reference.keys(kind), kind  # each task exactly once
    assert sum(again.existing.values()) > 0 and sum(again.created.values()) + sum(again.existing.values()) == 6
    assert len(server.projects) == 2 and all(len(s) == len(reference.storages[1]) for s in server.storages.values())
    assert rel.tree_hash(cands.parent) == inputs
    assert _push(server, cands).created == {"review": 0, "pairwise": 0}


def _exports(rel, cands: Path, quality: str = "good") -> dict:
    ids = [c["id"] for c in json.loads(cands.read_text())["candidates"]]
    votes = {cid: [rel.annotation(100 + i, i + 1, "a@lab.org", rel.review_choice(quality))] for i, cid in enumerate(ids)}
    pair_ids = [f"{ids[0]}__vs__{ids[1]}", f"{ids[2]}__vs__{ids[3]}"]
    pairwise = [{"id": 50 + k, "data": {"pair_id": pid, "candidate_left": pid.split("__vs__")[0],
                                        "candidate_right": pid.split("__vs__")[1]}, "predictions": [],
                 "annotations": [rel.annotation(300 + k, 50 + k, "a@lab.org",
                                                [{"from_name": "pref", "to_name": "pref", "type": "pairwise",
                                                  "value": {"selected": "left"}}])]}
                for k, pid in enumerate(pair_ids)]
    return {"review": rel.review_export(ids, votes), "pairwise": pairwise}


def test_pull_failing_on_the_second_export_changes_nothing(rel, ann_round):
    from annotation.pull import pull_round

    cands, out = ann_round
    pull_round(rel.FakeLabelStudio(_exports(rel, cands)), AnnotationConfig(), 1, cands, out)
    before = rel.tree_hash(out)

    class Flaky(rel.FakeLabelStudio):
        def export_snapshot(self, project_id, title):
            if "pairwise" in title:
                raise LabelStudioError("Label Studio GET .../download failed: cannot connect")
            return super().export_snapshot(project_id, title)

    with pytest.raises(LabelStudioError):       # new labels on the server, but the pull dies half-way
        pull_round(Flaky(_exports(rel, cands, "bad")), AnnotationConfig(), 1, cands, out)
    assert rel.tree_hash(out) == before


def test_pull_killed_after_freezing_the_export_then_rerun_matches_an_uninterrupted_pull(rel, ann_round, monkeypatch,
                                                                                         tmp_path):
    from annotation import pull

    cands, out = ann_round
    client = rel.FakeLabelStudio(_exports(rel, cands))
    ref = pull.pull_round(client, AnnotationConfig(), 1, cands, tmp_path / "ref")
    real = pull._write_dataset

    def dies(*args, **kw):
        raise Killed()

    monkeypatch.setattr(pull, "_write_dataset", dies)
    with pytest.raises(Killed):
        pull.pull_round(client, AnnotationConfig(), 1, cands, out)
    assert (out / "review_export.json").is_file() and not (out / "summary.json").exists()
    monkeypatch.setattr(pull, "_write_dataset", real)
    again = pull.pull_round(client, AnnotationConfig(), 1, cands, out)
    assert again.new_snapshots == [] and again.scored == ref.scored == 4 and again.pairs == ref.pairs == 2
    assert rel.tree_hash(out) == rel.tree_hash(tmp_path / "ref")


# ---- SIGKILL during the discriminator, DPO and distillation training stages (slow) -----------------

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1",
       "WANDB_MODE": "disabled"}
COMMON = {"batch_size": 4, "lr": 1e-3, "lr_schedule": "constant", "lr_warmup_steps": 0, "log_every": 1,
          "checkpoint_every": 2, "checkpoints_keep": 2}
STAGES = {
    "train_discriminator": ({"steps": 12, "heldout_fraction": 0.3, "eval_batch_size": 8, "mode": "lora", "anchors": 0,
                             "lora_rank": 4}, lambda d, m: ["--init", str(m), "--labels", str(d / "labels.json")]),
    "train_dpo": ({"steps": 12, "lora_rank": 4, "val_fraction": 0.2, "val_draws": 1},
                  lambda d, m: ["--init", str(m), "--pairs", str(d / "pairs.json")]),
    "distill": ({"steps": 12, "lora_rank": 4, "reward_mode": "softmax", "reward_temperature": 0.2},
                lambda d, m: ["--teacher", str(m), "--train", str(d / "meta.json")]),
}


@pytest.fixture(scope="module")
def stage_data(tiny_triplets) -> Path:
    """The 10 tiny triplets plus pairs.json (GT preferred over the source) and labels.json (GT good,
    source bad), all in the triplets' folder so every path stays inside it."""
    from rorem_core.data.formats import Pair, read_triplets, write_entries

    root = tiny_triplets.parent
    ts = read_triplets(tiny_triplets)
    write_entries(root / "pairs.json", [Pair(source=t.source, mask=t.mask, preferred=t.GT, rejected=t.source)
                                        for t in ts])
    labels = [{"source": t.source, "mask": t.mask, "GT": gt, "score": s, "id": f"{t.id}-{s}"}
              for t in ts for gt, s in ((t.GT, 1.0), (t.source, 0.0))]
    (root / "labels.json").write_text(json.dumps(labels))
    return root


def _params(tmp: Path, stage: str) -> Path:
    base = {"cache_dir": str(tmp / "cache"), "work_dir": str(tmp / "work"), "wandb_mode": "disabled",
            "device": "cpu", "resolution": 32, "seed": 0}
    path = tmp / "params.yaml"
    path.write_text(yaml.safe_dump({"base": base, stage: {**COMMON, **STAGES[stage][0]}}))
    return path


def _cmd(stage: str, tmp: Path, data: Path, model: Path) -> list[str]:
    return [sys.executable, "-m", f"rorem_core.stages.{stage}", "--params", str(_params(tmp, stage)),
            *STAGES[stage][1](data, model), "--out", str(tmp / "out"), "--metrics", str(tmp / "metrics.json")]


def _run(cmd: list[str]) -> None:
    r = subprocess.run(cmd, env=ENV, capture_output=True, text=True, check=False)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-4000:]


def _flat(d: dict | list, prefix: str = "", drop: set = frozenset()) -> dict:
    """{"a.b": leaf, "a.c.0": leaf} for nested metrics (dicts and lists, e.g. an interval), without the
    keys in ``drop``."""
    out = {}
    for k, v in (d.items() if isinstance(d, dict) else enumerate(d)):
        if k in drop:
            continue
        out.update(_flat(v, f"{prefix}{k}.") if isinstance(v, (dict, list)) else {f"{prefix}{k}": v})
    return out


@pytest.mark.slow
@pytest.mark.parametrize("stage", list(STAGES))
def test_sigkill_during_training_then_rerun_matches_an_uninterrupted_run(stage, stage_data, tiny_model, tmp_path):
    ref, killed = tmp_path / "ref", tmp_path / "killed"
    ref.mkdir(), killed.mkdir()
    _run(_cmd(stage, ref, stage_data, tiny_model))

    kill_after_first_checkpoint(_cmd(stage, killed, stage_data, tiny_model), killed / "work", ENV)
    assert not (killed / "out").exists(), "a killed stage must not leave a finished-looking output"

    _run(_cmd(stage, killed, stage_data, tiny_model))
    metrics = json.loads((killed / "metrics.json").read_text())
    assert metrics["resumed_from"] >= 2 and metrics["resumed_from"] % 2 == 0, "it resumed, not restarted"
    worst = max_weight_diff(ref / "out", killed / "out")
    assert worst < 1e-6, f"{stage}: resumed weights differ from the uninterrupted run by {worst}"
    # the loss and metric history travels in the checkpoints: the reported metrics match too
    got, want = (_flat(m, drop={"resumed_from", "out_dir"}) for m in (metrics, json.loads((ref / "metrics.json").read_text())))
    assert got.keys() == want.keys() and got == pytest.approx(want, abs=1e-6), stage


@pytest.mark.slow
def test_sigkill_during_generation_then_rerun_writes_the_same_candidates(tiny_model, tmp_path):
    """Generation is not resumable (it restarts), but every candidate's noise comes from its own seed,
    so the re-run's manifest and images equal an uninterrupted run's, byte for byte."""
    from rorem_core.data.synthetic import SyntheticConfig, write_pool

    write_pool(tmp_path / "pool", tmp_path / "hidden", SyntheticConfig(size=32, pool_size=12, n_pools=1), 1)
    base = {"cache_dir": str(tmp_path / "cache"), "wandb_mode": "disabled", "device": "cpu", "resolution": 32}
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump({"base": base, "generate": {"num_seeds": 2, "steps": 30, "batch_size": 2}}))

    def cmd(out: Path) -> list[str]:
        return [sys.executable, "-m", "rorem_core.stages.generate", "--params", str(params), "--remover",
                str(tiny_model), "--pool", str(tmp_path / "pool"), "--out", str(out)]

    _run(cmd(tmp_path / "ref" / "round-1"))
    out = tmp_path / "killed" / "round-1"
    proc = subprocess.Popen(cmd(out), env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while not list(out.parent.glob(".round-1.*/results/*.png")):    # part of the pool is written
        assert proc.poll() is None, "generation ended before it could be killed; raise steps"
        assert time.monotonic() < deadline
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not out.exists(), "a killed generation must not leave a manifest under its final name"
    _run(cmd(out))
    ref = {p.relative_to(tmp_path / "ref" / "round-1"): p.read_bytes() for p in (tmp_path / "ref" / "round-1").rglob("*")
           if p.is_file()}
    got = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    assert ref.keys() == got.keys() and len(ref) == 12 * 2 + 12 * 2 + 1
    assert [k for k in ref if ref[k] != got[k]] == []
