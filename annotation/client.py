"""The only code that talks to Label Studio over HTTP (REST API of Label Studio 1.23).

Every call retries connection errors, timeouts and 5xx answers with bounded exponential backoff
(``backoff_s * 2**k``, capped at ``backoff_max_s``), then raises :class:`LabelStudioError` naming
the URL and the command that starts the server. POSTs that create things are retried only when the
request surely never reached the server (connection refused), so a retry cannot duplicate a task;
callers that need more (import) re-check the server state and resend what is missing.
The token is sent as a header only: it is never put in URLs, messages or logs, and every message
is scrubbed of it before it leaves this module.
"""

from __future__ import annotations

import json
import time
from typing import Any, Iterator

import httpx

START_HINT = "start it with `rorem labelstudio up` (check with `rorem labelstudio status`)"
_RETRY_STATUS = {500, 502, 503, 504}
_SAFE_METHODS = {"GET", "HEAD", "PATCH", "PUT", "DELETE"}


class LabelStudioError(RuntimeError):
    """A Label Studio call failed; the message names the URL and the fix, never the token."""

    def __init__(self, message: str, status: int | None = None):
        super().__init__(message)
        self.status = status


class LabelStudioClient:
    """Thin REST client. ``transport`` is for tests (``httpx.MockTransport``)."""

    def __init__(self, url: str, token: str, *, timeout_s: float = 60.0, retries: int = 4,
                 backoff_s: float = 0.5, backoff_max_s: float = 8.0,
                 transport: httpx.BaseTransport | None = None):
        if not token or len(token) < 6:
            raise LabelStudioError("Label Studio API token is empty or shorter than 6 characters; set "
                                   "ROREM_LABEL_STUDIO_TOKEN or run `rorem labelstudio up` once to create it")
        self.url = url.rstrip("/")
        self._token = token
        self.retries, self.backoff_s, self.backoff_max_s = retries, backoff_s, backoff_max_s
        self._http = httpx.Client(base_url=self.url, timeout=timeout_s, transport=transport,
                                  headers={"Authorization": f"Token {token}"})

    def __repr__(self) -> str:  # never show the token, even in a debugger or a Prefect param dump
        return f"LabelStudioClient(url={self.url!r})"

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> "LabelStudioClient":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- transport with retries ------------------------------------------------------------
    def _scrub(self, text: str) -> str:
        return text.replace(self._token, "***") if self._token else text

    def _fail(self, method: str, path: str, reason: str, status: int | None = None) -> LabelStudioError:
        msg = f"Label Studio {method} {self.url}{path} failed: {reason}"
        if status is None or status >= 500:
            msg += f". Is the server running? {START_HINT}"
        return LabelStudioError(self._scrub(msg), status)

    def request(self, method: str, path: str, *, retry_unsafe: bool = False, **kw: Any) -> httpx.Response:
        """One call with retries; returns a 2xx response or raises LabelStudioError."""
        safe = method in _SAFE_METHODS or retry_unsafe
        attempt, reason, status = 0, "", None
        while True:
            try:
                resp = self._http.request(method, path, **kw)
                status = resp.status_code
                if status < 400:
                    return resp
                reason = f"HTTP {status}: {self._scrub(resp.text)[:300]}"  # scrub before cutting: no token prefix
                if status not in _RETRY_STATUS or not safe:
                    raise self._fail(method, path, reason, status) from None
            except httpx.ConnectError as e:  # never reached the server: always safe to resend
                reason, status = f"cannot connect ({e})", None
            except httpx.TransportError as e:  # timeout / dropped: the server may have acted
                reason, status = f"{type(e).__name__} ({e})", None
                if not safe:
                    raise self._fail(method, path, reason) from None
            if attempt >= self.retries:
                raise self._fail(method, path, f"{reason} after {attempt + 1} attempts", status) from None
            time.sleep(min(self.backoff_s * 2 ** attempt, self.backoff_max_s))
            attempt += 1

    def _json(self, method: str, path: str, **kw: Any) -> Any:
        resp = self.request(method, path, **kw)
        if resp.status_code == 204 or not resp.content:
            return None
        try:
            return resp.json()
        except json.JSONDecodeError:
            raise self._fail(method, path, f"answer is not JSON: {self._scrub(resp.text)[:200]!r}",
                             resp.status_code) from None

    # ---- server ------------------------------------------------------------------------------
    def health(self) -> bool:
        """True when /health answers UP (one try, no retries: used for polling)."""
        try:
            r = self._http.get("/health", timeout=5.0)
            return r.status_code == 200 and r.json().get("status") == "UP"
        except (httpx.HTTPError, ValueError):
            return False

    def whoami(self) -> dict:
        return self._json("GET", "/api/current-user/whoami")

    def version(self) -> str:
        return str(self._json("GET", "/api/version").get("release", "?"))

    # ---- projects and storages -----------------------------------------------------------------
    def find_project(self, title: str) -> dict | None:
        """The project with exactly this title (oldest wins if someone duplicated it by hand)."""
        page, found = 1, []
        while True:
            data = self._json("GET", "/api/projects/", params={"page": page, "page_size": 100,
                                                              "title": title})
            rows = data["results"] if isinstance(data, dict) else data
            found += [p for p in rows if p.get("title") == title]
            if not isinstance(data, dict) or not data.get("next"):
                break
            page += 1
        return min(found, key=lambda p: p["id"]) if found else None

    def get_project(self, project_id: int) -> dict:
        return self._json("GET", f"/api/projects/{project_id}/")

    def create_project(self, **fields: Any) -> dict:
        return self._json("POST", "/api/projects/", json=fields)

    def update_project(self, project_id: int, **fields: Any) -> dict:
        return self._json("PATCH", f"/api/projects/{project_id}/", json=fields)

    def local_storages(self, project_id: int) -> list[dict]:
        return self._json("GET", "/api/storages/localfiles/", params={"project": project_id})

    def create_local_storage(self, project_id: int, path: str, title: str) -> dict:
        """A LocalFilesImportStorage record: it authorises /data/local-files/ URLs under ``path``.

        Never synced (a sync would make one task per file)."""
        return self._json("POST", "/api/storages/localfiles/", retry_unsafe=True, json={
            "project": project_id, "path": path, "title": title, "use_blob_urls": True,
            "regex_filter": r".*\.png"})

    # ---- tasks, annotations, users -------------------------------------------------------------
    def iter_tasks(self, project_id: int, *, include: str | None = None, page_size: int = 1000) -> Iterator[dict]:
        """All tasks of a project with their raw data (URLs not resolved).

        ``include`` names the fields to return, e.g. ``"id,data,annotators"``: Label Studio then
        skips serialising annotations and predictions (10,000 tasks: ~8 s instead of ~47 s here).
        ``annotators`` (user ids, skips included), ``total_annotations`` (submitted) and
        ``cancelled_annotations`` are the counters used for progress."""
        page, seen = 1, 0
        params = {"project": project_id, "page_size": page_size, "resolve_uri": "false", "fields": "all"}
        if include:
            params["include"] = include
        while True:
            data = self._json("GET", "/api/tasks/", params={**params, "page": page})
            tasks = data.get("tasks", [])
            yield from tasks
            seen += len(tasks)
            if not tasks or seen >= data.get("total", 0):
                return
            page += 1

    def import_tasks(self, project_id: int, tasks: list[dict]) -> list[int]:
        """Create tasks (with inline predictions/annotations); returns their ids. Not retried on 5xx."""
        data = self._json("POST", f"/api/projects/{project_id}/import",
                          params={"return_task_ids": "true"}, json=tasks)
        return list(data.get("task_ids", []))

    def create_annotation(self, task_id: int, result: list[dict], *, completed_by: int,
                          was_cancelled: bool = False, lead_time: float | None = None) -> dict:
        body: dict[str, Any] = {"result": result, "completed_by": completed_by, "was_cancelled": was_cancelled}
        if lead_time is not None:
            body["lead_time"] = lead_time
        return self._json("POST", f"/api/tasks/{task_id}/annotations/", json=body)

    def users(self) -> list[dict]:
        return self._json("GET", "/api/users/")

    def create_user(self, email: str, *, first_name: str = "", last_name: str = "") -> dict:
        """An account without a password (API use only; UI accounts: ``rorem labelstudio add-user``)."""
        return self._json("POST", "/api/users/", json={
            "email": email, "username": email.split("@")[0], "first_name": first_name, "last_name": last_name})

    # ---- export ------------------------------------------------------------------------------
    def export_snapshot(self, project_id: int, title: str) -> list[dict]:
        """Full JSON export of every task (annotated or not) with annotator identity and predictions.

        The server-side export record is deleted after the download, so pulls leave no files behind.
        """
        ex = self._json("POST", f"/api/projects/{project_id}/exports/", retry_unsafe=True, json={
            "title": title, "serialization_options": {
                "predictions": {"only_id": False}, "annotations__completed_by": {"only_id": False}}})
        try:
            for _ in range(600):  # Community exports complete synchronously; poll in case they don't
                if ex.get("status") == "completed":
                    break
                if ex.get("status") == "failed":
                    raise self._fail("POST", f"/api/projects/{project_id}/exports/", "export failed")
                time.sleep(0.5)
                ex = self._json("GET", f"/api/projects/{project_id}/exports/{ex['id']}")
            data = self._json("GET", f"/api/projects/{project_id}/exports/{ex['id']}/download",
                              params={"exportType": "JSON"})
        finally:
            self.request("DELETE", f"/api/projects/{project_id}/exports/{ex['id']}")
        if not isinstance(data, list):
            raise self._fail("GET", f"/api/projects/{project_id}/exports/", "export is not a JSON list")
        return data
