"""Faults against the real Label Studio (session fixture ``ls``), issue 7 §1:

1. a push process SIGKILLed right after the server committed its n-th import: the re-run creates only
   the missing tasks, each task exists once, and the projects hold the same tasks as an uninterrupted
   push of the same round;
2. a pull process SIGKILLed after the first export, after freezing the exports, or half-way through
   writing the datasets: the re-run writes the same files as an uninterrupted pull;
3. Label Studio crashes (SIGKILL of its process group) after committing an import but before its
   answer reaches the client, and is restarted while the push is in flight: the push rides through
   the restart without a duplicate, and the labels stored before the crash are all still there.

The killed processes are real ``python`` processes running ``push_round`` / ``pull_round``; the kill
point is chosen by wrapping one client or pull function in the child (``CHILD`` below).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from annotation import cli
from annotation.client import LabelStudioClient
from annotation.config import SimulatedConfig
from annotation.pull import pull_round
from annotation.push import push_round
from annotation.simulated import simulate_round

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]
SIM = SimulatedConfig(names=("sim-annotator-1@simulated.local", "sim-annotator-2@simulated.local"), error_rate=0.0)

# Runs push_round / pull_round and SIGKILLs itself right after the n-th call of one function returns.
CHILD = r"""
import json, os, signal, sys
from pathlib import Path
from annotation import client as client_mod, pull as pull_mod
from annotation.config import AnnotationConfig
from annotation.server import TOKEN_ENV

spec = json.loads(sys.argv[1])
owner = {"import_tasks": client_mod.LabelStudioClient, "export_snapshot": client_mod.LabelStudioClient,
         "freeze_snapshot": pull_mod, "_write_dataset": pull_mod}[spec["fn"]]
real, calls = getattr(owner, spec["fn"]), [0]

def dies_after(*args, **kw):
    out = real(*args, **kw)
    calls[0] += 1
    if calls[0] == spec["n"]:
        os.kill(os.getpid(), signal.SIGKILL)        # the work is done (committed / written), then death
    return out

setattr(owner, spec["fn"], dies_after)
cfg = AnnotationConfig.model_validate(spec["cfg"])
c = client_mod.LabelStudioClient(spec["url"], os.environ[TOKEN_ENV])
if spec["op"] == "push":
    from annotation.push import push_round
    push_round(c, cfg, spec["round"], Path(spec["candidates"]), Path(spec["doc_root"]))
else:
    pull_mod.pull_round(c, cfg, spec["round"], Path(spec["candidates"]), Path(spec["out"]))
sys.exit(3)                                         # never killed: the test fails on this exit code
"""


def _killed_child(ls, op: str, fn: str, n: int, cfg, **paths: Path) -> None:
    spec = {"op": op, "fn": fn, "n": n, "cfg": cfg.model_dump(mode="json"), "url": ls.client.url,
            "round": paths.pop("round_id"), **{k: str(v) for k, v in paths.items()}}
    r = subprocess.run([sys.executable, "-c", CHILD, json.dumps(spec)], cwd=REPO, env=os.environ,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == -signal.SIGKILL, f"the {op} was not killed after {fn} #{n}:\n{r.stderr[-3000:]}"


def _task_data(client: LabelStudioClient, project_id: int) -> list[str]:
    """Every task's data and prediction count, as sorted JSON lines: duplicates show up as repeats."""
    tasks = client.iter_tasks(project_id, include="id,data,total_predictions")
    return sorted(json.dumps({**t["data"], "n_pred": t.get("total_predictions")}, sort_keys=True) for t in tasks)


def _projects(ls, cfg, round_id: int) -> dict[str, list[str]]:
    out = {}
    for kind in ("review", "pairwise"):
        proj = ls.client.find_project(cfg.project_title(round_id, kind))
        out[kind] = _task_data(ls.client, proj["id"]) if proj else []
    return out


def _files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("n", [1, 2, 4], ids=["first-review-batch", "second-review-batch", "first-pairwise-batch"])
def test_push_killed_after_a_committed_import_then_rerun_completes_without_duplicates(ls, new_round, n):
    round_id = 50 + n                                         # 51, 52, 54: no other test's round
    r = new_round(ls.data, round_id, n_inputs=4)              # 8 review tasks (3 batches), 4 pairs (2 batches)
    ref_cfg = ls.cfg(import_batch=3, project_prefix=f"ref{n}")
    push_round(ls.client, ref_cfg, round_id, r.candidates, ls.data)
    cfg = ls.cfg(import_batch=3, project_prefix=f"killed{n}")
    _killed_child(ls, "push", "import_tasks", n, cfg, round_id=round_id, candidates=r.candidates, doc_root=ls.data)
    committed = _projects(ls, cfg, round_id)
    assert sum(map(len, committed.values())) == min(3 * n, 8) + max(0, 3 * (n - 3)), "the kill lost a commit"

    again = push_round(ls.client, cfg, round_id, r.candidates, ls.data)
    assert sum(again.existing.values()) == sum(map(len, committed.values()))     # only the missing ones sent
    want = _projects(ls, ref_cfg, round_id)
    assert _projects(ls, cfg, round_id) == want and len(want["review"]) == 8 and len(want["pairwise"]) == 4
    assert push_round(ls.client, cfg, round_id, r.candidates, ls.data).created == {"review": 0, "pairwise": 0}


@pytest.fixture(scope="module")
def labelled(ls, new_round, tmp_path_factory):
    """Round 40 pushed and labelled by two simulated annotators, and an uninterrupted pull of it."""
    r = new_round(ls.data, 40, n_inputs=3)
    cfg = ls.cfg(overlap=2, min_labels=2, simulated=SIM)
    push_round(ls.client, cfg, 40, r.candidates, ls.data)
    simulate_round(ls.client, cfg, 40, r.candidates, r.hidden)
    ref = tmp_path_factory.mktemp("pull-ref") / "round-40"
    res = pull_round(ls.client, cfg, 40, r.candidates, ref)
    assert res.scored > 0 and res.pairs > 0
    return r, cfg, ref


@pytest.mark.parametrize("fn,n", [("export_snapshot", 1), ("freeze_snapshot", 2), ("_write_dataset", 1)],
                         ids=["after-the-first-export", "after-freezing-both-exports", "half-way-through-writing"])
def test_pull_killed_then_rerun_writes_what_an_uninterrupted_pull_writes(ls, labelled, fn, n, tmp_path):
    r, cfg, ref = labelled
    out = tmp_path / "round-40"
    _killed_child(ls, "pull", fn, n, cfg, round_id=40, candidates=r.candidates, out=out)
    assert not (out / "summary.json").exists(), "a killed pull must not look complete"
    pull_round(ls.client, cfg, 40, r.candidates, out)
    assert _files(out) == _files(ref)


class DroppingProxy:
    """A TCP proxy in front of Label Studio that, on the ``drop_at``-th import request, lets the server
    commit it, swallows the answer, calls ``on_drop`` (which crashes the server) and cuts the
    connection: the client sees the connection die without an answer, as in a real crash."""

    def __init__(self, upstream_port: int, drop_at: int, on_drop):
        self.upstream, self.drop_at, self.on_drop = upstream_port, drop_at, on_drop
        self.imports, self.dropped = 0, 0
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.sock.accept()
            except OSError:
                return
            try:
                server = socket.create_connection(("127.0.0.1", self.upstream), timeout=5)
            except OSError:                               # the server is down: the client sees a reset
                client.close()
                continue
            server.settimeout(None)
            drop = threading.Event()
            threading.Thread(target=self._up, args=(client, server, drop), daemon=True).start()
            threading.Thread(target=self._down, args=(server, client, drop), daemon=True).start()

    def _up(self, src: socket.socket, dst: socket.socket, drop: threading.Event) -> None:
        """Client -> server. httpx sends one request at a time per connection, so a chunk starting
        with the request line is a new request."""
        for chunk in iter(lambda: _recv(src), b""):
            first = chunk.split(b"\r\n", 1)[0]
            if first.startswith(b"POST ") and b"/import" in first:
                self.imports += 1
                if self.imports == self.drop_at:
                    drop.set()
            _send(dst, chunk)
        _close(src, dst)

    def _down(self, src: socket.socket, dst: socket.socket, drop: threading.Event) -> None:
        for chunk in iter(lambda: _recv(src), b""):
            if drop.is_set():                             # the import's answer: committed, never delivered
                self.dropped += 1
                self.on_drop()
                break
            _send(dst, chunk)
        _close(src, dst)

    def close(self) -> None:
        self.sock.close()


def _recv(s: socket.socket) -> bytes:
    try:
        return s.recv(65536)
    except OSError:
        return b""


def _send(s: socket.socket, data: bytes) -> None:
    try:
        s.sendall(data)
    except OSError:
        pass


def _close(*socks: socket.socket) -> None:
    for s in socks:
        try:
            s.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        s.close()


def test_label_studio_crash_and_restart_mid_push_loses_nothing_and_duplicates_nothing(ls, labelled, new_round,
                                                                                     tmp_path):
    r_done, done_cfg, ref = labelled                       # labels stored before the crash
    r = new_round(ls.data, 41, n_inputs=4)
    cfg = ls.cfg(import_batch=3)
    old_pid, restart = ls.server.pid(), {}

    def crash_and_restart() -> None:
        os.killpg(old_pid, signal.SIGKILL)                # a crash, not a clean shutdown
        os.waitpid(old_pid, 0)                            # our child: reap it so its pid is free
        restart["thread"] = threading.Thread(
            target=lambda: restart.__setitem__("rc", cli.main(["--root", str(ls.root), "up"])))
        restart["thread"].start()

    proxy = DroppingProxy(ls.server.cfg.port, drop_at=2, on_drop=crash_and_restart)
    c = ls.cfg()
    try:
        with LabelStudioClient(proxy.url, ls.token, timeout_s=c.timeout_s, retries=c.retries,
                               backoff_s=c.backoff_s, backoff_max_s=c.backoff_max_s) as client:
            res = push_round(client, cfg, 41, r.candidates, ls.data)
    finally:
        proxy.close()
        if "thread" in restart:
            restart["thread"].join()
    assert proxy.dropped == 1 and restart.get("rc") == 0, "the server was not crashed and restarted mid-push"
    assert ls.server.pid() not in (None, old_pid)
    assert res.created == {"review": 8, "pairwise": 4}
    got = _projects(ls, cfg, 41)
    assert len(got["review"]) == 8 and len(set(got["review"])) == 8 and len(got["pairwise"]) == 4
    after = tmp_path / "round-40"                          # the labels from before the crash, all there
    pull_round(ls.client, done_cfg, 40, r_done.candidates, after)
    assert _files(after) == _files(ref)
