"""fastbn: hand-derived backpropagation in Cython, checked by finite differences and PyTorch.

- ``fastbn.ops``: the functional API, ``out, cache = <op>_forward(...)``,
  ``grads = <op>_backward(dout, cache)``.
- ``fastbn.nn``: torch-like layers built on the ops.
- ``fastbn.gradcheck``: the finite-difference gradient checker.
- ``fastbn.reference``: the same ops in plain NumPy (test oracle and benchmark baseline).
"""
try:
    from . import _kernels  # noqa: F401
except ImportError as e:  # pragma: no cover - only without a build
    raise ImportError(
        "fastbn's compiled kernels (fastbn._kernels) are not built. Install the package with "
        "'pip install .' and run from outside the source folder, or build in place with "
        "'python setup.py build_ext --inplace'.") from e

from . import nn, ops, reference  # noqa: E402
from .gradcheck import GradcheckError, gradcheck  # noqa: E402  (the function shadows the module)

__version__ = "0.1.0"
__all__ = ["ops", "nn", "reference", "gradcheck", "GradcheckError"]
