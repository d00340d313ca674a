"""Eval-mode forward passes for inference: no caches, no batch statistics, buffers reused.

``Plan(model)`` is a snapshot of a ``CharMLP``'s eval-mode function (running statistics, as
``model.eval()`` computes): its layers as steps over private, read-only copies of their arrays,
taken when the plan is made. ``plan.logits(X)`` and ``plan.loss(X, Y)`` then run the same kernels
as the layers (``fastbn._kernels``: embedding, linear with BLAS, eval-mode batch norm, tanh,
cross-entropy), so a plan of a model computes the same numbers as ``model.logits`` in eval mode,
but none of what training needs: no ``Cache``, no ``.out`` kept on the layers, no probabilities
kept for a backward, tanh in place, and the rows in chunks of ``CHUNK`` whose buffers are
allocated once per call and stay in the cache between layers.

This is the inference path of ``fastbn.fold_batchnorm``'s folded models (``fastbn.folding``). A
plan of an unfolded model keeps each BatchNorm1d as its eval-mode affine map, a step of its own;
the benchmark (``fastbn.bench.inference``) times that too, to separate what folding gains from
what the inference path gains.

Steps (B rows of a chunk; T = block_size; shapes of the arrays a step holds):

=========== ========================================== ===========================================
step        holds                                      computes
=========== ========================================== ===========================================
embed       C (V, D)                                   ids (B, T) -> (B, T*D), ``C[X].reshape``
linear      W (I, O), b (O,) or None                   ``x @ W + b`` -> (B, O)
batchnorm   gamma, beta, mean, invstd (D,)             ``gamma * (x - mean) * invstd + beta``
tanh        (nothing)                                  ``tanh(x)``, in place
layer       another activation layer of ``fastbn.nn``  its op's forward (a new array)
=========== ========================================== ===========================================

Threads. Everything a kernel reads without the GIL is private to the call or to the plan: the
plan's arrays are copies made when it is built (read-only), the ids are copied and checked
(``fastbn.ops._index_array``), the buffers are allocated per call. A plan can be used from several
threads at once; the model it was made from can change meanwhile without affecting it.
"""
import numpy as np

from . import _kernels as K
from . import nn, ops

__all__ = ["CHUNK", "Plan"]

# Rows per chunk. Measured on the default model over the val split (22,655 rows, float32, one
# thread): 1024 to 2048 rows are fastest; 16384 (CharMLP.evaluate's chunk) is ~1.4x slower, its
# (rows, 200) activations no longer fitting in the L2 cache.
CHUNK = 1024


def _private(a, dtype):
    """A read-only, 64-byte aligned, C-contiguous copy of the array ``a`` of dtype ``dtype``."""
    if not isinstance(a, np.ndarray) or a.dtype != dtype:
        raise TypeError(f"a layer array must be a {dtype} ndarray, got "
                        f"{getattr(a, 'dtype', type(a).__name__)}")
    out = nn._aligned(a)
    out.flags.writeable = False
    return out


class _Embed:
    def __init__(self, layer, dt):
        self.C = _private(layer.weight, dt)                      # (V, D)

    def width(self, T):
        return T * self.C.shape[1]

    def run(self, ids, out):
        K.embedding_forward(self.C, ids, out)
        return out


class _Linear:
    def __init__(self, layer, dt):
        self.W = _private(layer.weight, dt)                      # (I, O)
        self.b = None if layer.bias is None else _private(layer.bias, dt)     # (O,)

    def width(self, fan_in):
        if fan_in != self.W.shape[0]:
            raise ValueError(f"a Linear of fan_in {self.W.shape[0]} follows a layer of width "
                             f"{fan_in}")
        return self.W.shape[1]

    def run(self, x, out):
        K.linear_forward(x, self.W, self.b, out)
        return out


class _BatchNormEval:
    """Eval-mode BatchNorm1d: ``fastbn.ops.batchnorm_eval_forward``'s arithmetic (invstd from
    the running variance in float64, cast), into a buffer, with a scratch buffer for the
    normalized input the kernel also writes."""

    scratch = True

    def __init__(self, layer, dt):
        self.gamma, self.beta = _private(layer.gamma, dt), _private(layer.beta, dt)
        self.mean = _private(layer.running_mean, dt)
        rv = layer.running_var.astype(np.float64)
        self.invstd = _private((1.0 / np.sqrt(rv + ops._check_eps(layer.eps))).astype(dt), dt)

    def width(self, D):
        if D != self.gamma.shape[0]:
            raise ValueError(f"a BatchNorm1d of {self.gamma.shape[0]} features follows a layer "
                             f"of width {D}")
        return D

    def run(self, x, out, xhat):
        K.batchnorm_eval_forward(x, self.gamma, self.beta, self.mean, self.invstd, out, xhat)
        return out


class _Tanh:
    inplace = True

    def run(self, x):
        flat = x.reshape(-1)
        K.tanh_forward(flat, flat)          # elementwise: out[i] from x[i] alone, so in place
        return x


class _Layer:
    """Any other activation layer: its op's forward, which checks and allocates (exact)."""

    inplace = True      # no buffer of ours: it returns a new array

    def __init__(self, layer):
        self.layer = layer

    def run(self, x):
        return self.layer.forward(x)[0]


def _steps(layers, dt):
    """The steps of a layer list [Embedding, ...]: one per layer, in order."""
    steps = []
    for i, layer in enumerate(layers):
        if isinstance(layer, nn.Embedding):
            if i != 0:
                raise ValueError("an Embedding can only be the first layer of a plan")
            steps.append(_Embed(layer, dt))
        elif i == 0:
            raise ValueError(f"a plan starts with an Embedding, not {type(layer).__name__}")
        elif isinstance(layer, nn.Linear):
            steps.append(_Linear(layer, dt))
        elif isinstance(layer, nn.BatchNorm1d):
            steps.append(_BatchNormEval(layer, dt))
        elif isinstance(layer, nn.Tanh):
            steps.append(_Tanh())
        elif isinstance(layer, (nn.ReLU, nn.LeakyReLU, nn.ELU)):
            steps.append(_Layer(layer))
        else:
            raise TypeError(f"no inference step for layer {i}, {type(layer).__name__}")
    if not steps:
        raise ValueError("a plan needs at least an Embedding")
    return steps


class Plan:
    """The eval-mode function of ``model`` (a ``fastbn.CharMLP``, folded or not), frozen.

    Attributes: ``dtype``, ``block_size`` (T), ``vocab_size`` (V, the embedding's rows),
    ``classes`` (the width of the logits) and ``widths``, the width of each step's output.
    """

    def __init__(self, model):
        dt = np.dtype(model.dtype)
        if dt not in ops.FLOAT_DTYPES:
            raise TypeError(f"dtype must be float32 or float64, got {dt}")
        self.dtype, self.block_size = dt, int(model.block_size)
        self.steps = _steps(list(model.layers), dt)
        self.vocab_size = self.steps[0].C.shape[0]
        width, self.widths = self.block_size, []
        for s in self.steps:
            width = width if getattr(s, "inplace", False) else s.width(width)
            self.widths.append(width)
        self.classes = width

    def __repr__(self):
        names = ", ".join(type(s).__name__.strip("_").lower() for s in self.steps)
        return (f"Plan({names}; {self.dtype.name}, T={self.block_size}, V={self.vocab_size}, "
                f"{self.classes} classes)")

    # ------------------------------------------------------------------------------------------

    def _ids(self, X):
        """X (B, T) as a private int64 copy, every id checked to be in [0, V)."""
        X = np.asarray(X)
        if X.ndim != 2 or X.shape[1] != self.block_size:
            raise ValueError(f"X must have shape (B, {self.block_size}) (block_size "
                             f"{self.block_size}), got {X.shape}")
        return ops._index_array("X", X, self.vocab_size,
                                f"the vocabulary has {self.vocab_size} characters")

    def _buffers(self, rows):
        """Per step: its output buffer (rows, width) and scratch, or None for in-place steps."""
        out = []
        for s, w in zip(self.steps, self.widths):
            if getattr(s, "inplace", False):
                out.append(None)
            else:
                scratch = np.empty((rows, w), self.dtype) if getattr(s, "scratch", False) \
                    else None
                out.append((np.empty((rows, w), self.dtype), scratch))
        return out

    def _forward(self, ids, buffers):
        """Logits (k, classes) of the checked ids (k, T), k <= the buffers' rows, k >= 1."""
        k, h = ids.shape[0], ids
        for s, buf in zip(self.steps, buffers):
            if buf is None:
                h = s.run(h)
            elif buf[1] is None:
                h = s.run(h, buf[0][:k])
            else:
                h = s.run(h, buf[0][:k], buf[1][:k])
        return h

    def logits(self, X, chunk=CHUNK):
        """Logits (B, classes) of contexts X (B, T), in chunks of ``chunk`` rows; a new array."""
        ids = self._ids(X)
        chunk = _chunk(chunk)
        N = ids.shape[0]
        out = np.empty((N, self.classes), self.dtype)
        if N == 0:
            return out
        buffers = self._buffers(min(chunk, N))
        for a in range(0, N, chunk):
            b = min(a + chunk, N)
            out[a:b] = self._forward(ids[a:b], buffers)
        return out

    def logits_fn(self, rows):
        """A function X (k, T) -> logits (k, classes), k <= ``rows``, whose buffers are
        allocated once: for a loop over batches of one size (``CharMLP.sample``'s steps). Each
        call returns a new array. One call at a time (the buffers are shared between calls)."""
        rows = _chunk(rows)
        buffers = self._buffers(rows)

        def logits(X):
            ids = self._ids(X)
            if ids.shape[0] > rows:
                raise ValueError(f"this function takes at most {rows} rows, got {ids.shape[0]}")
            if ids.shape[0] == 0:
                return np.empty((0, self.classes), self.dtype)
            return self._forward(ids, buffers).copy()
        return logits

    def loss(self, X, Y, chunk=CHUNK):
        """Mean cross-entropy (a Python float) of predicting Y (B,) from X (B, T), B >= 1.

        Each chunk's mean comes from the cross-entropy kernel in float64 and is summed in
        float64, weighted by its rows.
        """
        ids = self._ids(X)
        N = ids.shape[0]
        Y = np.asarray(Y)
        if Y.shape != (N,):
            raise ValueError(f"Y must have shape ({N},) to match X, got {Y.shape}")
        if N == 0:
            raise ValueError("cannot evaluate on zero examples")
        target = ops._index_array("Y", Y, self.classes, f"the logits have {self.classes} classes")
        chunk = _chunk(chunk)
        rows = min(chunk, N)
        buffers = self._buffers(rows)
        probs = np.empty((rows, self.classes), self.dtype)     # written by the kernel, unread
        total = 0.0
        for a in range(0, N, chunk):
            b = min(a + chunk, N)
            logits = self._forward(ids[a:b], buffers)
            total += K.cross_entropy_forward(logits, target[a:b], probs[:b - a]) * (b - a)
        return total / N


def _chunk(chunk):
    if isinstance(chunk, bool) or not isinstance(chunk, (int, np.integer)) or chunk < 1:
        raise ValueError(f"chunk must be a positive integer, got {chunk!r}")
    return int(chunk)
