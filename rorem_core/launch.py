"""One entry point for every heavy stage: ``python -m rorem_core.launch <stage module> <stage args>``.

It reads the ``launch:`` section of the params file the stage gets (``--params``, default
params.yaml) and runs the stage in this process for one process on one machine, or under
``accelerate launch`` for several (multi-GPU, multi-node with the usual machine rank / main address,
an accelerate config file such as ``configs/accelerate/deepspeed_zero2.yaml``).

Launch settings are not part of a stage's result: no dvc.yaml stage declares ``launch`` among its
``params`` (tested), and dvc.yaml's commands do not carry them, so changing the process count never
makes DVC (or the flow's stage cache, keyed on declared params) consider outputs stale.

Bad inputs stop here with one message and nothing written: a process count above the devices of
this machine (GPUs, else CPU cores), an accelerate config file that does not exist, and more than one
process for a stage that does not shard its work (``MULTI_PROCESS_STAGES``: N copies would each compute
and write the whole output).
"""

from __future__ import annotations

import os
import runpy
import shutil
import sys
from pathlib import Path
from typing import Literal

import yaml
from pydantic import Field, ValidationError

from rorem_core.config.base import ConfigError, Strict

# Stage modules whose run() shards its inputs (rorem_core.parallel) or trains data-parallel (the trainer
# under accelerate: gradients all-reduced, noise per global micro-batch) and publishes on the main
# process only; each is tested with 2 gloo processes (tests/scale). train_rl samples its rollouts
# data-parallel and trains on them like the other training stages (rl/ddpo.py).
MULTI_PROCESS_STAGES: frozenset[str] = frozenset(f"rorem_core.stages.{s}" for s in (
    "generate", "select", "auto_score", "evaluate", "train_remover", "train_discriminator", "train_dpo", "distill",
    "train_rl"))


class LaunchSettings(Strict):
    """How a stage is started (``launch:`` in params.yaml, per stage under ``launch.stages.<name>``)."""

    processes: int = Field(1, ge=1)           # processes on this machine (one per GPU; CPU: one per core)
    config_file: str | None = None            # an accelerate config (relative to the project), e.g. DeepSpeed ZeRO-2
    mixed_precision: Literal["no", "fp16", "bf16"] = "no"
    num_machines: int = Field(1, ge=1)        # multi-node: the same settings on every node ...
    machine_rank: int = Field(0, ge=0)        # ... except this one (0 on the main node)
    main_address: str | None = None           # the main node's address (required when num_machines > 1)
    main_port: int = Field(29500, ge=1, le=65535)


class LaunchSection(LaunchSettings):
    stages: dict[str, dict] = Field(default_factory=dict)   # stage name -> overrides of the fields above


def settings_for(stage: str, params: dict, source: str = "params.yaml") -> LaunchSettings:
    """The launch settings of ``stage`` (e.g. ``train_remover``): the section's defaults, then its overrides."""
    raw = params.get("launch") or {}
    try:
        section = LaunchSection.model_validate(raw)
        merged = {**section.model_dump(exclude={"stages"}), **section.stages.get(stage, {})}
        s = LaunchSettings.model_validate(merged)
    except ValidationError as e:
        first = e.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise ConfigError(f"{source}: launch.{where}: {first['msg']} (got {first.get('input')!r}); fix the "
                          "launch section (docs/scaling.md)") from None
    if s.num_machines > 1 and not s.main_address:
        raise ConfigError(f"{source}: launch: num_machines={s.num_machines} needs main_address (the main "
                          "node's address, the same on every node)")
    if s.machine_rank >= s.num_machines:
        raise ConfigError(f"{source}: launch: machine_rank={s.machine_rank} must be below num_machines={s.num_machines}")
    return s


def devices_available() -> tuple[int, str]:
    """(how many processes this machine can host, what they are): GPUs when CUDA is present, else cores."""
    from rorem_core.device import cuda_device_count

    if (n := cuda_device_count()) > 0:
        return n, "CUDA GPU(s)"
    return os.cpu_count() or 1, "CPU core(s) (no CUDA GPU)"


def check(stage_module: str, s: LaunchSettings, root: Path, devices: tuple[int, str]) -> None:
    """Refuse what cannot run, before anything starts: see the module docstring."""
    n, kind = devices
    if s.processes > n:
        raise ConfigError(f"launch.processes={s.processes} for {stage_module} but this machine has {n} {kind}; "
                          f"set launch.processes (or launch.stages.<stage>.processes) to at most {n}")
    if s.config_file is not None and not (root / s.config_file).is_file():
        raise ConfigError(f"launch.config_file={s.config_file!r}: no such file under {root}; use one of "
                          "configs/accelerate/*.yaml or remove the setting")
    if (s.processes > 1 or s.num_machines > 1) and stage_module not in MULTI_PROCESS_STAGES:
        raise ConfigError(f"{stage_module} does not shard its work across processes (not in MULTI_PROCESS_STAGES): "
                          f"{s.processes} process(es) x {s.num_machines} machine(s) would each write the whole "
                          "output; set launch.processes: 1 and launch.num_machines: 1 for it")


def command(stage_module: str, argv: list[str], s: LaunchSettings, cuda: bool = True) -> list[str] | None:
    """The ``accelerate launch`` command for several processes, or None: run in this process. Without
    CUDA (``cuda`` False) several processes go through torch's own launcher (``torch.distributed.run``,
    what accelerate uses for GPUs): ``accelerate launch`` on a CPU-only machine starts ONE process
    whatever ``--num_processes`` says (its multi-CPU mode needs MPI / oneCCL)."""
    if s.processes == 1 and s.num_machines == 1 and s.config_file is None:
        return None
    if not cuda:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(s.processes),
               "--nnodes", str(s.num_machines), "--node_rank", str(s.machine_rank),
               "--master_addr", str(s.main_address or "127.0.0.1"), "--master_port", str(s.main_port)]
        return [*cmd, "-m", stage_module, *argv]
    cmd = [shutil.which("accelerate") or "accelerate", "launch"]
    if s.config_file is not None:
        cmd += ["--config_file", s.config_file]
    cmd += ["--num_processes", str(s.processes * s.num_machines), "--num_machines", str(s.num_machines),
            "--mixed_precision", s.mixed_precision]
    if s.num_machines > 1:
        cmd += ["--machine_rank", str(s.machine_rank), "--main_process_ip", str(s.main_address),
                "--main_process_port", str(s.main_port)]
    return [*cmd, "-m", stage_module, *argv]


def _option(argv: list[str], name: str, default: str | None) -> str | None:
    for i, a in enumerate(argv):
        if a == name and i + 1 < len(argv):
            return argv[i + 1]
        if a.startswith(name + "="):
            return a.split("=", 1)[1]
    return default


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or not argv[0].startswith("rorem_core.stages."):
        print("usage: python -m rorem_core.launch rorem_core.stages.<stage> [stage arguments]", file=sys.stderr)
        return 2
    stage_module, stage_argv = argv[0], argv[1:]
    params_path = Path(_option(stage_argv, "--params", "params.yaml"))
    stage = _option(stage_argv, "--section", stage_module.rsplit(".", 1)[1])   # evaluate_dpo runs evaluate
    try:
        params = (yaml.safe_load(params_path.read_text()) or {}) if params_path.is_file() else {}
        s = settings_for(stage, params, str(params_path))
        check(stage_module, s, Path.cwd(), devices_available())
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    from rorem_core.device import cuda_device_count

    cmd = command(stage_module, stage_argv, s, cuda=cuda_device_count() > 0)
    if cmd is not None:
        os.execvp(cmd[0], cmd)          # the launcher's process becomes accelerate's
    sys.argv = [stage_module, *stage_argv]
    runpy.run_module(stage_module, run_name="__main__", alter_sys=True)   # the stage's main() exits itself
    return 0


if __name__ == "__main__":
    sys.exit(main())
