"""End to end, for real: the round flow drives the stages of the project's dvc.yaml (tiny preset, small
params) in a temp git + DVC repo, SIMULATED annotators label through a real Label Studio, rounds are
committed, tagged and pushed to a local DVC remote.

The tests share one repository and run in file order (each also works alone: it runs what it needs):
  1. round 1 is killed (SIGKILL of the whole `rorem round` process group) while the remover trains, run
     again and killed while DPO trains (after the human gate), then run a third time: finished stages
     are skipped, both trainings resume from their checkpoints, and the round completes end to end
     (annotations pulled and frozen, committed, tagged, pushed, report written); test 4's fresh clone
     re-runs every stage without a fault and gets the same weights and metrics;
  2. running the finished round again recomputes nothing;
  3. two rounds: the training set grows, the report has two rows, tags round-1 and round-2 exist, a
     fresh clone at round-1 + `dvc pull` restores round 1 and `dvc repro` has nothing to do.
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
from pathlib import Path

import pytest
import yaml

pytestmark = [pytest.mark.integration, pytest.mark.slow]
REPO = Path(__file__).resolve().parents[2]
GIT_ID = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t"}



def sh(cmd, cwd, env=None, check=True) -> str:
    r = subprocess.run(cmd, cwd=cwd, env=env or os.environ, capture_output=True, text=True)
    assert not check or r.returncode == 0, f"{' '.join(map(str, cmd))} failed:\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
    return r.stdout + r.stderr


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def small_params(root: Path, ls_port: int) -> None:
    p = yaml.safe_load((root / "params.yaml").read_text())
    p["base"].update(wandb_mode="disabled", device="cpu")
    p["bootstrap"]["base_unet"] = os.environ.get("ROREM_TEST_BASE_UNET", "shipped")
    p["bootstrap"]["synthetic"].update(n_seed=48, n_test=16, pool_size=6, n_pools=2)
    p["train_remover"].update(steps=6, batch_size=8, lr_warmup_steps=1, checkpoint_every=2)
    p["generate"].update(steps=2, num_seeds=2)
    for section in ("evaluate", "evaluate_dpo", "evaluate_lcm", "evaluate_rl"):
        p[section].update(steps=2, batch_size=8)
    p["annotation"] = {**(p.get("annotation") or {}), "port": ls_port, "project_prefix": "e2e"}
    p.setdefault("report", {"calibration_bins": 10})
    tiny_train = {"lr_warmup_steps": 1, "checkpoint_every": 2, "log_every": 1}
    p["train_discriminator"].update(steps=4, batch_size=8, **tiny_train)
    p["train_dpo"].update(steps=6, batch_size=4, **tiny_train)    # a checkpoint well before the end: killed there
    p["distill"].update(steps=3, batch_size=4, **tiny_train)
    p["train_rl"].update(steps=2, batch_size=4, inputs_per_epoch=2, num_samples=2, sampler_steps=2, test_images=4,
                         **tiny_train)
    (root / "params.yaml").write_text(yaml.safe_dump(p, sort_keys=False))


@pytest.fixture(scope="module")
def e2e(tmp_path_factory, prefect_harness, copy_project):
    from annotation.config import AnnotationConfig
    from annotation.server import TEMPLATE_ENV, TOKEN_ENV, VENV_ENV, LabelStudioServer

    shared = LabelStudioServer(root=REPO, cfg=AnnotationConfig())
    shared.ensure_venv()
    shared.ensure_template()
    base = tmp_path_factory.mktemp("e2e")
    root = copy_project(base / "proj")
    if not (root / "rorem_core/assets/tiny_base").exists():      # only with ROREM_TEST_BASE_UNET=random
        (root / "rorem_core/assets/tiny_base").mkdir(parents=True)
        (root / "rorem_core/assets/tiny_base/README").write_text("placeholder: the shipped base is missing\n")
    small_params(root, _free_port())
    saved = {k: os.environ.get(k) for k in (TOKEN_ENV, VENV_ENV, TEMPLATE_ENV, "WANDB_API_KEY", *GIT_ID)}
    # secrets the round must never write anywhere (checked by the two-round test with find_secrets)
    os.environ.update({TOKEN_ENV: "rorem-e2e-" + secrets.token_hex(8), VENV_ENV: str(shared.venv),
                       TEMPLATE_ENV: str(shared.template), "WANDB_API_KEY": "wandb-e2e-" + secrets.token_hex(16),
                       **GIT_ID})
    sh(["git", "init", "-q"], root)
    sh([str(Path(sys.executable).with_name("dvc")), "init", "-q"], root)
    sh(["git", "add", "-A"], root)
    sh(["git", "commit", "-qm", "project"], root)
    yield {"root": root, "remote": base / "dvc-remote", "base": base}
    sh([sys.executable, "-m", "flows.cli", "labelstudio", "--root", str(root), "down"], root, check=False)
    for k, v in saved.items():
        os.environ.pop(k, None) if v is None else os.environ.__setitem__(k, v)


def run_round(e2e, n: int, **kw):
    from flows.round import RoundParams, rorem_round

    return rorem_round(RoundParams(root=str(e2e["root"]), round=n, dvc_remote=str(e2e["remote"]), **kw))


def ensure_round(e2e, n: int) -> None:
    if not sh(["git", "tag", "-l", f"round-{n}"], e2e["root"]).strip():
        run_round(e2e, n)


def _venv_env() -> dict:
    from tasks.dvc import venv_env

    return venv_env()


def _checkpoints(root: Path, run: str) -> list[Path]:
    return sorted((root / ".rorem/work").glob(f"{run}/**/checkpoint-*/train_state.json"))


def kill_while_training(root: Path, n: int, stage: str = "train_remover") -> None:
    """Start `rorem round n` and SIGKILL its whole process group after ``stage``'s first checkpoint."""
    env = {k: v for k, v in _venv_env().items() if not k.startswith("PREFECT_")}   # its own ephemeral Prefect
    env["PYTHONUNBUFFERED"] = "1"
    log = root.parent / f"killed-round-{n}-{stage}.log"
    proc = subprocess.Popen([sys.executable, "-m", "flows.cli", "round", str(n), "--root", str(root), "--local"],
                            cwd=root, env=env, stdout=open(log, "w"), stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 900
        while not _checkpoints(root, f"{stage}_round-{n}") and proc.poll() is None:
            assert time.monotonic() < deadline, f"{stage}@{n} never wrote a checkpoint"
            time.sleep(0.1)
        assert proc.poll() is None, f"the round ended before it could be killed:\n{log.read_text()[-3000:]}"
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)              # the flow, dvc and the training process
        proc.wait()


def test_round_killed_while_training_then_rerun_completes_end_to_end(e2e):
    root = e2e["root"]
    kill_while_training(root, 1)
    assert not (root / "models/remover/round-1").exists()     # nothing partial under the final name
    state = json.loads((root / ".rorem/rounds/round-1.json").read_text())
    assert state["stage"] == "train_remover@1" and state["status"] == "running"   # as the kill left it

    kill_while_training(root, 1, "train_dpo")                 # the re-run, killed again after the gate
    assert not (root / "models/dpo/round-1").exists()
    trained = json.loads((root / "results/train_remover/round-1.json").read_text())
    assert trained["resumed_from"] >= 2 and trained["steps"] == 6          # resumed, not restarted
    pulled = (root / "data/annotations/round-1/summary.json").read_bytes()
    assert json.loads((root / ".rorem/rounds/round-1.json").read_text())["stage"] == "train_dpo@1"

    s = run_round(e2e, 1)
    assert {s.stages["bootstrap"], s.stages["train_remover@1"]} <= {"cached", "up to date"}
    assert s.stages["train_dpo@1"] == "ran" and s.gate["status"] == "frozen earlier"
    dpo = json.loads((root / "results/train_dpo/round-1.json").read_text())
    assert dpo["resumed_from"] >= 2 and dpo["steps"] == 6
    assert (root / "data/annotations/round-1/summary.json").read_bytes() == pulled   # no label lost or redone
    lock = yaml.safe_load((root / "dvc.lock").read_text())["stages"]
    declared = set(sh(["dvc", "stage", "list", "--name-only"], root, _venv_env()).split())
    assert {d for d in declared if d.endswith("@1") or "@" not in d} <= set(lock)   # everything it drove is locked
    assert (root / "data/annotations/round-1.dvc").is_file()
    summary = json.loads(pulled)
    assert summary["review"]["labeled"] == summary["review"]["tasks"] > 0             # simulated: all labelled
    assert s.tag == "round-1"
    committed = sh(["git", "show", "--name-only", "--format=", "round-1"], root).split()
    assert {"dvc.lock", "data/annotations/round-1.dvc", ".dvc/config"} <= set(committed)
    assert "changed" not in sh(["dvc", "status"], root, _venv_env())
    assert any(p.is_file() for p in e2e["remote"].rglob("*")), "dvc push left the remote empty"
    assert "| 1 | data/pools/round-1 |" in (root / "reports/report.md").read_text()
    assert json.loads((root / ".rorem/rounds/round-1.json").read_text())["status"] == "completed"


def test_rerun_of_a_finished_round_recomputes_nothing(e2e):
    ensure_round(e2e, 1)
    s = run_round(e2e, 1)
    assert set(s.stages.values()) <= {"cached", "not declared"}, s.stages
    assert s.gate["status"] == "frozen earlier" and s.commit is None and s.tag == "round-1"


def test_two_rounds_grow_the_training_set_and_restore_round_1(e2e):
    root = e2e["root"]
    ensure_round(e2e, 1)
    ensure_round(e2e, 2)
    assert {"round-1", "round-2"} <= set(sh(["git", "tag"], root).split())
    rows = json.loads((root / "reports/summary.json").read_text())["table1"]
    assert [r["round"] for r in rows] == [0, 1, 2]
    assert rows[2]["train_total"] > rows[1]["train_total"] > rows[0]["train_total"]
    # nothing two rounds wrote (files, logs, reports, DVC cache, git history) holds a secret
    from annotation.server import TOKEN_ENV
    from tests.helpers.secrets_scan import find_secrets

    assert find_secrets(root, [os.environ[TOKEN_ENV], os.environ["WANDB_API_KEY"]]) == []


def test_fresh_clone_at_round_1_restores_it_and_reproduces_the_same_results(e2e):
    root = e2e["root"]
    ensure_round(e2e, 1)
    clone = e2e["base"] / "clone"
    shutil.rmtree(clone, ignore_errors=True)
    sh(["git", "clone", "-q", str(root), str(clone)], e2e["base"])
    sh(["git", "checkout", "-q", "round-1"], clone)
    sh(["dvc", "pull", "-q"], clone, _venv_env())                    # the remote is named in .dvc/config
    for rel in ("data/annotations/round-1/summary.json", "data/candidates/round-1/candidates.json",
                "models/remover/round-1/train_summary.json", "results/evaluate/round-1/metrics.json"):
        assert (clone / rel).read_bytes() == (root / rel).read_bytes(), rel     # round 1's files, restored
    if sh(["git", "tag", "-l", "round-2"], root).strip():
        assert not (clone / "models/remover/round-2").exists()
    assert "Data and pipelines are up to date" in sh(["dvc", "repro"], clone, _venv_env())
    # fixed seeds, CPU: `dvc repro -f` recomputes every stage of the round (the human export is frozen
    # data, not a stage) and gives the same weights and metrics. Round 1 here was killed and resumed
    # while training the remover and again while training DPO: only `resumed_from` differs (the loss
    # and metric history travels in the checkpoints).
    sh(["dvc", "repro", "-f"], clone, _venv_env())
    provenance = {f"results/{stage}/round-1.json": {"resumed_from"} for stage in ("train_remover", "train_dpo")}
    metrics = sorted(p.relative_to(clone).as_posix() for p in (clone / "results").rglob("*.json"))   # round 1's
    assert len(metrics) >= 12, metrics
    for rel in metrics:
        drop = provenance.get(rel, set())
        mine, again = (json.loads((r / rel).read_text()) for r in (root, clone))
        if isinstance(mine, dict):
            mine, again = ({k: v for k, v in d.items() if k not in drop} for d in (mine, again))
        assert mine == again, f"{rel} differs after dvc repro -f"
    weights = sorted(p.relative_to(clone).as_posix() for p in (clone / "models").rglob("*.safetensors"))
    assert any("discriminator" in w for w in weights) and any("lcm" in w for w in weights)
    for rel in weights:
        assert (clone / rel).read_bytes() == (root / rel).read_bytes(), f"{rel} differs after dvc repro -f"
