"""The HTTP client without a server: retries, bounded backoff, clear errors, no token in messages."""

from __future__ import annotations

import httpx
import pytest

from annotation.client import LabelStudioClient, LabelStudioError

TOKEN = "secret-token-9f8e7d6c5b4a"


def _client(handler, retries=3) -> tuple[LabelStudioClient, list]:
    calls: list[httpx.Request] = []

    def record(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        return handler(request, len(calls))

    c = LabelStudioClient("http://ls.test:8080", TOKEN, retries=retries, backoff_s=0.0,
                          transport=httpx.MockTransport(record))
    return c, calls


def test_5xx_then_success_is_retried():
    c, calls = _client(lambda req, n: httpx.Response(503) if n < 3 else httpx.Response(200, json={"id": 1}))
    assert c.whoami() == {"id": 1} and len(calls) == 3
    assert calls[0].headers["Authorization"] == f"Token {TOKEN}" and TOKEN not in str(calls[0].url)


def test_persistent_5xx_fails_naming_url_and_fix_without_token():
    c, calls = _client(lambda req, n: httpx.Response(500, text=f"boom, your token was {TOKEN}"), retries=2)
    with pytest.raises(LabelStudioError) as e:
        c.get_project(7)
    msg = str(e.value)
    assert len(calls) == 3                                  # 1 + 2 retries, then give up
    assert "http://ls.test:8080/api/projects/7/" in msg and "rorem labelstudio up" in msg
    assert TOKEN not in msg and TOKEN not in repr(e.value) and e.value.__cause__ is None
    assert TOKEN not in repr(c)


def test_connection_refused_is_retried_then_fails():
    def refuse(req, n):
        raise httpx.ConnectError("Connection refused", request=req)

    c, calls = _client(refuse, retries=2)
    with pytest.raises(LabelStudioError, match="cannot connect.*after 3 attempts"):
        c.users()
    assert len(calls) == 3


def test_creating_posts_are_not_resent_after_a_5xx():
    """The import may have been committed: resending could duplicate tasks (push re-checks instead)."""
    c, calls = _client(lambda req, n: httpx.Response(502))
    with pytest.raises(LabelStudioError) as e:
        c.import_tasks(1, [{"data": {"candidate_id": "a"}}])
    assert len(calls) == 1 and e.value.status == 502


def test_4xx_is_not_retried_and_keeps_the_status():
    c, calls = _client(lambda req, n: httpx.Response(401, json={"detail": "Invalid token."}))
    with pytest.raises(LabelStudioError) as e:
        c.whoami()
    assert len(calls) == 1 and e.value.status == 401 and "Is the server running" not in str(e.value)


def test_real_closed_port_error_names_url_and_command():
    c = LabelStudioClient("http://127.0.0.1:9", TOKEN, retries=1, backoff_s=0.0)
    with pytest.raises(LabelStudioError) as e:
        c.whoami()
    assert "http://127.0.0.1:9/api/current-user/whoami" in str(e.value)
    assert "rorem labelstudio up" in str(e.value) and TOKEN not in str(e.value)
    assert c.health() is False


def test_short_token_is_refused_without_echoing_it():
    with pytest.raises(LabelStudioError, match="ROREM_LABEL_STUDIO_TOKEN") as e:
        LabelStudioClient("http://x", "abc")
    assert "abc" not in str(e.value)                        # the message never echoes the value


def test_paged_task_listing():
    def pages(req, n):
        page = int(req.url.params["page"])
        tasks = [{"id": i} for i in range((page - 1) * 2, min(page * 2, 5))]
        return httpx.Response(200, json={"total": 5, "tasks": tasks})

    c, calls = _client(pages)
    assert [t["id"] for t in c.iter_tasks(3, page_size=2)] == [0, 1, 2, 3, 4] and len(calls) == 3
