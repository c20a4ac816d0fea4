"""DVC plumbing for the tasks: run a declared stage (``dvc repro <stage>``), read stage definitions,
and compute the content fingerprint that keys Prefect's task cache.

DVC is the first layer of resumability: ``dvc repro`` skips a stage whose deps, params and cmd match
``dvc.lock``, and a killed stage leaves no lock entry (outputs are written atomically), so running
the round again re-runs exactly what did not finish. The cache key is the second, cheaper layer:

    key(stage) = sha256(cmd, params values, for each dep: the md5 DVC recorded for the upstream
                        output or ``.dvc`` file holding it, else sha256 of its files)

A cached result may be reused only while the key is *valid*: the stage has a ``dvc.lock`` entry,
every output exists, and the key and lock entry are the ones recorded after its last successful
run (``.rorem/stage-keys/<stage>.json``). Anything else (first run, a killed run, params changed
and changed back, a ``dvc.lock`` from another branch) makes the flow refresh the cache, and DVC
decides. Outputs edited by hand are not detected by this layer (``dvc status`` does);
``rorem round --no-cache`` bypasses it.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import yaml

_RAN = re.compile(r"Running stage '([^']+)'")
_HASH_LIMIT = 64 << 20   # bytes: larger undeclared deps are fingerprinted by (size, mtime) instead


class StageFailed(RuntimeError):
    """A DVC stage exited non-zero; the message holds the command, the log file and its tail."""


@dataclass(frozen=True)
class StageDef:
    """One resolved stage of dvc.yaml (foreach expanded): what the fingerprint needs."""

    address: str                                   # e.g. "train_remover@1"
    cmd: str
    deps: tuple[str, ...]                          # paths relative to the root
    params: dict[str, tuple[str, ...]] = field(default_factory=dict)   # params file -> keys
    outs: tuple[str, ...] = ()


@dataclass
class StageRun:
    target: str
    ran: list[str]          # stages DVC actually ran ([] = everything was up to date)
    seconds: float          # wall time of `dvc repro` (DVC's hashing and locking included)
    log: str | None = None
    own_seconds: dict[str, float] = field(default_factory=dict)   # stage -> its command's own time


class StageRunner(Protocol):
    """What the flow needs from whoever executes stages (DVC here, a fake in unit tests)."""

    def declared(self) -> set[str]: ...
    def cache_key(self, target: str) -> tuple[str, bool]: ...
    def run(self, target: str, log: Path, key: str | None = None) -> StageRun: ...


def venv_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """os.environ with this interpreter's bin dir first on PATH, so dvc.yaml's ``python`` is ours."""
    bin_dir = str(Path(sys.executable).parent)
    return {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}", **(extra or {})}


def dvc_exe() -> str:
    exe = Path(sys.executable).with_name("dvc")
    return str(exe) if exe.exists() else "dvc"


def dvc(root: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    """Run ``dvc <args>`` in ``root``; raises with DVC's own message when it fails and ``check``."""
    r = subprocess.run([dvc_exe(), *args], cwd=root, env=venv_env(), capture_output=True, text=True)
    if check and r.returncode != 0:
        raise RuntimeError(f"`dvc {' '.join(args)}` in {root} failed (exit {r.returncode}):\n"
                           f"{(r.stdout + r.stderr).strip()[-3000:]}")
    return r


def load_stage_defs(root: Path) -> dict[str, StageDef]:
    """Every pipeline stage of ``root``/dvc.yaml, resolved by DVC itself (foreach, ${item...})."""
    from dvc.dependency.param import ParamsDependency
    from dvc.repo import Repo
    from dvc.stage import PipelineStage

    rel = lambda p: Path(p).resolve().relative_to(Path(root).resolve()).as_posix()
    out: dict[str, StageDef] = {}
    with Repo(str(root)) as repo:
        for st in repo.index.stages:
            if not isinstance(st, PipelineStage):
                continue
            params = {rel(d.fs_path): tuple(d.params) for d in st.deps if isinstance(d, ParamsDependency)}
            deps = tuple(rel(d.fs_path) for d in st.deps if not isinstance(d, ParamsDependency))
            out[st.name] = StageDef(st.name, st.cmd if isinstance(st.cmd, str) else " && ".join(st.cmd),
                                          deps, params, tuple(rel(o.fs_path) for o in st.outs))
    return out


def read_lock(root: Path) -> dict[str, dict]:
    """``dvc.lock`` stages ({} when there is none yet)."""
    p = Path(root) / "dvc.lock"
    return (yaml.safe_load(p.read_text()) or {}).get("stages", {}) if p.is_file() else {}


def locked_outs(lock: dict[str, dict]) -> dict[str, str]:
    """out path -> md5 recorded in dvc.lock."""
    return {o["path"]: str(o.get("md5") or o.get("hash") or "") for e in lock.values() for o in e.get("outs", [])}


def dvc_file_md5(root: Path, path: str) -> str | None:
    """md5 of ``path`` (or the folder holding it) as frozen by ``dvc add`` in a sibling ``.dvc`` file."""
    p = Path(path)
    for cand in (p, *p.parents):
        f = Path(root) / f"{cand.as_posix()}.dvc"
        if cand.name and f.is_file():
            outs = (yaml.safe_load(f.read_text()) or {}).get("outs") or [{}]
            return f"{cand.as_posix()}:{outs[0].get('md5')}"
    return None


def content_hash(path: Path) -> str:
    """sha256 over (relative name, bytes) of a file or a folder's files; (size, mtime) when huge."""
    files = [path] if path.is_file() else sorted(f for f in path.rglob("*") if f.is_file()
                                                 and "__pycache__" not in f.parts) if path.is_dir() else []
    if not files:
        return "missing"
    h = hashlib.sha256()
    big = sum(f.stat().st_size for f in files) > _HASH_LIMIT
    for f in files:
        h.update(f.relative_to(path).as_posix().encode() if path.is_dir() else b".")
        h.update(f"{f.stat().st_size}:{f.stat().st_mtime_ns}".encode() if big else f.read_bytes())
    return h.hexdigest()


def dep_signature(root: Path, dep: str, outs: dict[str, str]) -> str | None:
    """Content signature of one dep; None when it is (inside) an upstream output not yet locked."""
    for out, md5 in outs.items():
        if dep == out or dep.startswith(out.rstrip("/") + "/"):
            return f"{out}:{md5}" if md5 else None
    return dvc_file_md5(root, dep) or f"{dep}:{content_hash(Path(root) / dep)}"


def param_values(root: Path, params: dict[str, tuple[str, ...]]) -> dict[str, Any]:
    """The values of the listed (dotted) keys in each params file."""
    vals: dict[str, Any] = {}
    for file, keys in params.items():
        data = yaml.safe_load((Path(root) / file).read_text()) or {}
        for key in keys:
            node: Any = data
            for part in key.split("."):
                node = node.get(part) if isinstance(node, dict) else None
            vals[f"{file}:{key}"] = node
    return vals


def stage_key(root: Path, stage: StageDef, lock: dict[str, dict]) -> str:
    """The content key of ``stage`` (module docstring); deps of unlocked upstream outputs hash as such."""
    outs = locked_outs({k: v for k, v in lock.items() if k != stage.address})
    deps = {d: dep_signature(root, d, outs) or "unlocked" for d in stage.deps}
    blob = json.dumps({"cmd": stage.cmd, "params": param_values(root, stage.params), "deps": deps},
                      sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


def _entry_hash(entry: dict | None) -> str | None:
    return hashlib.sha256(json.dumps(entry, sort_keys=True, default=str).encode()).hexdigest() if entry else None


def _key_file(root: Path, address: str) -> Path:
    return Path(root) / ".rorem" / "stage-keys" / f"{address.replace('/', '_')}.json"


def cache_key(root: Path, stage: StageDef) -> tuple[str, bool]:
    """(key, valid): may a result cached under ``key`` be reused now? (module docstring)"""
    lock = read_lock(root)
    key = stage_key(root, stage, lock)
    try:
        rec = json.loads(_key_file(root, stage.address).read_text())
    except (OSError, ValueError):
        rec = {}
    valid = (rec.get("key") == key and rec.get("lock") is not None
             and rec.get("lock") == _entry_hash(lock.get(stage.address))
             and all((Path(root) / o).exists() for o in stage.outs))
    return key, valid


def record_key(root: Path, stage: StageDef, key: str) -> None:
    """After a successful run: remember which key produced the current lock entry."""
    from rorem_core.io import write_json_atomic

    write_json_atomic(_key_file(root, stage.address),
                      {"key": key, "lock": _entry_hash(read_lock(root).get(stage.address))})


def clear_stale_rwlock(root: Path) -> list[int]:
    """Drop ``.dvc/tmp/rwlock`` entries of processes that are dead or zombies; returns their pids.

    DVC removes entries of dead processes itself, but a SIGKILLed ``dvc repro`` whose parent died
    too stays a zombie where nothing reaps orphans (containers without an init), and DVC then
    refuses every later run ("is busy, it is being blocked by (PID n)").
    """
    from rorem_core.io import pid_alive, write_text_atomic

    path = Path(root) / ".dvc" / "tmp" / "rwlock"
    try:
        lock = json.loads(path.read_text())
    except (OSError, ValueError):
        return []
    stale: set[int] = set()
    for mode in ("read", "write"):
        for p, infos in list(lock.get(mode, {}).items()):
            listed = infos if isinstance(infos, list) else [infos]
            gone = {int(i["pid"]) for i in listed if not pid_alive(int(i["pid"]))}
            stale |= gone
            keep = [i for i in listed if int(i["pid"]) not in gone]
            if not keep:
                del lock[mode][p]
            else:
                lock[mode][p] = keep if isinstance(infos, list) else keep[0]
    if stale:
        write_text_atomic(path, json.dumps(lock))
    return sorted(stale)


class DvcRunner:
    """Runs stages with ``dvc repro <target>`` in a subprocess (its own log file per stage)."""

    def __init__(self, root: Path):
        self.root = Path(root)
        self._defs: dict[str, StageDef] | None = None

    @property
    def defs(self) -> dict[str, StageDef]:
        if self._defs is None:
            self._defs = load_stage_defs(self.root)
        return self._defs

    def declared(self) -> set[str]:
        return set(self.defs)

    def cache_key(self, target: str) -> tuple[str, bool]:
        return cache_key(self.root, self.defs[target])

    def run(self, target: str, log: Path, key: str | None = None) -> StageRun:
        """``dvc repro target``; on success records ``key`` as the one behind the new lock entry."""
        stale = clear_stale_rwlock(self.root)
        log.parent.mkdir(parents=True, exist_ok=True)
        t0 = time.perf_counter()
        # same process group as the flow: Ctrl-C or killing the run's group stops the stage too
        proc = subprocess.Popen([dvc_exe(), "repro", target], cwd=self.root, env=venv_env(), stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        try:
            with open(log, "wb") as f:
                if stale:
                    f.write(f"rorem: dropped stale DVC rwlock entries of killed processes {stale}\n".encode())
                own = _tee_timed(proc.stdout, f)
            rc = proc.wait()
        except BaseException:   # interrupted here (Ctrl-C, cancellation): do not leave DVC running
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
            raise
        text = log.read_text(errors="replace")
        if rc != 0:
            raise StageFailed(f"`dvc repro {target}` failed (exit {rc}) in {self.root}; log {log}:\n"
                              + "\n".join(text.splitlines()[-40:]))
        if key is not None and target in self.defs:
            record_key(self.root, self.defs[target], key)
        return StageRun(target, _RAN.findall(text), time.perf_counter() - t0, str(log), own)


def _tee_timed(stream, out) -> dict[str, float]:
    """Copy DVC's output to ``out``; returns each run stage's own command time, seconds: from DVC's
    ``> cmd`` line to its ``Updating lock file`` line (DVC's hashing and bookkeeping excluded)."""
    own: dict[str, float] = {}
    stage, started = None, None
    for line in iter(stream.readline, b""):
        out.write(line)
        text = line.decode(errors="replace")
        m = _RAN.search(text)
        if stage and started is not None and (m or text.startswith("Updating lock file")):
            own[stage] = time.perf_counter() - started     # no lock update line when outs are unchanged
            stage = None
        if m:
            stage, started = m.group(1), None
        elif stage and started is None and text.startswith("> "):
            started = time.perf_counter()
    if stage and started is not None:
        own[stage] = time.perf_counter() - started
    return own
