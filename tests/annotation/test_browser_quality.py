"""Blind review in a real browser (Debian chromium + playwright): a review task of a round that has a
discriminator opens with no answer chosen; with ``annotation.prefill`` on, the model's verdict is
pre-filled. The instructions (with the round's gold examples and the hotkeys) are shown.

Screenshots go to the test's tmp dir and, when ``ROREM_SCREENS`` names a folder, are copied there.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
from pathlib import Path

import pytest
from playwright.sync_api import TimeoutError as PlaywrightTimeout

from annotation.push import push_round
from tests.annotation.test_browser import ALL_IMAGES_LOADED, EDITOR_IMAGES
from tests.helpers.browser import login

pytestmark = [pytest.mark.integration, pytest.mark.browser]

CHOSEN = r"""() => Array.from(document.querySelectorAll('.lsf-main-view input:checked'))
  .map(i => (i.closest('label') || i.parentElement).innerText.replace(/\[\w+\]$/, '').trim())"""


def _shot(page, tmp_path: Path, name: str) -> None:
    page.screenshot(path=str(tmp_path / name))
    if os.environ.get("ROREM_SCREENS"):
        Path(os.environ["ROREM_SCREENS"]).mkdir(parents=True, exist_ok=True)
        shutil.copyfile(tmp_path / name, Path(os.environ["ROREM_SCREENS"]) / name)


def _login(browser, base: str, ls):
    email, password = f"blind-{secrets.token_hex(3)}@rorem.local", secrets.token_urlsafe(12)
    ls.server.add_users([{"email": email, "password": password}])
    return login(browser, base, email, password)


def _open(page, base: str, project_id: int, task_id: int) -> None:
    page.goto(f"{base}/projects/{project_id}/data?task={task_id}")
    page.wait_for_selector(EDITOR_IMAGES)
    page.wait_for_function(ALL_IMAGES_LOADED, timeout=30_000)
    page.wait_for_timeout(500)   # the editor applies a pre-annotation right after the images load


def _chosen_soon(page, timeout_ms: int = 15_000) -> bool:
    """True once some choice is selected (the editor applies a prediction after the task loaded)."""
    try:
        page.wait_for_function(f"() => ({CHOSEN})().length > 0", timeout=timeout_ms)
        return True
    except PlaywrightTimeout:
        return False


def _review_task(ls, project_id: int, cid: str) -> dict:
    return next(t for t in ls.client.iter_tasks(project_id) if t["data"]["candidate_id"] == cid)


def test_review_is_blind_by_default_and_prefilled_on_request(ls, new_round, browser, tmp_path):  # noqa: F811
    base = ls.client.url
    blind_round = new_round(ls.data, 20, n_inputs=3)
    blind = push_round(ls.client, ls.cfg(overlap=1), 20, blind_round.candidates, ls.data,
                       hidden_meta=blind_round.hidden)
    filled_round = new_round(ls.data, 21, n_inputs=3)
    filled = push_round(ls.client, ls.cfg(overlap=1, prefill=True), 21, filled_round.candidates, ls.data,
                        hidden_meta=filled_round.hidden)
    target = blind_round.good[1]   # input p001: the discriminator scored it 0.8 -> prediction "good"
    task = _review_task(ls, blind.projects["review"], target)
    assert task["total_predictions"] == 0, "blind: the verdict is not in Label Studio (the editor would pre-fill it)"
    setup = json.loads((ls.data / "annotations" / "round-20" / "push.json").read_text())
    assert setup["mode"] == "blind" and setup["predictions"][target]["score"] == 0.8   # kept for the comparison
    project = ls.client.get_project(blind.projects["review"])
    assert project["show_collab_predictions"] is False and project["show_instruction"] is True
    assert "Hotkeys" in project["expert_instruction"] and "<img" in project["expert_instruction"]

    page = _login(browser, base, ls)
    _open(page, base, blind.projects["review"], task["id"])
    _shot(page, tmp_path, "blind_review.png")
    assert page.evaluate(CHOSEN) == [], "blind review: no choice may be pre-selected"
    page.keyboard.press("1")       # the "good" hotkey selects good on a blind task
    _shot(page, tmp_path, "blind_review_hotkey_good.png")
    assert page.evaluate(CHOSEN) == ["good"]
    page.get_by_role("button", name="Instructions").click()
    page.wait_for_function("() => Array.from(document.querySelectorAll('[class*=modal] img'))"
                           ".filter(i => i.complete && i.naturalWidth > 0).length == 4", timeout=30_000)
    _shot(page, tmp_path, "instructions.png")
    page.keyboard.press("Escape")

    ftask = _review_task(ls, filled.projects["review"], filled_round.good[1])
    assert ftask["total_predictions"] == 1
    _open(page, base, filled.projects["review"], ftask["id"])
    if not _chosen_soon(page):
        # seen in 2 of ~8 runs, both right after the 486-annotation test under CPU load: the editor opened
        # the task without its prediction (no prediction tab; cause not found). Open it once more.
        _open(page, base, filled.projects["review"], ftask["id"])
        _chosen_soon(page)
    _shot(page, tmp_path, "prefilled_review.png")
    assert page.evaluate(CHOSEN) == ["good"], "prefill on: the prediction's verdict is pre-selected"
    page.keyboard.press("1")       # the reported confusion: the hotkey toggles a pre-filled choice off
    _shot(page, tmp_path, "prefilled_review_hotkey_good.png")
    # Label Studio 1.23.2 toggles a chosen choice off on its hotkey, so Submit then fails with "quality is
    # required" (docs/annotation.md); blind review never starts with a choice, so the hotkey selects
    assert page.evaluate(CHOSEN) == [], "documented Label Studio behaviour changed: update docs/annotation.md"
    page.close()
