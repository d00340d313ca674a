"""The functional API: hand-derived forward/backward pairs over NumPy arrays.

Every op is a pair. ``<op>_forward(...)`` returns ``(out, cache)``; ``<op>_backward(dout, cache)``
returns the gradients of the forward's differentiable array inputs, in the forward's order (as in
CS231n's ``layers.py``). Both run compiled kernels (``fastbn._kernels``) with the GIL released.

This layer is where inputs are checked, because the kernels check nothing: floating arrays must be
float32 or float64 and all of one dtype within a call (``TypeError``), shapes must agree
(``ValueError`` naming them), indices must be integers (``TypeError``) in range (``IndexError``).
Non-contiguous or negative-stride arrays are copied to contiguous ones. Outputs take the dtype of
the inputs. Every call returns fresh arrays; nothing given is modified, except the arrays a
backward is asked to write its gradients into (``out=``, see below).

Speed: each function hands its arguments to its compiled counterpart first
(``fastbn._kernels.<op>_forward_fast``, ``..._backward_fast``), which takes the common case - every
array already an ndarray of one float dtype, C-contiguous and aligned, the shapes and options the
op accepts - and checks, allocates, runs the kernel and builds the cache in one call. Anything else
(lists, other dtypes, strided views, bad shapes or options, indices out of range) comes back to
the general path below, which converts what it may and raises the errors, so what is accepted,
refused and computed is the same either way (``tests/test_opcalls.py`` holds the two paths to
that). The elementwise forwards (tanh, relu, leaky_relu, elu) end their general path in the same
compiled entry, given the normalized arguments (``<op>_forward_entry``, the ``_fast`` function by
another name), so their output and cache are made in one place.

``out=``: the backwards that return parameter gradients (embedding, linear, batch norm) take
``out=``, the arrays to write them into, as ``fastbn.nn``'s layers do with their gradient arrays
(overwritten by each backward, so that a list of them taken once stays valid): for embedding an
array of dweight's shape and dtype, for the others a tuple with one entry per returned gradient,
each an array or None (a new array). The gradients are returned in those arrays. An array that
shares memory with an input is written after the computation, so the result is the same.

A cache may hold the caller's own arrays (``linear`` keeps ``x`` and ``w``, ``batchnorm`` keeps
``gamma``; index arrays are always copied): as with any backprop code, change them in place between
a forward and its backward and the backward computes the gradient of the changed values. A cache
attribute replaced by anything but a C-contiguous, aligned array of the forward's shape and dtype
is refused (``ValueError``), whatever its values.

Threads: every function may be called from several threads at once (the kernels release the GIL).
What a kernel indexes with is private to the call: index arrays are copied before they are
checked, so the values checked are the values read (the caller's array, or the cache's, may be
rewritten meanwhile), and each kernel checks the shapes of its arguments itself, with the GIL
held, after it has taken hold of them (an array reshaped in place by another thread meanwhile
gives a ``ValueError``, not an out-of-bounds access). Float arrays are read where they are: another
thread writing one during a call gives wrong numbers, as with any racy NumPy code, never a crash.

Shapes use: B batch, T context length, D features, V vocabulary, I fan_in, O fan_out, C classes.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from . import _arrays, _validate
from . import _kernels as K
from ._kernels import Cache

__all__ = [
    "Cache",
    "embedding_forward", "embedding_backward",
    "linear_forward", "linear_backward",
    "tanh_forward", "tanh_backward",
    "relu_forward", "relu_backward",
    "leaky_relu_forward", "leaky_relu_backward",
    "elu_forward", "elu_backward",
    "batchnorm_forward", "batchnorm_backward",
    "batchnorm_eval_forward", "batchnorm_eval_backward",
    "cross_entropy_forward", "cross_entropy_backward",
]

# a backward's out=: None, or one array (or None, for a new one) per gradient it returns
_Out = Sequence["np.ndarray | None"] | None

_BLAS_MAX = 2**31 - 1  # BLAS takes 32-bit int dimensions


# ----------------------------------------------------------------------------------------------
# validation

def _float_array(name, a, dtype=None, ndim=None, shape=None, contiguous=True) -> np.ndarray:
    """``a`` as a C-contiguous float32/float64 array; ``dtype`` pins the dtype of the call.

    Every check runs before the copy that makes ``a`` contiguous, so a refused input (say a
    ``np.broadcast_to`` view of a huge shape) is never materialized. With ``contiguous=False``
    the checked array is returned as given (the caller copies it once its other checks pass).
    """
    a = np.asarray(a)
    _validate.float_array_dtype(a.dtype, name)
    if dtype is not None and a.dtype != dtype:
        raise TypeError(
            f"{name} has dtype {a.dtype} but the other inputs are {np.dtype(dtype)}; "
            "fastbn does not mix float32 and float64 in one call (cast with .astype)")
    if ndim is not None and a.ndim != ndim:
        raise ValueError(f"{name} must be {ndim}-D, got shape {a.shape}")
    if shape is not None:
        _same_shape(name, a, shape)
    return _contiguous(a) if contiguous else a


def _entry_array(name, a) -> np.ndarray:
    """``_float_array(name, a)`` as the compiled entry of an op takes it as it is: with numpy's
    own float32/float64 descriptor (a dtype that only compares equal, one with metadata, is
    viewed as it). The general path of an op normalizes its arguments so, then calls the same
    entry as the fast path: the output and the cache are made in one place."""
    a = _float_array(name, a)
    f32, f64 = _validate.FLOAT_DTYPES
    canonical = f64 if a.dtype == f64 else f32
    return a if a.dtype is canonical else a.view(canonical)


def _contiguous(a) -> np.ndarray:
    """``a`` itself when C-contiguous and aligned, else a C-contiguous (aligned) copy. Unlike
    np.ascontiguousarray, a 0-d array stays 0-d (so tanh of a scalar array has the shape of its
    input). The kernels read through typed pointers: an unaligned one is undefined in C."""
    if a.flags.c_contiguous and a.flags.aligned:
        return a
    return np.array(a, order="C", copy=True)


def _same_shape(name, a, shape):
    if a.shape != tuple(shape):
        raise ValueError(f"{name} must have shape {tuple(shape)}, got {a.shape}")


def _dout(dout, cache, shape) -> np.ndarray:
    """The upstream gradient of a backward: the forward output's shape and dtype."""
    return _float_array("dout", dout, dtype=cache.dtype, shape=shape)


def _cached(cache, name, shape=None, dtype=None, bound=None, what="") -> np.ndarray:
    """``cache.<name>`` as the kernel will read it; every backward reads its cache through here.

    The attribute must be a C-contiguous, aligned array of ``shape`` (any shape when None) and
    ``dtype`` (the cache's when None): the cache's attributes are public (teaching code looks
    inside), and one replaced or reshaped after the forward must give an error here, not an
    out-of-bounds read (another shape) or garbage (another layout) in a kernel. With ``bound``,
    an index array: a private copy, every value checked to be in [0, bound) (see
    ``fastbn._arrays.index_array``; the attribute stays public and writeable by anyone).
    """
    a = getattr(cache, name, None)
    dtype = cache.dtype if dtype is None else dtype
    if (not isinstance(a, np.ndarray) or (shape is not None and a.shape != tuple(shape))
            or a.dtype != dtype or not a.flags.c_contiguous or not a.flags.aligned):
        desc = (f"{'' if a.flags.c_contiguous else 'non-'}C-contiguous"
                f"{'' if a.flags.aligned else ' unaligned'} {a.dtype} array of shape {a.shape}"
                if isinstance(a, np.ndarray) else type(a).__name__)
        want = "" if shape is None else f" of shape {tuple(shape)}"
        raise ValueError(f"cache.{name} must be a C-contiguous, aligned {np.dtype(dtype)} array"
                         f"{want}, got a {desc} (was the cache modified after the forward?)")
    if bound is not None:
        return _arrays.index_array(f"cache.{name}", a, bound, what)
    return a


def _cache(cache, op) -> Cache:
    if not isinstance(cache, Cache) or getattr(cache, "op", None) != op:
        got = getattr(cache, "op", type(cache).__name__)
        raise TypeError(f"{op}_backward needs the cache returned by {op}_forward, got {got!r}")
    return cache


def _blas_dims(*dims):
    if max(dims) > _BLAS_MAX:
        raise ValueError(f"dimensions {dims} exceed the 32-bit limit of BLAS")


def _written(out, grads, names) -> Any:
    """``grads`` (a tuple; None where there is no gradient) copied into the arrays of a
    backward's ``out=`` tuple, and returned in them; ``grads`` as they are for ``out=None``."""
    if out is None:
        return grads
    if not isinstance(out, tuple) or len(out) != len(grads):
        raise TypeError(f"out must be a tuple of {len(grads)} arrays or None "
                        f"({', '.join(names)}), got {_short_type(out)}")
    return tuple(g if o is None else _write(f"out[{i}] ({n})", o, g)
                 for i, (n, o, g) in enumerate(zip(names, out, grads)))


def _write(name, o, g) -> np.ndarray:
    """``o[...] = g`` for an ``out=`` array of g's shape and dtype, writeable; returns o."""
    if g is None:
        raise ValueError(f"{name} must be None: the forward had no bias")
    if not isinstance(o, np.ndarray):
        raise TypeError(f"{name} must be a NumPy array or None, got {_short_type(o)}")
    if o.dtype != g.dtype:
        raise TypeError(f"{name} must have dtype {g.dtype}, got {o.dtype}")
    _same_shape(name, o, g.shape)
    if not o.flags.writeable:
        raise ValueError(f"{name} is read-only")
    o[...] = g
    return o


def _short_type(v):
    return type(v).__name__


# ----------------------------------------------------------------------------------------------
# embedding

def embedding_forward(weight: ArrayLike, idx: ArrayLike) -> tuple[np.ndarray, Cache]:
    """Look up rows of an embedding table and concatenate the T context vectors.

    Parameters
    ----------
    weight : ndarray of shape (V, D)
        the embedding table
    idx : integer ndarray of shape (B, T)
        with values in [0, V); a 1-D (B,) is read as T = 1

    Returns
    -------
    out, cache
        out: array of shape (B, T*D), ``out[b, t*D:(t+1)*D] = weight[idx[b, t]]``
        (the lecture's ``C[X].view(B, -1)``); shape (B, D) for a 1-D idx.
    """
    res = K.embedding_forward_fast(weight, idx)
    if res is not None:
        return res
    weight = _float_array("weight", weight, ndim=2)
    idx_in = np.asarray(idx)
    if idx_in.ndim not in (1, 2):
        raise ValueError(f"idx must be of shape (B, T) or (B,), got shape {idx_in.shape}")
    V, D = weight.shape
    B, T = idx_in.shape[0], (idx_in.shape[1] if idx_in.ndim == 2 else 1)
    idx2 = _arrays.index_array("idx", idx_in, V, f"the embedding table has {V} rows").reshape(B, T)
    out = np.empty((B, T * D), dtype=weight.dtype)
    K.embedding_forward(weight, idx2, out)
    if idx_in.ndim == 1:
        out = out.reshape(B, D)
    return out, Cache(op="embedding", dtype=weight.dtype, idx=idx2, weight_shape=weight.shape,
                      out_shape=out.shape)


def embedding_backward(dout: ArrayLike, cache: Cache, *,
                       out: np.ndarray | None = None) -> np.ndarray:
    """Gradient of the embedding table.

    Parameters
    ----------
    dout : ndarray of shape (B, T*D)
        upstream gradient
    cache
        from embedding_forward
    out
        an array of shape (V, D) and the cache's dtype to write dweight into, or None

    Returns
    -------
    dweight : ndarray of shape (V, D)
        a scatter-add,
        ``dweight[v] = sum over (b, t) with idx[b, t] == v of dout[b, t*D:(t+1)*D]``, so an index
        that appears many times in the batch accumulates all of its gradients.
    """
    res = K.embedding_backward_fast(dout, cache, out)
    if res is not None:
        return res
    c = _cache(cache, "embedding")
    V, D = (int(n) for n in c.weight_shape)
    out_shape = tuple(c.out_shape)
    B = out_shape[0]
    idx = _cached(c, "idx", None, np.int64, V, f"the embedding table has {V} rows")
    if idx.ndim != 2 or idx.shape[0] != B:
        raise ValueError(f"cache.idx must be of shape ({B}, T), got {idx.shape}")
    d = _dout(dout, c, out_shape).reshape(B, idx.shape[1] * D)
    dweight = np.zeros((V, D), dtype=c.dtype)
    K.embedding_backward(d, idx, dweight)
    return dweight if out is None else _write("out", out, dweight)


# ----------------------------------------------------------------------------------------------
# linear

def linear_forward(x: ArrayLike, w: ArrayLike,
                   b: ArrayLike | None = None) -> tuple[np.ndarray, Cache]:
    """Affine map ``out = x @ w + b`` (the lecture's L = H·W + B).

    Parameters
    ----------
    x : ndarray of shape (B, I)
    w : ndarray of shape (I, O)
        — fan_in rows, fan_out columns, as in the lecture
        (torch.nn.Linear stores the transpose, (O, I))
    b : ndarray of shape (O,)
        or None for no bias

    Returns
    -------
    out : ndarray of shape (B, O)
    cache : Cache
        What ``linear_backward`` reads (x and w).

    Examples
    --------
    >>> import numpy as np
    >>> from fastbn import ops
    >>> x, w = np.arange(12.0).reshape(4, 3), np.ones((3, 2))
    >>> out, cache = ops.linear_forward(x, w, np.zeros(2))
    >>> print(out)
    [[ 3.  3.]
     [12. 12.]
     [21. 21.]
     [30. 30.]]
    >>> dx, dw, db = ops.linear_backward(np.ones_like(out), cache)
    >>> print(dx.shape, dw.shape, db)
    (4, 3) (3, 2) [4. 4.]
    """
    res = K.linear_forward_fast(x, w, b)
    if res is not None:
        return res
    x = _float_array("x", x, ndim=2, contiguous=False)
    w = _float_array("w", w, dtype=x.dtype, ndim=2, contiguous=False)
    if x.shape[1] != w.shape[0]:
        raise ValueError(f"x of shape {x.shape} and w of shape {w.shape} do not chain: "
                         f"x.shape[1] ({x.shape[1]}) != w.shape[0] ({w.shape[0]})")
    if b is not None:
        b = _float_array("b", b, dtype=x.dtype, ndim=1, shape=(w.shape[1],))
    B, I = x.shape
    O = w.shape[1]
    _blas_dims(B, I, O)                 # before x and w are copied to contiguous memory
    x, w = _contiguous(x), _contiguous(w)
    if B == 0 or I == 0 or O == 0:
        out = np.zeros((B, O), dtype=x.dtype) + (b if b is not None else 0)
    else:
        out = np.empty((B, O), dtype=x.dtype)
        K.linear_forward(x, w, b, out)
    return out, Cache(op="linear", dtype=x.dtype, x=x, w=w, has_bias=b is not None)


def linear_backward(dout: ArrayLike, cache: Cache, *, out: _Out = None,
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Gradients of the affine map.

    Parameters
    ----------
    dout : ndarray of shape (B, O)
    cache
        from linear_forward
    out
        None, or a tuple (dx, dw, db) of arrays to write the gradients into, each None for a
        new array (db None when the forward had no bias)

    Returns
    -------
    dx, dw, db
        ``dx = dout @ w.T`` (B, I), ``dw = x.T @ dout`` (I, O),
        ``db = dout.sum(0)`` (O,), or None when the forward had no bias.
    """
    res = K.linear_backward_fast(dout, cache, out)
    if res is not None:
        return res
    c = _cache(cache, "linear")
    B, I = np.shape(c.x) if np.ndim(c.x) == 2 else (-1, -1)
    O = np.shape(c.w)[1] if np.ndim(c.w) == 2 else -1
    x, w = _cached(c, "x", (B, I)), _cached(c, "w", (I, O))
    d = _dout(dout, c, (B, O))
    dx = np.empty((B, I), dtype=c.dtype)
    dw = np.empty((I, O), dtype=c.dtype)
    db = np.empty(O, dtype=c.dtype) if c.has_bias else None
    if B == 0 or I == 0 or O == 0:
        dx[...] = 0
        dw[...] = 0
        if db is not None:
            db[...] = d.sum(0)
    else:
        K.linear_backward(d, x, w, dx, dw, db)
    return _written(out, (dx, dw, db), ("dx", "dw", "db"))


# ----------------------------------------------------------------------------------------------
# elementwise nonlinearities

def tanh_forward(x: ArrayLike) -> tuple[np.ndarray, Cache]:
    """``t = tanh(x)`` elementwise. x: array of any shape. Returns (t, cache).

    Parameters
    ----------
    x : array_like
        Any shape, float32 or float64.

    Returns
    -------
    t : numpy.ndarray
        Of the shape and dtype of x.
    cache : Cache
        ``t`` (the backward reads the output).

    Examples
    --------
    >>> import numpy as np
    >>> from fastbn import ops
    >>> t, cache = ops.tanh_forward(np.array([0.0, 1.0]))
    >>> print(t, ops.tanh_backward(np.ones(2), cache))    # 1 - t**2
    [0.         0.76159416] [1.         0.41997434]
    """
    res = K.tanh_forward_fast(x)
    return res if res is not None else K.tanh_forward_entry(_entry_array("x", x))


def tanh_backward(dout: ArrayLike, cache: Cache) -> np.ndarray:
    """``dx = dout * (1 - t**2)``, from the saved output t = tanh(x). Returns dx, shape of x.

    Parameters
    ----------
    dout : array_like
        The gradient of the output, of its shape and dtype.
    cache : Cache
        The forward's.

    Returns
    -------
    numpy.ndarray
        ``dx``, of the shape and dtype of x.
    """
    res = K.tanh_backward_fast(dout, cache)
    if res is not None:
        return res
    c = _cache(cache, "tanh")
    t = _cached(c, "out")
    d = _dout(dout, c, t.shape)
    dx = np.empty(t.shape, dtype=t.dtype)
    K.tanh_backward(d.reshape(-1), t.reshape(-1), dx.reshape(-1))
    return dx


def _leaky(x, slope, op) -> tuple[np.ndarray, Cache]:
    res = K.leaky_relu_forward_fast(x, slope, op)
    if res is not None:
        return res
    x = _entry_array("x", x)
    return K.leaky_relu_forward_entry(x, float(slope), op)


def _leaky_backward(dout, cache, op) -> np.ndarray:
    res = K.leaky_relu_backward_fast(dout, cache, op)
    if res is not None:
        return res
    c = _cache(cache, op)
    x = _cached(c, "x")
    d = _dout(dout, c, x.shape)
    dx = np.empty(x.shape, dtype=x.dtype)
    K.leaky_relu_backward(d.reshape(-1), x.reshape(-1), float(c.negative_slope), dx.reshape(-1))
    return dx


def relu_forward(x: ArrayLike) -> tuple[np.ndarray, Cache]:
    """``out = max(x, 0)`` elementwise (NaN propagates). x: array of any shape.

    Parameters
    ----------
    x : array_like
        Any shape, float32 or float64.

    Returns
    -------
    out : numpy.ndarray
        Of the shape and dtype of x.
    cache : Cache
        For the backward.
    """
    return _leaky(x, 0.0, "relu")


def relu_backward(dout: ArrayLike, cache: Cache) -> np.ndarray:
    """``dx = dout * (x > 0)``: zero where x <= 0, as torch. Returns dx, shape of x.

    Parameters
    ----------
    dout : array_like
        The gradient of the output, of its shape and dtype.
    cache : Cache
        The forward's.

    Returns
    -------
    numpy.ndarray
        ``dx``, of the shape and dtype of x.
    """
    return _leaky_backward(dout, cache, "relu")


def leaky_relu_forward(x: ArrayLike, negative_slope: float = 0.01,
                       ) -> tuple[np.ndarray, Cache]:
    """``out = x if x >= 0 else negative_slope * x`` elementwise. Returns (out, cache).

    Parameters
    ----------
    x : array_like
        Any shape, float32 or float64.
    negative_slope : float, default 0.01
        The slope of the negative side.

    Returns
    -------
    out : numpy.ndarray
        Of the shape and dtype of x.
    cache : Cache
        For the backward.
    """
    return _leaky(x, negative_slope, "leaky_relu")


def leaky_relu_backward(dout: ArrayLike, cache: Cache) -> np.ndarray:
    """``dx = dout`` where x > 0, ``negative_slope * dout`` elsewhere. Returns dx, shape of x.

    Parameters
    ----------
    dout : array_like
        The gradient of the output, of its shape and dtype.
    cache : Cache
        The forward's.

    Returns
    -------
    numpy.ndarray
        ``dx``, of the shape and dtype of x.
    """
    return _leaky_backward(dout, cache, "leaky_relu")


def elu_forward(x: ArrayLike, alpha: float = 1.0) -> tuple[np.ndarray, Cache]:
    """ELU (Clevert et al. 2015), elementwise: ``out = x`` where x > 0, ``alpha * (exp(x) - 1)``
    elsewhere (computed as ``alpha * expm1(x)``, exact near 0). x: array of any shape.

    ``alpha``: finite, >= 0 (default 1.0, torch's). The backward reads the branch from the sign
    of the output, which is the sign of x only for alpha >= 0; torch also takes a negative alpha.

    Parameters
    ----------
    x : array_like
        Any shape, float32 or float64.
    alpha : float, default 1.0
        The negative side saturates at ``-alpha``; finite, >= 0.

    Returns
    -------
    out : numpy.ndarray
        Of the shape and dtype of x.
    cache : Cache
        For the backward.
    """
    res = K.elu_forward_fast(x, alpha)
    if res is not None:
        return res
    x = _entry_array("x", x)
    return K.elu_forward_entry(x, _validate.alpha(alpha))


def elu_backward(dout: ArrayLike, cache: Cache) -> np.ndarray:
    """``dx = dout`` where out > 0 (x > 0), ``dout * (out + alpha)`` elsewhere, from the saved
    output: d/dx alpha (e^x - 1) = alpha e^x = out + alpha. Returns dx, shape of x.

    At x = 0 the slope is alpha, as torch. Where x is NaN, dx is NaN (torch gives dout there: its
    backward tests x <= 0). Like tanh's 1 - t**2, out + alpha loses relative precision where
    out -> -alpha (x << 0): its absolute error is about one ulp of alpha, times ``|dout|``.

    Parameters
    ----------
    dout : array_like
        The gradient of the output, of its shape and dtype.
    cache : Cache
        The forward's.

    Returns
    -------
    numpy.ndarray
        ``dx``, of the shape and dtype of x.
    """
    res = K.elu_backward_fast(dout, cache)
    if res is not None:
        return res
    c = _cache(cache, "elu")
    out = _cached(c, "out")
    d = _dout(dout, c, out.shape)
    dx = np.empty(out.shape, dtype=out.dtype)
    K.elu_backward(d.reshape(-1), out.reshape(-1), _validate.alpha(c.alpha), dx.reshape(-1))
    return dx


# ----------------------------------------------------------------------------------------------
# batch normalization

def _bn_params(x, gamma, beta) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    x = _float_array("x", x, ndim=2, contiguous=False)
    D = x.shape[1]
    gamma = _float_array("gamma", gamma, dtype=x.dtype, ndim=1, shape=(D,))
    beta = _float_array("beta", beta, dtype=x.dtype, ndim=1, shape=(D,))
    return x, gamma, beta


def _bn_cache(c) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(xhat (B, D), gamma (D,), invstd (D,)) of a batch-norm cache, shapes checked."""
    B, D = np.shape(c.xhat) if np.ndim(c.xhat) == 2 else (-1, -1)
    return _cached(c, "xhat", (B, D)), _cached(c, "gamma", (D,)), _cached(c, "invstd", (D,))


def batchnorm_forward(x: ArrayLike, gamma: ArrayLike, beta: ArrayLike, eps: float = 1e-5,
                      unbiased: bool = False) -> tuple[np.ndarray, Cache]:
    """Batch normalization in training mode, over the batch axis.

    ``mean = x.mean(0)``, ``var = ((x - mean)**2).sum(0) / n``,
    ``xhat = (x - mean) / sqrt(var + eps)``, ``out = gamma * xhat + beta``, where the divisor ``n``
    is B by default (the biased variance): exactly ``torch.nn.functional.batch_norm(training=True)``
    and ``torch.nn.BatchNorm1d``. ``unbiased=True`` is the makemore lecture's variant: ``n = B - 1``
    (the Bessel-corrected variance, its ``hpreact.std(0)`` and ``1/(n-1)``), as
    ``(x - mean) / sqrt(torch.var(x, 0, unbiased=True) + eps)``.

    Parameters
    ----------
    x : ndarray of shape (B, D)
        B >= 2
    gamma, beta : ndarray of shape (D,)
    eps : float
        >= 0
    unbiased : bool
        which variance normalizes (above)

    Returns
    -------
    out, cache
        out of shape (B, D). The cache exposes ``cache.mean`` (D,), the batch
        mean, and ``cache.var`` (D,), the **unbiased** batch variance (/ (B - 1)) whatever the
        variant, which is what ``torch.nn.BatchNorm1d`` feeds into ``running_var``; also ``xhat``
        (B, D), ``invstd`` (D,) (``1 / sqrt(var_n + eps)``, of the variance that normalized) and
        ``unbiased``, the variant, which ``batchnorm_backward`` reads.

    Examples
    --------
    >>> import numpy as np
    >>> from fastbn import ops
    >>> x = np.arange(12.0).reshape(4, 3)
    >>> out, cache = ops.batchnorm_forward(x, np.ones(3), np.zeros(3))
    >>> print(out.mean(0).round(6), out.std(0).round(4))     # each feature normalized
    [0. 0. 0.] [1. 1. 1.]
    >>> dx, dgamma, dbeta = ops.batchnorm_backward(np.ones_like(out), cache)
    >>> print(dx.shape, bool(np.abs(dx).max() < 1e-9), dbeta)   # a shift of out moves no x
    (4, 3) True [4. 4. 4.]
    """
    res = K.batchnorm_forward_fast(x, gamma, beta, eps, unbiased)
    if res is not None:
        return res
    x, gamma, beta = _bn_params(x, gamma, beta)
    eps = _validate.eps(eps)
    unbiased = _validate.unbiased(unbiased)
    B, D = x.shape
    if B < 2:
        raise ValueError(f"Expected more than 1 value per channel when training, got input of "
                         f"shape {x.shape}")
    x = _contiguous(x)
    out, xhat = np.empty_like(x), np.empty_like(x)
    mean, invstd, var = (np.empty(D, dtype=x.dtype) for _ in range(3))
    K.batchnorm_forward(x, gamma, beta, eps, out, xhat, mean, invstd, var, unbiased)
    return out, Cache(op="batchnorm", dtype=x.dtype, xhat=xhat, gamma=gamma, invstd=invstd,
                      mean=mean, var=var, eps=eps, unbiased=unbiased)


def batchnorm_backward(dout: ArrayLike, cache: Cache, *, out: _Out = None,
                       ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Gradients of training-mode batch normalization, of the variant the forward ran
    (``cache.unbiased``).

    Parameters
    ----------
    dout : ndarray of shape (B, D)
    cache
        from batchnorm_forward
    out
        None, or a tuple (dx, dgamma, dbeta) of arrays to write the gradients into, each None
        for a new array

    Returns
    -------
    dx, dgamma, dbeta
        of shapes (B, D), (D,), (D,):
        ``dbeta = dout.sum(0)``, ``dgamma = (dout * xhat).sum(0)`` and, with the paths through the
        batch mean and variance folded into one closed form (``d var / dx = 2 (x - mean) / n``),
        ``dx = gamma * invstd / B * (B * dout - dbeta - (B / n) * xhat * dgamma)``: ``B / n`` is 1
        for the biased variance and ``B / (B - 1)`` for the unbiased one (the lecture's one-line
        ``dhprebn``, its ``n/(n-1) * bnraw * (dhpreact*bnraw).sum(0)``).
    """
    res = K.batchnorm_backward_fast(dout, cache, out)
    if res is not None:
        return res
    c = _cache(cache, "batchnorm")
    xhat, gamma, invstd = _bn_cache(c)
    try:
        unbiased = _validate.unbiased(getattr(c, "unbiased", None), "cache.unbiased")
    except TypeError as e:
        raise ValueError(f"{e} (was the cache modified after the forward?)") from None
    if xhat.shape[0] < 2:
        raise ValueError(f"cache.xhat must have at least 2 rows (a training-mode batch), got "
                         f"shape {xhat.shape} (was the cache modified after the forward?)")
    d = _dout(dout, c, xhat.shape)
    D = xhat.shape[1]
    dx = np.empty_like(xhat)
    dgamma, dbeta = np.empty(D, dtype=c.dtype), np.empty(D, dtype=c.dtype)
    K.batchnorm_backward(d, xhat, gamma, invstd, dx, dgamma, dbeta, bool(unbiased))
    return _written(out, (dx, dgamma, dbeta), ("dx", "dgamma", "dbeta"))


def batchnorm_eval_forward(x: ArrayLike, gamma: ArrayLike, beta: ArrayLike,
                           running_mean: ArrayLike, running_var: ArrayLike,
                           eps: float = 1e-5) -> tuple[np.ndarray, Cache]:
    """Batch normalization in eval mode: given statistics, so an affine map per feature.

    ``out = gamma * (x - running_mean) / sqrt(running_var + eps) + beta``

    Parameters
    ----------
    x : ndarray of shape (B, D)
        (any B >= 0)
    gamma, beta, running_mean, running_var : ndarray of shape (D,)
        running_var >= 0
    eps : float
        >= 0

    Returns
    -------
    out, cache
        out of shape (B, D).
    """
    res = K.batchnorm_eval_forward_fast(x, gamma, beta, running_mean, running_var, eps)
    if res is not None:
        return res
    x, gamma, beta = _bn_params(x, gamma, beta)
    eps = _validate.eps(eps)
    D = x.shape[1]
    rm = _float_array("running_mean", running_mean, dtype=x.dtype, ndim=1, shape=(D,))
    rv = _float_array("running_var", running_var, dtype=x.dtype, ndim=1, shape=(D,))
    x = _contiguous(x)
    invstd = (1.0 / np.sqrt(rv.astype(np.float64) + eps)).astype(x.dtype)
    out, xhat = np.empty_like(x), np.empty_like(x)
    K.batchnorm_eval_forward(x, gamma, beta, rm, invstd, out, xhat)
    return out, Cache(op="batchnorm_eval", dtype=x.dtype, xhat=xhat, gamma=gamma, invstd=invstd)


def batchnorm_eval_backward(dout: ArrayLike, cache: Cache, *, out: _Out = None,
                            ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Gradients of eval-mode batch normalization (statistics held constant).

    Returns (dx, dgamma, dbeta): ``dx = dout * gamma * invstd`` (B, D),
    ``dgamma = (dout * xhat).sum(0)`` (D,), ``dbeta = dout.sum(0)`` (D,); ``out`` as for
    ``batchnorm_backward``.

    Parameters
    ----------
    dout : array_like, shape (B, D)
        The gradient of the output.
    cache : Cache
        ``batchnorm_eval_forward``'s.
    out : tuple of three arrays or None, optional
        Arrays to write (dx, dgamma, dbeta) into, as for ``batchnorm_backward``.

    Returns
    -------
    dx : numpy.ndarray, shape (B, D)
    dgamma, dbeta : numpy.ndarray, shape (D,)
    """
    res = K.batchnorm_eval_backward_fast(dout, cache, out)
    if res is not None:
        return res
    c = _cache(cache, "batchnorm_eval")
    xhat, gamma, invstd = _bn_cache(c)
    d = _dout(dout, c, xhat.shape)
    D = xhat.shape[1]
    dx = np.empty_like(xhat)
    dgamma, dbeta = np.empty(D, dtype=c.dtype), np.empty(D, dtype=c.dtype)
    K.batchnorm_eval_backward(d, xhat, gamma, invstd, dx, dgamma, dbeta)
    return _written(out, (dx, dgamma, dbeta), ("dx", "dgamma", "dbeta"))


# ----------------------------------------------------------------------------------------------
# softmax cross-entropy

def cross_entropy_forward(logits: ArrayLike, target: ArrayLike) -> tuple[np.floating, Cache]:
    """Mean softmax cross-entropy, ``mean_b -log softmax(logits[b])[target[b]]``.

    Computed stably: ``logsumexp(l) = m + log(sum(exp(l - m)))`` with ``m = max(l)``, so no
    exponent is positive and logits of +-1e4 give a finite loss and finite gradients.

    Parameters
    ----------
    logits : ndarray of shape (B, C)
        B >= 1, C >= 1
    target : integer ndarray of shape (B,)
        values in [0, C)

    Returns
    -------
    loss, cache
        loss is a NumPy scalar of the logits' dtype. The cache holds the
        softmax probabilities ``cache.probs`` (B, C).

    Examples
    --------
    >>> import numpy as np
    >>> from fastbn import ops
    >>> loss, cache = ops.cross_entropy_forward(np.zeros((2, 27)), np.array([0, 5]))
    >>> print(round(float(loss), 4))                         # ln 27: a uniform guess
    3.2958
    >>> print(ops.cross_entropy_backward(1.0, cache).shape)
    (2, 27)
    """
    res = K.cross_entropy_forward_fast(logits, target)
    if res is not None:
        return res
    logits = _float_array("logits", logits, ndim=2, contiguous=False)
    B, C = logits.shape
    if B == 0 or C == 0:
        raise ValueError(f"cross-entropy needs at least one row and one class, got logits of "
                         f"shape {logits.shape}")
    t = np.asarray(target)
    if t.ndim != 1 or t.shape[0] != B:
        raise ValueError(f"target must have shape ({B},) to match logits {logits.shape}, "
                         f"got {t.shape}")
    t = _arrays.index_array("target", t, C, f"logits have {C} classes")
    logits = _contiguous(logits)
    probs = np.empty_like(logits)
    loss = K.cross_entropy_forward(logits, t, probs)
    return logits.dtype.type(loss), Cache(op="cross_entropy", dtype=logits.dtype, probs=probs,
                                          target=t)


def cross_entropy_backward(dloss: ArrayLike, cache: Cache) -> np.ndarray:
    """Gradient of the mean cross-entropy with respect to the logits.

    Parameters
    ----------
    dloss : scalar
        the upstream gradient of the loss (1.0 when the loss is the objective)
    cache
        from cross_entropy_forward

    Returns
    -------
    dlogits : ndarray of shape (B, C)
        ``dloss * (softmax(logits) - onehot(target)) / B``.
    """
    res = K.cross_entropy_backward_fast(dloss, cache)
    if res is not None:
        return res
    c = _cache(cache, "cross_entropy")
    d = np.asarray(dloss)
    if d.size != 1:
        raise ValueError(f"dloss must be a scalar, got shape {d.shape}")
    if not (np.issubdtype(d.dtype, np.floating) or np.issubdtype(d.dtype, np.integer)):
        raise TypeError(f"dloss must be a real number, got dtype {d.dtype}")
    B, C = np.shape(c.probs) if np.ndim(c.probs) == 2 else (-1, -1)
    probs = _cached(c, "probs", (B, C))
    target = _cached(c, "target", (B,), np.int64, C, f"logits have {C} classes")
    dlogits = np.empty_like(probs)
    K.cross_entropy_backward(float(d.reshape(())), probs, target, dlogits)
    return dlogits
