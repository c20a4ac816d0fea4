"""Acceptance, end to end: photo-like images (mixed sizes, JPEG, an RGBA PNG, a 16-bit gray PNG, an
EXIF-rotated JPEG) imported with GT as the seed set and the test split and WITHOUT GT as round 1's
pool; simulated annotators are refused on that pool; the round runs with human annotators, whose
answers this test posts through the real Label Studio API as a person's client would (review: the
first seed's result good, the second bad; pairwise: the first seed's side); then the report's human
and discriminator numbers, the exported pipeline (plain diffusers, fresh process) and a full-resolution
`rorem remove` are checked. Tiny preset, small params, a temp git + DVC repo."""

from __future__ import annotations

import json
import os
import re
import secrets
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from tests.flows.test_e2e import GIT_ID, _free_port, sh, small_params
from tests.helpers.photos import scene, write_folder

pytestmark = [pytest.mark.integration, pytest.mark.slow]
REPO = Path(__file__).resolve().parents[2]
PERSON = "photo-annotator@rorem.local"


def answer_like_a_person(root: Path, n: int, stop: threading.Event, posted: dict) -> None:
    """Wait for round n's projects, then label every task through the API as one annotator."""
    from annotation.cli import load_config
    from annotation.convert import BAD, GOOD, PREF, QUALITY
    from annotation.server import LabelStudioServer

    server = LabelStudioServer(root=root, cfg=load_config(root))
    while not stop.is_set():
        time.sleep(2)
        if not server.status()["running"]:
            continue
        with server.client() as c:
            review = c.find_project(server.cfg.project_title(n, "review"))
            pair = c.find_project(server.cfg.project_title(n, "pairwise"))
            if review is None or pair is None:
                continue
            users = {u["email"]: u["id"] for u in c.users()}
            uid = users.get(PERSON) or c.create_user(PERSON)["id"]
            for t in c.iter_tasks(review["id"], include="id,data,annotators"):
                if uid not in (t.get("annotators") or []):
                    ok = t["data"]["candidate_id"].endswith("k0")
                    c.create_annotation(t["id"], [{"from_name": QUALITY, "to_name": "img_result", "type": "choices",
                                                   "value": {"choices": [GOOD if ok else BAD]}}], completed_by=uid)
                    posted["review"] = posted.get("review", 0) + 1
            for t in c.iter_tasks(pair["id"], include="id,data,annotators"):
                if uid not in (t.get("annotators") or []):
                    side = "left" if t["data"]["candidate_left"].endswith("k0") else "right"
                    c.create_annotation(t["id"], [{"from_name": PREF, "to_name": "left", "type": "pairwise",
                                                   "value": {"selected": side}}], completed_by=uid)
                    posted["pairwise"] = posted.get("pairwise", 0) + 1
            if posted.get("review"):
                return


def test_own_photos_round_with_people_export_and_full_resolution_remove(tmp_path_factory, prefect_harness,
                                                                       copy_project, capsys):
    from annotation.config import AnnotationConfig
    from annotation.server import TEMPLATE_ENV, TOKEN_ENV, VENV_ENV, LabelStudioServer
    from flows.cli import main
    from flows.round import RoundParams, rorem_round

    shared = LabelStudioServer(root=REPO, cfg=AnnotationConfig())
    shared.ensure_venv()
    shared.ensure_template()
    base = tmp_path_factory.mktemp("own")
    root = copy_project(base / "proj")
    small_params(root, _free_port())
    p = yaml.safe_load((root / "params.yaml").read_text())
    p["select"]["fraction"] = 1.0                           # every pool input goes to the person
    p["annotation"]["pairwise"] = True
    (root / "params.yaml").write_text(yaml.safe_dump(p, sort_keys=False))
    saved = {k: os.environ.get(k) for k in (TOKEN_ENV, VENV_ENV, TEMPLATE_ENV, *GIT_ID)}
    os.environ.update({TOKEN_ENV: "rorem-own-" + secrets.token_hex(8), VENV_ENV: str(shared.venv),
                       TEMPLATE_ENV: str(shared.template), **GIT_ID})
    stop = threading.Event()
    try:
        sh(["git", "init", "-q"], root)
        sh([str(Path(sys.executable).with_name("dvc")), "init", "-q"], root)
        sh(["git", "add", "-A"], root)
        sh(["git", "commit", "-qm", "project"], root)
        seed = write_folder(base / "seed_photos", n_plain=4)
        test = write_folder(base / "test_photos", n_plain=3)
        pool = write_folder(base / "pool_photos", gt=False, n_plain=3)
        for args in (["seed", seed], ["test", test], ["pool", pool, "--round", "1"]):
            assert main(["import", *map(str, args), "--root", str(root)]) == 0
        capsys.readouterr()
        assert main(["round", "1", "--annotators", "simulated", "--root", str(root)]) == 1
        assert "needs ground truth" in capsys.readouterr().err

        posted: dict = {}
        person = threading.Thread(target=answer_like_a_person, args=(root, 1, stop, posted), daemon=True)
        person.start()
        summary = rorem_round(RoundParams(root=str(root), round=1, annotators="human", poll_interval_s=2.0,
                                          gate_timeout_hours=0.25, dvc_push=False))
        assert posted["review"] == 12 and posted["pairwise"] >= 6, posted

        md = (root / "reports" / "report.md").read_text()
        row = next(line for line in md.splitlines() if line.startswith("| 1 | data/imported/pools/"))
        cells = [c.strip() for c in row.strip("|").split("|")]
        assert cells[2:4] == ["12", "6"] and cells[7] == "50.0%", row      # human judged / accepted / rate
        disc = next(line for line in md.splitlines()[md.splitlines().index("## Discriminator agreement with "
                    "human labels (held-out inputs)") + 2:] if line.startswith("| 1 |"))
        assert re.match(r"\| 1 \| \d+ \| [\d.]+% \|", disc), disc                # held-out labels, accuracy
        from rorem_core.contract import metrics as metrics_path
        from rorem_core.evaluation.report import fmt

        auto = json.loads((root / metrics_path("auto_score", 1)).read_text())   # the discriminator's numbers
        assert cells[4:6] == [fmt(auto["n_candidates"] - auto["n_excluded"]), fmt(auto["n_accepted"])], row
        held = json.loads((root / metrics_path("train_discriminator", 1)).read_text())["heldout"]["all"]
        within = json.loads((root / metrics_path("train_discriminator", 1)).read_text())["heldout_within_input"]
        want = [fmt(held.get(k), kind) for k, kind in (("n", ""), ("accuracy", "%"), ("roc_auc", "3"))] + \
            [fmt((within or {}).get("auc"), "3")] + [fmt(held.get(k), kind) for k, kind in (
                ("ece", "3"), ("human_success_rate", "%"), ("est_success_rate", "%"), ("success_rate_deviation", "%"))]
        assert [c.strip() for c in disc.strip().strip("|").split("|")][1:] == want, disc
        assert "Where the numbers come from" in md and "(gallery.html)" in md
        assert summary.tag == "round-1"

        out = base / "export"
        assert main(["export", str(out), "--round", "1", "--model", "lcm", "--root", str(root)]) == 0
        plain = ("import sys, numpy as np; from PIL import Image; from diffusers import AutoPipelineForInpainting; "
                 "import rorem_core.models.analytic_ae; p = AutoPipelineForInpainting.from_pretrained(sys.argv[1]); "
                 "i = Image.new('RGB', (64, 64), (90, 120, 200)); m = Image.new('L', (64, 64), 0); "
                 "m.paste(255, (20, 20, 40, 40)); "
                 "o = p(prompt='', image=i, mask_image=m, num_inference_steps=4, strength=0.99, guidance_scale=1.0, "
                 "height=64, width=64, output_type='np').images; print(type(p.scheduler).__name__, o.shape)")
        r = subprocess.run([sys.executable, "-c", plain, str(out)], cwd=base, capture_output=True, text=True,
                           env={**os.environ, "HF_HUB_OFFLINE": "1"}, timeout=300)
        assert r.returncode == 0 and "LCMScheduler (1, 64, 64, 3)" in r.stdout, r.stderr[-2000:]
        assert "## Training-set counts" in (out / "README.md").read_text()

        src, _, m = scene(1000, 750, 3)
        Image.fromarray(src).save(base / "big.jpg", quality=95)
        Image.fromarray(m).save(base / "big_mask.png")
        assert main(["remove", str(base / "big.jpg"), str(base / "big_mask.png"), "-o", str(base / "big_out.png"),
                     "--model", "sft@1", "--steps", "3", "--root", str(root)]) == 0
        res, orig = np.asarray(Image.open(base / "big_out.png")), np.asarray(Image.open(base / "big.jpg"))
        from rorem_core.data.fullres import changed_region, default_feather

        outside = ~changed_region(m >= 128, 0, default_feather(750, 1000, 64))
        assert res.shape == (750, 1000, 3) and np.array_equal(res[outside], orig[outside])
    finally:
        stop.set()
        sh([sys.executable, "-m", "flows.cli", "labelstudio", "--root", str(root), "down"], root, check=False)
        for k, v in saved.items():
            os.environ.pop(k, None) if v is None else os.environ.__setitem__(k, v)
