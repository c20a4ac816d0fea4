"""The round flow's logic with a fake stage runner and fake Label Studio tasks (real Prefect test
harness, real git): order, caching on rerun, resume after a kill, next-round bookkeeping, the
polling human gate, versioning."""

import json

import pytest

pytestmark = pytest.mark.integration


def _run(project, **kw):
    from flows.round import RoundParams, rorem_round

    return rorem_round(RoundParams(root=str(project), dvc_push=False, poll_interval_s=0.01, **kw))


def test_round_runs_every_stage_in_order_then_commits_and_tags(prefect_harness, project, fake_runner, fake_gate,
                                                               git_cmd):
    s = _run(project)
    assert fake_runner.calls == ["bootstrap", "train_remover@1", "generate@1", "select@1", "labels@1",
                                 "train_discriminator@1", "auto_score@1", "trainset@1", "build_pairs@1", "train_dpo@1",
                                 "distill@1", "train_rl@1", "evaluate@1", "evaluate_dpo@1", "evaluate_lcm@1",
                                 "evaluate_rl@1", "report"]
    assert fake_gate.calls == ["ensure_label_studio", "push_selection", "simulate_labels", "annotation_progress",
                               "pull_annotations", "freeze_annotations"]
    assert set(s.stages.values()) == {"ran"} and s.round == 1 and s.tag == "round-1"
    assert "round-1" in git_cmd(project, "tag").split()
    committed = git_cmd(project, "show", "--name-only", "--format=", "round-1").split()
    assert {"dvc.lock", "data/annotations/round-1.dvc"} <= set(committed)
    state = json.loads((project / ".rorem/rounds/round-1.json").read_text())
    assert state["status"] == "completed" and state["stages"]["evaluate@1"] == "ran"


def test_a_bad_annotation_section_fails_the_flow_before_any_stage(prefect_harness, project, fake_runner, fake_gate):
    """A run submitted to `rorem serve` or a worker does not pass through the CLI's check."""
    from rorem_core.config import ConfigError

    with (project / "params.yaml").open("a") as f:
        f.write("annotation:\n  gold:\n    share: 1.0\n")
    with pytest.raises(ConfigError, match=r"annotation\.gold\.share=1\.0: must be in \[0, 1\)"):
        _run(project)
    assert fake_runner.calls == [] and fake_gate.calls == []


def test_rerun_of_a_finished_round_recomputes_nothing(prefect_harness, project, fake_runner, fake_gate):
    _run(project)
    fake_runner.calls.clear()
    s = _run(project, round=1)
    assert fake_runner.calls == [] and set(s.stages.values()) == {"cached"}
    assert s.gate["status"] == "frozen earlier" and s.commit is None        # nothing new to commit
    s = _run(project, round=1, use_cache=False)                              # DVC (here: the fake) decides
    assert len(fake_runner.calls) == 17 and s.tag == "round-1"


def test_killed_stage_then_rerun_skips_completed_stages(prefect_harness, project, fake_runner, fake_gate):
    fake_runner.fail_at = {"train_dpo@1"}
    with pytest.raises(RuntimeError, match="killed during train_dpo@1"):
        _run(project)
    state = json.loads((project / ".rorem/rounds/round-1.json").read_text())
    assert state["status"] == "failed" and state["stage"] == "train_dpo@1" and "killed" in state["error"]
    fake_runner.calls.clear()
    s = _run(project)                                   # "the next round" is still round 1: not completed
    assert fake_runner.calls == ["train_dpo@1", "distill@1", "train_rl@1", "evaluate@1", "evaluate_dpo@1",
                                 "evaluate_lcm@1", "evaluate_rl@1", "report"]
    assert s.stages["build_pairs@1"] == "cached" and s.stages["train_dpo@1"] == "ran"
    assert fake_gate.calls.count("push_selection") == 1  # the frozen export is not pulled again


def test_next_round_is_appended_to_params_and_tagged(prefect_harness, project, fake_runner, fake_gate, git_cmd):
    import yaml

    _run(project)
    s = _run(project)
    assert s.round == 2 and s.tag == "round-2"
    text = (project / "params.yaml").read_text()
    assert text.startswith("# rorem test params: this comment must survive")
    assert yaml.safe_load(text)["rounds"]["2"] == {"init": "models/remover/round-1", "train": "data/trainset/round-1",
                                                   "pool": "data/pools/round-2",
                                                   "prev_disc": "models/discriminator/round-1",
                                                   "prev_labels": "data/labels/round-1"}
    assert "train_remover@2" in fake_runner.calls and {"round-1", "round-2"} <= set(git_cmd(project, "tag").split())
    # round-1's commit does not declare round 2: `dvc repro` at that tag has nothing to do
    assert "\"2\"" not in git_cmd(project, "show", "round-1:params.yaml")


def test_undeclared_optional_stage_is_skipped_but_required_one_fails(prefect_harness, project, fake_runner,
                                                                      fake_gate):
    fake_runner.missing = {"train_dpo", "distill"}
    s = _run(project, commit=False)
    assert s.stages["train_dpo"] == "not declared" and s.stages["evaluate@1"] == "ran"
    fake_runner.missing = {"generate"}
    with pytest.raises(RuntimeError, match="declares no stage generate@1"):
        _run(project, commit=False, round=1)


def test_human_gate_without_server_polls_until_the_target(prefect_harness, project, fake_runner, fake_gate):
    fake_gate.progress = [{"round": 1, "done": d, "total": 4, "min_labels": 1} for d in (0, 1, 3, 4)]
    s = _run(project, annotators="human", commit=False)
    assert s.gate["progress"]["done"] == 4 and s.gate["progress"]["resumed_by"] == "poll"
    assert "simulate_labels" not in fake_gate.calls


def test_human_gate_times_out_clearly_and_a_rerun_keeps_waiting(prefect_harness, project, fake_runner, fake_gate):
    from flows.gate import GateTimeout

    fake_gate.progress = [{"round": 1, "done": 1, "total": 4, "min_labels": 1}]
    with pytest.raises(GateTimeout, match="1/4 tasks done"):
        _run(project, annotators="human", commit=False, gate_timeout_hours=1e-6)
    state = json.loads((project / ".rorem/rounds/round-1.json").read_text())
    assert state["status"] == "failed" and "1/4" in state["waiting_for"]
    fake_gate.progress = [{"round": 1, "done": 3, "total": 4, "min_labels": 1}]
    fake_runner.calls.clear()
    s = _run(project, annotators="human", commit=False, target_fraction=0.75)
    assert fake_runner.calls[:1] == ["labels@1"] and s.gate["status"] == "pulled"
