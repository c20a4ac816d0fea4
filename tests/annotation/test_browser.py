"""The annotator UI in a real browser: Debian chromium driven by playwright (never `playwright install`).

An annotator logs in, opens a review task and a pairwise task, every image must have loaded
(natural width > 0), labels are chosen by clicking and submitted; the pull then contains them.
Screenshots are kept under artifacts/annotation/.
"""

from __future__ import annotations

import secrets
from pathlib import Path

import pytest

from annotation.pull import pull_round
from annotation.push import push_round
from rorem_core.data.formats import read_pairs, read_triplets
from tests.helpers.browser import login

pytestmark = [pytest.mark.integration, pytest.mark.browser]

ARTIFACTS = Path(__file__).resolve().parents[2] / "artifacts" / "annotation"
EDITOR_IMAGES = ".lsf-main-view img"   # the labeling editor's <Image> tags (not the task-list thumbnails)
ALL_IMAGES_LOADED = """() => {
  const imgs = Array.from(document.querySelectorAll('.lsf-main-view img'));
  return imgs.length >= 3 && imgs.every(i => i.complete && i.naturalWidth > 0);
}"""


def _open_task(page, base: str, project_id: int, task_id: int, shot: str) -> list:
    page.goto(f"{base}/projects/{project_id}/data?task={task_id}")
    page.wait_for_selector(EDITOR_IMAGES)
    page.wait_for_function(ALL_IMAGES_LOADED, timeout=30_000)
    sizes = page.evaluate(f"() => Array.from(document.querySelectorAll('{EDITOR_IMAGES}')).map(i => i.naturalWidth)")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / shot))
    return sizes


def _submit(page, task_id: int) -> dict:
    with page.expect_response(lambda r: f"/api/tasks/{task_id}/annotations" in r.url
                              and r.request.method == "POST") as resp:
        page.get_by_role("button", name="Submit").click()
    assert resp.value.status == 201, resp.value.text()
    return resp.value.request.post_data_json


def test_annotator_labels_review_and_pairwise_in_the_ui(ls, new_round, browser):
    r = new_round(ls.data, 10, n_inputs=2)
    cfg = ls.cfg(overlap=1, min_labels=1)
    push = push_round(ls.client, cfg, 10, r.candidates, ls.data)
    email, password = "annotator-ui@rorem.local", secrets.token_urlsafe(12)
    ls.server.add_users([{"email": email, "password": password}])
    base = ls.client.url
    target = r.good[1]  # p001-s0: the model predicts "good" (score 0.8); the human says bad
    review_task = next(t for t in ls.client.iter_tasks(push.projects["review"]) if t["data"]["candidate_id"] == target)
    pair_task = next(t for t in ls.client.iter_tasks(push.projects["pairwise"]) if t["data"]["input_id"] == "p001")

    page = login(browser, base, email, password)

    sizes = _open_task(page, base, push.projects["review"], review_task["id"], "review_ui.png")
    assert len(sizes) == 3 and min(sizes) == 64
    page.get_by_text("bad").first.click()
    page.get_by_text("artifacts").first.click()      # the reason list appears once "bad" is chosen
    page.screenshot(path=str(ARTIFACTS / "review_ui_labelled.png"))
    sent = _submit(page, review_task["id"])
    assert {(i["from_name"], tuple(i["value"]["choices"])) for i in sent["result"]} == {
        ("quality", ("bad",)), ("reason", ("artifacts",))}

    sizes = _open_task(page, base, push.projects["pairwise"], pair_task["id"], "pairwise_ui.png")
    assert len(sizes) == 3 and min(sizes) == 64
    box = page.locator(EDITOR_IMAGES).nth(2).bounding_box()   # overlay, left, right
    page.mouse.click(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    sent = _submit(page, pair_task["id"])
    assert sent["result"][0]["type"] == "pairwise" and sent["result"][0]["value"]["selected"] == "right"
    page.close()

    out = ls.data / "annotations" / "round-10"
    pull_round(ls.client, cfg, 10, r.candidates, out)
    scored = {t.id: t for t in read_triplets(out / "scored" / "meta.json")}
    assert list(scored) == [target]
    assert scored[target].score == 0.0 and scored[target].votes == {email: "bad"}
    assert scored[target].reasons == {"artifacts": 1}
    (pair,) = read_pairs(out / "pairs" / "meta.json")
    assert pair.preferred_id == pair_task["data"]["candidate_right"]
    assert pair.votes == {email: "right"}
