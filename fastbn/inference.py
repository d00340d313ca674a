"""Eval-mode forward passes for inference: no caches, no batch statistics, buffers reused.

``Plan(model)`` is a snapshot of a ``CharMLP``'s eval-mode function (running statistics, as
``model.eval()`` computes): its layers as steps over private, read-only copies of their arrays,
taken when the plan is made. ``plan.logits(X)`` and ``plan.loss(X, Y)`` then run the same kernels
as the layers (``fastbn._kernels``: embedding, linear with BLAS, eval-mode batch norm, tanh,
cross-entropy), so a plan of a model computes the same numbers as ``model.logits`` in eval mode,
but none of what training needs: no ``Cache``, no ``.out`` kept on the layers, neither the
probabilities nor batch norm's normalized input written (the kernels' inference paths,
``probs=None`` and ``xhat=None``: the same loss and output, bit for bit), batch norm and tanh in
place, and the rows in chunks of ``CHUNK`` whose buffers are allocated once per call and stay in
the cache between layers.

This is the inference path of every ``CharMLP``: ``evaluate`` and ``sample`` build a plan per
call (``model.plan()``), and ``fastbn.fold_batchnorm``'s folded models (``fastbn.folding``) run
nothing else. A plan of an unfolded model keeps each BatchNorm1d as its eval-mode affine map, a
step of its own; a folded model's has none, and may ask for the table (below).

Steps (B rows of a chunk; T = block_size; shapes of the arrays a step holds):

=========== ========================================== ===========================================
step        holds                                      computes
=========== ========================================== ===========================================
embed       C (V, D)                                   ids (B, T) -> (B, T*D), ``C[X].reshape``
table       tab (T, V, H): the embedding and the       ids (B, T) -> (B, H),
            Linear after it, ``table=True``            ``sum_t tab[t, X[:, t]]``
linear      W (I, O), b (O,) or None                   ``x @ W + b`` -> (B, O)
batchnorm   gamma, beta, mean, invstd (D,)             ``gamma * (x - mean) * invstd + beta``,
                                                       in place
tanh        (nothing)                                  ``tanh(x)``, in place
layer       another activation layer of ``fastbn.nn``  its op's forward (a new array)
            (those of ``fastbn.registry``)
=========== ========================================== ===========================================

The table (``Plan(model, table=True)``, what a folded model asks for when ``table_pays``). The
embedding and the Linear after it are linear maps in a row, ``x0 @ W + b`` with ``x0[b]`` the T
embedding rows ``C[X[b, t]]`` side by side, so they compose into one table per context position::

    tab[t] = C @ W[t*D:(t+1)*D, :]   (V, H), t = 0 .. T-1;  tab[0] += b
    x0 @ W + b = sum_t tab[t][X[:, t]]                      (B, H)

computed in float64 from the model's arrays and rounded once to the dtype. A row then costs T
row gathers and T - 1 adds of H values (``fastbn._kernels.table_forward``) instead of a GEMM of
depth T*D: D times fewer operations. The price: the table has T*V*H entries where the embedding
and the Linear have V*D + T*D*H, its rows are read in the order of the ids, and it is made when
the plan is. ``table_pays`` is the rule (by size, and by the rows of a call).

Threads. Everything a kernel reads without the GIL is private to the call or to the plan: the
plan's arrays are copies made when it is built (read-only), the ids are copied and checked
(``fastbn._arrays.index_array``), the buffers are allocated per call. A plan can be used from
several threads at once; the model it was made from can change meanwhile without affecting it.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np
from numpy.typing import ArrayLike

from . import _arrays, _validate
from . import _kernels as K
from .blocks import describe

if TYPE_CHECKING:
    from .model import EvalModel

__all__ = ["CHUNK", "TABLE_CACHE_BYTES", "TABLE_MAX_RATIO", "TABLE_MIN_BATCH",
           "TABLE_MIN_ROWS_PER_V", "Plan", "table_pays"]

# Rows per chunk. Measured on the default model over the val split (22,655 rows, float32, one
# thread): 1024 to 2048 rows are fastest; 16384 (CharMLP.evaluate's chunk before it ran a plan)
# is ~1.4x slower, its (rows, 200) activations no longer fitting in the L2 cache.
CHUNK = 1024


# The table rule (table_pays; measured, see fastbn.folding's docstring for the numbers). For
# inference: a table of at most TABLE_MAX_RATIO times the entries of the embedding and the
# Linear it replaces, or of at most TABLE_CACHE_BYTES, used by a call of at least
# TABLE_MIN_ROWS_PER_V * V rows. For training (the fused step): a batch of at least
# TABLE_MIN_BATCH * V / 27 rows.
TABLE_MAX_RATIO = 4
TABLE_CACHE_BYTES = 256 * 1024
TABLE_MIN_ROWS_PER_V = 8
TABLE_MIN_BATCH = 48        # from this batch size on (for 27 classes) the fused table is faster


def table_pays(T: int, V: int, D: int, H: int, itemsize: int, rows: int | None = None,
               training: bool = False) -> bool:
    """Whether the embedding (V, D) and the Linear (T*D, H) after it are worth composing into a
    table (T, V, H) of ``itemsize``-byte floats (the module docstring), for a call of ``rows``
    rows (None: by size only), in inference (``training=False``: a ``Plan``) or in a training
    step (``training=True``: ``fastbn.fused.FusedTrainer``, ``rows`` its batch size). The one
    rule of both paths; the costs differ, so the case is a parameter.

    Inference, by size. A row saves T*D*H multiply-adds for T*H adds, but reads T rows of the
    table in the order of the ids. The table pays when it has at most ``TABLE_MAX_RATIO`` times
    the entries of the pair it replaces, ``V*D + T*D*H`` (about V / D times when the Linear
    dominates: the gathers then read little more than the GEMM would), or when it is small
    enough to stay in the cache among the other arrays of a chunk, ``TABLE_CACHE_BYTES`` (half
    the L2 cache of a core here). Beyond both (a large vocabulary with a small D) its reads cost
    what the GEMM saved, or more.

    Inference, by rows. The table is made per plan, T*V*D*H multiply-adds in float64 (and
    NumPy's overhead), which a row pays back T*D*H of: a call of fewer than
    ``TABLE_MIN_ROWS_PER_V * V`` rows is faster without it.

    Training. The fused step makes the table at every step, and its backward, in compiled code:
    3 GEMMs of V*D*H per step, against the direct GEMMs' B*T*D*H, so it pays from a batch of
    ``TABLE_MIN_BATCH * V / 27`` rows (measured for the default model); ``rows`` is required.

    Parameters
    ----------
    T, V, D, H : int
        Context length, vocabulary, embedding size, the Linear's width.
    itemsize : int
        Bytes per float (4 or 8).
    rows : int, optional
        The rows of the call (inference), or the batch size (training, required there).
    training : bool, default False
        The fused training step's rule instead of the inference plan's.

    Returns
    -------
    bool
        Whether to use the table.
    """
    if training:
        if rows is None:
            raise ValueError("the training rule of the table needs the batch size (rows)")
        return rows >= TABLE_MIN_BATCH * V / 27
    entries = T * V * H
    if entries > TABLE_MAX_RATIO * (V * D + T * D * H) and entries * itemsize > TABLE_CACHE_BYTES:
        return False
    return rows is None or rows >= TABLE_MIN_ROWS_PER_V * V


def _checked(a, dtype):
    if not isinstance(a, np.ndarray) or a.dtype != dtype:
        raise TypeError(f"a layer array must be a {dtype} ndarray, got "
                        f"{getattr(a, 'dtype', type(a).__name__)}")
    return a


def _private(a, dtype):
    """A read-only, C-contiguous copy of the array ``a`` of dtype ``dtype``.

    NumPy's alignment (16 bytes), not the layers' 64: a plan is built per ``evaluate`` call, and
    the 64-byte copy (``fastbn._arrays.aligned_copy``) costs ~8x the plain one, while the eval
    throughput of a plan whose arrays start 16 bytes off a cache line was measured the same
    (within noise)."""
    out = np.array(_checked(a, dtype), order="C", copy=True)
    out.flags.writeable = False
    return out


class _Embed:
    def __init__(self, layer, dt):
        self.C = _private(layer.weight, dt)                      # (V, D)
        self.vocab_size = self.C.shape[0]

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


class _Table:
    """The Embedding and the Linear after it as one table (the module docstring)."""

    def __init__(self, embed, linear, T, dt):
        C = _checked(embed.weight, dt).astype(np.float64)                 # (V, D), a copy
        W = _checked(linear.weight, dt).astype(np.float64)                # (T*D, H), a copy
        (V, D), H = C.shape, W.shape[1]
        if W.shape[0] != T * D:
            raise ValueError(f"a Linear of fan_in {W.shape[0]} follows an embedding of width "
                             f"{T * D}")
        tab = np.matmul(C, W.reshape(T, D, H))                            # (T, V, H)
        if linear.bias is not None:
            tab[0] += _checked(linear.bias, dt)
        self.tab = tab.astype(dt)                   # rounded once; a new array, ours alone
        self.tab.flags.writeable = False
        self.vocab_size = V

    def width(self, T):
        return self.tab.shape[2]

    def run(self, ids, out):
        K.table_forward(self.tab, ids, out)
        return out


class _BatchNormEval:
    """Eval-mode BatchNorm1d: ``fastbn.ops.batchnorm_eval_forward``'s arithmetic (invstd from
    the running variance in float64, cast), in place (elementwise: out[b, j] from x[b, j]
    alone); the kernel's normalized input (xhat, for a backward) is not written (``xhat=None``).
    Its input is always the plan's: a step's buffer, or the new array of a ``_Layer``."""

    inplace = True

    def __init__(self, layer, dt):
        self.gamma, self.beta = _private(layer.gamma, dt), _private(layer.beta, dt)
        self.mean = _private(layer.running_mean, dt)
        rv = layer.running_var.astype(np.float64)
        self.invstd = _private((1.0 / np.sqrt(rv + _validate.eps(layer.eps))).astype(dt), dt)

    def width(self, D):
        if D != self.gamma.shape[0]:
            raise ValueError(f"a BatchNorm1d of {self.gamma.shape[0]} features follows a layer "
                             f"of width {D}")
        return D

    def run(self, x):
        K.batchnorm_eval_forward(x, self.gamma, self.beta, self.mean, self.invstd, x, None)
        return x


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


def _steps(layers, dt, T, table):
    """The steps of a layer list [Embedding, ...] (its parts, ``fastbn.blocks.describe``): one
    per layer, in order; with ``table``, the Embedding and the Linear after it as one
    ``_Table`` step."""
    parts = describe(layers)
    if not table:
        steps, rest = [_Embed(parts[0].layer, dt)], 1
    elif len(parts) > 1 and parts[1].kind == "linear":
        steps, rest = [_Table(parts[0].layer, parts[1].layer, T, dt)], 2
    else:
        raise ValueError("a table needs a Linear right after the Embedding")
    for p in parts[rest:]:
        if p.kind == "linear":
            steps.append(_Linear(p.layer, dt))
        elif p.kind == "batchnorm":
            steps.append(_BatchNormEval(p.layer, dt))
        elif p.activation == "tanh":
            steps.append(_Tanh())
        else:                                   # another activation (describe knows no other)
            steps.append(_Layer(p.layer))
    return steps


class Plan:
    """The eval-mode function of ``model`` (a ``fastbn.CharMLP``, folded or not), frozen.

    ``table``: compose the Embedding and the Linear after it into a table (the module
    docstring): the same function up to rounding, not the layers' arithmetic.

    Attributes: ``dtype``, ``block_size`` (T), ``vocab_size`` (V, the embedding's rows),
    ``classes`` (the width of the logits), ``widths``, the width of each step's output, and
    ``table``, the table (T, V, H) or None.

    Parameters
    ----------
    model : CharMLP or FoldedCharMLP
        The model; its arrays are copied (a later change of the model does not reach the plan).
    table : bool, default False
        Compose the embedding and the first Linear into a table.
    """

    def __init__(self, model: EvalModel, table: bool = False) -> None:
        dt = _validate.float_dtype(model.dtype)
        self.dtype, self.block_size = dt, int(model.block_size)
        self.steps = _steps(list(model.layers), dt, self.block_size, bool(table))
        self.table: np.ndarray | None = getattr(self.steps[0], "tab", None)    # (T, V, H) or None
        self.vocab_size = self.steps[0].vocab_size
        self.widths: list[int] = []
        width = self.block_size
        for s in self.steps:
            width = s.width(width) if hasattr(s, "width") else width    # tanh, _Layer: same
            self.widths.append(width)
        self.classes = width

    def __repr__(self) -> str:
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
        return _arrays.index_array("X", X, self.vocab_size,
                                   f"the vocabulary has {self.vocab_size} characters")

    def _buffers(self, rows):
        """Per step: its output buffer (rows, width), or None for in-place steps."""
        return [None if getattr(s, "inplace", False) else np.empty((rows, w), self.dtype)
                for s, w in zip(self.steps, self.widths)]

    def _forward(self, ids, buffers):
        """Logits (k, classes) of the checked ids (k, T), k <= the buffers' rows, k >= 1."""
        k, h = ids.shape[0], ids
        for s, buf in zip(self.steps, buffers):
            h = s.run(h) if buf is None else s.run(h, buf[:k])
        return h

    def logits(self, X: ArrayLike, chunk: int = CHUNK) -> np.ndarray:
        """Logits (B, classes) of contexts X (B, T), in chunks of ``chunk`` rows; a new array.

        Parameters
        ----------
        X : array_like of int, shape (B, T)
            Contexts (character ids).
        chunk : int, optional
            Rows per pass (the buffers' size).

        Returns
        -------
        numpy.ndarray, shape (B, classes)
            The logits, of the plan's dtype.
        """
        ids = self._ids(X)
        chunk = _validate.positive_int(chunk, "chunk")
        N = ids.shape[0]
        out = np.empty((N, self.classes), self.dtype)
        if N == 0:
            return out
        buffers = self._buffers(min(chunk, N))
        for a in range(0, N, chunk):
            b = min(a + chunk, N)
            out[a:b] = self._forward(ids[a:b], buffers)
        return out

    def logits_fn(self, rows: int) -> Callable[[ArrayLike], np.ndarray]:
        """A function X (k, T) -> logits (k, classes), k <= ``rows``, whose buffers are
        allocated once: for a loop over batches of one size (``CharMLP.sample``'s steps). Each
        call returns a new array. One call at a time (the buffers are shared between calls).

        Parameters
        ----------
        rows : int
            The most rows a call takes.

        Returns
        -------
        callable
            ``logits(X)``: X (k, T) of int, k <= rows -> a new array (k, classes).
        """
        rows = _validate.positive_int(rows, "chunk")
        buffers = self._buffers(rows)

        def logits(X: ArrayLike) -> np.ndarray:
            ids = self._ids(X)
            if ids.shape[0] > rows:
                raise ValueError(f"this function takes at most {rows} rows, got {ids.shape[0]}")
            if ids.shape[0] == 0:
                return np.empty((0, self.classes), self.dtype)
            return self._forward(ids, buffers).copy()
        return logits

    def loss(self, X: ArrayLike, Y: ArrayLike, chunk: int = CHUNK) -> float:
        """Mean cross-entropy (a Python float) of predicting Y (B,) from X (B, T), B >= 1.

        Each chunk's mean comes from the cross-entropy kernel in float64 and is summed in
        float64, weighted by its rows. The kernel computes the loss alone (``probs=None``): the
        loss of ``fastbn.ops.cross_entropy_forward``, bit for bit, without writing the
        probabilities.

        Parameters
        ----------
        X : array_like of int, shape (B, T)
            Contexts.
        Y : array_like of int, shape (B,)
            The next characters.
        chunk : int, optional
            Rows per pass.

        Returns
        -------
        float
            The mean cross-entropy.
        """
        ids = self._ids(X)
        N = ids.shape[0]
        Y = np.asarray(Y)
        if Y.shape != (N,):
            raise ValueError(f"Y must have shape ({N},) to match X, got {Y.shape}")
        if N == 0:
            raise ValueError("cannot evaluate on zero examples")
        target = _arrays.index_array("Y", Y, self.classes,
                                     f"the logits have {self.classes} classes")
        chunk = _validate.positive_int(chunk, "chunk")
        rows = min(chunk, N)
        buffers = self._buffers(rows)
        total = 0.0
        for a in range(0, N, chunk):
            b = min(a + chunk, N)
            logits = self._forward(ids[a:b], buffers)
            total += K.cross_entropy_forward(logits, target[a:b], None) * (b - a)
        return total / N

