"""fastbn: hand-derived backpropagation in Cython, checked by finite differences and PyTorch.

- ``fastbn.ops``: the functional API, ``out, cache = <op>_forward(...)``,
  ``grads = <op>_backward(dout, cache)``.
- ``fastbn.nn``: torch-like layers built on the ops.
- ``fastbn.init``: gains and Kaiming-normal initialization.
- ``fastbn.CharMLP`` (``fastbn.model``): the makemore BN-MLP; ``fastbn.train`` trains it;
  ``fastbn.save`` / ``fastbn.load`` (``fastbn.checkpoint``) store it.
- ``fastbn.fold_batchnorm`` (``fastbn.folding``): a model with its batch norm folded into its
  Linears, for inference (run by ``fastbn.inference``).
- ``fastbn.data``: the names dataset.
- ``fastbn.gradcheck``: the finite-difference gradient checker; ``fastbn.gradcheck_all`` the
  table of ``fastbn gradcheck``.
- ``fastbn.exercises``: the lecture's backprop exercise (every intermediate, by hand) and its
  ``check``; ``fastbn.compare`` (``fastbn.comparison``): your backward of one op against fastbn's.
- ``fastbn.reference``: the same ops in plain NumPy (test oracle and benchmark baseline).
- ``fastbn.registry``: one entry per activation (its layer, gain and flat region) that the model,
  ``init`` and the lab read. (The test metadata of every op, read by gradcheck, the tests and
  the benchmark, is ``fastbn._opinfo``, loaded when first needed.)
"""
from typing import TYPE_CHECKING

try:
    from . import _kernels  # noqa: F401
except ImportError as e:  # pragma: no cover - only without a build
    raise ImportError(
        "fastbn's compiled kernels (fastbn._kernels) are not built. Install the package with "
        "'pip install .' and run from outside the source folder, or build in place with "
        "'python setup.py build_ext --inplace'.") from e

# fastbn.train and fastbn.gradcheck are the functions; their modules are fastbn.training and
# fastbn.gradchecks, so that no attribute of fastbn hides a module of it.
from . import checkpoint, comparison, data, exercises, init, nn, ops, reference, registry
from .checkpoint import load, save
from .comparison import compare
from .folding import fold_batchnorm  # (and the modules fastbn.folding, fastbn.inference)
from .gradchecks import GradcheckError, gradcheck, gradcheck_all
from .model import CharMLP
from .training import TrainResult, train

__version__ = "0.1.0"


# for type checkers fastbn.lab is a plain submodule, and there is no __getattr__: a misspelt
# name of fastbn is then an error, not Any
if TYPE_CHECKING:
    from . import lab
else:
    def __getattr__(name):
        """``fastbn.lab`` on first use: the laboratory loads its modules only when asked for."""
        if name == "lab":
            import importlib
            return importlib.import_module(".lab", __name__)
        raise AttributeError(f"module 'fastbn' has no attribute {name!r}")

__all__ = [
    "CharMLP",
    "GradcheckError",
    "TrainResult",
    "checkpoint",
    "compare",
    "comparison",
    "data",
    "exercises",
    "fold_batchnorm",
    "folding",
    "gradcheck",
    "gradcheck_all",
    "inference",
    "init",
    "lab",
    "load",
    "nn",
    "ops",
    "reference",
    "registry",
    "save",
    "train",
]
