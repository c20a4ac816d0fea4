"""The one device resolver every stage uses (``base.device`` in params.yaml).

``auto``  CUDA if available, else Apple MPS, else CPU (under ``accelerate launch`` each process's
          own GPU: accelerate sets LOCAL_RANK and the training stages take accelerate's device);
``cpu``   always the CPU;
``cuda``  / ``cuda:N``  that GPU; an error when CUDA is absent or N is out of range, never a silent
          CPU run (a GPU preset on a CPU machine would otherwise train for days without saying so);
``mps``   Apple silicon; an error when MPS is absent.
"""

from __future__ import annotations

import os
import re

import torch

SPEC = re.compile(r"^(auto|cpu|mps|cuda(:\d+)?)$")


class DeviceError(RuntimeError):
    """The requested device does not exist on this machine."""


def check_spec(spec: str) -> str:
    """Validate the syntax only (config load time; the machine may differ from the one that runs it)."""
    if not SPEC.match(spec):
        raise ValueError(f"device {spec!r}: use auto, cpu, cuda, cuda:N or mps")
    return spec


def resolve_device(spec: str) -> torch.device:
    """``spec`` -> the torch device this process computes on; see the module docstring."""
    check_spec(spec)
    if spec == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", int(os.environ.get("LOCAL_RANK", torch.cuda.current_device())))
        if _mps_available():
            return torch.device("mps")
        return torch.device("cpu")
    if spec == "cpu":
        return torch.device("cpu")
    if spec == "mps":
        if not _mps_available():
            raise DeviceError("base.device is 'mps' but this machine has no Apple MPS device; "
                              "set base.device: auto (or cpu) in params.yaml")
        return torch.device("mps")
    if not torch.cuda.is_available():
        raise DeviceError(f"base.device is {spec!r} but CUDA is not available on this machine (torch "
                          f"{torch.__version__}, built for CUDA: {torch.version.cuda or 'no'}); install a CUDA "
                          "build of torch, or set base.device: auto / cpu in params.yaml")
    # plain "cuda" under a multi-process launcher: this process's own GPU (LOCAL_RANK), as "auto" does
    index = int(spec.split(":")[1]) if ":" in spec else int(os.environ.get("LOCAL_RANK", torch.cuda.current_device()))
    if index >= torch.cuda.device_count():
        raise DeviceError(f"base.device is {spec!r} but this machine has {torch.cuda.device_count()} CUDA "
                          f"device(s) (0..{torch.cuda.device_count() - 1}); pick one of those or auto")
    return torch.device("cuda", index)


def cuda_device_count() -> int:
    """CUDA GPUs of this machine (0 without CUDA): what a launcher may start one process each on."""
    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def process_group_backend() -> str:
    """torch.distributed backend of a data-parallel run: NCCL between GPUs, gloo between CPU processes."""
    return "nccl" if torch.cuda.is_available() else "gloo"


def accelerate_cpu(spec: str) -> bool:
    """Whether accelerate must be told to stay on the CPU (its own default picks any GPU)."""
    return resolve_device(spec).type == "cpu"


def _mps_available() -> bool:
    backend = getattr(torch.backends, "mps", None)
    return bool(backend and backend.is_available())
