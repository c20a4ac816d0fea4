"""The one launcher (rorem_core.launch): settings from params, the command it builds, its refusals, and
that launch settings never make a stage stale. Multi-process runs themselves are tested in tests/scale."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from rorem_core.config import ConfigError, load_params
from rorem_core.launch import LaunchSettings, check, command, settings_for
from tasks.dvc import load_stage_defs, stage_key

REPO = Path(__file__).resolve().parents[2]
DVC = shutil.which("dvc") or str(REPO / ".venv" / "bin" / "dvc")
HEAVY = ("train_remover", "generate", "select", "train_discriminator", "auto_score", "train_dpo", "distill",
         "train_rl", "evaluate")


def test_settings_come_from_the_launch_section_with_per_stage_overrides():
    params = {"launch": {"processes": 2, "mixed_precision": "bf16",
                         "stages": {"train_remover": {"processes": 8, "config_file": "configs/accelerate/multi_gpu.yaml"}}}}
    assert settings_for("generate", params) == LaunchSettings(processes=2, mixed_precision="bf16")
    assert settings_for("train_remover", params).processes == 8
    assert settings_for("train_remover", {}) == LaunchSettings()          # no section: one process, in-process
    assert load_params(REPO / "params.yaml")["launch"]["processes"] == 1   # the preset states the section


@pytest.mark.parametrize("launch,why", [
    ({"processes": 0}, "launch.processes"),
    ({"mixed_precision": "fp8"}, "launch.mixed_precision"),
    ({"stages": {"generate": {"procs": 2}}}, "procs"),
    ({"num_machines": 2}, "needs main_address"),
    ({"num_machines": 2, "main_address": "10.0.0.1", "machine_rank": 2}, "below num_machines"),
])
def test_bad_launch_settings_are_one_clear_message(launch, why):
    with pytest.raises(ConfigError, match=why):
        settings_for("generate", {"launch": launch})


def test_one_process_runs_in_process_and_several_go_through_accelerate():
    assert command("rorem_core.stages.generate", ["--round", "1"], LaunchSettings()) is None
    cmd = command("rorem_core.stages.train_remover", ["--params", "params.yaml"], LaunchSettings(
        processes=8, num_machines=2, machine_rank=1, main_address="10.0.0.1", mixed_precision="fp16",
        config_file="configs/accelerate/deepspeed_zero2.yaml"))
    assert cmd[1:] == ["launch", "--config_file", "configs/accelerate/deepspeed_zero2.yaml", "--num_processes", "16",
                       "--num_machines", "2", "--mixed_precision", "fp16", "--machine_rank", "1",
                       "--main_process_ip", "10.0.0.1", "--main_process_port", "29500",
                       "-m", "rorem_core.stages.train_remover", "--params", "params.yaml"]


def test_refusals_before_anything_starts(tmp_path):
    one = LaunchSettings()
    check("rorem_core.stages.generate", one, REPO, (1, "CPU core(s)"))    # fine
    with pytest.raises(ConfigError, match="launch.processes=4 .* has 2 CUDA GPU"):
        check("rorem_core.stages.generate", LaunchSettings(processes=4), REPO, (2, "CUDA GPU(s)"))
    with pytest.raises(ConfigError, match="launch.config_file='configs/accelerate/nope.yaml': no such file"):
        check("rorem_core.stages.generate", LaunchSettings(config_file="configs/accelerate/nope.yaml"), REPO, (8, "x"))
    check("rorem_core.stages.generate", LaunchSettings(config_file="configs/accelerate/multi_gpu.yaml"), REPO, (8, "x"))
    check("rorem_core.stages.generate", LaunchSettings(processes=2), REPO, (8, "x"))    # data-parallel
    check("rorem_core.stages.train_rl", LaunchSettings(processes=2), REPO, (8, "x"))     # rollouts data-parallel
    with pytest.raises(ConfigError, match="does not shard its work across processes"):
        check("rorem_core.stages.bootstrap", LaunchSettings(processes=2), REPO, (8, "x"))


def test_several_cpu_processes_go_through_torchrun():
    """accelerate launch on a CPU-only machine starts one process whatever --num_processes says."""
    cmd = command("rorem_core.stages.generate", ["--round", "1"], LaunchSettings(processes=2), cuda=False)
    assert cmd[1:] == ["-m", "torch.distributed.run", "--nproc_per_node", "2", "--nnodes", "1", "--node_rank", "0",
                       "--master_addr", "127.0.0.1", "--master_port", "29500", "-m", "rorem_core.stages.generate",
                       "--round", "1"]


def _launch(tmp_path: Path, launch: dict, *stage: str) -> subprocess.CompletedProcess:
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["launch"] = launch
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    return subprocess.run([sys.executable, "-m", "rorem_core.launch", *stage, "--params", str(tmp_path / "params.yaml"),
                           "--root", str(tmp_path), "--out", str(tmp_path / "reports")],
                          cwd=REPO, capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("launch,why", [({"processes": 100000}, "but this machine has"),
                                        ({"config_file": "configs/accelerate/missing.yaml"}, "no such file")])
def test_the_entry_point_refuses_with_one_message_and_writes_nothing(tmp_path, launch, why):
    r = _launch(tmp_path, launch, "rorem_core.stages.report")
    assert r.returncode == 2 and why in r.stderr and r.stderr.count("error:") == 1, r.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["params.yaml"]


def test_one_process_is_the_stage_itself_in_this_process(tmp_path):
    r = _launch(tmp_path, {"processes": 1}, "rorem_core.stages.report", "--help")
    assert r.returncode == 0 and "usage: python -m rorem_core.stages.report" in r.stdout, r.stderr


def test_heavy_stages_go_through_the_launcher_and_launch_settings_never_make_them_stale(tmp_path):
    shutil.copy(REPO / "dvc.yaml", tmp_path / "dvc.yaml")
    shutil.copy(REPO / "params.yaml", tmp_path / "params.yaml")
    subprocess.run(["git", "init", "-q"], cwd=tmp_path, check=True)
    subprocess.run([DVC, "init", "-q"], cwd=tmp_path, check=True)
    stages = load_stage_defs(tmp_path)
    launched = {n for n, s in stages.items() if s.cmd.startswith("python -m rorem_core.launch rorem_core.stages.")}
    assert {n.split("@")[0] for n in launched} >= set(HEAVY) and "report" not in launched
    assert not any(k == "launch" or k.startswith("launch.") for s in stages.values() for ks in s.params.values() for k in ks)
    before = {n: stage_key(tmp_path, s, {}) for n, s in stages.items()}
    params = yaml.safe_load((tmp_path / "params.yaml").read_text())
    params["launch"] = {"processes": 8, "mixed_precision": "bf16", "stages": {"train_remover": {"processes": 4}}}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    assert {n: stage_key(tmp_path, s, {}) for n, s in stages.items()} == before
    params["train_remover"]["lr"] = params["train_remover"]["lr"] * 2      # a declared param does change the key
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    after = {n: stage_key(tmp_path, s, {}) for n, s in stages.items()}
    assert {n for n in stages if after[n] != before[n]} == {n for n in stages if n.startswith("train_remover@")}
