#!/usr/bin/env python
"""Where the fused step's time goes: the per-phase timing harness.

For each batch size and dtype, trains the benchmark's model (``fastbn.bench.peers.MODEL``, the
lecture's BN-MLP; ``--layers`` for a deeper one) on the names training set with the compiled
loop, on one BLAS thread, in blocks of steps: ``FusedTrainer.time_phases`` (each phase of the
step timed, csrc/fused.h ``FB_PHASES``) and ``FusedTrainer.run`` (nothing timed inside) taking
turns. Prints, per phase, the median over the blocks of its µs per step and its share of the
step; then the sum of the phases, the step timed from outside with the phase clocks on, and
without them (the clocks' cost is the difference of the last two).

It times the fastbn of this checkout when that is built in place
(``python setup.py build_ext --inplace``), else the installed one.

    python bench/phases.py                                     # B = 32 and 1024, float32
    python bench/phases.py --batch-sizes 32 --dtypes float64 --layers 4 --table on
"""
import argparse
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if any((ROOT / "fastbn").glob("_kernels*.so")) or any((ROOT / "fastbn").glob("_kernels*.pyd")):
    sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

import fastbn  # noqa: E402  (after choosing which fastbn to import)
from fastbn.bench.peers import LR, MODEL  # noqa: E402
from fastbn.bench.runner import one_thread  # noqa: E402
from fastbn.data import load_dataset  # noqa: E402
from fastbn.fused import PHASES, BatchSampler, FusedTrainer  # noqa: E402
from fastbn.model import CharMLP  # noqa: E402


def block_steps(trainer, X, Y, seconds):
    """Steps per block so that a block of ``run`` takes about ``seconds`` (and warms up)."""
    n, sampler = 1, BatchSampler(1)
    while True:
        t0 = time.perf_counter()
        trainer.run(X, Y, n, LR, sampler)
        t = time.perf_counter() - t0
        if t >= seconds / 4 or n >= 1 << 20:
            return max(1, round(seconds * n / max(t, 1e-9)))
        n *= 4


def time_cell(dtype, B, args, ds):
    """{"phases": {phase: [µs/step per block]}, "timed": [...], "plain": [...]} for one cell."""
    model = CharMLP(ds.vocab, dtype=dtype, seed=0, **dict(MODEL, n_layers=args.layers))
    table = {"auto": None, "on": True, "off": False}[args.table]
    trainer = FusedTrainer(model, B, table=table)
    X, Y = ds.Xtr, ds.Ytr
    n = block_steps(trainer, X, Y, args.block_seconds)
    sampler = BatchSampler(2)
    trainer.time_phases(X, Y, n, LR, sampler)                      # one untimed block of each
    trainer.run(X, Y, n, LR, sampler)
    out = {"phases": {p: [] for p in PHASES}, "timed": [], "plain": [], "steps": n,
           "table": trainer.uses_table}
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        done, _, seconds = trainer.time_phases(X, Y, n, LR, sampler)
        out["timed"].append((time.perf_counter() - t0) / n * 1e6)
        t0 = time.perf_counter()
        done2, _ = trainer.run(X, Y, n, LR, sampler)
        out["plain"].append((time.perf_counter() - t0) / n * 1e6)
        if (done, done2) != (n, n):
            raise RuntimeError(f"a non-finite loss after {min(done, done2)} of {n} steps")
        for p, s in seconds.items():
            out["phases"][p].append(s / n * 1e6)
    return out


def report(dtype, B, cell):
    med = {p: statistics.median(v) for p, v in cell["phases"].items()}
    total = sum(med.values())
    lines = [f"{np.dtype(dtype).name}, B = {B} ({'table' if cell['table'] else 'direct'} first "
             f"layer; median of {len(cell['timed'])} blocks of {cell['steps']} steps)",
             f"  {'phase':<24}{'µs/step':>10}{'share':>8}"]
    for p in PHASES:
        lines.append(f"  {p:<24}{med[p]:>10.2f}{100 * med[p] / total:>7.1f}%")
    lines += [f"  {'sum of the phases':<24}{total:>10.2f}",
              f"  {'step, phases timed':<24}{statistics.median(cell['timed']):>10.2f}",
              f"  {'step, not timed':<24}{statistics.median(cell['plain']):>10.2f}"]
    return "\n".join(lines)


def main(argv=None):
    ap = argparse.ArgumentParser(prog="bench/phases.py", description=__doc__.split("\n")[0],
                                 allow_abbrev=False)
    ap.add_argument("--batch-sizes", type=int, nargs="+", default=[32, 1024])
    ap.add_argument("--dtypes", nargs="+", default=["float32"], choices=["float32", "float64"])
    ap.add_argument("--layers", type=int, default=MODEL["n_layers"],
                    help="hidden layers (default %(default)s, the benchmark's model)")
    ap.add_argument("--table", choices=["auto", "on", "off"], default="auto",
                    help="the first layer through the table (auto: by batch size)")
    ap.add_argument("--repeats", type=int, default=5, help="timed blocks per cell")
    ap.add_argument("--block-seconds", type=float, default=0.3)
    ap.add_argument("--data", default=None, help="names.txt (default: $FASTBN_DATA, the cache)")
    args = ap.parse_args(argv)
    if args.repeats < 1 or args.block_seconds <= 0 or args.layers < 1:
        ap.error("--repeats and --layers must be >= 1 and --block-seconds > 0")
    ds = load_dataset(args.data, block_size=MODEL["block_size"])
    print(f"fastbn {fastbn.__file__}; one BLAS thread; load average "
          f"{', '.join(f'{x:.2f}' for x in os.getloadavg())}")
    with one_thread():
        for dtype in args.dtypes:
            for B in args.batch_sizes:
                print(report(dtype, B, time_cell(dtype, B, args, ds)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
