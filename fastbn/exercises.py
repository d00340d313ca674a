"""Backprop by hand, the lecture's exercise: the BN-MLP exploded into atomic steps, and its answers.

makemore part 4 ("becoming a backprop ninja") runs the part-3 model forward one small step at a
time, then asks for the gradient of the loss with respect to every intermediate, written by hand
and checked line by line with ``cmp(name, dt, t)``. This module is that exercise without autograd:

- :func:`init_params` / :func:`problem` — the lecture's parameters (and a minibatch);
- :func:`forward` — every intermediate, under the lecture's names;
- :func:`backward` — the hand-derived gradient of the loss for every one of them, step by step;
- :func:`check` — the lecture's ``cmp`` table for a dict of your own gradients.

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
from collections.abc import Mapping
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, DTypeLike

from . import _validate
from .comparison import Report, as_array, compare_arrays, name_row

__all__ = ["SEED", "INTERMEDIATES", "PARAMS", "GRADIENTS", "init_params", "problem", "forward",
           "backward", "check", "Forward", "Gradients"]

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
    """:func:`backward`'s result: ``{"d" + name: array}`` (see ``GRADIENTS``)."""

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
    C, W1, W2 = p["C"], p["W1"], p["W2"]
    bngain = p["bngain"]
    emb, embcat, hprebn, h = f["emb"], f["embcat"], f["hprebn"], f["h"]
    bnvar, bnvar_inv, bnraw, bndiff = f["bnvar"], f["bnvar_inv"], f["bnraw"], f["bndiff"]
    bndiff2, logits = f["bndiff2"], f["logits"]
    counts, counts_sum, counts_sum_inv = f["counts"], f["counts_sum"], f["counts_sum_inv"]
    probs, logprobs = f["probs"], f["logprobs"]
    rows = np.arange(n)

    # cross-entropy, step by step
    dlogprobs = np.zeros_like(logprobs)
    dlogprobs[rows, Yb] = -1.0 / n                         # loss = -mean of the picked ones
    dprobs = (1.0 / probs) * dlogprobs                     # d log(p) = 1/p
    dcounts_sum_inv = (counts * dprobs).sum(1, keepdims=True)   # broadcast over V: sum
    dcounts = counts_sum_inv * dprobs                      # first use of counts
    dcounts_sum = (-counts_sum**-2) * dcounts_sum_inv      # d x**-1 = -x**-2
    dcounts += np.ones_like(counts) * dcounts_sum          # second use: the row sum
    dnorm_logits = counts * dcounts                        # d exp(x) = exp(x)
    dlogits = dnorm_logits.copy()                          # first use of logits
    dlogit_maxes = (-dnorm_logits).sum(1, keepdims=True)
    onehot = np.zeros_like(logits)
    onehot[rows, logits.argmax(1)] = 1
    dlogits += onehot * dlogit_maxes                       # second use: the max picks one
    # second layer
    dh = dlogits @ W2.T
    dW2 = h.T @ dlogits
    db2 = dlogits.sum(0)
    dhpreact = (1.0 - h**2) * dh                           # d tanh = 1 - tanh**2
    # batch norm, step by step
    dbngain = (bnraw * dhpreact).sum(0, keepdims=True)
    dbnraw = bngain * dhpreact
    dbnbias = dhpreact.sum(0, keepdims=True)
    dbndiff = bnvar_inv * dbnraw                           # first use of bndiff
    dbnvar_inv = (bndiff * dbnraw).sum(0, keepdims=True)
    dbnvar = (-0.5 * (bnvar + EPS)**-1.5) * dbnvar_inv
    dbndiff2 = (1.0 / (n - 1)) * np.ones_like(bndiff2) * dbnvar
    dbndiff += (2 * bndiff) * dbndiff2                     # second use, through the variance
    dhprebn = dbndiff.copy()                               # first use of hprebn
    dbnmeani = (-dbndiff).sum(0, keepdims=True)
    dhprebn += 1.0 / n * (np.ones_like(hprebn) * dbnmeani)  # second use, through the mean
    # first layer and the embedding
    dembcat = dhprebn @ W1.T
    dW1 = embcat.T @ dhprebn
    db1 = dhprebn.sum(0)
    demb = dembcat.reshape(emb.shape)
    dC = np.zeros_like(C)
    np.add.at(dC, Xb, demb)                                # a repeated index accumulates

    # the one-step exercises
    dlogits_fast = probs.copy()                            # softmax(logits)
    dlogits_fast[rows, Yb] -= 1
    dlogits_fast /= n
    dhprebn_fast = bngain * bnvar_inv / n * (
        n * dhpreact - dhpreact.sum(0, keepdims=True)
        - n / (n - 1) * bnraw * (dhpreact * bnraw).sum(0, keepdims=True))

    dbngain = dbngain.reshape(p["bngain"].shape)
    dbnbias = dbnbias.reshape(p["bnbias"].shape)
    names = locals()
    return Gradients({k: names[k] for k in GRADIENTS})


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
        shape.
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
    rows = []
    for name, value in student.items():
        key = name if name in known else ("d" + str(name) if "d" + str(name) in known else None)
        if key is None:
            rows.append(name_row(str(name), known))
            continue
        arr = as_array(value)
        want = ref_for(None if arr is None else arr.dtype)[key]
        rows.append(compare_arrays(str(name), value, want, rtol=rtol, atol=atol))
    title = "check against " + ("problem()" if reference is None else "the given reference")
    report = Report(title, rows, style="cmp")
    if reference is None and any(r.shape is not None and r.expected is not None
                                 and math.prod(r.shape) != math.prod(r.expected)
                                 for r in report.rows):
        report.hint = ("reference=None is problem() with its defaults; for your own forward pass "
                       "give reference=backward(fwd, params)")
    if verbose:
        print(report)
    return report
