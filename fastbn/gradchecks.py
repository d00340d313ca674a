"""Finite-difference gradient checking of hand-derived backward passes.

The check (as ``torch.autograd.gradcheck``, with its defaults): for every floating input x of a
function f and a fixed random upstream gradient g (seeded), compare the analytic vector-Jacobian
product ``backward(g)`` with the central difference of the scalar ``s(x) = sum(f(x) * g)``:

    numeric[i] = (s(x + eps e_i) - s(x - eps e_i)) / (2 eps)

An element passes when ``|analytic - numeric| <= atol + rtol * |numeric|``. Differencing is done
in float64 only: in float32 the rounding error of s is ~1e-7 |s| / eps, far above any useful
tolerance, so float32 inputs are refused.

Two forms of ``fn`` are accepted:

- a pair ``(forward, backward)`` following the ``fastbn.ops`` convention:
  ``out, cache = forward(*inputs)`` and ``grads = backward(dout, cache)``;
- a callable ``fn(*inputs) -> (out, backward)`` where ``backward(dout)`` returns the gradients
  (the form to use for a whole stack of ops, see ``fastbn.cli``);
- a layer of ``fastbn.nn`` (``gradcheck(layer, (x,))``): its input and every parameter are checked,
  on a private float64 copy of the layer (the layer itself, its parameters, buffers and gradients
  are left as they were).

``grads`` (one array or a tuple) are matched, in order, to the floating inputs that are not
declared ``constants`` (e.g. the running statistics of an eval-mode batch norm); every one of them
must get a gradient, and a missing or None gradient fails the check. Integer inputs (indices,
targets) and scalars (eps, slopes) are passed through untouched. A NaN or infinite analytic or
numeric value fails too.

The report is titled after the function that was checked: the backward of a pair, the callable,
or the layer. :func:`gradcheck_all` runs the checks of ``fastbn gradcheck`` (every op and the whole
BN-MLP stack) and returns their table.
"""
from __future__ import annotations

import copy
import functools
import html
import inspect
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from . import _validate

__all__ = ["gradcheck", "gradcheck_all", "GradcheckError", "GradcheckReport", "GradcheckRow",
           "GradcheckSuite"]


class GradcheckError(RuntimeError):
    """A backward disagrees with finite differences (carries the report as ``.report``).

    Parameters
    ----------
    message : str
        What failed: the op, the input, numerical against analytical.
    report : GradcheckReport, optional
        The whole check, kept as ``.report``.
    """

    def __init__(self, message, report=None):
        super().__init__(message)
        self.report = report


@dataclass
class GradcheckRow:
    """The check of one input: errors over the ``checked`` elements of ``total``."""

    input: str
    shape: tuple
    checked: int
    total: int
    max_abs_err: float
    max_rel_err: float
    passed: bool
    worst_index: tuple
    analytic: float
    numeric: float


@dataclass
class GradcheckReport:
    """The result of :func:`gradcheck`: one :class:`GradcheckRow` per differentiable input."""

    name: str
    rows: list = field(default_factory=list)
    eps: float = 1e-6
    atol: float = 1e-5
    rtol: float = 1e-3

    @property
    def passed(self) -> bool:
        return all(r.passed for r in self.rows)

    def __str__(self) -> str:
        lines = [f"gradcheck {self.name} (eps={self.eps:g}, atol={self.atol:g}, "
                 f"rtol={self.rtol:g}, float64)"]
        for r in self.rows:
            if r.checked == 0 and not r.passed:
                lines.append(f"  {r.input:<10} {str(r.shape):<12} no gradient returned FAIL")
                continue
            part = "all" if r.checked == r.total else f"{r.checked} of {r.total} (seeded subset)"
            lines.append(f"  {r.input:<10} {str(r.shape):<12} checked {part}: max abs err "
                         f"{r.max_abs_err:.2e}, max rel err {r.max_rel_err:.2e} "
                         f"{'PASS' if r.passed else 'FAIL'}")
        return "\n".join(lines)

    def __repr__(self) -> str:            # the table: a few lines, never an array
        return str(self)

    def _table(self):
        head = ("input", "shape", "checked", "max abs err", "max rel err", "result")
        body = []
        for r in self.rows:
            checked = "none" if r.checked == 0 and not r.passed else (
                "all" if r.checked == r.total else f"{r.checked} of {r.total}")
            body.append((r.input, str(r.shape), checked, f"{r.max_abs_err:.2e}",
                         f"{r.max_rel_err:.2e}", "PASS" if r.passed else "FAIL"))
        return head, body

    def _title(self):
        return (f"gradcheck {self.name}: {'pass' if self.passed else 'FAIL'} (eps={self.eps:g}, "
                f"atol={self.atol:g}, rtol={self.rtol:g}, float64)")

    def _repr_markdown_(self):
        head, body = self._table()
        lines = [f"**{self._title()}**", "", "| " + " | ".join(head) + " |",
                 "|" + "---|" * len(head)]
        lines += ["| " + " | ".join(c.replace("|", "\\|") for c in row) + " |" for row in body]
        return "\n".join(lines)

    def _repr_html_(self):
        head, body = self._table()
        return _html_table(self._title(), head, body)


def _html_table(title, head, body):
    """A small HTML table; the last column (PASS/FAIL) in green or red."""
    def cell(c, last):
        color = (' style="color:#1a7f37"' if c.upper() == "PASS" else
                 ' style="color:#cf222e"' if c.upper() == "FAIL" else "") if last else ""
        return f"<td{color}>{html.escape(c)}</td>"
    rows = ["<tr>" + "".join(cell(c, i == len(row) - 1) for i, c in enumerate(row)) + "</tr>"
            for row in body]
    return (f"<p><b>{html.escape(title)}</b></p><table><tr>"
            + "".join(f"<th>{html.escape(h)}</th>" for h in head) + "</tr>"
            + "".join(rows) + "</table>")


def _input_names(fn, n):
    target = fn[0] if isinstance(fn, tuple) else fn
    try:
        params = list(inspect.signature(target).parameters.values())
    except (TypeError, ValueError):
        params = []
    names = [p.name for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    return [names[i] if i < len(names) else f"input{i}" for i in range(n)]


def _checked_name(fn):
    """The name of the function a report is about: the backward of a pair, else the callable."""
    if isinstance(fn, tuple) and len(fn) == 2:
        forward, backward = fn
        b = getattr(backward, "__name__", type(backward).__name__)
        if b != "<lambda>":
            return b
        return f"{getattr(forward, '__name__', 'forward')} (backward: a lambda)"
    return getattr(fn, "__name__", type(fn).__name__)


def _is_layer(fn):
    from .nn import Module
    return isinstance(fn, Module)


def _layer_title(layer):
    r = repr(layer)
    if "\n" not in r:
        return r
    return f"{type(layer).__name__}({', '.join(type(sub).__name__ for sub in layer)})"


def _layer_vjp(layer, inputs):
    """A layer as ``f(x, *params) -> (out, backward)``, on a private copy of the layer.

    Returns ``(f, inputs, names, title)``: the inputs are x and copies of the parameters.
    """
    title = _layer_title(layer)
    if len(inputs) != 1:
        raise ValueError(f"gradcheck of a layer takes one input, (x,); got {len(inputs)}")
    work = copy.deepcopy(layer)          # the caller's layer, buffers and grads stay untouched
    named = work.named_parameters()
    wrong = [(n, p.dtype) for n, p in named if p.dtype != np.float64]
    if wrong:
        raise TypeError(f"gradcheck needs float64: {title} has {wrong[0][1]} parameters "
                        f"({', '.join(n for n, _ in wrong)}); build it with dtype=np.float64")
    x = inputs[0]
    x_float = isinstance(x, np.ndarray) and np.issubdtype(x.dtype, np.floating)
    params = [p for _, p in named]

    def f(x, *values):
        for p, v in zip(params, values):
            p[...] = v
        out = work(x)

        def backward(dout):
            dx = work.backward(dout)
            grads = [np.array(g, copy=True) for g in work.grads()]
            return [dx] + grads if x_float else grads
        return out, backward

    names = ["x" if x_float else "idx"] + [n for n, _ in named]
    return f, [x] + [p.copy() for p in params], names, title


def _as_vjp(fn):
    """Both accepted forms as ``f(*inputs) -> (out, backward)``."""
    if isinstance(fn, tuple):
        if len(fn) != 2 or not all(callable(f) for f in fn):
            raise TypeError("fn must be a (forward, backward) pair of callables, or a callable "
                            "returning (out, backward)")
        forward, backward = fn

        def vjp(*inputs):
            out, cache = forward(*inputs)
            return out, (lambda dout: backward(dout, cache))

        return vjp
    if not callable(fn):
        raise TypeError(f"fn must be callable or a (forward, backward) pair, got {type(fn)}")
    return fn


def gradcheck(fn: Any, inputs: Sequence[Any], *, eps: float = 1e-6, atol: float = 1e-5,
              rtol: float = 1e-3, max_elements: int | None = 2000, seed: int = 0,
              name: str | None = None, raise_exception: bool = True,
              constants: Sequence[str | int] = (), input_names: Sequence[str] | None = None,
              ) -> GradcheckReport:
    """Check a hand-written backward against central finite differences.

    Parameters
    ----------
    fn : (forward, backward) pair, callable ``fn(*inputs) -> (out, backward)``, or a layer
        See the module docstring.
    inputs : sequence
        The forward's positional arguments (for a layer: ``(x,)``). Floating arrays must be
        float64. Arrays are copied; the caller's arrays are never modified.
    eps, atol, rtol : float
        Finite-difference step and tolerances (torch.autograd.gradcheck's defaults).
    max_elements : int
        Inputs with more elements are checked on a seeded random subset of this many elements
        (the report says so); ``None`` checks every element.
    seed : int
        Seeds the upstream gradient and the subset (through a child ``SeedSequence``, so they
        never repeat the draws of a caller's ``default_rng(seed)``).
    name : str, optional
        Name used in the report (default: the checked function's: the backward of a pair, the
        callable, the layer).
    raise_exception : bool
        Raise :class:`GradcheckError` on failure (default), or just return the report.
    constants : sequence of str or int
        Floating inputs (by name or position) that backward returns no gradient for.
    input_names : sequence of str, optional
        Names of the inputs in the report (default: the forward's parameter names; for a layer
        ``x`` and the parameters' names).

    Returns
    -------
    GradcheckReport
        ``report.passed`` is True when every checked element of every input passed.

    Examples
    --------
    >>> import numpy as np
    >>> from fastbn import gradcheck, ops
    >>> x = np.random.default_rng(0).standard_normal((3, 4))
    >>> report = gradcheck((ops.tanh_forward, ops.tanh_backward), (x,))
    >>> report.passed
    True
    """
    if isinstance(inputs, np.ndarray) or not isinstance(inputs, (tuple, list)):
        inputs = (inputs,)
    inputs = list(inputs)
    if _is_layer(fn):
        f, inputs, names, title = _layer_vjp(fn, inputs)
    else:
        names, f, title = _input_names(fn, len(inputs)), _as_vjp(fn), _checked_name(fn)
    if input_names is not None:
        input_names = [str(n) for n in input_names]
        if len(input_names) != len(inputs):
            raise ValueError(f"input_names has {len(input_names)} names for {len(inputs)} inputs")
        names = input_names
    if name is None:
        name = title

    eps, atol, rtol = _validate.positive(float(eps), "eps"), float(atol), float(rtol)
    if not (atol >= 0 and rtol >= 0):
        raise ValueError(f"atol and rtol must be >= 0, got {atol} and {rtol}")
    unknown = [c for c in constants if c not in names and not
               (isinstance(c, int) and 0 <= c < len(inputs))]
    if unknown:
        raise ValueError(f"constants {unknown} are not inputs of {name} (inputs: {names})")
    const = {c if isinstance(c, int) else names.index(c) for c in constants}
    float_pos = []
    for i, a in enumerate(inputs):
        if isinstance(a, np.ndarray) and np.issubdtype(a.dtype, np.floating) and i not in const:
            if a.dtype != np.float64:
                raise TypeError(
                    f"gradcheck needs float64 inputs: {names[i]} is {a.dtype}. Finite differences "
                    f"in {a.dtype} are dominated by rounding error; cast with .astype(np.float64)")
            inputs[i] = np.array(a, dtype=np.float64, copy=True, order="C")  # type: ignore[index]  # a list
            float_pos.append(i)
    if not float_pos:
        raise ValueError("gradcheck found no float64 array among the inputs to differentiate")

    # a child stream of the seed, not default_rng(seed) itself: inputs drawn by the caller from
    # default_rng(seed) would otherwise meet a dout equal to x, and a symmetric x.T @ dout hides a
    # transposed weight gradient
    rng = np.random.default_rng(np.random.SeedSequence(seed).spawn(1)[0])
    # the analytic pass gets copies of the inputs and of dout: a backward that writes into what
    # it was given (dout *= ..., or the inputs its cache holds) cannot change the differencing
    out, backward = f(*[np.array(a, copy=True) if isinstance(a, np.ndarray) else a
                        for a in inputs])
    out = np.array(out, dtype=np.float64, copy=True)
    dout = rng.standard_normal(out.shape)
    grads = backward(dout.copy() if out.ndim else float(dout))
    if not isinstance(grads, (tuple, list)):
        grads = (grads,)
    grads = list(grads)
    while len(grads) > len(float_pos) and grads[-1] is None:   # e.g. db of a bias-free linear
        grads.pop()
    if len(grads) > len(float_pos):
        raise ValueError(f"backward returned {len(grads)} gradients for only {len(float_pos)} "
                         "floating inputs (declare the others constants=)")
    grads += [None] * (len(float_pos) - len(grads))

    def objective():
        o, _ = f(*inputs)
        return float(np.sum(np.asarray(o, dtype=np.float64) * dout))

    report = GradcheckReport(name=name, eps=eps, atol=atol, rtol=rtol)
    for pos, g in zip(float_pos, grads):
        x = inputs[pos]
        if g is None:             # a differentiable input without a gradient: a failure
            nan = float("nan")
            report.rows.append(GradcheckRow(names[pos], x.shape, 0, x.size, nan, nan, False, (),
                                            nan, nan))
            continue
        g = np.asarray(g, dtype=np.float64)
        if g.shape != x.shape:
            raise ValueError(f"gradient of {names[pos]} has shape {g.shape}, input has {x.shape}")
        flat, gflat = x.reshape(-1), g.reshape(-1)
        n = flat.size
        if max_elements is not None and n > max_elements:
            which = np.sort(rng.choice(n, size=max_elements, replace=False))
        else:
            which = np.arange(n)
        numeric = np.empty(which.size)
        for k, i in enumerate(which):
            orig = flat[i]
            flat[i] = orig + eps
            plus = objective()
            flat[i] = orig - eps
            minus = objective()
            flat[i] = orig
            numeric[k] = (plus - minus) / (2 * eps)
        analytic = gflat[which]
        err = np.abs(analytic - numeric)
        bad = ~(err <= atol + rtol * np.abs(numeric))      # NaN anywhere counts as a failure
        if which.size == 0:
            report.rows.append(GradcheckRow(names[pos], x.shape, 0, n, 0.0, 0.0, True, (), 0, 0))
            continue
        scale = np.maximum(np.abs(analytic), np.abs(numeric))
        rel = np.divide(err, scale, out=np.zeros_like(err), where=scale > 0)
        # the worst element: a non-finite one, else the largest excess over the tolerance
        excess = np.where(np.isfinite(err), err - (atol + rtol * np.abs(numeric)), np.inf)
        worst = int(np.argmax(excess))
        report.rows.append(GradcheckRow(
            input=names[pos], shape=x.shape, checked=int(which.size), total=n,
            max_abs_err=float(err.max()), max_rel_err=float(rel.max()), passed=not bad.any(),
            worst_index=tuple(int(v) for v in np.unravel_index(which[worst], x.shape)),
            analytic=float(analytic[worst]), numeric=float(numeric[worst])))

    if raise_exception and not report.passed:
        r = next(r for r in report.rows if not r.passed)
        if r.checked == 0:
            raise GradcheckError(f"gradcheck of {name} failed: backward returned no gradient for "
                                 f"input '{r.input}' {r.shape} (declare it in constants= if it "
                                 f"has none)\n{report}", report)
        raise GradcheckError(
            f"gradcheck of {name} failed for input '{r.input}' {r.shape} at index "
            f"{r.worst_index}: analytic {r.analytic:.10g} vs numeric {r.numeric:.10g} "
            f"(abs err {abs(r.analytic - r.numeric):.3g} > atol {atol:g} + rtol {rtol:g} "
            f"* |numeric|)\n{report}", report)
    return report


# ----------------------------------------------------------------------------------------------
# the checks behind `fastbn gradcheck`

def mlp_stack(C: np.ndarray, W1: np.ndarray, gamma: np.ndarray, beta: np.ndarray,
              W2: np.ndarray, b2: np.ndarray, idx: np.ndarray, target: np.ndarray) -> Any:
    """The makemore BN-MLP as one function of its parameters, for checking the whole chain.

    Embedding (V, D) -> Linear W1 (T*D, H), no bias -> BatchNorm (gamma, beta) -> tanh ->
    Linear W2 (H, V) + b2 -> cross-entropy with ``target``. Returns ``(loss, backward)`` where
    ``backward(dloss)`` returns ``(dC, dW1, dgamma, dbeta, dW2, db2)``.
    """
    from . import ops

    emb, c_emb = ops.embedding_forward(C, idx)
    hpre, c_l1 = ops.linear_forward(emb, W1)
    hbn, c_bn = ops.batchnorm_forward(hpre, gamma, beta)
    h, c_t = ops.tanh_forward(hbn)
    logits, c_l2 = ops.linear_forward(h, W2, b2)
    loss, c_ce = ops.cross_entropy_forward(logits, target)

    def backward(dloss):
        dlogits = ops.cross_entropy_backward(dloss, c_ce)
        dh, dW2, db2 = ops.linear_backward(dlogits, c_l2)
        dhbn = ops.tanh_backward(dh, c_t)
        dhpre, dgamma, dbeta = ops.batchnorm_backward(dhbn, c_bn)
        demb, dW1, _ = ops.linear_backward(dhpre, c_l1)
        dC = ops.embedding_backward(demb, c_emb)
        return dC, dW1, dgamma, dbeta, dW2, db2

    return loss, backward


def standard_checks(seed: int = 0) -> list[tuple[str, Any, tuple[Any, ...]]]:
    """Every op of ``fastbn.ops`` and the whole BN-MLP stack, on small float64 problems.

    The ops and their inputs are the entries of ``fastbn._opinfo.OPS``: each op's sample arrays
    (and its variants: ``"linear (no bias)"``, ``"batchnorm (B=2)"``, ``"batchnorm (unbiased)"``),
    its options at their sample values, a variant's own options and its constants (an eval batch
    norm's running statistics) bound to the forward.
    Returns a list of ``(label, fn, inputs)`` ready for :func:`gradcheck`.
    """
    from ._opinfo import OPS

    checks: list[tuple[str, Any, tuple[Any, ...]]] = []
    for op in OPS.values():
        for label, arrays, options in op.cases(seed):
            bound = {k: arrays.pop(k) for k in op.constants}
            forward = functools.partial(op.forward, **bound, **op.sample_options(), **options)
            checks.append((label, (forward, op.backward), tuple(arrays.values())))
    rng = np.random.default_rng(seed)
    r = rng.standard_normal
    B, T, V, D, H = 8, 3, 11, 4, 16
    idx = rng.integers(0, 5, size=(B, T))          # 5 of 11 rows: heavy repetition
    target = rng.integers(0, V, size=B)
    checks.append(("bn-mlp stack", mlp_stack,
                   (r((V, D)), r((T * D, H)) / np.sqrt(T * D), np.ones(H), np.zeros(H),
                    0.1 * r((H, V)), np.zeros(V), idx, target)))
    return checks


@dataclass
class GradcheckSuite:
    """The result of :func:`gradcheck_all`: ``(label, GradcheckReport)`` per check.

    ``str()`` is the table ``fastbn gradcheck`` prints; ``repr()`` a short summary (and the
    failures); ``_repr_html_`` the table for Jupyter. ``suite["batchnorm"]`` is a report.
    """

    checks: list = field(default_factory=list)
    eps: float = 1e-6
    atol: float = 1e-5
    rtol: float = 1e-3

    @property
    def passed(self) -> bool:
        return all(report.passed for _, report in self.checks)

    def __getitem__(self, label: str) -> GradcheckReport:
        for lab, report in self.checks:
            if lab == label:
                return report
        raise KeyError(label)

    def _failures(self):
        return [(lab, r.input) for lab, rep in self.checks for r in rep.rows if not r.passed]

    def _summary(self):
        bad = self._failures()
        return (f"{len(self.checks)} ops checked in float64 (eps={self.eps:g}, atol={self.atol:g}, "
                f"rtol={self.rtol:g}): " + ("all pass" if not bad else
                                            f"{len(bad)} input(s) FAILED"))

    def _body(self):
        return [(lab, r.input, str(r.checked), f"{r.max_abs_err:.2e}", f"{r.max_rel_err:.2e}",
                 "pass" if r.passed else "FAIL") for lab, rep in self.checks for r in rep.rows]

    def __str__(self) -> str:
        w = max([18] + [len(lab) for lab, _ in self.checks])     # "batchnorm (unbiased, B=2)"
        header = (f"{'op':<{w}} {'input':<9} {'checked':>9} {'max abs err':>12} "
                  f"{'max rel err':>12}  result")
        lines = [header, "-" * len(header)]
        lines += [f"{a:<{w}} {b:<9} {c:>9} {d:>12} {e:>12}  {f}" for a, b, c, d, e, f in
                  self._body()]
        return "\n".join(lines + ["", self._summary()])

    def __repr__(self) -> str:
        bad = self._failures()
        more = "" if not bad else ": " + ", ".join(f"{lab} {inp}" for lab, inp in bad[:4]) + (
            " ..." if len(bad) > 4 else "")
        return f"<gradcheck_all: {self._summary()}{more}>"

    def _repr_html_(self):
        head = ("op", "input", "checked", "max abs err", "max rel err", "result")
        return _html_table(self._summary(), head, self._body())


def gradcheck_all(*, seed: int = 0, eps: float = 1e-6, atol: float = 1e-5,
                  rtol: float = 1e-3) -> GradcheckSuite:
    """Every op of ``fastbn.ops`` and the whole BN-MLP stack by finite differences: the checks and
    the table of ``fastbn gradcheck``, from Python (for notebooks). Nothing is raised on failure:
    look at ``.passed``.

    Parameters
    ----------
    seed : int, default 0
        Seeds every check's inputs and upstream gradients.
    eps : float, default 1e-6
        The central-difference step.
    atol, rtol : float, default 1e-5, 1e-3
        An element passes when ``|analytic - numeric| <= atol + rtol * |numeric|`` (PyTorch's
        gradcheck defaults).

    Returns
    -------
    GradcheckSuite
        One report per check; ``print(suite)`` is the table, ``suite.passed`` the verdict.

    Examples
    --------
    >>> import fastbn
    >>> suite = fastbn.gradcheck_all()
    >>> suite.passed
    True
    """
    suite = GradcheckSuite(eps=float(eps), atol=float(atol), rtol=float(rtol))
    for label, fn, inputs in standard_checks(seed=seed):
        report = gradcheck(fn, inputs, eps=eps, atol=atol, rtol=rtol, seed=seed,
                           raise_exception=False)
        suite.checks.append((label, report))
    return suite
