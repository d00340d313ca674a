"""Backprop by hand, the lecture's exercise: the BN-MLP exploded into atomic steps, and its answers.

makemore part 4 ("becoming a backprop ninja") runs the part-3 model forward one small step at a
time, then asks for the gradient of the loss with respect to every intermediate, written by hand
and checked line by line with ``cmp(name, dt, t)``. This module is that exercise without autograd:

- :func:`init_params` / :func:`problem` — the lecture's parameters (and a minibatch);
- :func:`forward` — every intermediate, under the lecture's names;
- :func:`backward` — the hand-derived gradient of the loss for every one of them, step by step;
- :func:`check` — the lecture's ``cmp`` table for a dict of your own gradients, with a
  diagnosis of every wrong one (``fastbn.diagnosis``) and the first wrong step of the chain.

The backward is the table ``STEPS``: per gradient, its contributions by path (summed in order),
the terms of a sum over a broadcast axis, and the known slips of its local derivative. The
diagnosis reads the same table.

Shapes: n batch (B elsewhere in fastbn), T ``block_size``, E ``n_embd``, H ``n_hidden``,
V ``vocab_size``. Batch norm here is the lecture's: it normalizes with the Bessel-corrected
variance (÷ (n − 1)), not the biased one that torch's ``BatchNorm1d`` and, by default,
``fastbn.ops.batchnorm_forward`` use; eps is 1e-5. As one op it is
``fastbn.ops.batchnorm_forward(..., unbiased=True)``.

The steps. Each backward line is the chain rule with the step's local derivative; a step that
broadcasts a tensor in the forward sums its gradient over the broadcast axis in the backward, and a
step that sums over an axis broadcasts the gradient back over it. A tensor used twice gets the sum
of both contributions (``+=``).

==========================================================  ======================================
forward                                                     backward (local derivative × upstream)
==========================================================  ======================================
``emb = C[Xb]``                          (n, T, E)          ``dC[Xb[k, j]] += demb[k, j]``
``embcat = emb.reshape(n, T*E)``         (n, T*E)           ``demb = dembcat.reshape(n, T, E)``
``hprebn = embcat @ W1 + b1``            (n, H)             ``dembcat = dhprebn @ W1.T``;
                                                            ``dW1 = embcat.T @ dhprebn``;
                                                            ``db1 = dhprebn.sum(0)``
``bnmeani = 1/n * hprebn.sum(0)``        (1, H)             ``dhprebn += 1/n * dbnmeani``
``bndiff = hprebn - bnmeani``            (n, H)             ``dhprebn = dbndiff``;
                                                            ``dbnmeani = -dbndiff.sum(0)``
``bndiff2 = bndiff**2``                  (n, H)             ``dbndiff += 2*bndiff * dbndiff2``
``bnvar = 1/(n-1) * bndiff2.sum(0)``     (1, H)             ``dbndiff2 = 1/(n-1) * dbnvar``
``bnvar_inv = (bnvar + 1e-5)**-0.5``     (1, H)             ``dbnvar = -0.5*(bnvar + 1e-5)**-1.5
                                                            * dbnvar_inv``
``bnraw = bndiff * bnvar_inv``           (n, H)             ``dbndiff = bnvar_inv * dbnraw``;
                                                            ``dbnvar_inv = (bndiff*dbnraw).sum(0)``
``hpreact = bngain*bnraw + bnbias``      (n, H)             ``dbnraw = bngain * dhpreact``;
                                                            ``dbngain = (bnraw*dhpreact).sum(0)``;
                                                            ``dbnbias = dhpreact.sum(0)``
``h = tanh(hpreact)``                    (n, H)             ``dhpreact = (1 - h**2) * dh``
``logits = h @ W2 + b2``                 (n, V)             ``dh = dlogits @ W2.T``;
                                                            ``dW2 = h.T @ dlogits``;
                                                            ``db2 = dlogits.sum(0)``
``logit_maxes = logits.max(1)``          (n, 1)             ``dlogits += onehot(argmax) *
                                                            dlogit_maxes``
``norm_logits = logits - logit_maxes``   (n, V)             ``dlogits = dnorm_logits``;
                                                            ``dlogit_maxes = -dnorm_logits.sum(1)``
``counts = exp(norm_logits)``            (n, V)             ``dnorm_logits = counts * dcounts``
``counts_sum = counts.sum(1)``           (n, 1)             ``dcounts += dcounts_sum``
``counts_sum_inv = counts_sum**-1``      (n, 1)             ``dcounts_sum = -counts_sum**-2 *
                                                            dcounts_sum_inv``
``probs = counts * counts_sum_inv``      (n, V)             ``dcounts = counts_sum_inv * dprobs``;
                                                            ``dcounts_sum_inv = (counts *
                                                            dprobs).sum(1)``
``logprobs = log(probs)``                (n, V)             ``dprobs = dlogprobs / probs``
``loss = -logprobs[range(n), Yb].mean()``  ()               ``dlogprobs[range(n), Yb] = -1/n``
==========================================================  ======================================

Sums keep their axis (``keepdims``), as the lecture's ``sum(0, keepdim=True)``: every gradient has
the shape of its tensor (``dbnmeani`` is (1, H) like ``bnmeani``). The mathematically exact
gradient of ``logit_maxes`` is zero (the loss does not depend on the shift); the chain computes it
to rounding error, as autograd does.

The two one-step exercises are in :func:`backward`'s result too:

- ``dlogits_fast = (softmax(logits) - onehot(Yb)) / n`` — cross-entropy backward in one go;
- ``dhprebn_fast = bngain*bnvar_inv/n * (n*dhpreact - dhpreact.sum(0)
  - n/(n-1) * bnraw * (dhpreact*bnraw).sum(0))`` — the lecture's batch-norm backward in one go,
  the closed form of ``fastbn.ops.batchnorm_backward`` on a cache of
  ``batchnorm_forward(..., unbiased=True)`` (the biased variant, the default, has no ``n/(n-1)``).
"""
from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, DTypeLike

from . import _validate
from .comparison import Report, as_array, compare_arrays, explain, name_row
from .diagnosis import Knowledge, Tolerance

__all__ = ["SEED", "INTERMEDIATES", "PARAMS", "GRADIENTS", "init_params", "problem", "forward",
           "backward", "check", "Forward", "Gradients", "STEPS", "Step"]

SEED = 2147483647          # the lecture's torch.Generator seed, here for NumPy's default_rng
EPS = 1e-5                 # the lecture's batch-norm eps

INTERMEDIATES = ("emb", "embcat", "hprebn", "bnmeani", "bndiff", "bndiff2", "bnvar", "bnvar_inv",
                 "bnraw", "hpreact", "h", "logits", "logit_maxes", "norm_logits", "counts",
                 "counts_sum", "counts_sum_inv", "probs", "logprobs")
PARAMS = ("C", "W1", "b1", "W2", "b2", "bngain", "bnbias")
ONE_STEP = ("dlogits_fast", "dhprebn_fast")
# every name backward() returns, in the lecture's cmp order (loss back to the embedding), then the
# one-step exercises
GRADIENTS = ("dlogprobs", "dprobs", "dcounts_sum_inv", "dcounts_sum", "dcounts", "dnorm_logits",
             "dlogit_maxes", "dlogits", "dh", "dW2", "db2", "dhpreact", "dbngain", "dbnbias",
             "dbnraw", "dbnvar_inv", "dbnvar", "dbndiff2", "dbndiff", "dbnmeani", "dhprebn",
             "dembcat", "dW1", "db1", "demb", "dC") + ONE_STEP


# ----------------------------------------------------------------------------------------------
# parameters and data

def _sizes(**sizes):
    """The sizes, each checked to be a positive integer, in their order."""
    return [_validate.positive_int(v, name) for name, v in sizes.items()]


def _draw_params(rng, V, E, H, T, dtype):
    r = rng.standard_normal
    p = {
        "C": r((V, E)),
        "W1": r((E * T, H)) * (5 / 3) / (E * T) ** 0.5,
        "b1": r(H) * 0.1,
        "W2": r((H, V)) * 0.1,
        "b2": r(V) * 0.1,
        "bngain": r((1, H)) * 0.1 + 1.0,
        "bnbias": r((1, H)) * 0.1,
    }
    return {k: v.astype(dtype) for k, v in p.items()}


def init_params(vocab_size: int = 27, n_embd: int = 10, n_hidden: int = 64, block_size: int = 3,
                seed: int | np.random.Generator | None = SEED,
                dtype: DTypeLike = np.float64) -> dict[str, np.ndarray]:
    """The lecture's part-4 parameters, drawn as the lecture draws them, with NumPy.

    Every parameter is small and non-zero, so that no gradient is trivially zero and a wrong
    backward cannot hide behind an all-zeros init (the lecture's own reason):

    - ``C`` (V, E) ~ N(0, 1)
    - ``W1`` (T*E, H) ~ N(0, 1) · (5/3)/sqrt(T*E)   (Kaiming, tanh gain)
    - ``b1`` (H,) ~ N(0, 1) · 0.1    (useless before batch norm; kept as in the lecture)
    - ``W2`` (H, V) ~ N(0, 1) · 0.1,  ``b2`` (V,) ~ N(0, 1) · 0.1
    - ``bngain`` (1, H) ~ 1 + N(0, 1) · 0.1,  ``bnbias`` (1, H) ~ N(0, 1) · 0.1

    The draws come, in that order, from ``numpy.random.default_rng(seed)``. The default seed is
    the lecture's 2147483647, but NumPy's generator is not torch's: the values differ from the
    lecture's. They are drawn in float64 and cast, so float32 parameters are the float64 ones
    rounded.

    Parameters
    ----------
    vocab_size : int, default 27
        V.
    n_embd : int, default 10
        E, the embedding size.
    n_hidden : int, default 64
        H, the hidden layer's width.
    block_size : int, default 3
        T, the context length.
    seed : int, numpy.random.Generator or None, default 2147483647
        The source of the draws.
    dtype : {numpy.float64, numpy.float32}, default numpy.float64
        The parameters' dtype.

    Returns
    -------
    dict of str to numpy.ndarray
        ``{"C", "W1", "b1", "W2", "b2", "bngain", "bnbias"}``, fresh arrays of the shapes above.

    Examples
    --------
    >>> from fastbn import exercises
    >>> p = exercises.init_params()
    >>> for name, array in p.items():
    ...     print(name, array.shape)
    C (27, 10)
    W1 (30, 64)
    b1 (64,)
    W2 (64, 27)
    b2 (27,)
    bngain (1, 64)
    bnbias (1, 64)
    """
    V, E, H, T = _sizes(vocab_size=vocab_size, n_embd=n_embd, n_hidden=n_hidden,
                        block_size=block_size)
    return _draw_params(np.random.default_rng(seed), V, E, H, T, _validate.float_dtype(dtype))


def problem(batch_size: int = 32, *, vocab_size: int = 27, n_embd: int = 10, n_hidden: int = 64,
            block_size: int = 3, seed: int | np.random.Generator | None = SEED,
            dtype: DTypeLike = np.float64) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray]:
    """The exercise's standard problem: ``(params, Xb, Yb)``.

    ``params`` is :func:`init_params` with the same arguments; the minibatch is drawn after it from
    the same generator: ``Xb`` (n, T) and ``Yb`` (n,) uniform over the vocabulary (random
    characters, not names: the gradients do not care). With n*T > V, as by default (96 > 27),
    some characters appear several times in ``Xb``, so ``dC`` must accumulate.
    :func:`check` compares against this problem when given no reference.

    Parameters
    ----------
    batch_size : int, default 32
        n, the minibatch size; >= 2 (the lecture's batch norm divides by n - 1).
    vocab_size, n_embd, n_hidden, block_size, seed, dtype
        As :func:`init_params`.

    Returns
    -------
    params : dict of str to numpy.ndarray
        :func:`init_params`'s parameters.
    Xb : numpy.ndarray of int64, shape (n, T)
        The minibatch's contexts.
    Yb : numpy.ndarray of int64, shape (n,)
        Its targets.

    Examples
    --------
    >>> from fastbn import exercises
    >>> params, Xb, Yb = exercises.problem()
    >>> Xb.shape, Yb.shape, params["W1"].dtype
    ((32, 3), (32,), dtype('float64'))
    """
    n = _validate.positive_int(batch_size, "batch_size")
    if n < 2:
        raise ValueError("batch_size must be >= 2: the lecture's batch norm divides by n - 1")
    V, E, H, T = _sizes(vocab_size=vocab_size, n_embd=n_embd, n_hidden=n_hidden,
                        block_size=block_size)
    rng = np.random.default_rng(seed)
    params = _draw_params(rng, V, E, H, T, _validate.float_dtype(dtype))
    Xb = rng.integers(0, V, size=(n, T))
    Yb = rng.integers(0, V, size=n)
    return params, Xb, Yb


# ----------------------------------------------------------------------------------------------
# validation

def _params(params):
    """The seven parameters as arrays of one float dtype and consistent shapes."""
    if not isinstance(params, Mapping):
        raise TypeError(f"params must be a dict of {', '.join(PARAMS)}, got "
                        f"{type(params).__name__}")
    missing = [k for k in PARAMS if k not in params]
    if missing:
        raise ValueError(f"params is missing {', '.join(missing)} (see init_params)")
    p = {k: np.asarray(params[k]) for k in PARAMS}
    dt = p["C"].dtype
    for k, a in p.items():
        _validate.float_array_dtype(a.dtype, f"params['{k}']")
        if a.dtype != dt:
            raise TypeError(f"params['{k}'] is {a.dtype} but params['C'] is {dt}: use one dtype")
    if p["C"].ndim != 2 or p["W1"].ndim != 2 or p["W2"].ndim != 2:
        raise ValueError("C, W1 and W2 must be 2-D, got shapes "
                         f"{p['C'].shape}, {p['W1'].shape}, {p['W2'].shape}")
    V, E = p["C"].shape
    H = p["W1"].shape[1]
    want = {"W2": (H, V), "b1": (H,), "b2": (V,)}
    for k, s in want.items():
        if p[k].shape != s:
            raise ValueError(f"params['{k}'] must have shape {s} (C is {p['C'].shape}, W1 is "
                             f"{p['W1'].shape}), got {p[k].shape}")
    for k in ("bngain", "bnbias"):
        if p[k].shape not in ((1, H), (H,)):
            raise ValueError(f"params['{k}'] must have shape (1, {H}), got {p[k].shape}")
    if p["W1"].shape[0] % E:
        raise ValueError(f"W1 has {p['W1'].shape[0]} rows, not a multiple of n_embd = {E}")
    return p


def _indices(name, a, shape, V) -> np.ndarray:
    a = np.asarray(a)
    if a.dtype == np.bool_ or not np.issubdtype(a.dtype, np.integer):
        raise TypeError(f"{name} must be an integer array, got dtype {a.dtype}")
    if a.shape != shape:
        raise ValueError(f"{name} must have shape {shape}, got {a.shape}")
    if a.size and (a.min() < 0 or a.max() >= V):
        bad = a.min() if a.min() < 0 else a.max()
        raise IndexError(f"{name} holds {bad}, outside the vocabulary [0, {V})")
    a = np.array(a, dtype=np.int64, copy=True)
    a.flags.writeable = False
    return a


def _readonly(d):
    for a in d.values():
        if isinstance(a, np.ndarray):
            a.flags.writeable = False
    return d


def _short(d, what):
    """A repr that never dumps an array: names, shapes, dtype."""
    items = [k for k, v in d.items() if isinstance(v, np.ndarray) and v.ndim]
    dt = next((d[k].dtype for k in items), "")
    head = ", ".join(items[:4]) + (f", ... {len(items) - 4} more" if len(items) > 4 else "")
    return f"{what}({len(items)} arrays, {dt}: {head})"


class Forward(dict):
    """:func:`forward`'s result: ``{name: array}`` for every intermediate, plus ``"loss"``.

    Also carries the minibatch as ``.Xb`` (n, T) and ``.Yb`` (n,) (read-only copies), which
    :func:`backward` needs. The arrays are read-only: copy one before changing it.
    """

    Xb: np.ndarray
    Yb: np.ndarray

    def __repr__(self):
        return _short(self, "Forward").replace(
            "Forward(", f"Forward(loss {float(self['loss']):.4f}, n={len(self.Yb)}, ", 1)


class Gradients(dict):
    """:func:`backward`'s result: ``{"d" + name: array}`` (see ``GRADIENTS``).

    Also carries ``.steps``, the namespace the steps of ``STEPS`` ran in (the forward's values,
    the parameters, every gradient), which :func:`check` reads to diagnose a wrong gradient.
    """

    steps: SimpleNamespace

    def __repr__(self):
        return _short(self, "Gradients")


# ----------------------------------------------------------------------------------------------
# forward and backward, the lecture's way

def forward(params: Mapping[str, ArrayLike], Xb: ArrayLike, Yb: ArrayLike) -> Forward:
    """The lecture's forward pass, "chunkated" into the steps of the module docstring's table.

    Parameters
    ----------
    params
        dict of C (V, E), W1 (T*E, H), b1 (H,), W2 (H, V), b2 (V,), bngain and bnbias
        ((1, H), or (H,)), one float dtype (see :func:`init_params`)
    Xb : integer ndarray of shape (n, T)
        n >= 2, values in [0, V)
    Yb : integer ndarray of shape (n,)
        values in [0, V)

    Returns
    -------
    Forward
        A dict of the intermediates ``INTERMEDIATES`` (``emb`` (n, T, E),
        ``embcat`` (n, T*E), ``hprebn`` ... ``logprobs`` (n, V)) and ``loss`` (a scalar of the
        params' dtype), computed in the params' dtype with the lecture's expressions in its order
        (so that the same expressions give bit-identical results).
    """
    p = _params(params)
    V, E = p["C"].shape
    T = p["W1"].shape[0] // E
    Xb = np.asarray(Xb)
    if Xb.ndim != 2:
        raise ValueError(f"Xb must have shape (n, {T}), got {Xb.shape}")
    n = Xb.shape[0]
    if n < 2:
        raise ValueError(f"the lecture's batch norm divides by n - 1: Xb needs n >= 2 rows, got "
                         f"{n}")
    Xb = _indices("Xb", Xb, (n, T), V)
    Yb = _indices("Yb", Yb, (n,), V)
    C, W1, b1, W2, b2 = (p[k] for k in ("C", "W1", "b1", "W2", "b2"))
    bngain, bnbias = p["bngain"], p["bnbias"]

    emb = C[Xb]                                       # (n, T, E)
    embcat = emb.reshape(emb.shape[0], -1)            # (n, T*E)
    hprebn = embcat @ W1 + b1                         # (n, H)
    bnmeani = 1 / n * hprebn.sum(0, keepdims=True)
    bndiff = hprebn - bnmeani
    bndiff2 = bndiff**2
    bnvar = 1 / (n - 1) * (bndiff2).sum(0, keepdims=True)     # Bessel's correction
    bnvar_inv = (bnvar + EPS)**-0.5
    bnraw = bndiff * bnvar_inv
    hpreact = bngain * bnraw + bnbias
    h = np.tanh(hpreact)
    logits = h @ W2 + b2                              # (n, V)
    logit_maxes = logits.max(1, keepdims=True)
    norm_logits = logits - logit_maxes
    counts = np.exp(norm_logits)
    counts_sum = counts.sum(1, keepdims=True)
    counts_sum_inv = counts_sum**-1
    probs = counts * counts_sum_inv
    logprobs = np.log(probs)
    loss = -logprobs[np.arange(n), Yb].mean()

    names = locals()
    out = Forward({k: names[k] for k in INTERMEDIATES})
    out["loss"] = C.dtype.type(loss)
    out.Xb, out.Yb = Xb, Yb
    return _readonly(out)


def _cached(fwd, params):
    if not isinstance(fwd, Mapping):
        raise TypeError(f"backward needs forward()'s result, got {type(fwd).__name__}")
    missing = [k for k in INTERMEDIATES if k not in fwd]
    if missing:
        raise ValueError(f"the forward dict is missing {', '.join(missing)} (pass forward()'s "
                         "result)")
    Xb = getattr(fwd, "Xb", fwd.get("Xb"))
    Yb = getattr(fwd, "Yb", fwd.get("Yb"))
    if Xb is None or Yb is None:
        raise ValueError("the forward dict carries no minibatch: pass forward()'s result (or a "
                         "dict with 'Xb' and 'Yb' too)")
    p = _params(params)
    f = {k: np.asarray(fwd[k]) for k in INTERMEDIATES}
    n, H = f["hprebn"].shape if f["hprebn"].ndim == 2 else (-1, -1)
    if f["hprebn"].ndim != 2 or H != p["W1"].shape[1] or f["emb"].shape[0] != n:
        raise ValueError(f"the forward dict (hprebn {f['hprebn'].shape}) was not made with "
                         f"these params (W1 {p['W1'].shape})")
    V = p["C"].shape[0]
    Xb = _indices("Xb", Xb, f["emb"].shape[:2], V)
    Yb = _indices("Yb", Yb, (n,), V)
    return f, p, Xb, Yb, n


# ----------------------------------------------------------------------------------------------
# the backward steps, as data: each gradient's local backward, its paths and its known slips

@dataclass(frozen=True)
class Step:
    """One line of the backward: how the gradient of one tensor is made, and how it goes wrong.

    Every function takes the chain's namespace ``e``: the forward's intermediates and the
    parameters by name, ``n``, ``rows`` (``arange(n)``), ``Xb``, ``Yb``, and the gradients of
    the steps before (``e.dprobs``, ...).

    Parameters
    ----------
    parts : tuple of (str, callable)
        The contributions, by the path they come along; the gradient is their sum, in order
        (``+=``). A tensor used once has one part.
    value : callable or None
        The gradient, when it is not the sum of ``parts`` (the one-step exercises).
    summed : callable or None
        ``e -> (terms, axis)`` when the gradient is ``terms.sum(axis)``: the terms before the
        sum over a broadcast axis.
    slips : tuple of (str, callable)
        Known wrong computations of this step: what was done, and ``e -> array``.
    """

    parts: tuple
    value: Callable | None = None
    summed: Callable | None = None
    slips: tuple = ()

    def __call__(self, e: Any) -> np.ndarray:
        """The gradient from the namespace ``e``.

        Parameters
        ----------
        e : types.SimpleNamespace
            The forward's values, the parameters and the gradients before this step.

        Returns
        -------
        numpy.ndarray
            The gradient, of its tensor's shape.
        """
        if self.value is not None:
            return self.value(e)
        out = self.parts[0][1](e)
        for _, part in self.parts[1:]:
            out = out + part(e)
        return out

    def knowledge(self, e: Any) -> Knowledge:
        """What the diagnosis knows of this gradient, evaluated on ``e``.

        Parameters
        ----------
        e : types.SimpleNamespace
            As for calling the step.

        Returns
        -------
        fastbn.diagnosis.Knowledge
            The paths (when more than one), the terms of a sum, the slips and ``n``.
        """
        def value(fn):
            try:
                with np.errstate(all="ignore"):
                    return np.asarray(fn(e))
            except (ValueError, IndexError, TypeError):
                return None
        parts = {label: value(fn) for label, fn in self.parts} if len(self.parts) > 1 else {}
        slips = {text: value(fn) for text, fn in self.slips}
        summed = None
        if self.summed is not None:
            terms, axis = self.summed(e)
            summed = (np.asarray(terms), axis)
        return Knowledge(parts={k: v for k, v in parts.items() if v is not None}, summed=summed,
                         slips={k: v for k, v in slips.items() if v is not None},
                         scalars={"n": e.n})


def _pick(e):
    d = np.zeros_like(e.logprobs)
    d[e.rows, e.Yb] = -1.0 / e.n                           # loss = -mean of the picked ones
    return d


def _pick_columns(e):
    d = np.zeros_like(e.logprobs)
    d[:, e.Yb] = -1.0 / e.n
    return d


def _onehot_max(e):
    onehot = np.zeros_like(e.logits)
    onehot[e.rows, e.logits.argmax(1)] = 1
    return onehot * e.dlogit_maxes                         # the max picks one


def _embed(e, accumulate=True):
    dC = np.zeros_like(e.C)
    if accumulate:
        np.add.at(dC, e.Xb, e.demb)                        # a repeated index accumulates
    else:
        dC[e.Xb] = e.demb
    return dC


def _softmax_minus_onehot(e, rows=None):
    d = e.probs.copy()                                     # softmax(logits)
    d[e.rows if rows is None else rows, e.Yb] -= 1
    d /= e.n
    return d


def _outer(a, b):
    return a[:, :, None] * b[:, None, :]                   # (n, I, O): one example's a.T @ b


def _bn_k(e):
    return e.bngain * e.bnvar_inv / e.n


BN_PATHS = (                                      # the lecture's batch norm in one go, by path
    ("directly", lambda e: _bn_k(e) * (e.n * e.dhpreact)),
    ("through the mean", lambda e: -_bn_k(e) * e.dhpreact.sum(0, keepdims=True)),
    ("through the variance", lambda e: -_bn_k(e) * (
        e.n / (e.n - 1) * e.bnraw * (e.dhpreact * e.bnraw).sum(0, keepdims=True))))


AT_OUTPUT = "the derivative was evaluated at the output {out} instead of the input {x}"
STEPS = {
    "dlogprobs": Step((("the loss", _pick),), slips=(
        ("-1/n was written at [:, Yb] (every row, at every target's column) instead of "
         "[range(n), Yb]: index the rows with range(n)", _pick_columns),
        ("every element got -1/n: only the picked ones, [range(n), Yb], have a gradient",
         lambda e: np.full_like(e.logprobs, -1.0 / e.n)))),
    "dprobs": Step((("log", lambda e: (1.0 / e.probs) * e.dlogprobs),), slips=(
        (AT_OUTPUT.format(out="logprobs", x="probs") + ": d log(x) = 1/x at x = probs",
         lambda e: (1.0 / e.logprobs) * e.dlogprobs),)),
    "dcounts_sum_inv": Step(
        (("probs", lambda e: (e.counts * e.dprobs).sum(1, keepdims=True)),),
        summed=lambda e: (e.counts * e.dprobs, 1)),
    "dcounts_sum": Step((("inverse", lambda e: (-e.counts_sum**-2) * e.dcounts_sum_inv),), slips=(
        (AT_OUTPUT.format(out="counts_sum_inv", x="counts_sum") + ": d x**-1 = -x**-2 at x = "
         "counts_sum", lambda e: (-e.counts_sum_inv**-2) * e.dcounts_sum_inv),)),
    "dcounts": Step((("through probs", lambda e: e.counts_sum_inv * e.dprobs),
                     ("through counts_sum", lambda e: np.ones_like(e.counts) * e.dcounts_sum))),
    "dnorm_logits": Step((("exp", lambda e: e.counts * e.dcounts),), slips=(
        (AT_OUTPUT.format(out="counts", x="norm_logits") + ": d exp(x) = exp(x) = counts",
         lambda e: np.exp(e.counts) * e.dcounts),)),
    "dlogit_maxes": Step((("norm_logits", lambda e: (-e.dnorm_logits).sum(1, keepdims=True)),),
                         summed=lambda e: (-e.dnorm_logits, 1)),
    "dlogits": Step((("through norm_logits", lambda e: e.dnorm_logits.copy()),
                     ("through logit_maxes", _onehot_max))),
    "dh": Step((("logits", lambda e: e.dlogits @ e.W2.T),)),
    "dW2": Step((("logits", lambda e: e.h.T @ e.dlogits),),
                summed=lambda e: (_outer(e.h, e.dlogits), 0)),
    "db2": Step((("logits", lambda e: e.dlogits.sum(0)),), summed=lambda e: (e.dlogits, 0)),
    "dhpreact": Step((("tanh", lambda e: (1.0 - e.h**2) * e.dh),), slips=(
        ("the tanh derivative was evaluated at its input: 1 - hpreact**2 for 1 - h**2 (h = "
         "tanh(hpreact), the forward's output)", lambda e: (1.0 - e.hpreact**2) * e.dh),)),
    "dbngain": Step((("hpreact", lambda e: (e.bnraw * e.dhpreact).sum(0, keepdims=True).reshape(
        e.bngain.shape)),), summed=lambda e: ((e.bnraw * e.dhpreact)[:, None], 0)),
    "dbnbias": Step((("hpreact", lambda e: e.dhpreact.sum(0, keepdims=True).reshape(
        e.bnbias.shape)),), summed=lambda e: (e.dhpreact[:, None], 0)),
    "dbnraw": Step((("hpreact", lambda e: e.bngain * e.dhpreact),), slips=(
        ("the local derivative of bngain * bnraw for bnraw is bngain, not bnraw",
         lambda e: e.bnraw * e.dhpreact),)),
    "dbnvar_inv": Step((("bnraw", lambda e: (e.bndiff * e.dbnraw).sum(0, keepdims=True)),),
                       summed=lambda e: ((e.bndiff * e.dbnraw)[:, None], 0)),
    "dbnvar": Step((("power", lambda e: (-0.5 * (e.bnvar + EPS)**-1.5) * e.dbnvar_inv),), slips=(
        (AT_OUTPUT.format(out="bnvar_inv", x="bnvar + eps") + ": d x**-0.5 = -0.5 x**-1.5 at "
         "x = bnvar + 1e-5", lambda e: (-0.5 * e.bnvar_inv**-1.5) * e.dbnvar_inv),)),
    "dbndiff2": Step((("bnvar", lambda e: (1.0 / (e.n - 1)) * np.ones_like(e.bndiff2) * e.dbnvar),
                      )),
    "dbndiff": Step((("through bnraw", lambda e: e.bnvar_inv * e.dbnraw),
                     ("through bndiff2", lambda e: (2 * e.bndiff) * e.dbndiff2)), slips=(
        ("d bndiff**2 = 2 * bndiff was taken as 2 * bndiff2 (the square, the output)",
         lambda e: e.bnvar_inv * e.dbnraw + (2 * e.bndiff2) * e.dbndiff2),)),
    "dbnmeani": Step((("bndiff", lambda e: (-e.dbndiff).sum(0, keepdims=True)),),
                     summed=lambda e: (-e.dbndiff[:, None], 0)),
    "dhprebn": Step((("through bndiff", lambda e: e.dbndiff.copy()),
                     ("through bnmeani", lambda e: 1.0 / e.n * (np.ones_like(e.hprebn) *
                                                                e.dbnmeani)))),
    "dembcat": Step((("hprebn", lambda e: e.dhprebn @ e.W1.T),)),
    "dW1": Step((("hprebn", lambda e: e.embcat.T @ e.dhprebn),),
                summed=lambda e: (_outer(e.embcat, e.dhprebn), 0)),
    "db1": Step((("hprebn", lambda e: e.dhprebn.sum(0)),), summed=lambda e: (e.dhprebn, 0)),
    "demb": Step((("embcat", lambda e: e.dembcat.reshape(e.emb.shape)),)),
    "dC": Step((("emb", _embed),), slips=(
        ("dC[Xb] = demb (or +=) keeps one lookup of a repeated character: accumulate every "
         "lookup with np.add.at(dC, Xb, demb)", lambda e: _embed(e, accumulate=False)),)),
    "dlogits_fast": Step((("one step", _softmax_minus_onehot),), slips=(
        ("1 was subtracted at [:, Yb] (every row, at every target's column) instead of "
         "[range(n), Yb]", lambda e: _softmax_minus_onehot(e, rows=slice(None))),)),
    "dhprebn_fast": Step(
        BN_PATHS, value=lambda e: e.bngain * e.bnvar_inv / e.n * (
            e.n * e.dhpreact - e.dhpreact.sum(0, keepdims=True)
            - e.n / (e.n - 1) * e.bnraw * (e.dhpreact * e.bnraw).sum(0, keepdims=True)),
        slips=(("the biased variance's backward (no n/(n-1) in front of bnraw * (dhpreact * "
                "bnraw).sum(0)); the lecture's batch norm is unbiased",
                lambda e: e.bngain * e.bnvar_inv / e.n * (
                    e.n * e.dhpreact - e.dhpreact.sum(0, keepdims=True)
                    - e.bnraw * (e.dhpreact * e.bnraw).sum(0, keepdims=True))),)),
}
assert tuple(STEPS) == GRADIENTS


def _namespace(f, p, Xb, Yb, n):
    return SimpleNamespace(**f, **p, Xb=Xb, Yb=Yb, n=n, rows=np.arange(n))


def backward(fwd: Mapping[str, Any], params: Mapping[str, ArrayLike]) -> Gradients:
    """The gradient of the loss for every intermediate and parameter, by hand, step by step.

    Parameters
    ----------
    fwd
        :func:`forward`'s result (or a dict of the same arrays with ``"Xb"`` and ``"Yb"``)
    params
        the parameters the forward ran with

    Returns
    -------
    Gradients
        A dict: ``"d" + name`` for every name of ``INTERMEDIATES`` and
        ``PARAMS``, each of its tensor's shape and dtype, plus the one-step exercises
        ``dlogits_fast`` (n, V) and ``dhprebn_fast`` (n, H). Each line is the lecture's: the module
        docstring gives every step's local derivative. No autograd anywhere.
    """
    f, p, Xb, Yb, n = _cached(fwd, params)
    e = _namespace(f, p, Xb, Yb, n)
    for name, step in STEPS.items():            # the module docstring's table, line by line
        setattr(e, name, step(e))
    g = Gradients({k: getattr(e, k) for k in GRADIENTS})
    g.steps = e
    return g


# ----------------------------------------------------------------------------------------------
# check: the lecture's cmp, for a whole dict

def _reference_for(dtype):
    params, Xb, Yb = problem(dtype=dtype)
    return backward(forward(params, Xb, Yb), params)


def check(student: Mapping[str, Any], reference: Mapping[str, Any] | None = None, *,
          rtol: float = 1e-5, atol: float = 1e-8, verbose: bool = True) -> Report:
    """Compare your gradients with the reference, the lecture's ``cmp`` for every name you give.

    Parameters
    ----------
    student
        dict ``{name: gradient}``; names as :func:`backward`'s (``"dlogprobs"``, ``"dC"``,
        ``"dlogits_fast"``, ...), the ``d`` may be left out (``"logprobs"``, as ``cmp`` labels
        them). Values: NumPy arrays (or torch tensors).
    reference
        :func:`backward`'s result for the forward pass you differentiated. None means the
        standard :func:`problem` (its defaults), computed in the dtype of each of your entries:
        float32 entries are held to the float32 run, bit for bit, as the lecture's float32 ``cmp``.
    rtol, atol
        "approximate" is ``np.allclose(yours, reference, rtol, atol)``, torch.allclose's
        defaults.
    verbose
        print the table (the lecture's format) before returning it.

    Returns
    -------
    fastbn.comparison.Report
        One row per name you gave, with ``exact``
        (bit-identical), ``approximate``, ``maxdiff`` (``max |yours - reference|``) and a note for a
        wrong shape, an unknown name, a value that is not an array, a dtype other than the
        reference's. ``report.ok`` is True when every row is approximately right and of the right
        shape. A wrong row carries a diagnosis (``row.diagnosis``, ``row.kind``): the error
        signature that explains your array to ``rtol``/``atol``, or "follows" when this step's
        right backward applied to your upstream gradients gives it (``row.follows`` is then the
        first wrong step), or "no known signature" and where the error lives. With a reference
        from :func:`backward` (or None) ``report.summary`` names the first wrong step and what
        follows from it, and ``report.figure()`` draws the chain.
    """
    if not isinstance(student, Mapping):
        raise TypeError(f"check needs a dict of gradients {{name: array}}, got "
                        f"{type(student).__name__}")
    refs = {}

    def ref_for(dt):
        if reference is not None:
            return reference
        key = np.dtype(np.float32) if dt == np.dtype(np.float32) else np.dtype(np.float64)
        if key not in refs:
            refs[key] = _reference_for(key)
        return refs[key]

    if reference is not None and not isinstance(reference, Mapping):
        raise TypeError(f"reference must be backward()'s result, got {type(reference).__name__}")
    known = tuple(reference) if reference is not None else GRADIENTS
    rows, given = [], {}
    for name, value in student.items():
        key = name if name in known else ("d" + str(name) if "d" + str(name) in known else None)
        if key is None:
            rows.append(name_row(str(name), known))
            continue
        arr = as_array(value)
        want = ref_for(None if arr is None else arr.dtype)[key]
        rows.append(compare_arrays(str(name), value, want, rtol=rtol, atol=atol))
        given[key] = (rows[-1], arr)
    title = "check against " + ("problem()" if reference is None else "the given reference")
    report = Report(title, rows, style="cmp", graph=_graph())
    if not all(r.ok for r in rows):
        report.summary = _explain_chain(given, ref_for, Tolerance(rtol, atol))
    if reference is None and any(r.shape is not None and r.expected is not None
                                 and math.prod(r.shape) != math.prod(r.expected)
                                 for r in report.rows):
        report.hint = ("reference=None is problem() with its defaults; for your own forward pass "
                       "give reference=backward(fwd, params)")
    if verbose:
        print(report)
    return report


# ----------------------------------------------------------------------------------------------
# the diagnosis of a chain: the first wrong step, and what only follows from it

class _Reads:
    """A view of the chain's namespace that records the names a step reads."""

    def __init__(self, e):
        self._e, self.names = e, set()

    def __getattr__(self, name):
        self.names.add(name)
        return getattr(self._e, name)


def _reads(step, e):
    rec = _Reads(e)
    with np.errstate(all="ignore"):
        value = step(rec)
    return value, [u for u in GRADIENTS if u in rec.names]


_GRAPH: dict = {}


def _graph():
    """Each gradient -> the gradients its step reads (from a tiny run of the steps)."""
    if not _GRAPH:
        params, Xb, Yb = problem(3, vocab_size=4, n_embd=2, n_hidden=3, block_size=2)
        e = backward(forward(params, Xb, Yb), params).steps
        _GRAPH.update({k: tuple(_reads(step, e)[1]) for k, step in STEPS.items()})
    return dict(_GRAPH)


def _with_yours(e, given, key, reshape):
    """The namespace ``e`` with your gradients of the steps before ``key`` in place of its own."""
    s = SimpleNamespace(**vars(e))
    for u in GRADIENTS[:GRADIENTS.index(key)]:
        a = given.get(u, (None, None))[1]
        want = getattr(e, u)
        if a is None or (reshape and a.size != want.size):
            continue
        setattr(s, u, a.reshape(want.shape) if reshape else a)
    return s


def _follows(step, e, given, key, got, tol, wrong):
    """The wrong upstream gradient that explains ``got`` (this step's right backward applied to
    your upstream gradients gives it), or None."""
    for reshape in (False, True):
        try:
            value, reads = _reads(step, _with_yours(e, given, key, reshape))
        except (ValueError, IndexError, TypeError):
            continue
        bad = [u for u in reads if u in wrong]
        if bad and np.shape(value) == got.shape and tol.close(got, value):
            return bad[0]
    return None


def _explain_chain(given, ref_for, tol):
    """Diagnose every wrong gradient in backward order; returns the report's summary lines."""
    root, order = {}, []
    for key in (k for k in GRADIENTS if k in given):
        row, got = given[key]
        if row.ok or got is None or not got.size:
            continue
        ref = ref_for(got.dtype)
        e = getattr(ref, "steps", None)
        if e is None or key not in STEPS:
            explain(row, got, ref[key], rtol=tol.rtol, atol=tol.atol)
            root[key] = key
            order.append(key)
            continue
        step = STEPS[key]
        up = _follows(step, e, given, key, got, tol, root)
        if up is not None:
            row.kind, row.follows = "follows", root[up]
            row.diagnosis = (f"follows from your {up}: this step's right backward applied to "
                             f"it gives your {key} to tolerance" + (
                                 f" (first wrong step: {root[up]})" if root[up] != up else ""))
            root[key] = root[up]
            continue
        fixed = _with_yours(e, given, key, reshape=True)
        try:
            value, reads = _reads(step, fixed)
            know = step.knowledge(fixed)
        except (ValueError, IndexError, TypeError):    # your upstream arrays do not fit
            fixed, know = e, step.knowledge(e)
            value, reads = ref[key], ()
        bad = [u for u in reads if u in root]
        explain(row, got, value if bad else ref[key], know, rtol=tol.rtol, atol=tol.atol)
        if bad:
            row.diagnosis = f"besides your wrong {bad[0]}: {row.diagnosis}"
        root[key] = key
        order.append(key)
    lines = []
    for i, first in enumerate(order):
        row = given[first][0]
        lines.append(("first wrong step: " if i == 0 else "also wrong in its own step: ") +
                     f"{first}: {row.diagnosis}")
        if i == 0 and len(root) > 1:
            row.diagnosis = "first wrong step: " + row.diagnosis
        after = [k for k, r in root.items() if r == first and k != first]
        if after:
            lines.append(f"wrong only because of {first}: {', '.join(after)}")
    return lines

