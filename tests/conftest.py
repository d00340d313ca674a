import numpy as np
import pytest


@pytest.fixture
def rng():
    return np.random.default_rng(1234)


@pytest.fixture(scope="session")
def torch():
    """PyTorch, the parity reference; the test skips with the reason when it is not installed."""
    return pytest.importorskip(
        "torch", reason="PyTorch parity tests need torch: pip install torch==2.13.0")
