"""The `rorem` command's orchestration subcommands without running a round: argument mapping,
status from state files, report, resume without a server. Fast: no Prefect server."""

import json
import time

import pytest

from flows import cli
from tasks.rounds import Layout, add_round, update_state


def test_round_arguments_map_onto_the_flow_parameters(project):
    args = cli.round_parser().parse_args(["3", "--annotators", "human", "--min-labels", "2", "--target-fraction",
                                          "0.5", "--no-cache", "--no-commit", "--no-push", "--poll", "5"])
    p = cli.round_params(args, project)
    assert (p.round, p.annotators, p.min_labels, p.target_fraction, p.poll_interval_s) == (3, "human", 2, 0.5, 5.0)
    assert not (p.use_cache or p.commit or p.tag or p.dvc_push) and p.root == str(project)
    d = cli.round_params(cli.round_parser().parse_args([]), project)
    assert d.round is None and d.annotators == "simulated" and d.commit and d.dvc_push


def test_status_reports_stage_waiting_and_errors(project, capsys, git_cmd):
    add_round(project / "params.yaml", 2)
    update_state(Layout(project, 1).state, status="completed", stage=None)
    git_cmd(project, "tag", "round-1")
    update_state(Layout(project, 2).state, status="waiting", stage="gate", started=time.time(),
                 waiting_for="annotations of round 2: 3/10 tasks done (target 100%, min 1 label(s) each)")
    assert cli.main(["status", "--root", str(project)]) == 0
    out = capsys.readouterr().out
    assert "round 1: completed" in out and "[round-1]" in out and "round 2: waiting, stage gate" in out
    assert "current round: 2 (waiting)" in out and "waiting for annotations of round 2: 3/10" in out
    assert "prefect server: not running" in out
    update_state(Layout(project, 2).state, status="failed", error="StageFailed: boom", waiting_for=None)
    assert cli.main(["status", "--root", str(project), "--json"]) == 0
    s = json.loads(capsys.readouterr().out)
    assert s["current"] == 2 and s["rounds"]["2"]["error"] == "StageFailed: boom" and s["rounds"]["1"]["tag"] == "round-1"


def test_report_without_a_dvc_stage_runs_the_stage_module(project, capsys):
    (project / "results/evaluate/round-1").mkdir(parents=True)
    (project / "results/evaluate/round-1/metrics.json").write_text(json.dumps(
        {"remover": {"all": {"n": 4, "masked_psnr": 21.5, "unmasked_psnr": 40.0, "success_rate": 0.5}}}))
    assert cli.main(["report", "--root", str(project)]) == 0
    assert f"report: {project / 'reports' / 'report.md'}" in capsys.readouterr().out
    # success by the PSNR rule 50 %, by the judge n/a (this evaluation predates it), masked PSNR
    assert "| 1 | data/pools/round-1 | n/a | n/a | n/a | n/a | n/a | n/a | n/a | 50.0% | n/a | 21.50 |" in (
        project / "reports/report.md").read_text()


def test_resume_needs_the_served_server(project, capsys, monkeypatch):
    import os

    for key in [k for k in os.environ if k.startswith("PREFECT_")] + ["PREFECT_LOCAL_STORAGE_PATH",
                                                                       "PREFECT_RESULTS_PERSIST_BY_DEFAULT"]:
        monkeypatch.setenv(key, os.environ.get(key, ""))   # restored after the test: prefect_env sets defaults
        if not os.environ[key]:
            monkeypatch.delenv(key)
    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    assert cli.main(["resume", "--root", str(project)]) == 1
    assert "start it first" in capsys.readouterr().err


def test_unknown_command_prints_usage(capsys):
    assert cli.main(["nope"]) == 2 and "rorem round" in capsys.readouterr().out


def test_watcher_marks_a_round_whose_suspended_run_is_gone_as_failed(project, monkeypatch):
    """A run that crashed before its suspension reached the server cannot be resumed: the watcher says so
    once (state failed, with the fix) instead of trying every poll; a resumable round is still resumed."""
    from flows import serve
    from flows.serve import RunGone

    add_round(project / "params.yaml", 2)
    for n in (1, 2):
        update_state(Layout(project, n).state, round=n, status="waiting", flow_run_id=f"run-{n}")
    monkeypatch.setattr("tasks.annotation.annotation_progress.fn", lambda *a: {"done": 4, "total": 4})
    monkeypatch.setattr("tasks.annotation.target_reached", lambda prog, f: True)

    def fake_resume(run_id, source, note=""):
        if run_id == "run-1":
            raise RunGone("Prefect has the run Crashed: it cannot be resumed; run the round again")
        return True

    monkeypatch.setattr(serve, "resume", fake_resume)
    assert serve.check_and_resume(project) == [2]
    st = json.loads(Layout(project, 1).state.read_text())
    assert st["status"] == "failed" and "run the round again" in st["error"] and st["flow_run_id"] is None
    assert [s["round"] for s in serve.waiting_rounds(project)] == [2]     # round 1 is no longer polled


@pytest.mark.parametrize("share", [1.0, -0.1])
def test_a_gold_share_outside_zero_one_stops_the_round_before_any_stage(project, capsys, monkeypatch, share):
    """The annotation section is first used at the gate; a bad one must not cost the stages before it."""
    import flows.round

    started = []
    monkeypatch.setattr(flows.round, "rorem_round", lambda *a, **k: started.append(a))
    with (project / "params.yaml").open("a") as f:
        f.write(f"annotation:\n  gold:\n    share: {share}\n")
    before = {p: p.read_bytes() for p in project.rglob("*") if p.is_file() and ".git" not in p.parts}
    assert cli.main(["round", "1", "--root", str(project), "--no-commit", "--no-push"]) == 1
    err = capsys.readouterr().err
    assert str(project / "params.yaml") in err and f"annotation.gold.share={share}: must be in [0, 1)" in err
    assert started == []
    assert {p: p.read_bytes() for p in project.rglob("*") if p.is_file() and ".git" not in p.parts} == before
