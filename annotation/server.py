"""Label Studio server lifecycle: its own venv, a data dir under the project, start / stop / status.

Layout under the project root (all git-ignored)::

    .venv-ls/                          Label Studio's venv (pinned; cannot share the app venv) [1]
    .rorem/labelstudio/                data dir (SQLite, media), server.pid, server.log
    .rorem/labelstudio-template/       a migrated, user-less data dir; copies start in ~5 s [1]
    .rorem/secrets/labelstudio_token   API token (mode 600) unless ROREM_LABEL_STUDIO_TOKEN is set
    .rorem/secrets/labelstudio_admin_password

[1] ``$ROREM_LABEL_STUDIO_VENV`` / ``$ROREM_LABEL_STUDIO_TEMPLATE`` override these paths.
The server binds ``cfg.host`` (loopback), serves local files only under ``<project>/data``, and
refuses sign-ups without an invite link. The token is passed to the child through its environment
only (never argv, never printed).
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from annotation.client import START_HINT, LabelStudioClient, LabelStudioError
from annotation.config import AnnotationConfig

TOKEN_ENV = "ROREM_LABEL_STUDIO_TOKEN"
ROOT_ENV = "ROREM_PROJECT_ROOT"
VENV_ENV = "ROREM_LABEL_STUDIO_VENV"          # optional: share one server venv between checkouts
TEMPLATE_ENV = "ROREM_LABEL_STUDIO_TEMPLATE"  # optional: share one migrated template (tests, CI)
# get_env(X) in Label Studio also reads bare X: stray values would change the child (ecosystem.md 1.1)
_STRAY_ENV = ("HOST", "PORT", "USERNAME", "PASSWORD", "USER_TOKEN", "DJANGO_SETTINGS_MODULE", "DATABASE_NAME")
# Label Studio runs its feature flags offline (FEATURE_FLAGS_OFFLINE, its default), where every flag is
# False, but still evaluates each one through LaunchDarkly's client: the state-machine pair below is
# evaluated once per task and per annotation on import and export (~10 % of exporting 10,000 tasks).
# An environment value is read before that evaluation, so stating the offline answer skips it.
_FLAGS_OFF = ("fflag_feat_fit_568_finite_state_management", "fflag_feat_fit_710_fsm_state_fields")


class ServerError(RuntimeError):
    """The server could not be installed, started or stopped; the message says how to fix it."""


def find_project_root(start: Path | None = None) -> Path:
    """``$ROREM_PROJECT_ROOT``, else the nearest folder above ``start`` holding params.yaml or .git."""
    if os.environ.get(ROOT_ENV):
        return Path(os.environ[ROOT_ENV]).resolve()
    here = (start or Path.cwd()).resolve()
    for d in (here, *here.parents):
        if (d / "params.yaml").is_file() or (d / ".git").exists():
            return d
    return here


def _secret(path: Path, nbytes: int = 20) -> str:
    """Read a secret file, creating it (mode 600, random hex) on first use."""
    if path.is_file():
        value = path.read_text(encoding="utf-8").strip()
        if len(value) >= 6:
            return value
    path.parent.mkdir(parents=True, exist_ok=True)
    os.chmod(path.parent, 0o700)
    value = secrets.token_hex(nbytes)
    fd = os.open(path.with_suffix(".tmp"), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(value + "\n")
    os.replace(path.with_suffix(".tmp"), path)
    return value


@dataclass
class LabelStudioServer:
    """One managed server. ``data_dir``/``doc_root`` default to the project layout (tests override)."""

    root: Path
    cfg: AnnotationConfig
    data_dir: Path | None = None
    doc_root: Path | None = None
    token: str | None = field(default=None, repr=False)   # never in a repr, log or traceback

    def __post_init__(self) -> None:
        self.root = Path(self.root).resolve()
        self.data_dir = Path(self.data_dir or self.root / ".rorem" / "labelstudio").resolve()
        self.doc_root = Path(self.doc_root or self.root / "data").resolve()
        # strictly below the project and never its state: the root holds .rorem/secrets and .git
        if self.root not in self.doc_root.parents or \
                self.doc_root.relative_to(self.root).parts[0] in (".rorem", ".git", ".dvc"):
            raise ServerError(f"local-files root {self.doc_root} is outside the project's data under "
                              f"{self.root}; it must be the project's data folder")
        self.venv = Path(os.environ.get(VENV_ENV) or self.root / ".venv-ls")
        self.template = Path(os.environ.get(TEMPLATE_ENV) or self.root / ".rorem" / "labelstudio-template")
        self.secrets = self.root / ".rorem" / "secrets"
        self.pid_file = self.data_dir / "server.pid"
        self.log_file = self.data_dir / "server.log"

    # ---- secrets -----------------------------------------------------------------------------
    def api_token(self) -> str:
        """The API token: explicit, else $ROREM_LABEL_STUDIO_TOKEN, else the git-ignored file."""
        if self.token is None:
            self.token = os.environ.get(TOKEN_ENV) or _secret(self.secrets / "labelstudio_token")
        return self.token

    def client(self) -> LabelStudioClient:
        c = self.cfg
        return LabelStudioClient(self.cfg.url, self.api_token(), timeout_s=c.timeout_s, retries=c.retries,
                                 backoff_s=c.backoff_s, backoff_max_s=c.backoff_max_s)

    # ---- install -----------------------------------------------------------------------------
    def ensure_venv(self) -> Path:
        """Create .venv-ls with label-studio==<pinned> once (~1-2.5 min); a stamp marks completion."""
        version = self.cfg.label_studio_version
        stamp = self.venv / f".rorem-label-studio-{version}"
        exe = self.venv / "bin" / "label-studio"
        if stamp.is_file() and exe.is_file():
            return exe
        print(f"creating {self.venv} with label-studio=={version} (takes a few minutes, once)", flush=True)
        shutil.rmtree(self.venv, ignore_errors=True)
        py = shutil.which("python3") or sys.executable
        steps = [[py, "-m", "venv", str(self.venv)],
                 [str(self.venv / "bin" / "python"), "-m", "pip", "install", "--quiet",
                  "--disable-pip-version-check", f"label-studio=={version}"]]
        for cmd in steps:
            r = subprocess.run(cmd, capture_output=True, text=True)
            if r.returncode != 0:
                tail = "\n".join(l for l in (r.stdout + r.stderr).splitlines()
                                 if not l.startswith("WARNING: Location"))[-2000:]
                raise ServerError(f"`{' '.join(cmd)}` failed (exit {r.returncode}):\n{tail}\n"
                                  "check that PyPI is reachable, then rerun `rorem labelstudio install`")
        stamp.touch()
        return exe

    def _env(self, data_dir: Path) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items()
               if k not in _STRAY_ENV and not k.startswith(("LABEL_STUDIO_", "HEARTEX_"))}
        env.update({
            "LABEL_STUDIO_BASE_DATA_DIR": str(data_dir),
            "LABEL_STUDIO_USERNAME": self.cfg.admin_email,
            "LABEL_STUDIO_PASSWORD": _secret(self.secrets / "labelstudio_admin_password", 16),
            "LABEL_STUDIO_USER_TOKEN": self.api_token(),
            "LABEL_STUDIO_ENABLE_LEGACY_API_TOKEN": "true",
            "LABEL_STUDIO_LOCAL_FILES_SERVING_ENABLED": "true",
            "LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT": str(self.doc_root),
            "LABEL_STUDIO_DISABLE_SIGNUP_WITHOUT_LINK": "true",
            "SENTRY_DSN": "", "FRONTEND_SENTRY_DSN": "", "COLLECT_ANALYTICS": "false",
            "LATEST_VERSION_CHECK": "false", "SSRF_PROTECTION_ENABLED": "true",
            "PYTHONWARNINGS": "ignore", "FEATURE_FLAGS_OFFLINE": "true", "FEATURE_FLAGS_FROM_FILE": "false",
            **{flag: "false" for flag in _FLAGS_OFF},
        })
        return env

    def ensure_template(self) -> Path:
        """A migrated data dir without users (``label-studio version`` runs the migrations, ~40 s once)."""
        ok = self.template / f".rorem-template-{self.cfg.label_studio_version}"
        if ok.is_file():
            return self.template
        exe = self.ensure_venv()
        tmp = self.template.with_name(self.template.name + f".tmp{os.getpid()}")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        env = self._env(tmp)
        for key in ("LABEL_STUDIO_USERNAME", "LABEL_STUDIO_PASSWORD", "LABEL_STUDIO_USER_TOKEN"):
            env.pop(key)
        r = subprocess.run([str(exe), "version"], env=env, cwd=tmp, capture_output=True, text=True,
                           stdin=subprocess.DEVNULL)
        if r.returncode != 0 or not (tmp / "label_studio.sqlite3").is_file():
            raise ServerError(f"building the Label Studio template in {tmp} failed:\n{r.stderr[-2000:]}")
        (tmp / ok.name).touch()
        shutil.rmtree(self.template, ignore_errors=True)
        os.replace(tmp, self.template)
        return self.template

    # ---- run ---------------------------------------------------------------------------------
    def pid(self) -> int | None:
        """PID of our running server (from server.pid), or None; a stale file is removed."""
        try:
            pid = int(json.loads(self.pid_file.read_text())["pid"])
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except (OSError, ValueError, KeyError):
            self.pid_file.unlink(missing_ok=True)
            return None
        if b"label-studio" not in cmdline:
            self.pid_file.unlink(missing_ok=True)
            return None
        return pid

    def _port_free(self) -> bool:
        family = socket.AF_INET6 if ":" in self.cfg.host else socket.AF_INET
        with socket.socket(family, socket.SOCK_STREAM) as s:
            return s.connect_ex((self.cfg.host, self.cfg.port)) != 0

    def start(self) -> dict:
        """Start (or find running) and return :meth:`status`. Idempotent."""
        pid = self.pid()
        if pid is not None:  # ours, maybe still starting: wait for it rather than start a second one
            self._wait_healthy(lambda: Path(f"/proc/{pid}").exists())
            self._check_token()
            return self.status()
        if not self._port_free():
            raise ServerError(f"port {self.cfg.port} on {self.cfg.host} is taken by another program; "
                              "stop it or set annotation.port in params.yaml")
        exe = self.ensure_venv()
        if not (self.data_dir / "label_studio.sqlite3").is_file():
            # .env holds Django's SECRET_KEY: each data dir makes its own on first start
            shutil.copytree(self.ensure_template(), self.data_dir, dirs_exist_ok=True,
                            ignore=shutil.ignore_patterns(".env", ".rorem-template-*"))
        self.doc_root.mkdir(parents=True, exist_ok=True)
        cmd = [str(exe), "start", "--no-browser", "--internal-host", self.cfg.host, "--port",
               str(self.cfg.port), "--log-level", "WARNING", "--enable-legacy-api-token"]
        with open(self.log_file, "ab") as log:
            proc = subprocess.Popen(cmd, env=self._env(self.data_dir), cwd=self.data_dir, stdout=log,
                                    stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
        self.pid_file.write_text(json.dumps({"pid": proc.pid, "port": self.cfg.port, "host": self.cfg.host}))
        self._wait_healthy(lambda: proc.poll() is None)
        self._check_token()
        return self.status()

    def _wait_healthy(self, alive: Callable[[], bool]) -> None:
        deadline = time.monotonic() + self.cfg.start_timeout_s
        client = self.client()
        while time.monotonic() < deadline:
            if not alive():
                self.pid_file.unlink(missing_ok=True)
                raise ServerError(f"Label Studio exited during start; last log lines ({self.log_file}):\n"
                                  f"{self._log_tail()}")
            if client.health():
                return
            time.sleep(0.5)
        self.stop()
        raise ServerError(f"Label Studio did not answer {self.cfg.url}/health within "
                          f"{self.cfg.start_timeout_s:.0f} s; log tail:\n{self._log_tail()}")

    def _check_token(self) -> None:
        """The admin token is fixed when the data dir is first used; realign it if the env changed."""
        try:
            self.client().whoami()
        except LabelStudioError as e:
            if e.status != 401:
                raise
            self.run_admin("set-admin-token", {"email": self.cfg.admin_email, "token": self.api_token()})
            self.client().whoami()

    def _log_tail(self, n: int = 30) -> str:
        try:
            lines = self.log_file.read_text(errors="replace").splitlines()[-n:]
        except OSError:
            return "(no log)"
        return "\n".join(lines).replace(self.api_token(), "***")

    def stop(self, timeout_s: float = 15.0) -> bool:
        """Stop our server (SIGTERM to its process group, SIGKILL after ``timeout_s``)."""
        pid = self.pid()
        if pid is None:
            return False
        os.killpg(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and Path(f"/proc/{pid}").exists():
            try:  # reap it if it is our own child (tests), else just wait for it to vanish
                if os.waitpid(pid, os.WNOHANG)[0] == pid:
                    break
            except ChildProcessError:
                pass
            time.sleep(0.2)
        else:
            if Path(f"/proc/{pid}").exists():
                os.killpg(pid, signal.SIGKILL)
        self.pid_file.unlink(missing_ok=True)
        return True

    def status(self) -> dict:
        """Facts safe to print: url, pid, health, version, data dirs (never the token)."""
        pid = self.pid()
        info = {"url": self.cfg.url, "pid": pid, "running": False, "data_dir": str(self.data_dir),
                "local_files_root": str(self.doc_root), "venv": str(self.venv)}
        if pid is not None and self.client().health():
            info["running"] = True
            try:
                info["version"] = self.client().version()
            except LabelStudioError:
                info["version"] = "?"
        return info

    def run_admin(self, command: str, request: dict) -> list[dict]:
        """Run :mod:`annotation.ls_admin` in Label Studio's venv; the request travels on stdin."""
        py = self.ensure_venv().parent / "python"
        script = Path(__file__).with_name("ls_admin.py")
        r = subprocess.run([str(py), "-I", str(script), command], input=json.dumps(request), text=True,
                           env=self._env(self.data_dir), cwd=self.data_dir, capture_output=True)
        if r.returncode != 0:
            last = (r.stderr.strip().splitlines() or ["no output"])[-1]
            raise ServerError(f"ls_admin {command} failed (exit {r.returncode}): {last}; is the data "
                              f"dir {self.data_dir} initialised? {START_HINT}")
        return [json.loads(l) for l in r.stdout.splitlines() if l.startswith("{")]

    def add_users(self, users: list[dict]) -> list[dict]:
        """Create UI accounts ``[{"email", "password", "first_name"?}]`` (no passwords in the answer)."""
        return self.run_admin("create-users", {"users": users})
