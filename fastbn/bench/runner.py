"""A benchmark run: verify every peer, time them, write the report (``run``)."""
from __future__ import annotations

import contextlib
import importlib
import os
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

import numpy as np

from .._bench_options import DEFAULT_BATCH_SIZES, DEFAULT_DTYPES, DEFAULT_OUT
from . import compiled
from . import peers as base_peers
from .flops import fused_flops, step_flops
from .inference import run_inference
from .machine import loadavg, machine_info
from .opcalls import prepare as prepare_opcalls
from .opcalls import table_batch_sizes, time_opcalls
from .peers import IMPLS, LR, MODEL, make_model
from .report import write
from .targets import judge, load_targets
from .timing import full_training, gemm_peak, time_cell
from .verify import LOSS_TOL, STATE_TOL, VERIFY_STEPS, verify_cell

PEERS: dict[str, Any] = {**base_peers.PEERS, **compiled.PEERS}    # every peer a run can time

if TYPE_CHECKING:
    from ..data import Dataset

__all__ = ["run"]

STD = object()     # "sys.stdout / sys.stderr as they are at call time"


def _seeds(seed):
    """From one int seed: the parameters' SeedSequence and the peers' minibatch seeds."""
    ss = np.random.SeedSequence(seed).spawn(5)
    words = [int(s.generate_state(1, np.uint64)[0]) for s in ss[1:]]
    return ss[0], {"fused": words[0], "numpy": words[1], "torch": words[2] & (2**63 - 1),
                   "verify": words[3]}


def _bar(total, stream):
    """A tqdm bar over the timed cells (rate and ETA) where ``fastbn.train`` would show one (a
    terminal, a Jupyter kernel); None elsewhere (the log lines say it all)."""
    from .._progress import progress_mode, tqdm_class
    if stream is None or progress_mode(False, stream) != "bar":
        return None
    return tqdm_class(stream)(total=total, file=stream, unit="cell", leave=True)


def _log_to(stream):
    def log(msg):
        if stream is not None:
            print(msg, file=stream, flush=True)
    return log


@contextlib.contextmanager
def one_thread(torch_mod: Any = None) -> Iterator[None]:
    """Pin BLAS (threadpoolctl) and, given, torch to one thread within the block, and restore
    both after: what ``fastbn bench`` does for its whole run. These are settings of the whole
    process, so ``run`` leaves them to its caller (the command line owns its process).

    Parameters
    ----------
    torch_mod : module, optional
        ``torch``, to pin it too.
    """
    from threadpoolctl import threadpool_limits  # type: ignore[import-untyped]  # (no stubs)
    before = torch_mod.get_num_threads() if torch_mod is not None else None
    try:
        with threadpool_limits(limits=1, user_api="blas"):
            if torch_mod is not None:
                torch_mod.set_num_threads(1)
            yield
    finally:
        if torch_mod is not None:
            torch_mod.set_num_threads(before)


def run(batch_sizes: Sequence[int] = DEFAULT_BATCH_SIZES, dtypes: Sequence[str] = DEFAULT_DTYPES,
        repeats: int = 5, out: str | os.PathLike[str] = DEFAULT_OUT, *, use_torch: bool = True,
        use_compiled: bool = True, full: bool = False, quick: bool = False,
        data: Dataset | str | os.PathLike[str] | None = None, seed: int | None = None,
        block_seconds: float | None = None, gemm_n: int | None = None,
        targets: str | os.PathLike[str] | dict[str, Any] | list[Any] | None = None,
        machine: dict[str, Any] | None = None, stream: TextIO | None | object = STD,
        stdout: TextIO | None | object = STD) -> dict[str, Any]:
    """Verify, then time every peer at every batch size and dtype, the per-op calls
    (``fastbn.bench.opcalls``: float32, or the run's dtype without it; B = 32 and 1024, those the
    run has, else its smallest) and inference (eval and sampling: folded, unfolded, PyTorch;
    ``fastbn.bench.inference``); write the results.

    The run times with the threads the process has: ``fastbn bench`` pins BLAS and torch to one
    thread (``with one_thread(torch): run(...)``); results.json records the thread counts.

    Parameters
    ----------
    batch_sizes : sequence of int (>= 2)
    dtypes : sequence of "float32" / "float64"
    repeats : int
        Timed blocks per peer and cell; the median is reported.
    out : str or Path
        Results folder (created): results.md, results.json, us_per_step.png. The default,
        ``fastbn-bench``, is relative to the current folder.
    use_torch : bool
        Time PyTorch when it is importable (skipped with a note otherwise).
    use_compiled : bool
        Also time the compiled peers (``fastbn.bench.compiled``: ``torch.compile`` with PyTorch,
        JAX ``jit`` of a step and of a loop when JAX is installed; skipped with a note
        otherwise). Their compile time is reported apart from their step time.
    full : bool
        Also time the full 200,000-step training (about 3 s here).
    quick : bool
        A smoke run: blocks of about 10 ms and a 512^3 GEMM for the peak. Not for real numbers.
    data : path of names.txt, a fastbn.data.Dataset, or None ($FASTBN_DATA, cache, download)
    seed : int
        Parameters (as ``fastbn train --seed``) and minibatch streams; default the CLI's.
    block_seconds : float, optional
        The length of a timed block (default 0.3 s; 0.01 s with ``quick``).
    gemm_n : int, optional
        The GEMM size of the peak's measure (default 2048; 512 with ``quick``).
    targets : None, path of a JSON file, dict or list
        What to judge the run against (``fastbn.bench.targets``); checked before anything runs.
        results.json and results.md list the verdicts (none without targets).
    machine : dict or None
        Added to the machine information of results.json (``bench/run.py`` adds the checkout's
        ``git describe`` as ``fastbn_git``, which results.md shows after the version).
    stream : file or None
        Progress messages (default sys.stderr).
    stdout : file or None
        Receives the markdown table (default sys.stdout; None: not printed).

    Returns
    -------
    dict, as written to results.json.

    Raises
    ------
    VerificationError
        A peer disagrees with the fused step; nothing was timed.
    ValueError
        Bad batch sizes, dtypes, repeats or targets.
    """
    from .. import data as fdata
    from ..training import DEFAULT_SEED

    log = _log_to(sys.stderr if stream is STD else stream)
    stdout = sys.stdout if stdout is STD else stdout
    batch_sizes = [int(b) for b in batch_sizes]
    if not batch_sizes or min(batch_sizes) < 2:
        raise ValueError(f"batch sizes must be >= 2 (batch norm), got {batch_sizes}")
    dtypes = [np.dtype(d).name for d in dtypes]
    if not dtypes or any(d not in DEFAULT_DTYPES for d in dtypes):
        raise ValueError(f"dtypes must be float32 and/or float64, got {dtypes}")
    repeats = int(repeats)
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    targets = load_targets(targets)
    if machine is not None and not isinstance(machine, dict):
        raise TypeError(f"machine must be a dict or None, got {type(machine).__name__}")
    block_seconds = (0.01 if quick else 0.3) if block_seconds is None else float(block_seconds)
    gemm_n = (512 if quick else 2048) if gemm_n is None else int(gemm_n)
    seed = DEFAULT_SEED if seed is None else int(seed)
    ds = data if isinstance(data, fdata.Dataset) else fdata.load_dataset(data, block_size=3)

    torch_mod: Any = None
    torch_note: str | None = None
    if use_torch:
        try:
            torch_mod = importlib.import_module("torch")   # Any: optional
        except ImportError as e:
            torch_note = f"PyTorch skipped: not importable ({e})"
    else:
        torch_note = "PyTorch skipped (--no-torch)"
    notes = [torch_note] if torch_note else []
    names = [k for k in ("fused", "per_layer", "numpy", "torch") if k != "torch" or torch_mod]
    if use_compiled:
        more, why = compiled.available(torch_mod)
        names += more
        notes += why
    else:
        notes.append("compiled peers skipped (--no-compiled)")
    for note in notes:
        log(note)

    init_ss, seeds = _seeds(seed)
    X, Y = ds.Xtr, ds.Ytr
    machine = machine_info(torch_mod, machine)
    # verify everything first
    env_before = dict(os.environ)
    try:                         # the compiled peers' processes end with the run
        cells: dict[tuple[str, int], tuple[dict[str, Any], Any]] = {}
        for dt in dtypes:
            base = make_model(ds.vocab, dt, np.random.default_rng(init_ss))
            for B in batch_sizes:
                peers = {k: PEERS[k](base, B, X, Y, seeds) for k in names}
                cells[dt, B] = (peers, verify_cell(peers, base, B, X, Y, dt, seeds))
        log(f"verified: {len(names)} implementations agree with the fused step over "
            f"{VERIFY_STEPS} steps at every batch size and dtype")
        op_dtype = "float32" if "float32" in dtypes else dtypes[0]
        op_cases, op_impls = prepare_opcalls(table_batch_sizes(batch_sizes), op_dtype, torch_mod)
        log(f"verified: {len(op_cases)} per-op cases agree with fastbn.ops ({', '.join(op_impls)})")
        log(f"GEMM peak ({gemm_n}^3, one thread) ...")
        peaks = {dt: gemm_peak(gemm_n, 2 if quick else 5, dt) for dt in dtypes}
        rows = []
        log_stream = sys.stderr if stream is STD else stream
        bar = _bar(len(cells), log_stream)
        if bar is not None:                # log lines above the bar, not through it

            def log(msg):
                bar.write(msg, file=log_stream)
        for (dt, B), (peers, ver) in cells.items():
            log(f"{dt}, B={B}:")
            if bar is not None:
                bar.set_description(f"{dt} B={B}")
            timing = time_cell(peers, repeats, block_seconds, log=log)
            rows.append(_row(dt, B, timing, ver, peaks[dt], peers["fused"].uses_table))
            if bar is not None:
                bar.update(1)
        if bar is not None:
            bar.close()
        log(f"per-op calls ({op_dtype}):")
        opcalls = time_opcalls(op_cases, op_impls, op_dtype, repeats, 0.005 if quick else 0.05,
                               log=log)
        inference = run_inference(ds, dtypes, seed, repeats, block_seconds, torch_mod, quick, log)
        fulltrain = full_training(ds, seed, log=log) if full else None
        machine["loadavg_at_end"] = loadavg()

        res = {
            "title": "fastbn benchmark: one training step of the makemore BN-MLP",
            "created": time.strftime("%Y-%m-%d %H:%M:%S %z"),
            "machine": machine,
            "model": {"vocab": ds.vocab.size, **MODEL, "activation": "tanh",
                      "parameters": make_model(ds.vocab, np.float32, 0).num_parameters(),
                      "shapes": _shapes(ds.vocab.size)},
            "data": {"path": str(ds.path), "train_examples": int(X.shape[0])},
            "settings": {"batch_sizes": batch_sizes, "dtypes": dtypes, "repeats": repeats,
                         "block_seconds": block_seconds, "lr": LR, "seed": seed,
                         "verify_steps": VERIFY_STEPS, "loss_tol": LOSS_TOL, "state_tol": STATE_TOL,
                         "quick": bool(quick), "statistic": "median over repeats of wall/steps",
                         "speedup": "peer us/step / fused us/step"},
            "implementations": {k: IMPLS[k] for k in names},
            "notes": notes,
            "flops": {"formula": "6 * B * H * (T*D + V): the six GEMMs, 2*M*N*K each; elementwise "
                                 "work excluded",
                      "fused_table_formula": "6 * T * V * D * H + 6 * B * H * V: the fused step "
                                             "with the table E_t = C @ W1[t] (large B)",
                      "per_step_b32": step_flops(32)},
            "gemm_peak": peaks,
            "results": rows,
            "opcalls": opcalls,
            "full_training": fulltrain,
            "inference": inference,
        }
        res["targets"] = judge(res, targets)
        res["targets_title"] = targets and targets["title"]
        write(res, Path(out), stdout)
        return res
    finally:
        compiled.close_servers()
        compiled.restore_environment(env_before)


def _shapes(V, T=3, D=10, H=200):
    return {"X": ["B", T], "Y": ["B"], "C": [V, D], "x0": ["B", T * D], "W1": [T * D, H],
            "gamma, beta, running_mean, running_var": [H], "hpre, h": ["B", H], "W2": [H, V],
            "b2": [V], "logits": ["B", V]}


def _row(dt, B, timing, ver, peak, table):
    """One (dtype, B) cell of results.json: FLOPs, the fused loop's GFLOP/s and floors, each
    peer's timing and speedup (peer µs / fused µs), and the verification."""
    fused = timing["fused"]["us_per_step"]
    flops, done = step_flops(B), fused_flops(B, table)
    gflops = done / fused / 1e3
    row = {"dtype": dt, "batch_size": B, "flops": flops, "fused_flops": done,
           "fused_table": table, "fused_gflops": gflops,
           "fused_gflops_effective": flops / fused / 1e3,
           "fraction_of_peak": gflops / peak["gflops"],
           "floor_us": done / peak["gflops"] / 1e3,
           "floor_6gemm_us": flops / peak["gflops"] / 1e3, "impls": {}}
    for name, t in timing.items():
        row["impls"][name] = {**t, "speedup": t["us_per_step"] / fused}
    row["verification"] = ver
    return row
