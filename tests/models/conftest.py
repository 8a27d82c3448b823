"""Fixtures shared by the model tests."""

import pytest
import torch


@pytest.fixture(scope="module")
def single_torch_thread():
    """One torch thread: two contend with XLA's CPU threads and run up to 50x slower here."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
