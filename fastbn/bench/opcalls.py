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

Every case is verified first (the three agree, forward and backward, to float tolerance), then
timed: blocks of calls (``timeit``, garbage collection off), the implementations taking turns block
by block, the median of ``repeats`` blocks; a block in which this process got less than
``MIN_CPU_SHARE`` of a CPU (preempted) is timed again, as the step timings do. On one thread (the
caller pins BLAS and torch). Reported in µs per call.
"""
import statistics
import time
import timeit
from dataclasses import dataclass, field

import numpy as np

from .timing import MIN_CPU_SHARE
from .verify import VerificationError

__all__ = ["BATCH_SIZES", "OPS", "PASSES", "OpCallError", "cases", "prepare", "table_batch_sizes",
           "time_opcalls"]

BATCH_SIZES = (32, 1024)          # the table's batch sizes (those of them the run has)
PASSES = ("forward", "backward")
# the rows, in order: {name: label}
OPS = {"embedding": "embedding (27×10, 3 characters)",
       "linear_hidden": "linear, hidden (30→200)",
       "batchnorm": "batch norm (200)",
       "tanh": "tanh (200)",
       "relu": "relu (200)",
       "leaky_relu": "leaky relu (200, slope 0.01)",
       "elu": "elu (200, alpha 1)",
       "linear_output": "linear, output (200→27, +b)",
       "cross_entropy": "cross-entropy (27 classes)"}
V, T, D, H = 27, 3, 10, 200
TOL = {"float32": {"rtol": 1e-3, "atol": 1e-4}, "float64": {"rtol": 1e-9, "atol": 1e-10}}


class OpCallError(VerificationError):
    """An implementation computes something else than fastbn's op; nothing was timed."""


@dataclass
class Case:
    """One op at one batch size: statements per pass and implementation, and the names they use.

    ``stmts[pass][impl]`` is a statement for ``timeit``; ``check[pass][impl]`` an expression of
    the same names whose value(s) verification compares (the output, or the gradients)."""

    name: str
    batch_size: int
    ns: dict
    stmts: dict = field(default_factory=dict)
    check: dict = field(default_factory=dict)


def _elementwise(name, B, dt, g, torch):
    x = g.standard_normal((B, H)).astype(dt)
    d = g.standard_normal((B, H)).astype(dt)
    from .. import ops
    ns = {"np": np, "ops": ops, "x": x, "d": d}
    fwd = {"tanh": ("ops.tanh_forward(x)", "np.tanh(x)", "torch.tanh(xt)"),
           "relu": ("ops.relu_forward(x)", "np.maximum(x, 0)", "torch.relu(xt)"),
           "leaky_relu": ("ops.leaky_relu_forward(x, 0.01)", "np.where(x >= 0, x, 0.01 * x)",
                          "F.leaky_relu(xt, 0.01)"),
           "elu": ("ops.elu_forward(x, 1.0)",
                   "np.where(x > 0, x, 1.0 * np.expm1(np.minimum(x, 0)))", "F.elu(xt, 1.0)")}
    bwd = {"tanh": ("ops.tanh_backward(d, c)", "d * (1 - t**2)", "aten.tanh_backward(dt, tt)"),
           "relu": ("ops.relu_backward(d, c)", "np.where(x > 0, d, 0)",
                    "aten.threshold_backward(dt, xt, 0)"),
           "leaky_relu": ("ops.leaky_relu_backward(d, c)", "np.where(x > 0, d, 0.01 * d)",
                          "aten.leaky_relu_backward(dt, xt, 0.01, False)"),
           "elu": ("ops.elu_backward(d, c)",
                   "np.where(x > 0, d, d * 1.0 * np.exp(np.minimum(x, 0)))",
                   "aten.elu_backward(dt, 1.0, 1, 1, False, xt)")}
    ns["t"], ns["c"] = eval(fwd[name][0], ns)
    if torch is not None:
        ns.update(torch=torch, F=torch.nn.functional, aten=torch.ops.aten,
                  xt=torch.from_numpy(x), dt=torch.from_numpy(d), tt=torch.from_numpy(ns["t"]))
    case = Case(name, B, ns)
    for p, table in (("forward", fwd), ("backward", bwd)):
        case.stmts[p] = dict(zip(("fastbn", "numpy", "torch"), table[name]))
    option = {"leaky_relu": ", 0.01", "elu": ", 1.0"}.get(name, "")
    case.check["forward"] = {"fastbn": f"ops.{name}_forward(x{option})[0]",
                             "numpy": fwd[name][1], "torch": fwd[name][2]}
    case.check["backward"] = {"fastbn": bwd[name][0], "numpy": bwd[name][1], "torch": bwd[name][2]}
    return case


def _batchnorm(B, dt, g, torch):
    from .. import ops
    from .. import reference as R
    x = (2 * g.standard_normal((B, H)) + 1).astype(dt)
    gamma, beta = g.uniform(0.5, 2, H).astype(dt), g.standard_normal(H).astype(dt)
    d = g.standard_normal((B, H)).astype(dt)
    ns = {"ops": ops, "R": R, "x": x, "gamma": gamma, "beta": beta, "d": d}
    ns["c"] = ops.batchnorm_forward(x, gamma, beta)[1]
    ns["rc"] = R.batchnorm_forward(x, gamma, beta)[1]
    case = Case("batchnorm", B, ns)
    case.stmts["forward"] = {"fastbn": "ops.batchnorm_forward(x, gamma, beta)",
                             "numpy": "R.batchnorm_forward(x, gamma, beta)",
                             "torch": "aten.native_batch_norm(xt, gt, bt, None, None, True, 0.1, "
                                      "1e-5)"}
    case.stmts["backward"] = {"fastbn": "ops.batchnorm_backward(d, c)",
                              "numpy": "R.batchnorm_backward(d, rc)",
                              "torch": "aten.native_batch_norm_backward(dt, xt, gt, None, None, "
                                       "sm, si, True, 1e-5, [True, True, True])"}
    case.check["forward"] = {k: v + "[0]" for k, v in case.stmts["forward"].items()}
    case.check["backward"] = dict(case.stmts["backward"])
    if torch is not None:
        aten = torch.ops.aten
        xt, gt, bt = (torch.from_numpy(a) for a in (x, gamma, beta))
        _, sm, si = aten.native_batch_norm(xt, gt, bt, None, None, True, 0.1, 1e-5)
        ns.update(torch=torch, aten=aten, xt=xt, gt=gt, bt=bt, sm=sm, si=si,
                  dt=torch.from_numpy(d))
    return case


def _linear(name, B, dt, g, torch):
    from .. import ops
    I, O, bias = (T * D, H, False) if name == "linear_hidden" else (H, V, True)
    x = g.standard_normal((B, I)).astype(dt)
    w = (g.standard_normal((I, O)) / np.sqrt(I)).astype(dt)
    b = g.standard_normal(O).astype(dt) if bias else None
    d = g.standard_normal((B, O)).astype(dt)
    ns = {"ops": ops, "x": x, "w": w, "b": b, "d": d}
    ns["c"] = ops.linear_forward(x, w, b)[1]
    case = Case(name, B, ns)
    case.stmts["forward"] = {"fastbn": "ops.linear_forward(x, w, b)",
                             "numpy": "x @ w + b" if bias else "x @ w",
                             "torch": "torch.addmm(bt, xt, wt)" if bias else "xt @ wt"}
    case.stmts["backward"] = {"fastbn": "ops.linear_backward(d, c)",
                              "numpy": "d @ w.T, x.T @ d" + (", d.sum(0)" if bias else ""),
                              "torch": "dt @ wt.T, xt.T @ dt" + (", dt.sum(0)" if bias else "")}
    case.check["forward"] = dict(case.stmts["forward"], fastbn="ops.linear_forward(x, w, b)[0]")
    case.check["backward"] = dict(case.stmts["backward"],
                                  fastbn=f"ops.linear_backward(d, c)[:{3 if bias else 2}]")
    if torch is not None:
        ns.update(torch=torch, xt=torch.from_numpy(x), wt=torch.from_numpy(w),
                  bt=None if b is None else torch.from_numpy(b), dt=torch.from_numpy(d))
    return case


def _embedding(B, dt, g, torch):
    from .. import ops
    from .. import reference as R
    C = g.standard_normal((V, D)).astype(dt)
    idx = g.integers(0, V, (B, T))
    d = g.standard_normal((B, T * D)).astype(dt)
    ns = {"ops": ops, "R": R, "C": C, "idx": idx, "d": d, "B": B}
    ns["c"] = ops.embedding_forward(C, idx)[1]
    ns["rc"] = R.embedding_forward(C, idx)[1]
    case = Case("embedding", B, ns)
    case.stmts["forward"] = {"fastbn": "ops.embedding_forward(C, idx)",
                             "numpy": "C[idx].reshape(B, -1)", "torch": "Ct[it].view(B, -1)"}
    case.stmts["backward"] = {"fastbn": "ops.embedding_backward(d, c)",
                              "numpy": "R.embedding_backward(d, rc)",
                              "torch": f"aten.embedding_dense_backward(dt.view(B, {T}, {D}), it, "
                                       f"{V}, -1, False)"}
    case.check["forward"] = dict(case.stmts["forward"], fastbn="ops.embedding_forward(C, idx)[0]")
    case.check["backward"] = dict(case.stmts["backward"])
    if torch is not None:
        ns.update(torch=torch, aten=torch.ops.aten, Ct=torch.from_numpy(C),
                  it=torch.from_numpy(idx), dt=torch.from_numpy(d))
    return case


def _cross_entropy(B, dt, g, torch):
    from .. import ops
    from .. import reference as R
    logits = (2 * g.standard_normal((B, V))).astype(dt)
    y = g.integers(0, V, B)
    ns = {"ops": ops, "R": R, "logits": logits, "y": y}
    ns["c"] = ops.cross_entropy_forward(logits, y)[1]
    ns["rc"] = R.cross_entropy_forward(logits, y)[1]
    case = Case("cross_entropy", B, ns)
    case.stmts["forward"] = {"fastbn": "ops.cross_entropy_forward(logits, y)",
                             "numpy": "R.cross_entropy_forward(logits, y)",
                             "torch": "F.cross_entropy(lt, yt)"}
    case.stmts["backward"] = {"fastbn": "ops.cross_entropy_backward(1.0, c)",
                              "numpy": "R.cross_entropy_backward(1.0, rc)",
                              "torch": "aten._log_softmax_backward_data(aten.nll_loss_backward("
                                       "one, ls, yt, None, 1, -100, tw), ls, 1, ls.dtype)"}
    case.check["forward"] = {k: v + ("" if k == "torch" else "[0]")
                             for k, v in case.stmts["forward"].items()}
    case.check["backward"] = dict(case.stmts["backward"])
    if torch is not None:
        aten = torch.ops.aten
        lt, yt = torch.from_numpy(logits), torch.from_numpy(y)
        ls = aten._log_softmax(lt, 1, False)
        _, tw = aten.nll_loss_forward(ls, yt, None, 1, -100)
        ns.update(torch=torch, F=torch.nn.functional, aten=aten, lt=lt, yt=yt, ls=ls, tw=tw,
                  one=torch.tensor(1.0, dtype=lt.dtype))
    return case


def cases(B, dtype="float32", torch=None, seed=0):
    """The table's cases at batch size ``B``: ``[Case]`` in the order of ``OPS`` (``torch`` the
    module, or None to leave PyTorch out)."""
    dt = np.dtype(dtype)
    g = np.random.default_rng(seed)
    out = []
    for name in OPS:
        if name in ("tanh", "relu", "leaky_relu", "elu"):
            out.append(_elementwise(name, B, dt, g, torch))
        elif name == "batchnorm":
            out.append(_batchnorm(B, dt, g, torch))
        elif name.startswith("linear"):
            out.append(_linear(name, B, dt, g, torch))
        elif name == "embedding":
            out.append(_embedding(B, dt, g, torch))
        else:
            out.append(_cross_entropy(B, dt, g, torch))
    return out


# ----------------------------------------------------------------------------------------------
# verify, then time

def _arrays(value):
    """The arrays of a checked value (an array, a tensor, a scalar or a tuple of them), in order,
    as float64 NumPy arrays."""
    items = value if isinstance(value, (tuple, list)) else (value,)
    return [np.asarray(v.detach().numpy() if hasattr(v, "detach") else v, np.float64)
            for v in items if v is not None]


def verify(case, impls, dtype):
    """Every implementation's output and gradients against fastbn's; OpCallError if they
    disagree beyond ``TOL``."""
    tol = TOL[np.dtype(dtype).name]
    for p in PASSES:
        want = _arrays(eval(case.check[p]["fastbn"], case.ns))
        for impl in impls:
            if impl == "fastbn":
                continue
            got = _arrays(eval(case.check[p][impl], case.ns))
            if len(got) != len(want) or any(
                    a.shape != b.shape or not np.allclose(a, b, **tol, equal_nan=False)
                    for a, b in zip(got, want)):
                raise OpCallError(f"{impl} {case.name} {p} at B={case.batch_size} disagrees "
                                  f"with fastbn's ({case.check[p][impl]!r})")


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
    timers = {k: timeit.Timer(case.stmts[p][k], globals=case.ns) for k in impls}
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
            rows.append({"op": case.name, "label": OPS[case.name], "pass": p,
                         "batch_size": case.batch_size, "impls": timing,
                         "statements": {k: case.stmts[p][k] for k in impls}})
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
