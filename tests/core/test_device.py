"""The one device resolver: auto picks what exists; an explicit GPU that does not exist is an error."""

import pytest
import torch

from rorem_core.config import ConfigError, stage_config
from rorem_core.device import DeviceError, accelerate_cpu, resolve_device


def test_cpu_and_auto_resolve_on_this_machine():
    assert resolve_device("cpu") == torch.device("cpu")
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert resolve_device("auto").type in (expected, "mps")


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
@pytest.mark.parametrize("spec", ["cuda", "cuda:0", "cuda:3"])
def test_cuda_without_cuda_is_a_clear_error_not_a_cpu_run(spec):
    with pytest.raises(DeviceError, match=r"CUDA is not available.*set base.device: auto"):
        resolve_device(spec)


def test_a_misspelt_device_is_refused_when_params_load():
    with pytest.raises(ConfigError, match=r"base.device.*use auto, cpu, cuda, cuda:N or mps"):
        stage_config("evaluate", {"base": {"device": "gpu"}})


def test_accelerate_is_told_cpu_exactly_when_the_device_is_the_cpu():
    assert accelerate_cpu("cpu") is True
    assert accelerate_cpu("auto") is (not torch.cuda.is_available() and resolve_device("auto").type == "cpu")


def test_every_stage_resolves_devices_through_the_one_resolver():
    """No stage or library module decides 'cuda if available' on its own (it drifted three ways)."""
    from pathlib import Path

    root = Path(__file__).resolve().parents[2] / "rorem_core"
    offenders = [str(p.relative_to(root)) for p in root.rglob("*.py")
                 if p.name != "device.py" and "cuda.is_available" in p.read_text()]
    assert offenders == []
