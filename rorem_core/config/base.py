"""The shared parts of every stage config: strict models, the ``base`` section, optimisation params.

Unknown keys are rejected everywhere (``extra="forbid"``), so a typo fails at load time with the
key's name instead of silently training with a default. Experiments are params overrides
(``dvc exp run -S train_remover.lr=...``), never copied scripts.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator


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
    device: str = "auto"                     # auto | cpu | cuda | cuda:N | mps (rorem_core.device)
    wandb_mode: Literal["offline", "online", "disabled"] = "offline"
    wandb_project: str = "rorem-loop"

    @field_validator("device")
    @classmethod
    def _device(cls, v: str) -> str:
        from rorem_core.device import check_spec

        return check_spec(v)


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


class ConfigError(ValueError):
    """params.yaml is invalid; the message names the key and the fix."""
