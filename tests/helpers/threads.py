"""One torch intra-op thread for a test module's tests: tiny tensors run as fast on one thread, and it
avoids oversubscription (10-50x slower steps measured when the 2 cores are shared with other jobs)."""

from __future__ import annotations


def one_torch_thread():
    """Generator for ``pytest.fixture(autouse=True)``: one thread during the test, restored after."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
