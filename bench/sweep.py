#!/usr/bin/env python
"""The sweep benchmark: one 8-trial sweep (default model, 50,000 steps each) on a Dask
LocalCluster of 1 worker and of 2, against the same trials one after another in this process.

Measured, each ``--repeats`` times (median reported), in this order:

- **plain**: the trial's work with ``fastbn.train`` in this process, BLAS on one thread: build
  the model, train, evaluate the three splits (``fastbn.sweep.trial.run_trial`` without the
  sweep's wrapper); one trial at a time, all 8 (the sweep's ideal on one core);
- **1 worker**, **2 workers**: ``fastbn.sweep.sweep`` on a LocalCluster started and warmed up
  first (its start and the workers' first import of fastbn are timed apart): the time from the
  sweep's start (shipping the data) to its last result, results.csv written as it runs.

From those: the speed-up of 2 workers over 1 (of the medians, and of the fastest runs, the
least disturbed on a shared machine); Dask's overhead per trial: on each worker, the gap from
the end of one trial to the start of the next (the trials stamp their start and end; the client
only collects the results meanwhile), and the sweep's time past its last trial's end; the cost
of a trial inside a worker against the plain call; and how long a worker idled at the end while
the other finished (the sweep's time minus the worker's busy time: load imbalance, not Dask).

    python bench/sweep.py                      # writes bench/results/sweep.md
    python bench/sweep.py --steps 2000 --repeats 1 --out /tmp/sweep.md     # a smoke run

Unset OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE in the command that runs it (this workplace sets
them, which makes OpenBLAS skip its small-matrix kernels).
"""
import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if any((ROOT / "fastbn").glob("_kernels*.so")):
    sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
from threadpoolctl import threadpool_limits  # noqa: E402

import fastbn  # noqa: E402
from fastbn._fileio import atomic_write_text  # noqa: E402
from fastbn.bench.machine import _cpu, loadavg  # noqa: E402
from fastbn.sweep import Space, sweep  # noqa: E402
from fastbn.sweep.runner import check_workers, cluster  # noqa: E402
from fastbn.sweep.trial import run_trial  # noqa: E402


def _load():
    la = loadavg()
    return "n/a" if la is None else " / ".join(f"{x:.2f}" for x in la)


def plain(ds, trials):
    """Seconds of each trial run directly (BLAS on one thread) and the sum of their losses."""
    times = []
    with threadpool_limits(1, user_api="blas"):
        for t in trials:
            t0 = time.perf_counter()
            run_trial(ds, t)
            times.append(time.perf_counter() - t0)
    return times


def stamped_trial(data, trial):
    """``run_trial`` with the wall-clock time of its start and end (``extra``)."""
    t0 = time.time()
    out = run_trial(data, trial)
    out["extra"] = {"start": t0, "end": time.time()}
    return out


def gaps(res, t_end):
    """(mean gap between consecutive trials on a worker, s; end-of-sweep idle per worker, s;
    time from the last trial's end to the sweep's end, s), from the trials' stamps and the
    wall-clock time ``t_end`` at which ``sweep`` returned."""
    by_worker = {}
    for tid, row in res.rows.items():
        by_worker.setdefault(row["worker"], []).append(res.extras[tid])
    between, idle = [], []
    for stamps in by_worker.values():
        stamps.sort(key=lambda e: e["start"])
        between += [b["start"] - a["end"] for a, b in zip(stamps, stamps[1:])]
        idle.append(t_end - stamps[-1]["end"])
    last = max(e["end"] for e in res.extras.values())
    return statistics.mean(between), statistics.mean(idle), t_end - last


def on_cluster(ds, space, workers, folder):
    """(cluster start s, worker warm-up s, sweep s, [trial times in the workers], rows, gaps)."""
    t0 = time.perf_counter()
    with cluster(workers=workers) as (client, _):
        client.wait_for_workers(workers, timeout=120)
        t1 = time.perf_counter()
        check_workers(client)                   # each worker imports fastbn once
        t2 = time.perf_counter()
        res = sweep(space, ds, folder, client=client, quiet=True, report=False,
                    fn=stamped_trial)
        t_end = time.time()
    assert res.counts() == {"ok": len(space.trials())}, res.counts()
    return (t1 - t0, t2 - t1, res.wall_time, [r["trial_time"] for r in res.rows.values()],
            res.rows, gaps(res, t_end))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0], allow_abbrev=False)
    ap.add_argument("--steps", type=int, default=50_000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--data", default=None, help="names file (default: $FASTBN_DATA, ...)")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "sweep.md"))
    args = ap.parse_args(argv)
    ds = fastbn.data.load_dataset(args.data)
    space = Space({"lr": [0.05, 0.1], "steps": args.steps}, seeds=4)
    trials = space.trials()
    n = len(trials)
    log = [f"load average (1/5/15 min) at the start: {_load()}"]
    print(log[-1], flush=True)
    runs = {"plain": [], 1: [], 2: []}
    detail = {1: [], 2: []}
    ref = None
    for rep in range(args.repeats):
        t = plain(ds, trials)
        runs["plain"].append(t)
        log.append(f"repeat {rep + 1}: plain, one after another: {sum(t):.2f} s "
                   f"(load {_load()})")
        print(log[-1], flush=True)
        for w in (1, 2):
            with tempfile.TemporaryDirectory() as tmp:
                start, warm, wall, tt, rows, gp = on_cluster(ds, space, w, Path(tmp) / "s")
            losses = {k: (r["train_loss"], r["val_loss"]) for k, r in rows.items()}
            if ref is None:
                ref = losses
            assert losses == ref, "a sweep's losses differ from the first run's"
            runs[w].append(wall)
            detail[w].append((start, warm, tt, gp))
            log.append(f"repeat {rep + 1}: {w} worker{'s' if w > 1 else ''}: cluster start "
                       f"{start:.2f} s, warm-up {warm:.2f} s, sweep {wall:.2f} s, trials in "
                       f"the workers {sum(tt):.2f} s, gap between trials {1e3 * gp[0]:.1f} ms, "
                       f"idle at the end {gp[1]:.2f} s per worker (load {_load()})")
            print(log[-1], flush=True)
    med = statistics.median
    t_plain = med([sum(t) for t in runs["plain"]])
    per_plain = med([x for t in runs["plain"] for x in t])
    w1, w2 = med(runs[1]), med(runs[2])
    in_worker = {w: med([x for _, _, tt, _ in detail[w] for x in tt]) for w in (1, 2)}
    gap = {w: med([g[0] for *_, g in detail[w]]) for w in (1, 2)}
    idle = {w: med([g[1] for *_, g in detail[w]]) for w in (1, 2)}
    tail = {w: med([g[2] for *_, g in detail[w]]) for w in (1, 2)}
    start = {w: med([d[0] for d in detail[w]]) for w in (1, 2)}
    warm = {w: med([d[1] for d in detail[w]]) for w in (1, 2)}
    best1, best2 = min(runs[1]), min(runs[2])
    cpu = _cpu()
    env = {k: os.environ.get(k) for k in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")}
    lines = [
        "# Sweep benchmark: one sweep on 1 and on 2 Dask workers",
        "",
        f"`python bench/sweep.py --steps {args.steps} --repeats {args.repeats}`: {n} trials "
        f"(default model, lr 0.05 and 0.1 x 4 seeds, {args.steps:,} steps of batch 32 each, "
        "fused path), medians of the repeats. Sweep time: from the sweep's start (shipping the "
        "data) to its last result, on a LocalCluster started and warmed up before (its start "
        "is timed apart). Every run's losses are checked equal to the first run's.",
        "",
        "| | seconds | speed-up |",
        "|---|---:|---:|",
        f"| the {n} trials one after another in this process (`fastbn.train`) | {t_plain:.2f} | "
        "1.00 |",
        f"| sweep, 1 worker | {w1:.2f} | {t_plain / w1:.2f} |",
        f"| sweep, 2 workers | {w2:.2f} | {t_plain / w2:.2f} |",
        "",
        f"**2 workers vs 1: {w1 / w2:.2f}x** (medians; the fastest runs: {best1:.2f} s and "
        f"{best2:.2f} s, {best1 / best2:.2f}x).",
        "",
        "| per trial | 1 worker | 2 workers |",
        "|---|---:|---:|",
        f"| a plain trial in this process (build, train, evaluate) | {per_plain:.3f} s | "
        f"{per_plain:.3f} s |",
        f"| the same trial inside a worker (`trial_time`) | {in_worker[1]:.3f} s | "
        f"{in_worker[2]:.3f} s |",
        f"| overhead: gap between two trials on a worker (Dask, the trial's wrapper) | "
        f"{1e3 * gap[1]:.1f} ms | "
        f"{1e3 * gap[2]:.1f} ms |",
        f"| the sweep past its last trial's end (results in, file written) | "
        f"{1e3 * tail[1]:.0f} ms | {1e3 * tail[2]:.0f} ms |",
        f"| a worker idle at the end while the other finished (imbalance) | {idle[1]:.2f} s | "
        f"{idle[2]:.2f} s |",
        f"| LocalCluster start (not in the sweep time) | {start[1]:.2f} s | {start[2]:.2f} s |",
        f"| workers' first import of fastbn (not in the sweep time) | {warm[1]:.2f} s | "
        f"{warm[2]:.2f} s |",
        "",
        f"Machine: {cpu['model']} ({', '.join(cpu['flags'])}), {cpu.get('usable_cpus')} usable "
        "cores (shared with other "
        f"users' work: see the load averages below); Python {platform.python_version()}, numpy "
        f"{np.__version__}, dask {_dask_version()}, fastbn {fastbn.__version__}; "
        f"OPENBLAS_CORETYPE={env['OPENBLAS_CORETYPE']}, "
        f"OPENBLAS_L2_SIZE={env['OPENBLAS_L2_SIZE']}.",
        "",
        "Runs, in order:",
        "",
        *[f"- {x}" for x in log],
        f"- load average at the end: {_load()}",
        "",
    ]
    atomic_write_text(args.out, "\n".join(lines))
    print("\n".join(lines[:20]))
    print(f"wrote {args.out}")
    return 0


def _dask_version():
    import dask
    return dask.__version__


if __name__ == "__main__":
    sys.exit(main())
