"""Config, paths, overlays, pairs, the oracle and the CLI, without a server."""

from __future__ import annotations

import os
import stat

import numpy as np
import pytest
from pydantic import ValidationError

from annotation import cli
from annotation.config import AnnotationConfig, SimulatedConfig
from annotation.overlays import render_overlay
from annotation.paths import PathRefused, inside_root, local_files_url, safe_name, unique_names
from annotation.push import label_config, pair_tasks
from annotation.server import LabelStudioServer, ServerError, _secret
from annotation.simulated import Oracle, _uniforms, read_hidden_gt
from rorem_core.config import ConfigError
from rorem_core.data.formats import read_candidates


def test_config_rejects_typos_remote_hosts_and_impossible_labels():
    with pytest.raises(ValidationError, match="extra"):
        AnnotationConfig(overlapp=2)
    with pytest.raises(ValidationError, match="loopback"):
        AnnotationConfig(host="0.0.0.0")
    with pytest.raises(ValidationError, match="min_labels=3 exceeds annotation.overlap=2"):
        AnnotationConfig(overlap=2, min_labels=3)
    with pytest.raises(ValidationError, match="simulated.local"):
        SimulatedConfig(names=("alice@example.com",))
    assert AnnotationConfig().url == "http://127.0.0.1:8080"


def test_simulated_error_rates_spread_by_disagreement():
    names = tuple(f"sim-annotator-{k}@simulated.local" for k in range(1, 4))
    assert SimulatedConfig(names=names, error_rate=0.1, disagreement=0.0).rates() == [0.1, 0.1, 0.1]
    assert SimulatedConfig(names=names, error_rate=0.0, disagreement=1.0).rates() == [0.0, 0.5, 1.0]
    assert _uniforms(0, 1, "review:a") == _uniforms(0, 1, "review:a") != _uniforms(0, 2, "review:a")


def test_paths_inside_root_and_urls(tmp_path):
    root = tmp_path / "data"
    (root / "a b").mkdir(parents=True)
    img = root / "a b" / "x.png"
    img.write_bytes(b"png")
    assert local_files_url(inside_root(img, root), root) == "/data/local-files/?d=a%20b/x.png"
    outside = tmp_path / "secret.png"
    outside.write_bytes(b"png")
    os.symlink(outside, root / "link.png")
    for bad in (outside, root / "link.png", root / ".." / "secret.png"):
        with pytest.raises(PathRefused, match="outside the served root"):
            inside_root(bad, root)
    with pytest.raises(PathRefused, match="not found"):
        inside_root(root / "missing.png", root)


def test_names_are_safe_and_unique():
    assert safe_name("r1-p0007-s1") == "r1-p0007-s1"
    assert safe_name("../x") != "../x" and "/" not in safe_name("../x")
    names = unique_names([("p1", "/a/src.png"), ("p1", "/b/src.png"), ("p1", "/a/src.png")])
    assert names["/a/src.png"] == "p1" and names["/b/src.png"].startswith("p1-")


def test_overlay_tints_the_mask_and_outlines_it():
    src = np.zeros((8, 8, 3), dtype=np.float32)
    mask = np.zeros((8, 8), dtype=bool)
    mask[2:6, 2:6] = True
    out = render_overlay(src, mask, alpha=0.5)
    assert out[0, 0].tolist() == [0, 0, 0]                    # outside: unchanged
    assert out[2, 2].tolist() == [1, 0, 0]                    # border: pure red
    assert out[3, 3].tolist() == pytest.approx([0.5, 0, 0])   # inside: blended


def test_label_configs_are_versioned_files_without_a_source_key():
    for kind in ("review", "pairwise"):
        xml = label_config(kind)
        assert "$source" not in xml and "<View>" in xml
    assert all(f'value="{r}"' in label_config("review") for r in
               ("object_remains", "artifacts", "new_object", "shadow_or_reflection_left", "smudge", "texture_broken"))


def test_pair_tasks_group_by_input_and_predict_the_higher_score(tmp_path, new_round):
    r = new_round(tmp_path / "data", 1, n_inputs=3)
    cands = read_candidates(r.candidates)
    paths = {c.id: {k: (r.candidates.parent / getattr(c, k)).resolve() for k in ("source", "mask", "result")}
             for c in cands}
    overlays = {c.id: paths[c.id]["source"] for c in cands}
    blind = pair_tasks(cands, paths, overlays, tmp_path / "data", {}, AnnotationConfig())
    assert not any("predictions" in t for t in blind)             # blind review by default
    tasks = pair_tasks(cands, paths, overlays, tmp_path / "data", {}, AnnotationConfig(prefill=True))
    assert len(tasks) == 3 and {t["data"]["input_id"] for t in tasks} == {"p000", "p001", "p002"}
    by_input = {t["data"]["input_id"]: t for t in tasks}
    assert "predictions" not in by_input["p000"]                # no scores for p000's candidates
    d = by_input["p001"]["data"]
    pred = by_input["p001"]["predictions"][0]
    better = "left" if d["candidate_left"].endswith("s0") else "right"   # s0 has score 0.8, s1 0.3
    assert pred["result"][0]["value"]["selected"] == better and pred["score"] == pytest.approx(0.75)


def test_oracle_uses_the_hidden_ground_truth(tmp_path, new_round):
    r = new_round(tmp_path / "data", 1, n_inputs=2)
    oracle = Oracle(read_candidates(r.candidates), r.candidates.parent, read_hidden_gt(r.hidden))
    assert all(oracle.review(c)[0] == "good" for c in r.good)
    assert all(oracle.review(c) == ("bad", ["object_remains"]) for c in r.bad)


def test_secret_file_is_private_and_stable(tmp_path):
    path = tmp_path / "secrets" / "tok"
    first = _secret(path)
    assert _secret(path) == first and len(first) == 40
    assert stat.S_IMODE(path.stat().st_mode) == 0o600 and stat.S_IMODE(path.parent.stat().st_mode) == 0o700


def test_child_env_drops_strays_and_limits_local_files_to_project_data(tmp_path, monkeypatch):
    for k in ("HOST", "PORT", "USERNAME", "LABEL_STUDIO_FOO"):
        monkeypatch.setenv(k, "stray")
    server = LabelStudioServer(root=tmp_path, cfg=AnnotationConfig(), token="tok-123456")
    env = server._env(tmp_path / "d")
    assert not {"HOST", "PORT", "USERNAME", "LABEL_STUDIO_FOO"} & set(env)
    assert env["LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT"] == str((tmp_path / "data").resolve())
    assert env["LABEL_STUDIO_DISABLE_SIGNUP_WITHOUT_LINK"] == "true"
    with pytest.raises(ServerError, match="outside the project"):
        LabelStudioServer(root=tmp_path / "p", cfg=AnnotationConfig(), doc_root=tmp_path / "elsewhere")


def test_cli_status_when_down_and_params_section(tmp_path, capsys):
    (tmp_path / "params.yaml").write_text("annotation:\n  port: 18123\n  overlap: 2\n")
    assert cli.load_config(tmp_path).overlap == 2
    assert cli.main(["labelstudio", "--root", str(tmp_path), "status"]) == 3
    assert "not running (http://127.0.0.1:18123)" in capsys.readouterr().out
    assert cli.main(["--root", str(tmp_path), "down"]) == 0
    assert cli.main(["--root", str(tmp_path), "add-user", "a@b.c", "--password-stdin"]) == 1
    assert "rorem labelstudio up" in capsys.readouterr().err
    (tmp_path / "params.yaml").write_text("annotation:\n  prot: 1\n")
    with pytest.raises(ConfigError, match=r"params.yaml: invalid \[annotation\][\s\S]*annotation\.prot"):
        cli.load_config(tmp_path)
    assert cli.main(["--root", str(tmp_path), "status"]) == 2 and "annotation.prot" in capsys.readouterr().err
