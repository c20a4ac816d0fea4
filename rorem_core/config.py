"""Typed stage configs loaded from ``params.yaml`` (``base`` + one section per stage).

Unknown keys are rejected everywhere (``extra="forbid"``), so a typo fails at load time with the
key's name instead of silently training with a default. Experiments are params overrides
(``dvc exp run -S train_remover.lr=...``), never copied scripts.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from rorem_core.models.tiny import TinyPresetConfig
from rorem_core.synthetic import SyntheticConfig


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class BaseConfig(Strict):
    """Shared by every stage."""

    seed: int = 0
    resolution: int = Field(64, ge=8)        # pixels; images are resized square, as RORem
    model_dir: str = "models/base"           # base model (diffusers layout) written by bootstrap
    data_root: str = "data"
    cache_dir: str = ".rorem/cache"          # latent cache + prompt embeddings (git-ignored)
    work_dir: str = ".rorem/work"            # resumable training state (git-ignored, not a DVC out)
    device: str = "auto"                     # auto | cpu | cuda | cuda:N (accelerate picks under launch)
    wandb_mode: Literal["offline", "online", "disabled"] = "offline"
    wandb_project: str = "rorem-loop"


class TrainParams(Strict):
    """Remover optimisation. Batch sizes are per process (GPU); effective batch =
    batch_size x grad_accum x num_processes."""

    steps: int = Field(200, ge=1)            # optimiser steps
    batch_size: int = Field(32, ge=1)
    grad_accum: int = Field(1, ge=1)
    lr: float = Field(5e-4, gt=0)
    lr_schedule: Literal["constant", "constant_with_warmup", "cosine", "linear"] = "cosine"
    lr_warmup_steps: int = Field(20, ge=0)
    weight_decay: float = 1e-2
    max_grad_norm: float = 1.0
    adam_8bit: bool = False                  # bitsandbytes (gpu extra)
    mode: Literal["full", "lora"] = "full"   # full fine-tune (RORem) or LoRA on attention
    lora_rank: int = Field(16, ge=1)
    mixed_precision: Literal["no", "fp16", "bf16"] = "no"
    frozen_dtype: Literal["fp32", "fp16", "bf16"] = "fp32"   # VAE / frozen parts
    gradient_checkpointing: bool = False
    xformers: Literal["auto", "on", "off"] = "auto"
    augment_dihedral: bool = True            # flips + 90 deg rotations of latents (exact for the analytic AE)
    checkpoint_every: int = Field(100, ge=1) # steps between resumable checkpoints
    checkpoints_keep: int = Field(2, ge=1)
    log_every: int = Field(10, ge=1)

    @model_validator(mode="after")
    def _check(self):
        if self.lr_warmup_steps >= self.steps and self.lr_schedule != "constant":
            raise ValueError(f"lr_warmup_steps={self.lr_warmup_steps} must be < steps={self.steps}")
        if self.mixed_precision == "fp16" and self.frozen_dtype == "bf16":
            raise ValueError("mixed_precision=fp16 with frozen_dtype=bf16 mixes half formats; pick one")
        return self


class BootstrapConfig(Strict):
    base: BaseConfig
    preset: Literal["tiny", "sdxl"] = "tiny"
    tiny: TinyPresetConfig = TinyPresetConfig()
    base_unet: Literal["shipped", "train", "random"] = "shipped"   # tiny: where the base remover comes from
    pretrain: TrainParams = TrainParams(steps=3600)                 # tiny base pretraining (base_unet=train)
    pretrain_size: int = Field(4000, ge=1)   # synthetic pretraining triplets (RORD/Mulan stand-in)
    sdxl_pretrained: str = "diffusers/stable-diffusion-xl-1.0-inpainting-0.1"  # dir or hub id
    sdxl_unet: str | None = None             # optional RORem UNet dir / hub id replacing the base UNet
    synthetic: SyntheticConfig = SyntheticConfig()


class TrainRemoverConfig(TrainParams):
    base: BaseConfig


class GenerateConfig(Strict):
    base: BaseConfig
    num_seeds: int = Field(2, ge=1)          # K candidates per input (different seeds, one pass)
    steps: int = Field(50, ge=1)
    scheduler: Literal["euler", "lcm"] = "euler"   # lcm needs a LoRA (4 steps)
    strength: float = Field(1.0, gt=0, le=1)
    mask_dilation: int = Field(0, ge=0)      # pixels, at the working resolution
    batch_size: int = Field(32, ge=1)        # UNet batch (inputs x seeds)
    composite: bool = True                   # paste the fill into the untouched source outside the mask
    dtype: Literal["fp32", "fp16", "bf16"] = "fp32"


class EvaluateConfig(Strict):
    base: BaseConfig
    steps: int = Field(50, ge=1)
    scheduler: Literal["euler", "lcm"] = "euler"
    strength: float = Field(1.0, gt=0, le=1)
    batch_size: int = Field(32, ge=1)
    composite: bool = True
    success_db: float = 20.0                 # oracle: masked PSNR >= this is a success
    max_images: int | None = None            # None = the whole test split
    references: bool = True                  # also score leave / ring fill / Telea / AE ceiling
    eval_seed: int = 1234
    dtype: Literal["fp32", "fp16", "bf16"] = "fp32"
    num_grid: int = Field(8, ge=0)           # samples in the source | mask | result | GT grid


STAGES: dict[str, type[Strict]] = {
    "bootstrap": BootstrapConfig,
    "train_remover": TrainRemoverConfig,
    "generate": GenerateConfig,
    "evaluate": EvaluateConfig,
    "evaluate_dpo": EvaluateConfig,     # the same evaluation of the round's other models
    "evaluate_lcm": EvaluateConfig,
}


class ConfigError(ValueError):
    """params.yaml is invalid; the message names the key and the fix."""


def register_stage(name: str, cls: type[Strict]) -> None:
    """Later stages (discriminator, preference learning) add their config class here."""
    STAGES[name] = cls


def load_params(path: str | Path = "params.yaml") -> dict[str, Any]:
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"{p}: not found; run from the project root or pass --params")
    try:
        data = yaml.safe_load(p.read_text()) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{p}: invalid YAML ({e})") from e
    if not isinstance(data, dict):
        raise ConfigError(f"{p}: expected a mapping of sections, found {type(data).__name__}")
    return data


# top-level sections that are not stage configs
OTHER_SECTIONS = ("base", "rounds", "annotation")


def _known_sections() -> set[str]:
    """Registered stages, other sections, and every stage module's name (read from the folder, not
    imported: a stage registers its config only when its module is imported)."""
    mods = {p.stem for p in (Path(__file__).parent / "stages").glob("*.py") if not p.stem.startswith("_")}
    return set(STAGES) | set(OTHER_SECTIONS) | mods


def check_sections(params: dict[str, Any], source: str = "params.yaml") -> None:
    """Refuse a top-level section whose name is a near-miss of a known one (``train_remove:``): it
    would be ignored and its stage would silently run on defaults. Unrelated names pass."""
    import difflib

    known = _known_sections()
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
    import hashlib

    h = hashlib.sha256(cfg.model_dump_json().encode())
    for e in extra:
        h.update(e.encode())
    return h.hexdigest()
