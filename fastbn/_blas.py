"""The BLAS the kernels call: OpenBLAS from the ``scipy-openblas32`` wheel, loaded privately.

``scipy-openblas32`` is the OpenBLAS build that SciPy (and, as ``scipy-openblas64``, NumPy) ship
inside their wheels, published on its own. Depending on it directly, instead of reaching SciPy's
copy through ``scipy.linalg.cython_blas``, lets fastbn require a release whose small GEMMs are
fast: the copy inside scipy 1.17.1 (OpenBLAS 0.3.30) took about 35 % longer than 0.3.31 and 0.3.34
on the (32, 30) @ (30, 200)-sized products a training step is made of, with identical results
(measured side by side in one process).

The library is opened with ``RTLD_LOCAL``: its symbols (``scipy_sgemm_``, ...) serve the kernels
alone and stand in for no other library's. threadpoolctl finds it like any OpenBLAS, so
``threadpool_limits`` (``fastbn train``, the benchmark, sweeps) sets its threads too.
"""
import ctypes
import os

__all__ = ["library_path", "load"]

# file names of the shared library in the wheel's lib directory, by platform
_SUFFIXES = (".so", ".dylib", ".dll")


def library_path():
    """The path of the wheel's shared library; ImportError (what to install) if it is missing."""
    try:
        import scipy_openblas32
    except ImportError as e:
        raise ImportError("fastbn needs the package scipy-openblas32 (its BLAS): "
                          "pip install scipy-openblas32") from e
    lib_dir = scipy_openblas32.get_lib_dir()
    dirs = [lib_dir, os.path.join(os.path.dirname(lib_dir), "bin")]     # Windows keeps DLLs in bin
    for d in dirs:
        names = sorted(n for n in (os.listdir(d) if os.path.isdir(d) else ())
                       if n.startswith("libscipy_openblas") and n.endswith(_SUFFIXES))
        if names:
            return os.path.join(d, names[0])
    raise ImportError(f"scipy-openblas32 is installed but no shared library was found in "
                      f"{' or '.join(dirs)}: reinstall it (pip install --force-reinstall "
                      "scipy-openblas32)")


def load():
    """Open the library: ``(library, sgemm address, dgemm address)``.

    Keep ``library`` referenced for as long as the addresses are used (the kernels module holds
    it for the life of the process).
    """
    path = library_path()
    lib = ctypes.CDLL(path, mode=getattr(os, "RTLD_LOCAL", 0))
    try:
        s, d = lib.scipy_sgemm_, lib.scipy_dgemm_
    except AttributeError as e:
        raise ImportError(f"{path} has no scipy_sgemm_/scipy_dgemm_: not a scipy-openblas32 "
                          "library fastbn can use") from e
    return lib, ctypes.cast(s, ctypes.c_void_p).value, ctypes.cast(d, ctypes.c_void_p).value
