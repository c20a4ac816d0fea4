"""The report's HTML gallery in headless Debian chromium: every image loads (none broken), the
accepted / rejected / disagreement filters show the right rows, a screenshot is kept as an artifact
(artifacts/gallery/). The round's files are made here (the gallery only reads them)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from rorem_core.data.images import save_png
from rorem_core.evaluation.report import build_report
from tests.helpers.photos import scene

pytestmark = [pytest.mark.browser]
ARTIFACTS = Path(__file__).resolve().parents[2] / "artifacts" / "gallery"


def _png(path: Path, arr) -> str:
    save_png(path, arr if arr.dtype == bool else arr.astype(np.float32) / 255.0)
    return path.name


def make_round(root: Path) -> None:
    """Pool of 3 inputs x 2 candidates: A humans good + disc. accept; B humans bad + disc. accept
    (disagreement); C not sent to humans, disc. rejects both. Test split: 2 inputs x SFT/DPO/LCM and a
    later model (evaluate_rl), which the gallery finds by its stage folder."""
    cand_dir = root / "data/candidates/round-1"
    cands, scored, auto = [], [], []
    disc = {"A": (0.9, 0.7), "B": (0.8, 0.6), "C": (0.2, 0.1)}
    for i, iid in enumerate("ABC"):
        src, gt, m = scene(96 + 16 * i, 64, i)
        _png(cand_dir / "inputs" / f"{iid}_source.png", src)
        _png(cand_dir / "inputs" / f"{iid}_mask.png", m > 0)
        for k in range(2):
            cid = f"r1-{iid}-k{k}"
            _png(cand_dir / "results" / f"{cid}.png", gt)
            cands.append({"id": cid, "round": 1, "input_id": iid, "seed": 10 * i + k, "model": "m", "steps": 2,
                          "source": f"inputs/{iid}_source.png", "mask": f"inputs/{iid}_mask.png",
                          "result": f"results/{cid}.png"})
            auto.append({**cands[-1], "score": disc[iid][k]})
            if iid in "AB":
                scored.append({"id": cid, "score": 1.0 if iid == "A" else 0.0})
    (cand_dir / "candidates.json").write_text(json.dumps({"version": 1, "candidates": cands}))
    for rel, obj in (("data/annotations/round-1/scored/meta.json", scored),
                     ("data/auto/round-1/candidates.json", {"version": 1, "candidates": auto}),
                     ("results/auto_score/round-1.json", {"threshold": 0.5, "n_candidates": 6, "n_accepted": 4})):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(json.dumps(obj))
    for stage in ("evaluate", "evaluate_dpo", "evaluate_lcm", "evaluate_rl"):
        g = root / f"results/{stage}/round-1/gallery"
        index = []
        for j in range(2):
            src, gt, m = scene(80, 60, 20 + j)
            names = {k: _png(g / f"{j:03d}_{k}.png", a) for k, a in
                     (("source", src), ("mask", m > 0), ("GT", gt), ("result", gt))}
            index.append({"id": f"t{j}", **names, "masked_psnr": 25.0 if j == 0 else 12.0, "success": j == 0})
        (g / "index.json").write_text(json.dumps(index))


def visible_rows(page) -> list[str]:
    return page.evaluate("() => Array.from(document.querySelectorAll('.row')).filter(r => r.offsetParent)"
                         ".map(r => r.querySelector('figcaption').textContent)")


def test_gallery_images_load_and_filters_work(tmp_path, browser):
    make_round(tmp_path)
    summary = build_report(tmp_path, tmp_path / "reports", [1])
    assert summary["gallery"] == "gallery.html"
    assert "[Round 1, input by input](gallery.html)" in (tmp_path / "reports/report.md").read_text()
    page = browser.new_page(viewport={"width": 1300, "height": 1000})
    page.route("**/*", lambda route: route.continue_() if route.request.url.startswith("file://") else route.abort())
    page.goto((tmp_path / "reports/gallery.html").as_uri())
    page.wait_for_function("() => Array.from(document.images).every(i => i.complete)")
    imgs = page.evaluate("() => Array.from(document.images).map(i => [i.getAttribute('src'), i.naturalWidth])")
    assert len(imgs) == 3 * 4 + 2 * 7 and all(w > 0 for _, w in imgs), [s for s, w in imgs if not w]
    assert visible_rows(page) == ["source A", "source B", "source C", "source t0", "source t1"]
    text = page.inner_text("body")
    assert "human: bad" in text and "disc.: 0.80 (accept)" in text and "human: not asked" in text
    assert "DPO" in text and "LCM 4-step" in text and "RL\nGT: 25.0 dB" in text
    assert "rejected" in text and "humans and the discriminator disagree" in text     # the legend
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "gallery_all.png"), full_page=True)
    page.click("button[data-filter=disagreement]")
    assert visible_rows(page) == ["source B"]
    assert not page.locator("h2", has_text="Test split").is_visible()     # a section with no row shown hides
    page.screenshot(path=str(ARTIFACTS / "gallery_disagreement.png"), full_page=True)
    page.click("button[data-filter=accepted]")
    assert visible_rows(page) == ["source A", "source t0"]
    page.click("button[data-filter=rejected]")
    assert visible_rows(page) == ["source B", "source C", "source t1"]
    page.click("button[data-filter=all]")
    assert len(visible_rows(page)) == 5
    page.close()


def test_pool_rows_read_the_auto_score_threshold_and_an_empty_min_precision_acceptance(tmp_path):
    from rorem_core.evaluation.gallery import pool_rows

    make_round(tmp_path)
    ok = lambda: {r["id"]: r["disc_ok"] for row in pool_rows(tmp_path, 1) for r in row["results"]}  # noqa: E731
    assert ok() == {"r1-A-k0": True, "r1-A-k1": True, "r1-B-k0": True, "r1-B-k1": True, "r1-C-k0": False,
                    "r1-C-k1": False}                                   # threshold 0.5
    metrics = tmp_path / "results/auto_score/round-1.json"
    metrics.write_text(json.dumps({"threshold": 0.75, "n_accepted": 2}))
    assert [k for k, v in ok().items() if v] == ["r1-A-k0", "r1-B-k0"]
    # min_precision found no threshold: nothing was accepted, so nothing shows as accepted
    metrics.write_text(json.dumps({"threshold": None, "threshold_rule": {"rule": "min_precision"}, "n_accepted": 0}))
    assert not any(ok().values())
