"""Where Prefect keeps the project's state, set before prefect is imported (its settings are read once).

    .rorem/prefect/               PREFECT_HOME: the local server's SQLite DB (flow runs, suspended gates)
    .rorem/prefect/storage/       PREFECT_LOCAL_STORAGE_PATH: persisted task results = the task cache
    .rorem/prefect/server.json    written by ``rorem serve``: {pid, url}; clients then talk to that server

Explicit environment settings win (e.g. PREFECT_API_URL of a team server). Nothing here imports
prefect, so the fast CLI commands stay fast.
"""

from __future__ import annotations

import json
import os
import urllib.request
from pathlib import Path

SERVER_FILE = Path(".rorem/prefect/server.json")


def prefect_home(root: Path) -> Path:
    return Path(root).resolve() / ".rorem" / "prefect"


def served_url(root: Path, timeout_s: float = 2.0) -> str | None:
    """The API URL of this project's ``rorem serve`` server when it answers, else None."""
    try:
        info = json.loads((Path(root) / SERVER_FILE).read_text())
        with urllib.request.urlopen(f"{info['url']}/health", timeout=timeout_s) as r:
            return info["url"] if r.status == 200 else None
    except (OSError, ValueError, KeyError):
        return None


def prefect_env(root: Path, *, api_url: str | None = None) -> dict[str, str]:
    """Set (default) the Prefect variables for ``root`` in os.environ; returns what was set.

    ``api_url``: talk to that server; otherwise a running ``rorem serve`` server of this project,
    otherwise Prefect's ephemeral mode (a temporary local server per process).
    """
    home = prefect_home(root)
    home.mkdir(parents=True, exist_ok=True)
    wanted = {"PREFECT_HOME": str(home), "PREFECT_LOCAL_STORAGE_PATH": str(home / "storage"),
              "PREFECT_RESULTS_PERSIST_BY_DEFAULT": "true", "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
              "DO_NOT_TRACK": "1", "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "90",
              "PREFECT_UI_ENABLED": "true"}
    url = api_url or os.environ.get("PREFECT_API_URL") or served_url(root)
    if url:
        wanted["PREFECT_API_URL"] = url
    set_now = {}
    for k, v in wanted.items():
        if k == "PREFECT_API_URL" and api_url or k not in os.environ:
            os.environ[k] = v
        set_now[k] = os.environ[k]
    return set_now
