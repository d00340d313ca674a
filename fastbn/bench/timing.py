"""The timing harness: blocks of steps on one thread, the GEMM peak, the full training run.

BLAS is pinned to one thread by the caller (``threadpoolctl.threadpool_limits(1)``; torch
``set_num_threads(1)``); garbage collection is off inside timed blocks (as ``timeit`` does). For
each dtype and batch size, each peer is warmed up (calibration runs that size a block of steps to
take about ``block_seconds``, then one untimed block), then ``repeats`` blocks are timed, the
peers taking turns block by block so that drift of the machine hits them alike. Reported: the
median µs/step. A block in which this process ran for less than ``MIN_CPU_SHARE`` of the wall
time was preempted by another process and is timed again (see :func:`time_cell`).

The machine's single-core GEMM peak (:func:`gemm_peak`) is the best of several ``sgemm`` /
``dgemm`` calls on 2048 x 2048 matrices through fastbn's kernels (the OpenBLAS the fused step
calls, fastbn/_blas.py) and through ``numpy.matmul`` (NumPy's own OpenBLAS).
"""
from __future__ import annotations

import gc
import statistics
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np

from .peers import IMPLS, LR, make_model

if TYPE_CHECKING:
    from ..data import Dataset

__all__ = ["FULL_STEPS", "MIN_CPU_SHARE", "full_training", "gemm_peak", "time_cell"]

FULL_STEPS = 200_000
# a timed block in which this process ran for less than this share of the wall time was
# preempted by another process: it is timed again (see time_cell)
MIN_CPU_SHARE = 0.95


def timed(fn, *args):
    """(wall seconds, CPU seconds of this process) of ``fn(*args)``, garbage collection off."""
    was = gc.isenabled()
    gc.disable()
    try:
        t0, c0 = time.perf_counter(), time.process_time()
        fn(*args)
        return time.perf_counter() - t0, time.process_time() - c0
    finally:
        if was:
            gc.enable()


def _timed_run(peer, n, lr):
    """(wall, CPU seconds) of ``n`` steps of ``peer``: measured by the peer itself when it runs
    in a process of its own (``peer.timed_run``), else here."""
    timed_run = getattr(peer, "timed_run", None)
    return timed_run(n, lr) if timed_run is not None else timed(peer.run, n, lr)


def _block_size(peer, lr, block_seconds):
    """Steps per block so a block takes about block_seconds; the calibration runs warm up."""
    n = 1
    while True:
        t, _ = _timed_run(peer, n, lr)
        if t >= block_seconds / 4 or n >= 1 << 20:
            return max(1, round(block_seconds * n / max(t, 1e-9)))
        n *= 4 if t < block_seconds / 40 else 2


def time_cell(peers, repeats, block_seconds, lr=LR, log=None):
    """{peer: {"us_per_step": median, "us_all", "steps_per_block", "cpu_share", "discarded"}}.

    Every peer runs on one thread, so a block's CPU time should equal its wall time. A block in
    which this process got less than ``MIN_CPU_SHARE`` of a CPU was preempted by other processes
    (its wall time is inflated): it is discarded and timed again after a short pause, at most
    ``repeats`` times per peer; the shares of the kept blocks are reported ("cpu_share").
    """
    blocks = {}
    for name, peer in peers.items():
        n = _block_size(peer, lr, block_seconds)
        _timed_run(peer, n, lr)                                  # the warm-up block
        blocks[name] = n
    times = {name: [] for name in peers}
    shares = {name: [] for name in peers}
    discarded = dict.fromkeys(peers, 0)
    for _ in range(repeats):
        for name, peer in peers.items():                         # peers take turns
            n = blocks[name]
            while True:
                wall, cpu = _timed_run(peer, n, lr)
                if cpu >= MIN_CPU_SHARE * wall or discarded[name] >= repeats:
                    break
                discarded[name] += 1
                time.sleep(min(0.2, block_seconds))
            times[name].append(1e6 * wall / n)
            shares[name].append(cpu / wall)
    out = {}
    for name in peers:
        out[name] = {"us_per_step": statistics.median(times[name]), "us_all": times[name],
                     "steps_per_block": blocks[name], "cpu_share": shares[name],
                     "discarded": discarded[name]}
        if hasattr(peer := peers[name], "compile_seconds"):
            out[name]["compile_seconds"] = peer.compile_seconds
        if log:
            log(f"  {IMPLS[name]:<28} {out[name]['us_per_step']:10.1f} us/step "
                f"({repeats} x {blocks[name]} steps; CPU share >= {min(shares[name]):.2f}, "
                f"{discarded[name]} blocks discarded)"
                + (f"; compiled in {peer.compile_seconds:.2f} s"
                   if hasattr(peer, "compile_seconds") else ""))
    return out


def gemm_peak(n: int = 2048, repeats: int = 5, dtype: str = "float32") -> dict[str, Any]:
    """Best GFLOP/s of an n x n x n GEMM (``2 n^3`` FLOPs) on the current thread settings.

    Returns {"n", "dtype", "fastbn": {"gflops", "gflops_median"}, "numpy": {...}, "gflops"}
    where fastbn is the kernels' GEMM (``fastbn._kernels.linear_forward`` without a bias: one
    ``[sd]gemm`` call of the OpenBLAS the fused step calls) and numpy is ``numpy.matmul``
    (NumPy's own OpenBLAS); "gflops" is the better of the two.

    Parameters
    ----------
    n : int, default 2048
        The matrices' size.
    repeats : int, default 5
        Calls per library.
    dtype : {"float32", "float64"}
        The GEMM's dtype.

    Returns
    -------
    dict
        As above.
    """
    from .. import _kernels
    dt = np.dtype(dtype)
    g = np.random.default_rng(0)
    a = g.standard_normal((n, n)).astype(dt)
    b = g.standard_normal((n, n)).astype(dt)
    c = np.zeros((n, n), dt)
    flops = 2.0 * n ** 3
    res: dict[str, Any] = {"n": n, "dtype": dt.name}
    for lib, fn in (("fastbn", lambda: _kernels.linear_forward(a, b, None, c)),
                    ("numpy", lambda: np.matmul(a, b, out=c))):
        fn()                                                     # warm-up
        ts = [timed(fn)[0] for _ in range(repeats)]
        res[lib] = {"gflops": flops / min(ts) / 1e9,
                    "gflops_median": flops / statistics.median(ts) / 1e9}
    res["gflops"] = max(res["fastbn"]["gflops"], res["numpy"]["gflops"])
    return res


def full_training(ds: Dataset, seed: int, steps: int = FULL_STEPS,
                  log: Callable[[str], object] | None = None) -> dict[str, Any]:
    """``fastbn train``'s default run, timed: the 200,000 steps of the lecture on the fused loop.

    As ``fastbn train --seed SEED`` does it: ``fastbn.training.seed_streams(seed)`` gives the
    parameter stream and the minibatch stream; ``fastbn.training.train`` runs the compiled loop
    (it must: the result records ``path == "fused"``), float32, batch 32, lr 0.1 then 0.01 from
    step 100,000, coming back to Python every 1,000 steps. Returns the loop's wall seconds (the time
    ``fastbn train`` prints), µs/step and the eval-mode losses afterwards (running statistics).

    Parameters
    ----------
    ds : fastbn.data.Dataset
        The names.
    seed : int
        As ``fastbn train --seed``.
    steps : int, optional
        The run's length (default 200,000).
    log : callable, optional
        Receives progress lines.

    Returns
    -------
    dict
        The timing and the losses.
    """
    from ..training import DEFAULT_LR_SCHEDULE, seed_streams, train
    attempts = []
    for _ in range(3):            # timed again (at most twice) when other processes preempt it
        init_ss, batch_ss = seed_streams(seed)
        model = make_model(ds.vocab, np.float32, np.random.default_rng(init_ss))
        t0, c0 = time.perf_counter(), time.process_time()
        res = train(model, ds, steps=steps, batch_size=32, lr_schedule=DEFAULT_LR_SCHEDULE,
                    seed=batch_ss, quiet=True)
        total, cpu = time.perf_counter() - t0, time.process_time() - c0
        attempts.append(res.wall_time)
        if cpu >= MIN_CPU_SHARE * total:
            break
    path = getattr(res, "path", None)
    if path != "fused":
        raise RuntimeError(f"fastbn.train did not run the fused loop (path {path!r})")
    if log:
        log(f"full training: {steps:,} steps in {res.wall_time:.2f} s "
            f"({res.us_per_step:.1f} us/step); train {res.losses['train']:.4f} "
            f"val {res.losses['val']:.4f}")
    return {"steps": steps, "batch_size": 32, "dtype": "float32", "seed": seed,
            "lr_schedule": [list(p) for p in DEFAULT_LR_SCHEDULE], "path": path,
            "wall_seconds": res.wall_time, "us_per_step": res.us_per_step,
            "seconds_with_evaluation": total, "cpu_share": cpu / total,
            "discarded_attempts": attempts[:-1], "losses": res.losses}
