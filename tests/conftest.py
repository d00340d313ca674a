import os
from pathlib import Path

import numpy as np
import pytest

REAL_NAMES = os.environ.get("FASTBN_DATA")  # read at import, before any test unsets it


@pytest.fixture
def rng():
    return np.random.default_rng(1234)


@pytest.fixture(scope="session")
def torch():
    """PyTorch, the parity reference; the test skips with the reason when it is not installed.

    With FASTBN_REQUIRE_TORCH=1 (set by .ci/run) a missing torch fails instead of skipping.
    """
    if os.environ.get("FASTBN_REQUIRE_TORCH") == "1":
        import torch
        return torch
    return pytest.importorskip(
        "torch", reason="PyTorch parity tests need torch: pip install torch==2.13.0")


@pytest.fixture(scope="session")
def names_path():
    """The real names.txt, from FASTBN_DATA (CI sets it); the test skips, saying why, without it."""
    if not REAL_NAMES:
        pytest.skip("FASTBN_DATA is not set; point it at names.txt to run the real-data tests")
    if not Path(REAL_NAMES).is_file():
        pytest.skip(f"FASTBN_DATA={REAL_NAMES} does not exist")
    return REAL_NAMES


@pytest.fixture(scope="session")
def names(names_path):
    """The names dataset (fastbn.data.Dataset) at block size 3, loaded once per session."""
    from fastbn import data
    return data.load_dataset(names_path)
