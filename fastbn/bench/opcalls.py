"""The per-op table: one call of each op, fastbn against NumPy and PyTorch.

Teaching code calls ``fastbn.ops`` one op at a time, so what one call costs is what it pays. For
each op at the model's shapes (width 200, a vocabulary of 27, 3 characters of context, 10
embedding dimensions), each batch size and each pass, the three implementations:

========= =======================================================================================
fastbn    ``ops.<op>_forward(...)``, ``ops.<op>_backward(dout, cache)``: what teaching code calls
numpy     the op's NumPy expression, as ``fastbn.reference`` writes it, inline: ``np.tanh(x)``,
          ``np.maximum(x, 0)``, ``x @ w + b``, ...; for the ops that take several lines (batch
          norm, the embedding's backward, cross-entropy), the ``fastbn.reference`` function
torch     the same op in PyTorch without autograd: the forward function (``torch.tanh``,
          ``torch.addmm``, ...) and the backward ATen op autograd would run
          (``aten.tanh_backward``, ``aten.native_batch_norm_backward``, ...)
========= =======================================================================================

The rows are the ops' entries' (``fastbn._opinfo``, ``OpInfo.opcalls``: the shapes, the
options, the NumPy and PyTorch calls), in their order; each implementation's call is a function
of no arguments (the same one Python call around every implementation). Every case is verified
first (the three agree, forward and backward, to float tolerance), then timed: blocks of calls
(``timeit``, garbage collection off), the implementations taking turns block by block, the
median of ``repeats`` blocks; a block in which this process got less than ``MIN_CPU_SHARE`` of a
CPU (preempted) is timed again, as the step timings do. On one thread (the caller pins BLAS and
torch). Reported in µs per call.
"""
import statistics
import time
import timeit
from dataclasses import dataclass, field
from types import SimpleNamespace

import numpy as np

from .timing import MIN_CPU_SHARE
from .verify import VerificationError

# OPS is made by __getattr__ (from fastbn._opinfo, when first asked for)
__all__ = ["BATCH_SIZES", "OPS", "PASSES", "OpCallError", "cases", "prepare",  # noqa: F822
           "table_batch_sizes", "time_opcalls"]

BATCH_SIZES = (32, 1024)          # the table's batch sizes (those of them the run has)
PASSES = ("forward", "backward")
TOL = {"float32": {"rtol": 1e-3, "atol": 1e-4}, "float64": {"rtol": 1e-9, "atol": 1e-10}}


def _rows():
    """The rows, in the order of the ops' entries: ``[(op entry, OpCall)]`` (``fastbn._opinfo``:
    every op has at least one)."""
    from .._opinfo import OPS as ENTRIES
    return [(op, row) for op in ENTRIES.values() for row in op.opcalls]


def __getattr__(name):
    # OPS, {row name: label}: made from fastbn._opinfo when first asked for
    if name == "OPS":
        return {row.key: row.label for _, row in _rows()}
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


class OpCallError(VerificationError):
    """An implementation computes something else than fastbn's op; nothing was timed."""


@dataclass
class Case:
    """One row at one batch size: per pass and implementation, a function of no arguments that
    makes one call (``calls``) and its text (``texts``, for the report); verification compares
    what the calls return."""

    name: str
    label: str
    batch_size: int
    calls: dict = field(default_factory=dict)
    texts: dict = field(default_factory=dict)


def _case(op, row, B, dt, torch, seed):
    """The case of one row (``OpCall``) of op entry ``op`` at batch size B: its sample arrays at
    the row's shapes (floats of ``dt``), the options, an upstream gradient ``d``; fastbn's calls,
    then the peers the entry gives."""
    arrays = {k: v for k, v in op.arrays(dt, seed, B=B, **row.dims).items() if k not in row.drop}
    args = [*arrays.values(), *row.options.values()]
    forward, backward = op.forward, op.backward
    out, cache = forward(*args)
    d = 1.0 if np.ndim(out) == 0 else \
        np.random.default_rng(seed + 1).standard_normal(np.shape(out)).astype(dt)
    a = SimpleNamespace(**arrays, **row.options, d=d, out=out)
    text = ", ".join([*arrays, *map(str, row.options.values())])
    peers = {"fastbn": {"forward": (lambda: forward(*args), f"ops.{op.name}_forward({text})"),
                        "backward": (lambda: backward(d, cache), f"ops.{op.name}_backward(d, c)")},
             "numpy": row.numpy(a)}
    if torch is not None:
        peers["torch"] = row.torch(torch, a)
    case = Case(row.key, row.label, B)
    for p in PASSES:
        case.calls[p] = {k: v[p][0] for k, v in peers.items()}
        case.texts[p] = {k: v[p][1] for k, v in peers.items()}
    return case


def cases(B, dtype="float32", torch=None, seed=0):
    """The table's cases at batch size ``B``: ``[Case]``, a row per ``OpCall`` of the ops'
    entries in their order (``torch`` the module, or None to leave PyTorch out)."""
    dt = np.dtype(dtype)
    return [_case(op, row, B, dt, torch, seed) for op, row in _rows()]


# ----------------------------------------------------------------------------------------------
# verify, then time

def _arrays(value):
    """The arrays of a checked value (an array, a tensor, a scalar or a tuple of them), in order,
    as float64 NumPy arrays."""
    items = value if isinstance(value, (tuple, list)) else (value,)
    return [np.asarray(v.detach().numpy() if hasattr(v, "detach") else v, np.float64)
            for v in items if v is not None]


def _checked(value, p):
    """What verification compares of a call's value: the output of a forward (the first item of
    a tuple: fastbn's ``(out, cache)``), every gradient of a backward."""
    return value[0] if p == "forward" and isinstance(value, tuple) else value


def verify(case, impls, dtype):
    """Every implementation's output and gradients against fastbn's; OpCallError if they
    disagree beyond ``TOL``."""
    tol = TOL[np.dtype(dtype).name]
    for p in PASSES:
        want = _arrays(_checked(case.calls[p]["fastbn"](), p))
        for impl in impls:
            if impl == "fastbn":
                continue
            got = _arrays(_checked(case.calls[p][impl](), p))
            if len(got) != len(want) or any(
                    a.shape != b.shape or not np.allclose(a, b, **tol, equal_nan=False)
                    for a, b in zip(got, want)):
                raise OpCallError(f"{impl} {case.name} {p} at B={case.batch_size} disagrees "
                                  f"with fastbn's ({case.texts[p][impl]!r})")


def _block(timer, n):
    """(wall seconds, CPU share) of n calls."""
    c0 = time.process_time()
    wall = timer.timeit(n)
    return wall, (time.process_time() - c0) / max(wall, 1e-12)


def _calls_per_block(timer, block_seconds):
    n = 1
    while True:
        wall = timer.timeit(n)
        if wall >= block_seconds / 4 or n >= 1 << 22:
            return max(1, round(block_seconds * n / max(wall, 1e-12)))
        n *= 4 if wall < block_seconds / 40 else 2


def time_case(case, p, impls, repeats, block_seconds):
    """{impl: {"us": median µs per call, "us_all", "calls_per_block", "cpu_share",
    "discarded"}} of one pass of one case."""
    timers = {k: timeit.Timer(case.calls[p][k]) for k in impls}
    calls = {}
    for k, timer in timers.items():
        calls[k] = _calls_per_block(timer, block_seconds)
        timer.timeit(calls[k])                                         # warm-up block
    times, shares = {k: [] for k in impls}, {k: [] for k in impls}
    discarded = dict.fromkeys(impls, 0)
    for _ in range(repeats):
        for k, timer in timers.items():                               # taking turns
            while True:
                wall, share = _block(timer, calls[k])
                if share >= MIN_CPU_SHARE or discarded[k] >= repeats:
                    break
                discarded[k] += 1
                time.sleep(min(0.2, 4 * block_seconds))
            times[k].append(1e6 * wall / calls[k])
            shares[k].append(share)
    return {k: {"us": statistics.median(times[k]), "us_all": times[k],
                "calls_per_block": calls[k], "cpu_share": min(shares[k]),
                "discarded": discarded[k]} for k in impls}


def table_batch_sizes(batch_sizes):
    """The table's batch sizes for a run at ``batch_sizes``: those of ``BATCH_SIZES`` it has, else
    its smallest."""
    return [B for B in BATCH_SIZES if B in batch_sizes] or [min(batch_sizes)]


def prepare(batch_sizes, dtype="float32", torch=None):
    """The cases of the table at these batch sizes, each verified (OpCallError if an
    implementation disagrees with fastbn): ``(cases, impls)``."""
    impls = ["fastbn", "numpy"] + (["torch"] if torch is not None else [])
    dtype = np.dtype(dtype).name
    all_cases = [c for B in batch_sizes for c in cases(B, dtype, torch)]
    for case in all_cases:
        verify(case, impls, dtype)
    return all_cases, impls


def time_opcalls(all_cases, impls, dtype, repeats=5, block_seconds=0.05, log=None):
    """Time both passes of every case (``prepare``'s).

    Returns ``{"dtype", "batch_sizes", "impls", "block_seconds", "repeats", "statistic",
    "rows": [{"op", "label", "pass", "batch_size", "impls": {impl: {"us", ...}},
    "statements": {impl: str}}]}``.
    """
    rows = []
    for case in all_cases:
        for p in PASSES:
            timing = time_case(case, p, impls, repeats, block_seconds)
            rows.append({"op": case.name, "label": case.label, "pass": p,
                         "batch_size": case.batch_size, "impls": timing,
                         "statements": {k: case.texts[p][k] for k in impls}})
        if log:
            us = {p: {k: r["impls"][k]["us"] for k in impls} for p, r in zip(PASSES, rows[-2:])}
            log(f"  B={case.batch_size} {case.name:<14} " + "  ".join(
                f"{p[:3]} " + " ".join(f"{k} {v:8.2f}" for k, v in us[p].items())
                for p in PASSES) + " us")
    batch_sizes = list(dict.fromkeys(c.batch_size for c in all_cases))
    return {"dtype": np.dtype(dtype).name, "batch_sizes": batch_sizes, "impls": impls,
            "block_seconds": block_seconds, "repeats": repeats,
            "statistic": "median over repeats of wall/calls (timeit, gc off), µs per call",
            "rows": rows}
