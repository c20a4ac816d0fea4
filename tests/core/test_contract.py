"""The round contract, the presets and dvc.yaml agree: every preset validates and resolves dvc.yaml,
dvc.yaml declares exactly the contract's stages and paths, every stage depends on every project
module its entry point imports, and the code defaults are the tiny preset."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from rorem_core import contract
from rorem_core.config import STAGES, ConfigError, load_params, parse_rounds, stage_config
from tests.helpers.stage_deps import closure, entry_module, missing_deps, resolved_stages

REPO = Path(__file__).resolve().parents[2]
PRESETS = sorted(p.name for p in REPO.glob("params*.yaml"))
DVC = shutil.which("dvc") or str(Path(__file__).resolve().parents[2] / ".venv" / "bin" / "dvc")


def dvc_project(tmp: Path, preset: str) -> Path:
    """A git + DVC repo holding dvc.yaml and ``preset`` as params.yaml (what `cp X params.yaml` gives)."""
    shutil.copy(REPO / "dvc.yaml", tmp / "dvc.yaml")
    shutil.copy(REPO / preset, tmp / "params.yaml")
    subprocess.run(["git", "init", "-q"], cwd=tmp, check=True)
    subprocess.run([DVC, "init", "-q"], cwd=tmp, check=True)
    return tmp


def test_presets_exist():
    assert {"params.yaml", "params.sdxl.yaml"} <= set(PRESETS)


@pytest.mark.parametrize("preset", PRESETS)
def test_every_preset_validates_and_resolves_dvc_yaml(preset, tmp_path):
    params = load_params(REPO / preset)            # typed: base, rounds, every stage section
    assert parse_rounds(params["rounds"]), f"{preset} declares no round"
    proj = dvc_project(tmp_path, preset)
    r = subprocess.run([DVC, "stage", "list"], cwd=proj, capture_output=True, text=True)
    assert r.returncode == 0, f"`cp {preset} params.yaml && dvc stage list` failed:\n{r.stderr}"
    assert "train_remover@1" in r.stdout


@pytest.mark.parametrize("preset", [p for p in PRESETS if p != "params.yaml"])
def test_other_presets_state_a_section_for_every_stage(preset):
    params = load_params(REPO / preset)
    missing = [s for s in STAGES if s not in params]
    assert not missing, f"{preset} has no section for {missing}; state one (the defaults are the tiny preset's)"


def test_code_defaults_are_the_tiny_preset():
    """An empty section gives exactly what params.yaml states, so the code is not a third preset."""
    params = load_params(REPO / "params.yaml")
    for stage in STAGES:
        from_file = stage_config(stage, params).model_dump()
        defaults = stage_config(stage, {"base": params["base"]}).model_dump()
        diff = {k: (defaults[k], v) for k, v in from_file.items() if defaults[k] != v}
        assert not diff, f"[{stage}] code default != params.yaml (default, file): {diff}"
    base = stage_config("evaluate", {}).base.model_dump()
    assert base == stage_config("evaluate", params).base.model_dump(), "base defaults differ from params.yaml"


def test_a_round_missing_a_key_names_round_key_and_fix(tmp_path):
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    del params["rounds"]["1"]["prev_disc"]
    bad = tmp_path / "params.yaml"
    bad.write_text(yaml.safe_dump(params))
    with pytest.raises(ConfigError, match=r"rounds\.1\.prev_disc: missing; add `prev_disc: models/discriminator/round-0`"):
        load_params(bad)


def test_dvc_yaml_declares_exactly_the_contract(tmp_path):
    """Stage names, outputs and metrics of dvc.yaml are the contract's, for two declared rounds."""
    proj = dvc_project(tmp_path, "params.yaml")
    params = yaml.safe_load((proj / "params.yaml").read_text())
    params["rounds"]["2"] = contract.round_entry(2)
    (proj / "params.yaml").write_text(yaml.safe_dump(params))
    from dvc.repo import Repo

    with Repo(str(proj)) as repo:
        got = {s.name: ({o.def_path for o in s.outs if not o.metric}, {o.def_path for o in s.outs if o.metric})
               for s in repo.index.stages}
    want = {"bootstrap": (set(contract.BOOTSTRAP_OUTS), {contract.BOOTSTRAP_METRICS}),
            "report": ({contract.REPORT_DIR}, set())}
    for n in (1, 2):
        for stage in contract.ROUND_STAGES:
            want[f"{stage}@{n}"] = (set(contract.outs(stage, n)),
                                    {contract.metrics(stage, n)} if stage in contract.METRICS else set())
    assert got == want


def test_a_stage_reading_a_lora_model_depends_on_the_models_under_its_adapter(tmp_path):
    """A DPO / LCM / RL model's ref names adapters in other outputs (models/loading.py): every stage
    that reads one lists those outputs as deps, for two declared rounds."""
    proj = dvc_project(tmp_path, "params.yaml")
    params = yaml.safe_load((proj / "params.yaml").read_text())
    params["rounds"]["2"] = contract.round_entry(2)
    (proj / "params.yaml").write_text(yaml.safe_dump(params))
    stages = resolved_stages(proj)
    checked = set()
    for name, (_, deps) in stages.items():
        for n in (1, 2):
            for model, under in contract.MODEL_STACK.items():
                if model.format(n=n) in deps:
                    checked.add(name)
                    missing = {u.format(n=n) for u in under} - set(deps)
                    assert not missing, f"{name}: reads {model.format(n=n)} but does not depend on {missing}"
    assert checked == {f"{s}@{n}" for s in ("distill", "evaluate_dpo", "evaluate_lcm", "evaluate_rl") for n in (1, 2)}


def test_round_entries_follow_the_contract():
    declared = parse_rounds(yaml.safe_load((REPO / "params.yaml").read_text())["rounds"])
    for n, spec in declared.items():
        assert spec.model_dump() == contract.round_entry(n)
    assert contract.round_entry(3)["init"] == contract.RoundPaths(2).remover


def test_every_stage_depends_on_every_module_it_imports(tmp_path):
    stages = resolved_stages(dvc_project(tmp_path, "params.yaml"))
    assert len(stages) == len(contract.DVC_STAGES)
    assert missing_deps(stages) == {}, "add these files (or their folder) to the stages' deps in dvc.yaml"


def test_each_stage_runs_the_module_named_after_it_and_has_a_registered_config(tmp_path):
    """``name@N`` runs rorem_core/stages/<name>.py (evaluate_dpo / _lcm / _rl: evaluate.py on another
    model), and the one registry STAGES lists exactly dvc.yaml's stages."""
    stages = resolved_stages(dvc_project(tmp_path, "params.yaml"))
    for name, (cmd, _) in stages.items():
        stage = name.split("@")[0]
        module = "evaluate" if stage.startswith("evaluate_") else stage
        assert entry_module(cmd) == f"rorem_core.stages.{module}", f"{name} runs {cmd}"
        assert (REPO / "rorem_core" / "stages" / f"{module}.py").is_file()
    assert set(STAGES) == {n.split("@")[0] for n in stages} == set(contract.DVC_STAGES)


def test_the_import_closure_sees_lazy_and_submodule_imports():
    files = {p.relative_to(REPO).as_posix() for p in closure("rorem_core.stages.train_dpo")}
    assert "rorem_core/preference/lcm.py" in files          # `from rorem_core.preference import lcm`
    assert {"rorem_core/stages/_cli.py", "rorem_core/config/__init__.py", "rorem_core/io.py"} <= files
    assert not any(f.startswith(("annotation/", "tasks/", "flows/")) for f in files)


@pytest.mark.integration
def test_changing_an_imported_module_makes_dvc_status_report_the_stage(tmp_path, copy_project):
    """rorem_core/contract.py was no dep of `report` before the dependency test existed; now an edit
    to it makes `dvc status` call the finished report stale."""
    proj = copy_project(tmp_path / "p")
    for d in ("results", "data/annotations", "models"):
        (proj / d).mkdir(parents=True, exist_ok=True)
        (proj / d / ".keep").write_text("")
    subprocess.run(["git", "init", "-q"], cwd=proj, check=True)
    subprocess.run([DVC, "init", "-q"], cwd=proj, check=True)
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}  # the venv's python
    r = subprocess.run([DVC, "repro", "--single-item", "report"], cwd=proj, capture_output=True, text=True, env=env)
    assert r.returncode == 0, r.stderr + r.stdout
    clean = subprocess.run([DVC, "status", "report"], cwd=proj, capture_output=True, text=True).stdout
    assert "changed" not in clean
    with (proj / "rorem_core" / "contract.py").open("a") as f:
        f.write("\n# an edit\n")
    stale = subprocess.run([DVC, "status", "report"], cwd=proj, capture_output=True, text=True).stdout
    assert "rorem_core/contract.py" in stale and "modified" in stale


def test_readme_round_table_is_the_contract_order():
    text = (REPO / "README.md").read_text()
    table = text.split("<!-- round-table -->")[1].split("<!-- /round-table -->")[0]
    steps = [row.split("|")[2].strip() for row in table.strip().splitlines()[2:]]
    assert tuple(steps) == contract.ORDER, "README's round table drifted from rorem_core/contract.py"


def test_fake_stage_runner_knows_the_contract_stages():
    from tests.helpers import fake_stages

    assert fake_stages.ROUND_STAGES is contract.ROUND_STAGES


def test_position_names_the_phase():
    assert contract.position("train_discriminator@3") == f"9/{len(contract.ORDER)}, after the gate"
    assert contract.position("gate").endswith("at the gate")
