"""The kernels' BLAS (fastbn/_blas.py): the scipy-openblas32 library, found and opened privately,
under threadpoolctl's control like any OpenBLAS, and a clear ImportError when it is missing."""
import os
import sys

import numpy as np
import pytest
from threadpoolctl import threadpool_info, threadpool_limits

from fastbn import _blas, _kernels, ops


def _pools_of(path):
    real = os.path.realpath(path)
    return [p for p in threadpool_info() if os.path.realpath(p["filepath"]) == real]


def test_the_kernels_call_the_wheels_openblas_and_threadpoolctl_pins_it():
    path = _blas.library_path()
    assert os.path.isfile(path)
    assert os.path.samefile(_kernels._BLAS_LIBRARY._name, path)
    pools = _pools_of(path)
    assert len(pools) == 1 and pools[0]["internal_api"] == "openblas", pools
    # fastbn train, the benchmark and sweeps pin BLAS with threadpool_limits: that must reach
    # this library too (its threads are otherwise the machine's cores)
    with threadpool_limits(1):
        assert _pools_of(path)[0]["num_threads"] == 1


@pytest.mark.parametrize("dtype, tol", [(np.float32, 1e-5), (np.float64, 1e-13)])
def test_the_gemms_through_it_are_right_with_every_transpose(dtype, tol):
    # linear's forward is op(A) = A, op(B) = B; its backward uses (N, T) and (T, N)
    g = np.random.default_rng(0)
    x, w, b = (g.standard_normal(s).astype(dtype) for s in ((7, 5), (5, 3), (3,)))
    out, cache = ops.linear_forward(x, w, b)
    dout = g.standard_normal((7, 3)).astype(dtype)
    dx, dw, db = ops.linear_backward(dout, cache)
    x64, w64, d64 = (a.astype(np.float64) for a in (x, w, dout))
    np.testing.assert_allclose(out, x64 @ w64 + b, rtol=tol, atol=tol)
    np.testing.assert_allclose(dx, d64 @ w64.T, rtol=tol, atol=tol)
    np.testing.assert_allclose(dw, x64.T @ d64, rtol=tol, atol=tol)


def test_a_missing_package_is_an_import_error_that_says_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "scipy_openblas32", None)       # import raises ImportError
    with pytest.raises(ImportError, match="pip install scipy-openblas32"):
        _blas.library_path()


def test_a_package_without_its_library_is_an_import_error(monkeypatch, tmp_path):
    import scipy_openblas32
    (tmp_path / "lib").mkdir()
    (tmp_path / "lib" / "libother.so").write_bytes(b"")
    monkeypatch.setattr(scipy_openblas32, "get_lib_dir", lambda: str(tmp_path / "lib"))
    with pytest.raises(ImportError, match="no shared library was found"):
        _blas.library_path()
