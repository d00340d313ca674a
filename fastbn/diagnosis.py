"""Name the mistake in a wrong gradient: the error signatures of hand-written backprop.

The mistakes of manual backprop are few and leave recognisable traces in the array. Each
signature below is one small function ``signature(got, want, know, tol)`` that tests one formula
relating your array ``got`` to the reference ``want`` and returns one sentence (what you most
likely did, where to look, the numbers that show it) when the formula holds to the comparison's
tolerance, ``|got - candidate| <= atol + rtol * |candidate|`` everywhere, else None.
:func:`diagnose` tries them in the order of ``SIGNATURES`` and, when none fits, says so and
:func:`locate` says where the error lives.

The signatures that need more than the two arrays read a :class:`Knowledge` of the gradient: the
partial contributions that sum into it (a tensor used on two paths), the terms of a sum over the
batch, the known slips of its local derivative (evaluated at the input instead of the output, a
scatter into the wrong rows) and the sizes a constant factor may be made of. The part-4 chain
keeps that knowledge next to its steps (``fastbn.exercises.STEPS``); the ops of
:func:`fastbn.compare` have theirs in ``OP_KNOWLEDGE`` here.
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import numpy as np

__all__ = ["Knowledge", "Tolerance", "Diagnosis", "diagnose", "locate", "SIGNATURES",
           "OP_KNOWLEDGE", "op_knowledge", "keepdims", "unsummed", "wrong_axis", "transposed",
           "missing_branch", "slip", "one_row", "factor"]


@dataclass(frozen=True)
class Tolerance:
    """The comparison's rule: ``|got - want| <= atol + rtol * |want|`` everywhere.

    Parameters
    ----------
    rtol, atol : float
        The relative and absolute tolerances (those of the comparison that failed).
    """

    rtol: float = 1e-5
    atol: float = 1e-8

    def close(self, got: np.ndarray, want: np.ndarray) -> bool:
        """Whether ``got`` equals ``want`` to tolerance (same shape required).

        Parameters
        ----------
        got, want : numpy.ndarray
            Arrays of one shape (compared in float64).

        Returns
        -------
        bool
            True when every element is within ``atol + rtol * |want|``.
        """
        got, want = np.asarray(got, dtype=np.float64), np.asarray(want, dtype=np.float64)
        if got.shape != want.shape:
            return False
        with np.errstate(invalid="ignore", over="ignore"):
            return bool(np.allclose(got, want, rtol=self.rtol, atol=self.atol))


@dataclass
class Knowledge:
    """What is known of one gradient besides its value, for the signatures that need it.

    Parameters
    ----------
    parts : dict of str to numpy.ndarray
        The contributions whose sum is the reference, by the path they come along ("through
        probs"); empty for a tensor used once.
    summed : tuple (numpy.ndarray, int) or None
        ``(terms, axis)`` when the reference is ``terms.sum(axis)`` (reshaped): the terms of a
        sum over the batch (or another axis) before the sum.
    slips : dict of str to numpy.ndarray
        Known wrong computations: a sentence saying what was done, and the array it gives.
    scalars : dict of str to float
        Named numbers a constant factor may be made of (``{"n": 32}``, ``{"dout": 1.3}``).
    """

    parts: dict = field(default_factory=dict)
    summed: tuple | None = None
    slips: dict = field(default_factory=dict)
    scalars: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Diagnosis:
    """The verdict on one wrong gradient.

    Parameters
    ----------
    kind : str
        The signature that explains it (a name of ``SIGNATURES``), or ``"unknown"``.
    text : str
        One sentence: what was most likely done, where to look, the numbers that show it.
    """

    kind: str
    text: str


def _f64(a):
    return np.asarray(a, dtype=np.float64)


def _axes(ndim):                              # every non-empty set of axes, smallest first
    for k in range(1, ndim + 1):
        yield from itertools.combinations(range(ndim), k)


def _ax(axes):
    return str(axes[0]) if len(axes) == 1 else str(tuple(axes))


# ----------------------------------------------------------------------------------------------
# the signatures, in the order they are tried

SIGNATURES: tuple = ()      # filled by @_signature, in the order of this file

_SIGNATURE_DOC = """

    Parameters
    ----------
    got : numpy.ndarray
        Your gradient, float64, any shape.
    want : numpy.ndarray
        The reference gradient, float64.
    know : Knowledge or None
        What is known of the gradient (signatures that need it return None without it).
    tol : Tolerance
        The rule the formula must hold to.

    Returns
    -------
    str or None
        One sentence when the formula explains ``got``, else None.
    """


def _signature(fn):
    global SIGNATURES
    fn.__doc__ = fn.__doc__.rstrip() + _SIGNATURE_DOC
    SIGNATURES += (fn,)
    return fn


@_signature
def keepdims(got, want, know, tol):
    """Right values in the wrong shape: ``got.reshape(want.shape) ≈ want``, ``got.shape !=
    want.shape``. A sum without ``keepdims=True`` (``(1, H)`` became ``(H,)``), or the reverse.
    """
    if got.shape == want.shape or got.size != want.size or not tol.close(
            got.reshape(want.shape), want):
        return None
    how = ("a sum without keepdims=True: keep the summed axis" if got.ndim < want.ndim else
           "an axis the tensor does not have: sum without keepdims, or reshape")
    return (f"the values are right but the shape is {got.shape}, not {want.shape}: {how} "
            f"(a wrong shape broadcasts silently further down)")


@_signature
def unsummed(got, want, know, tol):
    """A broadcast not summed back: ``got.sum(axes) ≈ want`` for some axes of ``got``, which has
    more elements than ``want``. The forward broadcast the tensor along those axes."""
    if got.size <= want.size:
        return None
    for axes in _axes(got.ndim):
        s = got.sum(axis=axes)
        if s.size == want.size and tol.close(s.reshape(want.shape), want):
            return (f"yours has the broadcast shape {got.shape} and its sum over axis "
                    f"{_ax(axes)} is the reference {want.shape}: the forward broadcast this "
                    f"tensor along axis {_ax(axes)}, so its gradient must be summed over it "
                    f"(.sum({_ax(axes)}{', keepdims=True' if want.ndim == got.ndim else ''}))")
    return None


@_signature
def wrong_axis(got, want, know, tol):
    """Summed over the wrong axis: the reference is ``terms.sum(axis)``; ``got ≈
    terms.sum(other)`` for another axis (with or without ``keepdims``)."""
    if know is None or know.summed is None:
        return None
    terms, axis = know.summed
    for other in (a for a in range(terms.ndim) if a != axis):
        for kd in (True, False):
            s = terms.sum(axis=other, keepdims=kd)
            if s.shape == got.shape and tol.close(got, s):
                return (f"yours is the sum over axis {other}, shape {got.shape}; the gradient "
                        f"sums the terms over axis {axis}, shape {want.shape}: the sum runs over "
                        f"the axis the forward broadcast along")
    return None


@_signature
def transposed(got, want, know, tol):
    """A transpose: ``got.T ≈ want`` for 2-D arrays, ``want`` not symmetric. The operands of a
    matmul gradient swapped (``dout.T @ x`` for ``x.T @ dout``); with square matrices the shape
    is right and only the values show it."""
    if got.ndim != 2 or got.T.shape != want.shape or not tol.close(got.T, want):
        return None
    square = " (square, so the shape could not show it)" if got.shape[0] == got.shape[1] else ""
    return (f"yours is the transpose of the reference{square}: a matmul's operands are swapped, "
            f"e.g. dW = dout.T @ x for x.T @ dout; the gradient has the shape of its tensor")


@_signature
def missing_branch(got, want, know, tol):
    """A forgotten path: the reference is ``sum(parts)``; ``got ≈ sum(parts) - parts[k]`` for one
    path ``k``. A tensor used twice needs both contributions (the second ``+=`` is missing)."""
    if know is None or len(know.parts) < 2:
        return None
    parts = {k: _f64(v) for k, v in know.parts.items()}
    total = sum(parts.values())
    for label, part in parts.items():
        rest = total - part
        if rest.shape == got.shape and tol.close(got, rest):
            size = float(np.abs(part).max())
            kept = [k for k in parts if k != label]
            return (f"yours is only the contribution {' and '.join(kept)}: the path {label} is "
                    f"missing (max |contribution| {size:.3g}); a tensor used twice gets the sum of "
                    f"both gradients (+=)")
    return None


@_signature
def slip(got, want, know, tol):
    """A known slip of this gradient: ``got ≈ know.slips[s]`` (its local derivative evaluated at
    the input instead of the output, a scatter into the wrong rows, ...)."""
    for sentence, value in (know.slips if know is not None else {}).items():
        value = _f64(value)
        if value.shape == got.shape and tol.close(got, value):
            return sentence
    return None


@_signature
def one_row(got, want, know, tol):
    """One term instead of the sum: the reference is ``terms.sum(axis)``; ``got ≈
    terms.take(i, axis)`` for one index ``i`` (one example's gradient instead of the batch's)."""
    if know is None or know.summed is None:
        return None
    terms, axis = know.summed
    terms = np.moveaxis(_f64(terms), axis, 0)
    if terms[0].size != got.size:
        return None
    flat = terms.reshape(terms.shape[0], -1)
    g = got.reshape(-1)
    with np.errstate(invalid="ignore", over="ignore"):
        hit = np.all(np.abs(flat - g) <= tol.atol + tol.rtol * np.abs(flat), axis=1)
    if not hit.any():
        return None
    i = int(np.argmax(hit))
    what = "one example's (row" if axis == 0 else f"one term's (index {i} of axis {axis}"
    return (f"yours is {what} {i} of {terms.shape[0]}) gradient, not the sum over axis {axis}: "
            f"the gradient of a tensor broadcast over the batch sums every example's term")


def _named(c, scalars):
    """``(sign, name)`` of the factor ``c`` made of the named scalars, or None."""
    names = {}
    for k, v in scalars.items():
        v = float(v)
        names.update({k: v, f"1/{k}": 1 / v})
        if k in ("n", "B"):
            names.update({f"{k}/({k}-1)": v / (v - 1), f"({k}-1)/{k}": (v - 1) / v,
                          f"{k}-1": v - 1, f"1/({k}-1)": 1 / (v - 1)})
    names.update({"1": 1.0, "2": 2.0, "1/2": 0.5})
    for name, v in names.items():
        for sign in (1.0, -1.0):
            if abs(c - sign * v) <= 1e-6 * abs(v):
                return ("-" if sign < 0 else ""), name
    return None


WHY = {"n": "a sum where a mean belongs, or a 1/n too few", "1/n": "a 1/n too many (a mean "
       "where a sum belongs)", "n/(n-1)": "the unbiased variance's 1/(n-1) where 1/n belongs",
       "(n-1)/n": "1/n where the unbiased variance's 1/(n-1) belongs", "dout": "the upstream "
       "gradient multiplied in twice", "1/dout": "the upstream gradient dout not multiplied in "
       "(the chain rule's last factor)"}


@_signature
def factor(got, want, know, tol):
    """A constant factor: ``got ≈ c * want`` for the least-squares ``c = <got, want> / <want,
    want>`` (c != 1), named when it is ``n``, ``1/n``, ``n/(n-1)``, ``-1``, ... (a mean for a sum,
    the biased variance for the unbiased one, a flipped sign, a missing upstream scalar)."""
    if got.shape != want.shape:
        return None
    w = _f64(want)
    ww = float((w * w).sum())
    if not np.isfinite(ww) or float(np.abs(w).max(initial=0.0)) <= 10 * tol.atol:
        return None
    c = float((_f64(got) * w).sum()) / ww
    if abs(c - 1) < 1e-9 or not tol.close(got, c * w):
        return None
    named = _named(c, know.scalars if know is not None else {})
    if named == ("-", "1"):
        return ("the sign is flipped: yours is -1 × the reference everywhere; check the sign of "
                "the local derivative (d(a - b)/db = -1, d(1/x) = -1/x**2)")
    if named is None:
        return (f"yours is {c:.6g} × the reference everywhere (a constant factor, not one made "
                f"of the batch size): look for a scale in this step's local derivative")
    sign, name = named
    why = WHY.get(name.replace("B", "n"), "a factor too many or too few in this step")
    flip = "; and the sign is flipped" if sign else ""
    return f"yours is {sign}{name} = {c:.6g} × the reference everywhere: {why}{flip}"




def locate(got: np.ndarray, want: np.ndarray, tol: Tolerance) -> str:
    """Where an unexplained error lives: which rows and columns differ, and by how much.

    Parameters
    ----------
    got, want : numpy.ndarray
        Your array and the reference, of one shape.
    tol : Tolerance
        The rule an element is wrong by.

    Returns
    -------
    str
        For example ``"3 of 192 elements are off, rows 2, 5 (2 of 32), columns 0 (1 of 6);
        max |diff| 0.4 at (5, 0), 0.8 of max |reference|"``.
    """
    g, w = _f64(got), _f64(want)
    with np.errstate(invalid="ignore", over="ignore"):
        d = np.abs(g - w)
        bad = ~(d <= tol.atol + tol.rtol * np.abs(w))
    text = f"{int(bad.sum())} of {bad.size} elements are off"
    if bad.ndim >= 2:
        for axis, label in ((0, "rows"), (1, "columns")):
            other = tuple(a for a in range(bad.ndim) if a != axis)
            idx = np.flatnonzero(bad.any(axis=other))
            shown = ", ".join(map(str, idx[:6])) + (", ..." if idx.size > 6 else "")
            text += f", {label} {shown} ({idx.size} of {bad.shape[axis]})"
    i = int(np.argmax(np.where(np.isfinite(d), d, np.inf)))
    at = tuple(int(j) for j in np.unravel_index(i, d.shape)) if d.ndim else ()
    rel = d.reshape(-1)[i] / max(float(np.abs(w).max(initial=0.0)), tol.atol)
    return text + f"; max |diff| {d.reshape(-1)[i]:.3g} at {at}, {rel:.2g} of max |reference|"


def diagnose(got: Any, want: Any, know: Knowledge | None = None,
             tol: Tolerance = Tolerance()) -> Diagnosis:
    """The first signature of ``SIGNATURES`` that explains ``got``, or where the error lives.

    Parameters
    ----------
    got : array_like
        Your gradient (any shape).
    want : array_like
        The reference gradient.
    know : Knowledge, optional
        What is known of this gradient (paths, terms of a sum, slips, named sizes); without it
        only the signatures that need the two arrays alone are tried.
    tol : Tolerance
        The rule a signature must explain ``got`` to.

    Returns
    -------
    Diagnosis
        ``kind`` the signature's name (or ``"unknown"``), ``text`` one sentence.

    Examples
    --------
    >>> import numpy as np
    >>> from fastbn.diagnosis import diagnose, Knowledge
    >>> want = np.arange(1.0, 7.0).reshape(2, 3)
    >>> diagnose(-want, want).text[:20]
    'the sign is flipped:'
    >>> diagnose(4 * want, want, Knowledge(scalars={"n": 4})).kind
    'factor'
    """
    g, w = _f64(got), _f64(want)
    for signature in SIGNATURES:
        try:
            text = signature(g, w, know, tol)
        except (ValueError, IndexError, FloatingPointError):
            text = None
        if text:
            return Diagnosis(signature.__name__, text)
    if g.shape != w.shape:
        if g.size != w.size:
            return Diagnosis("unknown", f"no known signature: shape {g.shape}, expected "
                                        f"{w.shape}, and no sum or reshape of yours gives the "
                                        f"reference")
        g = g.reshape(w.shape)
    return Diagnosis("unknown", "no known signature: " + locate(g, w, tol))


# ----------------------------------------------------------------------------------------------
# what compare's ops know: OP_KNOWLEDGE[op](env) -> {gradient name: Knowledge}

def _linear(e):
    x, w, d = e.x, e.w, e.dout
    return {"dx": Knowledge(slips={"dx = dout @ w: the matmul needs w.T (dx = dout @ w.T)":
                                   d @ w} if w.shape[0] == w.shape[1] else {}),
            "dw": Knowledge(summed=(x[:, :, None] * d[:, None, :], 0)  # (B, I, O), if small
                            if x.size * d.shape[1] <= 2**24 else None),
            "db": Knowledge(summed=(d, 0))}


def _bn_parts(e, k):
    g, inv, xh, d, B = e.cache.gamma, e.cache.invstd, e.cache.xhat, e.dout, e.B
    return {"direct (gamma * invstd * dout)": g * inv * d,
            "through the mean": -g * inv * d.sum(0) / B,
            "through the variance": -g * inv * k * xh * (d * xh).sum(0) / B}


def _batchnorm(e):
    B, unbiased = e.B, bool(e.kwargs.get("unbiased", False))
    k, other = (B / (B - 1), 1.0) if unbiased else (1.0, B / (B - 1))
    wrong = "biased (÷B)" if unbiased else "unbiased (÷(B-1))"
    slip_dx = sum(_bn_parts(e, other).values())
    xh, d = e.cache.xhat, e.dout
    return {"dx": Knowledge(parts=_bn_parts(e, k), slips={
        f"dx is the {wrong} variance's batch norm backward: the term through the variance needs "
        f"the factor {k:.6g} (B/(B-1) for unbiased=True, 1 for the default)": slip_dx}),
            "dgamma": Knowledge(summed=(d * xh, 0)), "dbeta": Knowledge(summed=(d, 0))}


def _batchnorm_eval(e):
    return {"dgamma": Knowledge(summed=(e.dout * e.cache.xhat, 0)),
            "dbeta": Knowledge(summed=(e.dout, 0))}


def _tanh(e):
    t, d = e.cache.out, e.dout
    return {"dx": Knowledge(slips={
        "the tanh derivative was evaluated at the input: 1 - x**2 for 1 - t**2, where t = "
        "tanh(x) is the forward's output": (1 - e.x**2) * d,
        "the local derivative 1 - t**2 alone: multiply it by the upstream gradient dout":
            1 - t**2})}


def _cross_entropy(e):
    p, y, B, d = e.cache.probs, e.target, e.B, e.dout
    wrong = p.copy()
    wrong[:, y] -= 1
    return {"dlogits": Knowledge(scalars={"B": B, "dout": float(d)}, slips={
        "1 was subtracted at [:, target] (every row, at every target's column) instead of "
        "[range(B), target]: index the rows with range(B)": wrong / B * d,
        "softmax(logits) - onehot without the upstream scalar dout and the 1/B of the mean":
            p - np.eye(p.shape[1])[y]})}


def _embedding(e):
    dw = np.zeros(e.weight.shape)
    dw[e.idx] = e.dout.reshape(e.idx.shape + (-1,))
    return {"dweight": Knowledge(slips={
        "dweight[idx] = dout (or +=) keeps one lookup of a repeated index: accumulate every "
        "lookup with np.add.at(dweight, idx, dout)": dw})}


OP_KNOWLEDGE = {"linear": _linear, "batchnorm": _batchnorm, "batchnorm_eval": _batchnorm_eval,
                "tanh": _tanh, "cross_entropy": _cross_entropy, "embedding": _embedding}


def op_knowledge(op: str, inputs: dict, cache: Any, dout: Any, kwargs: dict,
                 names: tuple = ()) -> dict[str, Knowledge]:
    """What is known of the gradients of one op of :func:`fastbn.compare`, for its inputs.

    Parameters
    ----------
    op : str
        The op's name (a key of ``fastbn.comparison.OPS``).
    inputs : dict of str to numpy.ndarray
        The forward's inputs by name (``x`` of shape (B, ...), ...).
    cache : fastbn.ops.Cache
        fastbn's cache of the forward.
    dout : numpy.ndarray or float
        The upstream gradient, of the forward output's shape (a scalar for cross_entropy).
    kwargs : dict
        The op's options (``unbiased``, ...).
    names : tuple of str
        Gradient names that get at least the batch size ``B`` as a named scalar.

    Returns
    -------
    dict of str to Knowledge
        By gradient name (``"dx"``, ``"dw"``, ...).
    """
    first = next(iter(inputs.values()))
    B = int(np.shape(first)[0]) if np.ndim(first) else 1
    e = SimpleNamespace(**inputs, cache=cache, dout=dout, kwargs=kwargs, B=B)
    try:
        with np.errstate(all="ignore"):
            know = OP_KNOWLEDGE[op](e) if op in OP_KNOWLEDGE else {}
    except (ValueError, IndexError, TypeError):       # inputs of unexpected shapes
        know = {}
    for name in set(names) | set(know):
        know.setdefault(name, Knowledge())
        know[name].scalars.setdefault("B", B)
    return know
