import os

import numpy as np
import pytest


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
