"""Grade a hand-written backward: yours against fastbn's verified one, the lecture's ``cmp`` way.

- :func:`compare_arrays` — one gradient against its reference: ``exact`` (bit-identical),
  ``approximate`` (``np.allclose``), ``maxdiff`` and the index of the worst element, the
  makemore lecture's ``cmp(name, dt, t)`` as a :class:`Row`;
- :class:`Report` — rows with a short text repr, ``_repr_html_`` for Jupyter and ``.ok``
  (:func:`fastbn.exercises.check` returns one too);
- :func:`compare` — your backward of one op of ``fastbn.ops`` against fastbn's, on inputs it
  draws, with finite differences of your function as a second opinion;
- :func:`explain` — a wrong row's diagnosis: the error signature of ``fastbn.diagnosis`` that
  explains the array (run only for wrong arrays).

The ops :func:`compare` knows are the table ``OPS``, made from ``fastbn._opinfo`` (every op of
``fastbn.ops``): op name -> forward, backward, an input builder (seeded, the dimension letters of
``fastbn.ops``), and the inputs that get no gradient. Options of an op (``eps``,
``negative_slope``, batch norm's ``unbiased``) pass through ``**op_kwargs``.
"""
from __future__ import annotations

import copy
import difflib
import html
import inspect
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, DTypeLike

from . import _validate
from .diagnosis import Knowledge, Tolerance, diagnose, op_knowledge

# OPS is made by __getattr__ (from fastbn._opinfo, when first asked for)
__all__ = ["Row", "Report", "compare_arrays", "compare", "explain", "OPS",  # noqa: F822
           "OpEntry"]


# ----------------------------------------------------------------------------------------------
# one comparison

@dataclass
class Row:
    """One gradient of yours against its reference.

    ``shape``/``dtype`` are yours, ``expected`` the reference's shape; ``worst`` is the index of
    the largest ``|difference|`` (a non-finite one first), ``value``/``reference`` the two numbers
    there. ``fd`` and ``fd_ok`` are :func:`compare`'s finite-difference check of your function.

    Parameters
    ----------
    name : str
        The gradient's name (``"dx"``, ``"dgamma"``, ...).
    shape : tuple of int or None
        The shape of your array (None when it is not a numeric array).
    expected : tuple of int or None
        The reference's shape.
    dtype : str
        The dtype of your array.
    exact : bool
        Every element equal to the reference's (compared in float64).
    approximate : bool
        ``|yours - reference| <= atol + rtol * |reference|`` everywhere.
    maxdiff : float or None
        ``max |yours - reference|``.
    worst : tuple of int or None
        The index of the largest difference.
    value, reference : float or None
        Your number and the reference's at ``worst``.
    note : str
        What else is wrong (a shape, non-finite values, a dtype), or "".
    fd : str
        The finite-difference verdict, as printed (``"pass 3.1e-10"``), or "" when not run.
    fd_ok : bool or None
        Whether the finite differences agree with your function (None when not run).
    diagnosis : str
        For a wrong array, what you most likely did (one sentence, see ``fastbn.diagnosis``),
        or where the error lives when no known signature explains it; "" otherwise.
    kind : str
        The signature behind ``diagnosis`` (``"factor"``, ``"transposed"``, ...), ``"follows"``
        when the error only follows from a wrong upstream gradient, ``"unknown"``, or "".
    follows : str
        For ``kind == "follows"``: the first wrong step it follows from, else "".
    """

    name: str
    shape: tuple | None = None
    expected: tuple | None = None
    dtype: str = ""
    exact: bool = False
    approximate: bool = False
    maxdiff: float | None = None
    worst: tuple | None = None
    value: float | None = None
    reference: float | None = None
    note: str = ""
    fd: str = ""
    fd_ok: bool | None = None
    diagnosis: str = ""
    kind: str = ""
    follows: str = ""

    @property
    def shape_ok(self) -> bool:
        """Your array has the reference's shape."""
        return self.shape is not None and self.shape == self.expected

    @property
    def ok(self) -> bool:
        """Right shape, approximately right, and not failed by the finite differences."""
        return self.shape_ok and self.approximate and self.fd_ok is not False

    @property
    def status(self) -> str:
        """``"exact"``, ``"approximate"``, ``"follows"`` (wrong only through an upstream
        gradient) or ``"wrong"``."""
        if self.ok:
            return "exact" if self.exact else "approximate"
        return "follows" if self.kind == "follows" else "wrong"


def as_array(value: Any) -> np.ndarray | None:
    """``value`` as a real NumPy array (torch tensors detached), or None if it is not one."""
    if hasattr(value, "detach") and hasattr(value, "numpy"):      # a torch tensor
        value = value.detach().cpu().numpy()
    try:
        a = np.asarray(value)
    except Exception:          # an object NumPy cannot convert (a ragged list, ...)
        return None
    return a if a.dtype.kind in "fiu" else None


def compare_arrays(name: str, got: Any, want: ArrayLike, *, rtol: float = 1e-5,
                   atol: float = 1e-8) -> Row:
    """Compare ``got`` with the reference ``want``: the lecture's ``cmp`` as a :class:`Row`.

    ``exact``: every element equal (compared in float64, so a float32 ``got`` is exact only when
    its values are the reference's). ``approximate``: ``np.allclose(got, want, rtol, atol)``, i.e.
    ``|got - want| <= atol + rtol * |want|`` everywhere. ``maxdiff``: ``max |got - want|``.
    A shape other than the reference's is reported (``row.note``) and fails the row; when the
    sizes agree, the values are still compared (in the reference's shape).

    Parameters
    ----------
    name : str
        The row's name.
    got : array_like
        Your array (a NumPy array, a list, or a torch tensor).
    want : array_like
        The reference.
    rtol, atol : float
        The tolerances of ``approximate``.

    Returns
    -------
    Row
        The comparison.

    Examples
    --------
    >>> import numpy as np
    >>> from fastbn.comparison import compare_arrays
    >>> row = compare_arrays("dx", np.array([1.0, 2.0, 3.5]), np.array([1.0, 2.0, 3.0]))
    >>> row.approximate, row.maxdiff, row.worst
    (False, 0.5, (2,))
    """
    want = np.asarray(want)
    row = Row(name, expected=want.shape)
    a = as_array(got)
    if a is None:
        row.note = f"not a numeric array ({type(got).__name__})"
        return row
    row.shape, row.dtype = a.shape, str(a.dtype)
    notes = []
    if a.shape != want.shape:
        notes.append(f"shape {a.shape}, expected {want.shape}")
        if a.size != want.size:
            row.note = notes[0]
            return row
        a = a.reshape(want.shape)
    a64, w64 = a.astype(np.float64), want.astype(np.float64)
    with np.errstate(invalid="ignore", over="ignore"):
        row.exact = bool(np.array_equal(a64, w64))
        row.approximate = bool(np.allclose(a64, w64, rtol=rtol, atol=atol))
        diff = np.abs(a64 - w64)
    if diff.size:
        flat = diff.reshape(-1)
        bad = ~np.isfinite(flat)
        i = int(np.argmax(bad)) if bad.any() else int(np.argmax(flat))
        row.maxdiff = float(flat[i])
        row.worst = tuple(int(j) for j in np.unravel_index(i, want.shape))
        row.value, row.reference = float(a64.reshape(-1)[i]), float(w64.reshape(-1)[i])
    else:
        row.maxdiff = 0.0
    if not np.isfinite(a64).all():
        notes.append("non-finite values")
    if a.dtype != want.dtype:
        notes.append(f"{a.dtype}, reference {want.dtype}")
    row.note = "; ".join(notes)
    return row


def explain(row: Row, got: Any, want: ArrayLike, know: Knowledge | None = None, *,
            rtol: float = 1e-5, atol: float = 1e-8) -> Row:
    """Fill ``row.diagnosis`` and ``row.kind`` for a wrong numeric array (nothing otherwise).

    Parameters
    ----------
    row : Row
        :func:`compare_arrays`'s row of ``got`` against ``want``.
    got : array_like
        Your array.
    want : array_like
        The reference.
    know : fastbn.diagnosis.Knowledge, optional
        What is known of this gradient (see :func:`fastbn.diagnosis.diagnose`).
    rtol, atol : float
        The comparison's tolerances: a signature must explain ``got`` to them.

    Returns
    -------
    Row
        ``row``, changed in place.
    """
    a = as_array(got)
    if row.ok or a is None or not a.size:
        return row
    d = diagnose(a, want, know, Tolerance(rtol, atol))
    row.kind, row.diagnosis = d.kind, d.text
    return row


def name_row(name: str, known: Iterable[str]) -> Row:
    """The row of a name that has no reference."""
    close = difflib.get_close_matches(name, known, n=1) or \
        difflib.get_close_matches("d" + name, known, n=1)
    hint = f" (did you mean {close[0]}?)" if close else ""
    return Row(name, note=f"unknown name{hint}")


# ----------------------------------------------------------------------------------------------
# the report

def _num(v, fmt=".2e"):
    return "-" if v is None else format(v, fmt)


@dataclass
class Report:
    """Rows of comparisons. ``ok``: at least one row, and every row approximately right, of the
    right shape, and (with finite differences) passing them. ``report[name]`` is a row.

    ``style="cmp"`` prints the lecture's ``cmp`` lines; ``style="compare"`` a compact table with
    the worst index and the finite-difference verdict. ``repr`` stays short: the table for
    ``compare`` (a few rows), a one-line summary for ``check`` (which has printed the table).
    ``str(report)`` (and ``print(report)``) is the table; a notebook shows it as HTML.

    Parameters
    ----------
    title : str
        The first line.
    rows : list of Row
        The comparisons, in order.
    style : {"cmp", "compare"}
        How the table is printed.
    notes : list of str
        What else is wrong (extra gradients returned, finite differences that could not run);
        a note fails the report.
    hint : str
        Printed last (where to look), or "".
    summary : list of str
        Lines printed after the table that do not fail the report (the first wrong step of a
        chain, and which later errors follow from it).
    graph : dict of str to tuple of str
        For a chain: each gradient's name -> the names of the gradients its step reads (the
        computation graph :meth:`figure` draws); empty otherwise.
    """

    title: str
    rows: list = field(default_factory=list)
    style: str = "cmp"
    notes: list = field(default_factory=list)
    hint: str = ""
    summary: list = field(default_factory=list)
    graph: dict = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        """At least one row, every row ok, and no note."""
        return bool(self.rows) and all(r.ok for r in self.rows) and not self.notes

    def __getitem__(self, name: str) -> Row:
        for r in self.rows:
            if r.name == name:
                return r
        raise KeyError(name)

    def failures(self) -> list[Row]:
        """The rows that are not ok.

        Returns
        -------
        list of Row
            In the order of ``rows``.
        """
        return [r for r in self.rows if not r.ok]

    def _line(self, r):
        if self.style == "cmp":     # the lecture's: f'{s:15s} | exact: {str(ex):5s} | ...'
            line = (f"{r.name:15s} | exact: {str(r.exact):5s} | approximate: "
                    f"{str(r.approximate):5s} | maxdiff: {'-' if r.maxdiff is None else r.maxdiff}")
            line += f" | {r.note}" if r.note else ""
            return line + (f" | {r.diagnosis}" if r.diagnosis else "")
        shape = str(r.shape) if r.shape is not None else "-"
        where = f" at {r.worst}" if r.worst is not None and not r.exact else ""
        line = (f"  {r.name:<8} {shape:<10} exact {str(r.exact):<5} approx "
                f"{str(r.approximate):<5} maxdiff {_num(r.maxdiff)}{where}")
        if r.fd:
            line += f"  fd {r.fd}"
        if r.value is not None and not r.approximate and r.shape_ok:
            line += f"  yours {r.value:.6g}, fastbn {r.reference:.6g}"
        line += f"  [{r.note}]" if r.note else ""
        return line + (f"\n      why: {r.diagnosis}" if r.diagnosis else "")

    def verdict(self) -> str:
        """``"ok"``, or ``"FAIL"`` with the names of the wrong rows.

        Returns
        -------
        str
            For example ``"FAIL (wrong: dgamma, dbeta)"``.
        """
        if self.ok:
            return "ok"
        bad = [r.name for r in self.failures()]
        what = f"wrong: {', '.join(bad[:4])}{' ...' if len(bad) > 4 else ''}" if bad else ""
        if not self.rows:
            what = "nothing to check"
        return "FAIL" + (f" ({what})" if what else "")

    def __str__(self) -> str:
        lines = [self.title] if self.style == "compare" else []
        lines += [self._line(r) for r in self.rows]
        # the cmp table stays the lecture's lines: there the rows carry the summary
        lines += [f"  {n}" for n in (self.summary if self.style == "compare" else []) + self.notes]
        if self.hint:
            lines.append(f"  hint: {self.hint}")
        if self.style == "compare":
            lines.append(f"  -> {self.verdict()}")
        return "\n".join(lines)

    def __repr__(self) -> str:
        if self.style == "compare":
            return str(self)
        n_exact = sum(r.exact for r in self.rows)
        n_approx = sum(r.approximate and r.shape_ok for r in self.rows)
        diffs = [r for r in self.rows if r.maxdiff is not None and r.shape_ok]
        worst = max(diffs, key=lambda r: (np.nan_to_num(r.maxdiff, nan=np.inf)), default=None)
        w = "" if worst is None else f", max maxdiff {worst.maxdiff:.2g}" + (
            f" ({worst.name})" if worst.maxdiff else "")
        return (f"<{self.title}: {len(self.rows)} names, {n_approx} approximate, {n_exact} "
                f"exact{w}: {self.verdict()}>")

    def _repr_html_(self):
        def cell(v, good=None):
            style = "" if good is None else \
                f' style="color:{"#1a7f37" if good else "#cf222e"}"'
            return f"<td{style}>{html.escape(str(v))}</td>"

        head = ["name", "shape", "exact", "approximate", "maxdiff", "worst", "note"]
        if any(r.fd for r in self.rows):
            head.insert(6, "finite diff.")
        if any(r.diagnosis for r in self.rows):
            head += ["result", "diagnosis"]
        out = [f"<p><b>{html.escape(self.title)}</b>: {html.escape(self.verdict())}</p>",
               "<table><tr>" + "".join(f"<th>{h}</th>" for h in head) + "</tr>"]
        for r in self.rows:
            cells = [cell(r.name, r.ok), cell("-" if r.shape is None else r.shape, r.shape_ok),
                     cell(r.exact), cell(r.approximate, r.approximate),
                     cell(_num(r.maxdiff)), cell("-" if r.worst is None else r.worst)]
            if "finite diff." in head:
                cells.append(cell(r.fd or "-", r.fd_ok))
            cells.append(cell(r.note))
            if "diagnosis" in head:
                cells += [cell(r.status, r.ok), cell(r.diagnosis)]
            out.append("<tr>" + "".join(cells) + "</tr>")
        out.append("</table>")
        out += [f"<p>{html.escape(n)}</p>" for n in
                self.summary + self.notes + ([self.hint] if self.hint else [])]
        return "\n".join(out)

    def figure(self, ax: Any = None) -> Any:
        """The rows as nodes of the computation graph, each coloured by its result.

        Green: exact or approximate; red: wrong; orange: wrong only because of a wrong upstream
        gradient; grey: a step of the graph you did not give. Edges run from a gradient to the
        gradients its step reads (``graph``); without a graph the rows form a chain.

        Parameters
        ----------
        ax : matplotlib.axes.Axes, optional
            Where to draw; a new figure (made without pyplot) when None.

        Returns
        -------
        matplotlib.figure.Figure
            The figure (shown inline by Jupyter).
        """
        from matplotlib.patches import FancyArrowPatch

        from ._figures import new_figure

        given = {r.name: r for r in self.rows}
        names = list(self.graph) or [r.name for r in self.rows]
        reads = self.graph or {b: (a,) for a, b in zip(names, names[1:])}
        if ax is None:                   # a Figure of its own, without pyplot's global state
            ax = new_figure(3.6, 0.32 * len(names) + 0.6)[1][0, 0]
        fig = ax.figure
        colour = {"exact": "#a6dba0", "approximate": "#d9f0d3", "follows": "#fdb863",
                  "wrong": "#e66101"}
        y = {n: -i for i, n in enumerate(names)}
        for n in names:
            r = given.get(n) or given.get(n.removeprefix("d"))     # cmp's labels drop the d
            ax.text(0, y[n], n, ha="center", va="center", fontsize=8, bbox=dict(
                boxstyle="round", fc=colour.get(r.status, "#eeeeee") if r else "#eeeeee"))
            for k, up in enumerate(u for u in reads.get(n, ()) if u in y):
                ax.add_patch(FancyArrowPatch((0.35, y[up]), (0.35, y[n]), arrowstyle="->",
                                             connectionstyle=f"arc3,rad={-0.4 - 0.1 * k}",
                                             mutation_scale=8, lw=0.6, color="#555555"))
        ax.set_xlim(-1, 1.6)
        ax.set_ylim(-len(names), 1)
        ax.axis("off")
        counts = [sum(r.status == k for r in self.rows) for k in ("wrong", "follows")]
        ax.set_title(f"{len(self.rows) - sum(counts)} right, {counts[0]} wrong,\n"
                     f"{counts[1]} wrong only through an earlier one", fontsize=8)
        return fig


# ----------------------------------------------------------------------------------------------
# the ops compare knows

@dataclass(frozen=True)
class OpEntry:
    """One op that :func:`compare` knows, made from its entry in ``fastbn._opinfo``.

    Parameters
    ----------
    forward, backward : callable
        The op's functions in ``fastbn.ops``.
    inputs : callable
        ``inputs(rng, dims) -> {name: value}``, in the forward's order (float64 arrays, cast to
        the requested dtype later).
    dims : dict
        The default dimension sizes.
    constants : tuple of str
        The floating inputs that get no gradient.
    """

    forward: Any
    backward: Any
    inputs: Any
    dims: dict
    constants: tuple = ()


def _table():
    """``OPS``: every op of fastbn._opinfo, made when first asked for (``import fastbn`` does
    not load the test metadata); batch norm also takes unbiased=True (the lecture's variant)."""
    table = globals().get("OPS")
    if table is None:
        from . import _opinfo
        table = {op.name: OpEntry(op.forward, op.backward, op.inputs, dict(op.dims), op.constants)
                 for op in _opinfo.OPS.values()}
        globals()["OPS"] = table
    return table


def __getattr__(name):
    if name == "OPS":
        return _table()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

# "approximate" for compare: np.allclose's tolerances in float64. In float32 a sum over the batch
# (dgamma, dbeta, db) computed two ways (fastbn's kernels, fastbn.reference's NumPy) differs by up
# to 3e-5 at B = 256, where terms cancel; rtol 1e-3, atol 1e-4 held for every op up to B = 4096.
TOLERANCES = {np.dtype(np.float64): (1e-5, 1e-8), np.dtype(np.float32): (1e-3, 1e-4)}


# ----------------------------------------------------------------------------------------------
# compare

def _is_float(v):
    return isinstance(v, np.ndarray) and np.issubdtype(v.dtype, np.floating)


def _with_inputs(cache, inputs):
    """A private copy of fastbn's cache, with the forward's inputs added as attributes."""
    c = copy.deepcopy(cache)
    for k, v in inputs.items():
        if not hasattr(c, k):
            setattr(c, k, np.array(v, copy=True))
    return c


def _grads(g):
    return list(g) if isinstance(g, (tuple, list)) else [g]


def _fn_name(f):
    name = getattr(f, "__name__", None) or type(f).__name__
    return "a lambda" if name == "<lambda>" else name


def _dims(entry, op, shapes):
    dims = dict(entry.dims)
    if shapes is None:
        return dims
    if not isinstance(shapes, dict):
        raise TypeError(f"shapes must be a dict of dimension sizes such as "
                        f"{entry.dims}, got {type(shapes).__name__}")
    unknown = sorted(set(shapes) - set(dims))
    if unknown:
        raise ValueError(f"{op} has no dimension {', '.join(map(repr, unknown))}; its dimensions "
                         f"are {', '.join(dims)} (defaults {entry.dims})")
    for k, v in shapes.items():
        dims[k] = _validate.positive_int(v, f"shapes[{k!r}]")
    return dims


def _check_options(entry, op, inputs, op_kwargs):
    params = inspect.signature(entry.forward).parameters
    allowed = [p for p in params if p not in inputs]
    bad = [k for k in op_kwargs if k not in allowed]
    if bad:
        raise TypeError(f"{op} has no option {', '.join(map(repr, bad))}; its options: "
                        f"{', '.join(allowed) or 'none'}")


def compare(student: Any, op: str, *, shapes: Mapping[str, int] | None = None,
            dtype: DTypeLike = np.float64, seed: int = 0, call: str = "cache",
            rtol: float | None = None, atol: float | None = None,
            finite_differences: bool = True, **op_kwargs: Any) -> Report:
    """Grade your backward of one op against fastbn's verified one, on the same inputs.

    Parameters
    ----------
    student : callable or (forward, backward) pair
        Your backward, in one of three forms:

        - ``call="cache"`` (default): ``backward(dout, cache)``, where ``cache`` is a private copy
          of fastbn's cache for the op (``fastbn.ops.Cache``: the attributes its forward documents,
          e.g. ``xhat``, ``gamma``, ``invstd``, ``mean``, ``var``, ``eps`` for batch norm) with the
          forward's inputs added by name (``cache.x``, ``cache.gamma``, ``cache.beta``);
        - ``call="inputs"``: ``backward(dout, *inputs, **op_kwargs)``, e.g.
          ``my_bn_backward(dout, x, gamma, beta)``, for a backward that recomputes what it needs;
        - a pair ``(forward, backward)``, CS231n style: ``out, cache = forward(*inputs,
          **op_kwargs)`` (its ``out`` is compared too) and ``backward(dout, cache)``.

        It returns the gradients of the op's floating inputs in the forward's order (one array,
        or a tuple): see ``OPS`` and ``fastbn.ops``.
    op : str
        A key of ``OPS``: the name of an op of ``fastbn.ops`` (``fastbn._opinfo.OPS``), e.g.
        "batchnorm", "linear", "tanh".
    shapes : dict, optional
        Dimension sizes, by the letters of ``fastbn.ops`` (``{"B": 2, "D": 5}`` for batch norm);
        unnamed ones keep ``OPS[op].dims``.
    dtype : float64 (default) or float32
        The inputs' dtype. Finite differences always run in float64.
    seed : int
        Seeds the inputs and the upstream gradient ``dout`` (a random scalar for cross_entropy).
    rtol, atol : float, optional
        "approximate" is ``|yours - fastbn| <= atol + rtol * |fastbn|``; defaults
        ``TOLERANCES[dtype]`` (np.allclose's in float64).
    finite_differences : bool
        Also check your function by central differences (``fastbn.gradcheck``, its defaults) of
        its forward, a second opinion that needs no reference.
    **op_kwargs
        The op's options (``eps=``, ``negative_slope=``; ``unbiased=True`` for the lecture's batch
        norm, normalized with the Bessel-corrected variance: ``fastbn.ops.batchnorm_forward``'s
        variant, whose backward has the factor ``B/(B-1)``).
    call : {"cache", "inputs"}
        How your backward is called (see ``student``).

    Returns
    -------
    Report
        One row per gradient (``dx``, ``dgamma``, ...; and ``out`` for a pair): exact,
        approximate, maxdiff, the worst element's index, the finite-difference verdict, and for
        a wrong one a diagnosis (``row.diagnosis``: the mistake that reproduces your array to
        the tolerance, or where the error lives). ``report.ok`` when all pass. Your function's
        own exceptions propagate (with your traceback); a missing gradient, a wrong shape or a
        failure of the finite differences is reported.

    Examples
    --------
    >>> from fastbn import compare, ops
    >>> report = compare(ops.tanh_backward, "tanh")     # fastbn's own backward passes, of course
    >>> print(report.ok, report.verdict())
    True ok
    """
    table = _table()
    if not isinstance(op, str) or op not in table:
        raise ValueError(f"unknown op {op!r}; compare knows {', '.join(table)}")
    if call not in ("cache", "inputs"):
        raise ValueError(f"call must be 'cache' or 'inputs', got {call!r}")
    pair = isinstance(student, tuple)
    if pair and (len(student) != 2 or not all(callable(f) for f in student)):
        raise TypeError("student must be a backward function or a (forward, backward) pair")
    if not pair and not callable(student):
        raise TypeError(f"student must be callable, got {type(student).__name__}")
    dt = _validate.float_dtype(dtype)
    entry = table[op]
    dims = _dims(entry, op, shapes)
    rng = np.random.default_rng(seed)
    inputs = {k: (v.astype(dt) if _is_float(v) else v)
              for k, v in entry.inputs(rng, dims).items()}
    _check_options(entry, op, inputs, op_kwargs)
    d_rtol, d_atol = TOLERANCES[dt]
    rtol = d_rtol if rtol is None else float(rtol)
    atol = d_atol if atol is None else float(atol)
    names = ["d" + k for k, v in inputs.items() if _is_float(v) and k not in entry.constants]

    def fresh():                  # private copies for every call of a student's function
        return [np.array(v, copy=True) for v in inputs.values()]

    out, cache = entry.forward(*fresh(), **op_kwargs)
    student_cache = _with_inputs(cache, inputs)
    if np.ndim(out) == 0:
        dout = dt.type(rng.uniform(0.5, 2.0))  # type: ignore[call-overload]
    else:
        dout = rng.standard_normal(np.shape(out)).astype(dt)
    ref = [np.array(g, copy=True) for g in _grads(entry.backward(np.copy(dout), cache))]

    rows = []
    if pair:
        s_forward, s_backward = student
        s_out, s_cache = s_forward(*fresh(), **op_kwargs)
        rows.append(compare_arrays("out", s_out, out, rtol=rtol, atol=atol))
        got = _grads(s_backward(np.copy(dout), s_cache))
        who = _fn_name(s_backward)
    elif call == "cache":
        got = _grads(student(np.copy(dout), student_cache))
        who = _fn_name(student)
    else:
        got = _grads(student(np.copy(dout), *fresh(), **op_kwargs))
        who = _fn_name(student)
    notes = []
    for i, (name, want) in enumerate(zip(names, ref)):
        if i >= len(got) or got[i] is None:
            rows.append(Row(name, expected=want.shape, note="not returned"))
        else:
            rows.append(compare_arrays(name, got[i], want, rtol=rtol, atol=atol))
    if not all(r.ok for r in rows):
        know = op_knowledge(op, inputs, cache, dout, op_kwargs, tuple(r.name for r in rows))
        arrays = ([s_out] if pair else []) + got
        wants = ([out] if pair else []) + ref
        for r, a, w in zip(rows, arrays, wants):
            explain(r, a, w, know.get(r.name), rtol=rtol, atol=atol)
    if len(got) > len(names):
        notes.append(f"returned {len(got)} gradients; {op} has {len(names)}: "
                     f"{', '.join(names)}")

    if finite_differences:
        notes += _finite_differences(student, pair, call, entry, inputs, op_kwargs, rows, who)
    settings = ", ".join([str(dt)] + [f"{k}={v}" for k, v in dims.items()] +
                         [f"{k}={v!r}" for k, v in op_kwargs.items()])
    return Report(f"compare {who} with fastbn {op} ({settings}; seed {seed})", rows,
                  style="compare", notes=notes)


def _finite_differences(student, pair, call, entry, inputs, op_kwargs, rows, who):
    """gradcheck of the student's function (float64); fills ``row.fd``; returns notes."""
    from .gradchecks import gradcheck

    kw = op_kwargs
    if pair:
        s_forward, s_backward = student
        fn = (lambda *a: s_forward(*a, **kw), s_backward)
    elif call == "cache":
        def fwd(*a):
            out, c = entry.forward(*a, **kw)
            return out, _with_inputs(c, dict(zip(inputs, a)))
        fn = (fwd, student)
    else:
        fn = (lambda *a: (entry.forward(*a, **kw)[0], a),
              lambda d, a: student(d, *a, **kw))
    args = [v.astype(np.float64) if _is_float(v) else v for v in inputs.values()]
    try:
        report = gradcheck(fn, args, input_names=list(inputs), name=who,
                           constants=entry.constants, raise_exception=False)
    except Exception as e:          # the student's function failed on float64 copies
        return [f"finite differences could not run: {type(e).__name__}: {e}"]
    by_name = {r.name: r for r in rows}
    for g in report.rows:
        r = by_name.get("d" + g.input)
        if r is None:
            continue
        r.fd_ok = g.passed
        r.fd = ("pass" if g.passed else "FAIL") + (
            f" {g.max_abs_err:.1e}" if g.checked else " (no gradient)")
    return []
