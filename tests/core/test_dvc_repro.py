"""`dvc repro` runs the declared stages in a fresh git + DVC repo, records them in dvc.lock, and a
second `dvc repro` has nothing to do. Here: the stages before the human gate (the round contract's) (a fresh project has no
frozen annotations yet; tests/flows/test_e2e.py reproduces whole rounds, annotations included)."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from rorem_core import contract

pytestmark = pytest.mark.integration


def _run(cmd, cwd, env):
    r = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    assert r.returncode == 0, f"{' '.join(cmd)} failed:\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
    return r.stdout + r.stderr


@pytest.fixture(scope="module")
def clone(tmp_path_factory, copy_project):
    root = copy_project(tmp_path_factory.mktemp("dvcclone") / "proj")
    params = yaml.safe_load((root / "params.yaml").read_text())
    params["base"].update(wandb_mode="disabled", device="cpu")
    params["bootstrap"]["base_unet"] = os.environ.get("ROREM_TEST_BASE_UNET", "shipped")
    params["bootstrap"]["synthetic"].update(n_seed=48, n_test=16, pool_size=6, n_pools=1)
    params["train_remover"].update(steps=3, batch_size=8, lr_warmup_steps=1, checkpoint_every=2)
    params["generate"].update(steps=2, num_seeds=2)
    params["evaluate"].update(steps=2, batch_size=8)
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
           "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@t"}
    _run(["git", "init", "-q"], root, env)
    _run(["dvc", "init", "-q"], root, env)
    _run(["git", "add", "-A"], root, env)
    _run(["git", "commit", "-qm", "init"], root, env)
    return root, env


BEFORE_GATE = [f"{s}@1" for s in contract.BEFORE_GATE]    # + upstream: bootstrap


def test_dvc_repro_runs_every_stage_then_nothing(clone):
    root, env = clone
    _run(["dvc", "repro", *BEFORE_GATE], root, env)
    for out in ("models/base/model_index.json", "models/remover/round-1/rorem_model.json",
                "data/candidates/round-1/candidates.json", "data/selected/round-1/selection.json",
                "results/bootstrap/metrics.json"):
        assert (root / out).is_file(), out
    lock = yaml.safe_load((root / "dvc.lock").read_text())
    assert {"bootstrap", "train_remover@1", "generate@1", "select@1"} <= set(lock["stages"])
    second = _run(["dvc", "repro", *BEFORE_GATE], root, env)
    assert "Data and pipelines are up to date" in second or "didn't change" in second
    status = _run(["dvc", "status", *BEFORE_GATE], root, env)
    assert "up to date" in status
    # past the gate, DVC names what is missing: the frozen human export of the round
    r = subprocess.run(["dvc", "repro", "labels@1"], cwd=root, env=env, capture_output=True, text=True)
    assert r.returncode != 0 and "data/annotations/round-1" in r.stdout + r.stderr


def test_changing_a_stage_param_reruns_only_downstream(clone):
    root, env = clone
    params = yaml.safe_load((root / "params.yaml").read_text())
    params["select"]["fraction"] = 0.5
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    out = _run(["dvc", "repro", *BEFORE_GATE], root, env)
    assert "Running stage 'select@1'" in out
    assert "Running stage 'generate@1'" not in out
    assert "Running stage 'train_remover@1'" not in out and "Running stage 'bootstrap'" not in out
