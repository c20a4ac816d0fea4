"""Typed configuration loaded from ``params.yaml``: ``base``, the typed ``rounds``, and one section
per stage, each validated by the config class the explicit registry ``STAGES`` names.

Unknown keys are rejected everywhere (``extra="forbid"``), so a typo fails at load time with the
key's name instead of silently training with a default. Code defaults equal the tiny preset
(``params.yaml``; tested), and every other preset states a section for every stage. Experiments are
params overrides (``dvc exp run -S train_remover.lr=...``), never copied scripts.
"""

from __future__ import annotations

import difflib
import hashlib
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from rorem_core.config.base import BaseConfig, ConfigError, Strict, TrainParams
from rorem_core.config.rounds import DataSpec, RoundSpec, parse_data, parse_rounds
from rorem_core.config.stages import (
    AutoScoreConfig,
    BootstrapConfig,
    BuildPairsConfig,
    DistillConfig,
    EvaluateConfig,
    EvaluateDPOConfig,
    EvaluateLCMConfig,
    EvaluateRLConfig,
    GenerateConfig,
    LabelsConfig,
    ReportConfig,
    SelectConfig,
    TrainDiscriminatorConfig,
    TrainDPOConfig,
    TrainRemoverConfig,
    TrainRLConfig,
    TrainsetConfig,
)

__all__ = [
    "AutoScoreConfig", "BaseConfig", "DataSpec", "BootstrapConfig", "BuildPairsConfig", "ConfigError", "DistillConfig",
    "EvaluateConfig", "EvaluateDPOConfig", "EvaluateLCMConfig", "GenerateConfig", "LabelsConfig",
    "ReportConfig", "RoundSpec", "STAGES", "SelectConfig", "Strict", "TrainDPOConfig",
    "TrainDiscriminatorConfig", "TrainParams", "TrainRemoverConfig", "TrainsetConfig", "check_sections",
    "TrainRLConfig", "EvaluateRLConfig",
    "config_hash", "load_params", "parse_data", "load_stage_config", "parse_rounds", "stage_config", "validate_params",
]

# The one registry: params section -> config class. evaluate_dpo / evaluate_lcm run the same
# evaluation on the round's other models, with their own defaults.
STAGES: dict[str, type[Strict]] = {
    "bootstrap": BootstrapConfig,
    "train_remover": TrainRemoverConfig,
    "generate": GenerateConfig,
    "select": SelectConfig,
    "labels": LabelsConfig,
    "train_discriminator": TrainDiscriminatorConfig,
    "auto_score": AutoScoreConfig,
    "trainset": TrainsetConfig,
    "build_pairs": BuildPairsConfig,
    "train_dpo": TrainDPOConfig,
    "distill": DistillConfig,
    "evaluate": EvaluateConfig,
    "evaluate_dpo": EvaluateDPOConfig,
    "evaluate_lcm": EvaluateLCMConfig,
    "report": ReportConfig,
    "train_rl": TrainRLConfig,
    "evaluate_rl": EvaluateRLConfig,
}
# top-level sections that are not stage configs (annotation is typed by the annotation layer)
OTHER_SECTIONS = ("base", "rounds", "annotation", "data", "launch")   # launch: rorem_core.launch


def load_params(path: str | Path = "params.yaml") -> dict[str, Any]:
    """Read and validate a params file (sections, ``base``, ``rounds``, every stage section present)."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"{p}: not found; run from the project root or pass --params")
    try:
        data = yaml.safe_load(p.read_text()) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{p}: invalid YAML ({e})") from e
    if not isinstance(data, dict):
        raise ConfigError(f"{p}: expected a mapping of sections, found {type(data).__name__}")
    validate_params(data, str(p))
    return data


def validate_params(params: dict[str, Any], source: str = "params.yaml") -> dict[int, RoundSpec]:
    """Check every section a params dict has; return its typed rounds."""
    check_sections(params, source)
    rounds = parse_rounds(params.get("rounds"), source)
    parse_data(params.get("data"), source)
    for stage in STAGES:
        if stage in params:
            stage_config(stage, params, source=source)
    return rounds


def check_sections(params: dict[str, Any], source: str = "params.yaml") -> None:
    """Refuse a top-level section whose name is a near-miss of a known one (``train_remove:``): it
    would be ignored and its stage would silently run on defaults. Unrelated names pass."""
    known = set(STAGES) | set(OTHER_SECTIONS)
    for key in params:
        close = difflib.get_close_matches(str(key), known, n=1, cutoff=0.8) if key not in known else []
        if close:
            raise ConfigError(f"{source}: unknown section {key!r}; did you mean {close[0]!r}? (a misspelt "
                              f"section is ignored and its stage runs on defaults) rename it to {close[0]!r}")


def format_validation_error(section: str, e: ValidationError, source: str) -> str:
    """One line per error: ``section.key: problem (got value)``, then the fix."""
    lines = []
    for err in e.errors():
        loc = ".".join([section, *map(str, err["loc"])])
        got = f" (got {err['input']!r})" if err["type"] != "missing" and not isinstance(err["input"], dict) else ""
        lines.append(f"  {loc}: {err['msg']}{got}")
    return (f"{source}: invalid [{section}] section:\n" + "\n".join(lines)
            + "\n  fix the key or value (unknown keys are rejected, not ignored)")


def stage_config(stage: str, params: dict[str, Any], overrides: dict[str, Any] | None = None,
                 source: str = "params.yaml"):
    """Build the typed config of ``stage`` from ``params[base]`` + ``params[stage]`` (+ overrides)."""
    if stage not in STAGES:
        raise ConfigError(f"unknown stage {stage!r}; known: {', '.join(sorted(STAGES))}")
    check_sections(params, source)
    raw = params.get(stage) or {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: [{stage}] must be a mapping of keys, found {type(raw).__name__} "
                          f"{raw!r}; write it as '{stage}:' followed by indented 'key: value' lines")
    section = {**raw, **(overrides or {})}
    try:
        return STAGES[stage](base=params.get("base") or {}, **section)
    except ValidationError as e:
        raise ConfigError(format_validation_error(stage, e, source)) from e


def load_stage_config(stage: str, params_path: str | Path = "params.yaml", **overrides):
    return stage_config(stage, load_params(params_path), overrides, source=str(params_path))


def config_hash(cfg: BaseModel, *extra: str) -> str:
    h = hashlib.sha256(cfg.model_dump_json().encode())
    for e in extra:
        h.update(e.encode())
    return h.hexdigest()
