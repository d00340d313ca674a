"""The arrays fastbn hands its kernels: private copies of index arrays, checked, and parameter
and workspace arrays on 64-byte lines.

``index_array`` is how every caller of a kernel that indexes (``fastbn.ops``, the fused step,
an inference plan) takes the caller's ids; ``aligned_empty`` and ``aligned_copy`` are how the
layers of ``fastbn.nn`` and the fused step allocate what they own.
"""
from __future__ import annotations

import numpy as np
from numpy.typing import DTypeLike

from . import _kernels as K


def _check_range(name, a, bound, what):
    if a.size:
        lo, hi = a.min(), a.max()
        if lo < 0 or hi >= bound:
            bad = lo if lo < 0 else hi
            raise IndexError(f"{name} holds {bad}, outside [0, {bound}) ({what})")


def index_array(name: str, a, bound: int, what: str) -> np.ndarray:
    """A fresh, read-only, C-contiguous int64 copy of ``a``, every value in [0, bound).

    Copied first, checked after: the kernels index with it unchecked and without the GIL, so the
    values checked must be the values they read, whatever another thread writes into ``a``
    meanwhile. The copy keeps ``a``'s dtype until checked (an error names the value as given),
    and the cache keeps it for the backward (a caller refilling its index buffer between forward
    and backward changes nothing). ``a`` not an integer array: TypeError; a value outside
    [0, bound): IndexError, naming ``name`` and ``what`` (what the bound is).
    """
    a = np.asarray(a)
    if a.dtype == np.bool_ or not np.issubdtype(a.dtype, np.integer):
        raise TypeError(f"{name} must be an integer array, got dtype {a.dtype}")
    if a.dtype == np.int64 and a.flags.c_contiguous and a.flags.aligned:
        out = np.empty(a.shape, np.int64)           # the copy and its check in one pass
        if not K.copy_ids(a.reshape(-1), out.reshape(-1), bound):
            _check_range(name, out, bound, what)    # raises, naming a value
    else:
        out = np.array(a, order="C", copy=True)
        _check_range(name, out, bound, what)
        if out.dtype != np.int64:
            out = out.astype(np.int64)
    out.flags.writeable = False
    return out


def aligned_empty(shape: int | tuple[int, ...], dtype: DTypeLike, align: int = 64,
                  ) -> np.ndarray:
    """An uninitialized C-contiguous array whose data starts on an ``align``-byte boundary.

    Parameters, gradients and buffers are allocated this way: the fused step's vector loads and
    BLAS run measurably faster on arrays that start on a cache line (NumPy guarantees 16 bytes).
    In a sanitizer build the array is a plain ``np.empty`` of its exact size instead: slack
    around it would hide a small overrun from AddressSanitizer.
    """
    if K.SANITIZED:
        return np.empty(shape, dtype)
    dtype = np.dtype(dtype)
    nbytes = int(np.prod(shape)) * dtype.itemsize
    buf = np.empty(nbytes + align, np.uint8)
    start = -buf.ctypes.data % align
    return buf[start:start + nbytes].view(dtype).reshape(shape)


def aligned_copy(a: np.ndarray) -> np.ndarray:
    """``a`` copied into a 64-byte aligned array (see ``aligned_empty``)."""
    out = aligned_empty(a.shape, a.dtype)
    out[...] = a
    return out
