"""Fixtures for the library tests in this folder (the root ``conftest.py`` configures the suite)."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(scope="module")
def one_thread():
    """One torch thread for a whole test module: its tensors are tiny, and one thread avoids
    OpenMP oversubscription on a busy box.

    Opt-in, per module: ``pytestmark = pytest.mark.usefixtures("one_thread")``.
    """
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
