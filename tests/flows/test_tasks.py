"""Pure helpers of the tasks layer: params.yaml round entries, the stage cache key, the push
manifest, the gate target and the wandb summary wrapper (no Prefect server, no services)."""

import json
import sys
import types

import pytest

from rorem_core.data.formats import Candidate, read_candidates, write_candidates
from tasks.annotation import target_reached, write_push_manifest
from tasks.dvc import StageDef, cache_key, record_key, stage_key
from tasks.rounds import (
    Layout,
    add_round,
    declared_rounds,
    hidden_for_pool,
    next_round,
    round_entry,
    update_state,
)
from tasks.tracking import RoundTracker


def test_add_round_keeps_comments_and_refuses_gaps(project):
    before = (project / "params.yaml").read_text()
    assert add_round(project / "params.yaml", 1) is False
    assert add_round(project / "params.yaml", 2) is True
    after = (project / "params.yaml").read_text()
    assert after.startswith(before) and '"2":' in after                 # appended, nothing else touched
    assert declared_rounds(project / "params.yaml")[2] == round_entry(2)
    with pytest.raises(ValueError, match="the next one is 3"):
        add_round(project / "params.yaml", 5)


def test_next_round_is_the_first_unfinished(project, git_cmd):
    params = project / "params.yaml"
    assert next_round(project, params) == 1
    update_state(Layout(project, 1).state, status="completed")
    assert next_round(project, params) == 2
    add_round(params, 2)
    assert next_round(project, params) == 2
    git_cmd(project, "tag", "round-2")                                   # a tag also marks completion
    assert next_round(project, params) == 3


def test_hidden_gt_follows_the_pool():
    assert hidden_for_pool("data/pools/round-3") == "data/hidden/round-3"
    with pytest.raises(ValueError, match="data/pools/round-K"):
        hidden_for_pool("elsewhere/round-3")


def _stage(tmp_path):
    (tmp_path / "code.py").write_text("x = 1\n")
    (tmp_path / "params.yaml").write_text("a: {lr: 1}\nb: 2\n")
    (tmp_path / "out").mkdir()
    return StageDef("s@1", "python code.py", ("code.py", "up/data"), {"params.yaml": ("a.lr",)}, ("out",))


def test_stage_key_tracks_content_params_and_upstream_lock(tmp_path):
    st = _stage(tmp_path)
    lock = {"up@1": {"outs": [{"path": "up/data", "md5": "aaa.dir"}]}}
    k0 = stage_key(tmp_path, st, lock)
    assert stage_key(tmp_path, st, lock) == k0
    (tmp_path / "params.yaml").write_text("a: {lr: 1}\nb: 3\n")        # an undeclared param: same key
    assert stage_key(tmp_path, st, lock) == k0
    (tmp_path / "params.yaml").write_text("a: {lr: 2}\nb: 3\n")
    k1 = stage_key(tmp_path, st, lock)
    assert k1 != k0
    assert stage_key(tmp_path, st, {"up@1": {"outs": [{"path": "up/data", "md5": "bbb.dir"}]}}) != k1
    (tmp_path / "code.py").write_text("x = 2\n")
    assert stage_key(tmp_path, st, lock) != k1


def test_cache_key_is_valid_only_for_the_recorded_lock_entry(tmp_path):
    st = _stage(tmp_path)
    lock = {"up@1": {"outs": [{"path": "up/data", "md5": "aaa.dir"}]}}
    (tmp_path / "dvc.lock").write_text(json.dumps({"stages": lock}))
    key, valid = cache_key(tmp_path, st)
    assert not valid                                                     # never ran
    lock["s@1"] = {"cmd": "python code.py", "outs": [{"path": "out", "md5": "o1.dir"}]}
    (tmp_path / "dvc.lock").write_text(json.dumps({"stages": lock}))
    record_key(tmp_path, st, key)
    assert cache_key(tmp_path, st) == (key, True)
    lock["s@1"]["outs"][0]["md5"] = "o2.dir"                            # another branch's lock entry
    (tmp_path / "dvc.lock").write_text(json.dumps({"stages": lock}))
    assert cache_key(tmp_path, st)[1] is False
    record_key(tmp_path, st, key)
    (tmp_path / "out").rmdir()                                           # output gone from the workspace
    assert cache_key(tmp_path, st)[1] is False


def _candidates(root, n=2):
    cdir = root / "data/candidates/round-1"
    cands = []
    for i in range(n):
        for s in (0, 1):
            for rel in (f"inputs/source/p{i}.png", f"inputs/mask/p{i}.png", f"results/r-p{i}-s{s}.png"):
                (cdir / rel).parent.mkdir(parents=True, exist_ok=True)
                (cdir / rel).write_bytes(b"png")
            cands.append(Candidate(id=f"r-p{i}-s{s}", round=1, input_id=f"p{i}", seed=s, model="m", steps=2,
                                   source=f"inputs/source/p{i}.png", mask=f"inputs/mask/p{i}.png",
                                   result=f"results/r-p{i}-s{s}.png"))
    write_candidates(cdir / "candidates.json", cands)


def test_push_manifest_holds_the_selection_with_scores_and_priorities(project):
    _candidates(project)
    layout = Layout(project, 1)
    path, prio = write_push_manifest(layout)                             # no selection yet: everything
    assert len(read_candidates(path)) == 4 and set(prio.values()) == {0.0}
    layout.selection.parent.mkdir(parents=True)
    layout.selection.write_text(json.dumps({"discriminator": "models/discriminator/round-0", "items": [
        {"id": "r-p1-s0", "input_id": "p1", "priority": 0.9, "reason": "uncertain", "score": 0.48},
        {"id": "r-p0-s1", "input_id": "p0", "priority": 0.1, "reason": "random", "score": None}]}))
    path, prio = write_push_manifest(layout)
    got = {c.id: c for c in read_candidates(path)}
    assert prio == {"r-p0-s1": 0.1, "r-p1-s0": 0.9}
    assert got["r-p1-s0"].score == 0.48 and got["r-p1-s0"].score_model == "models/discriminator/round-0"
    assert got["r-p0-s1"].score is None
    assert (path.parent / got["r-p1-s0"].result).resolve() == (
        project / "data/candidates/round-1/results/r-p1-s0.png").resolve()


@pytest.mark.parametrize("done,total,frac,ok", [(4, 4, 1.0, True), (3, 4, 1.0, False), (3, 4, 0.75, True),
                                                (0, 0, 0.5, False), (1, 3, 1 / 3, True)])
def test_gate_target(done, total, frac, ok):
    assert target_reached({"done": done, "total": total}, frac) is ok


def test_round_tracker_logs_a_flat_row_grouped_by_round(tmp_path, monkeypatch):
    seen = {}

    class Run:
        summary = {}

        def log(self, d):
            seen["log"] = d

        def finish(self):
            seen["finished"] = True

    fake = types.SimpleNamespace(init=lambda **kw: seen.update(init=kw) or Run(), Image=lambda p: f"img:{p}")
    monkeypatch.setitem(sys.modules, "wandb", fake)
    (tmp_path / "rounds.png").write_bytes(b"png")
    t = RoundTracker(tmp_path, 2, mode="offline", project="p")
    row = t.log({"round": 2, "test_success": 0.5, "source": "pool", "missing": None, "nested": {"x": 1}},
                {"rounds": tmp_path / "rounds.png", "absent": tmp_path / "nope.png"})
    assert row == {"round": 2, "test_success": 0.5, "source": "pool"}
    assert seen["init"]["group"] == "round-2" and seen["init"]["mode"] == "offline" and seen["finished"]
    assert seen["log"]["rounds"] == f"img:{tmp_path / 'rounds.png'}" and "absent" not in seen["log"]
    assert t.logged == [{"row": row, "images": ["rounds"]}]
    off = RoundTracker(tmp_path, 2, mode="disabled")
    off.log({"round": 2})
    assert off.logged[0]["row"] == {"round": 2} and "finished" in seen


def test_dvc_output_is_copied_and_each_stage_command_timed():
    import io

    from tasks.dvc import _tee_timed

    lines = [b"Stage 'bootstrap' didn't change, skipping\n", b"Running stage 'a@1':\n", b"> python a\n", b"a out\n",
             b"Updating lock file 'dvc.lock'\n", b"Running stage 'b@1':\n", b"> python b\n", b"b out\n"]
    out = io.BytesIO()
    own = _tee_timed(io.BytesIO(b"".join(lines)), out)
    assert out.getvalue() == b"".join(lines) and set(own) == {"a@1", "b@1"}   # b: no lock line, timed to the end
    assert all(0 <= v < 1 for v in own.values())


def test_stale_dvc_rwlock_entries_of_dead_processes_are_dropped(tmp_path):
    import os
    import subprocess

    from tasks.dvc import clear_stale_rwlock

    dead = subprocess.Popen(["true"])
    dead.wait()
    zombie = subprocess.Popen(["true"])                 # exited, not yet reaped: a zombie, like an orphan
    import time
    time.sleep(0.3)
    me = {"pid": os.getpid(), "cmd": "dvc repro live"}
    lock = {"read": {"/p/a": [{"pid": dead.pid, "cmd": "x"}, me], "/p/b": [{"pid": zombie.pid, "cmd": "z"}]},
            "write": {"/p/c": {"pid": dead.pid, "cmd": "x"}, "/p/d": me}}
    (tmp_path / ".dvc/tmp").mkdir(parents=True)
    (tmp_path / ".dvc/tmp/rwlock").write_text(json.dumps(lock))
    assert clear_stale_rwlock(tmp_path) == sorted({dead.pid, zombie.pid})
    assert json.loads((tmp_path / ".dvc/tmp/rwlock").read_text()) == {"read": {"/p/a": [me]}, "write": {"/p/d": me}}
    assert clear_stale_rwlock(tmp_path) == [] and clear_stale_rwlock(tmp_path / "none") == []
    zombie.wait()
