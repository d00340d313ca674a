#!/usr/bin/env python
"""The cost of the divergence check: training steps before and after it, in one process.

Loads a second fastbn, built in place in another checkout (``--before``: the code before the
check, e.g. ``git archive <commit> | tar -x -C DIR`` and ``python setup.py build_ext --inplace``
there), as the package ``fastbn_before`` (a copy of its ``fastbn/`` in a temporary directory),
next to the fastbn of this checkout. Per dtype and batch size, two paths of a training step of
the benchmark's model (``fastbn.bench.peers.MODEL``):

- **the compiled loop**: ``FusedTrainer.run_loaded`` (``_run`` in a build before it), what
  ``fastbn.train`` calls per chunk: the data copied and checked once, then ``FusedNet.train``,
  every step in C; the check is flags raised in the batch-norm pass, the softmax's max pass,
  the running statistics and the SGD update;
- **the per-layer step**: ``CharMLP.train_step`` on a random minibatch, through the benchmark's
  ``per_layer`` peer (``fastbn.bench.peers``); the check is one ``all_finite`` call and
  ``sgd_update_finite``'s flag. A third row times this checkout's ``train_step`` without the
  hold that keeps one model to one thread (``train_step.__wrapped__``), which came to the step
  between the same two commits but is not part of the check, so that its share can be told
  apart.

Verified first, from the same initial parameters: ``--verify-steps`` steps on both builds, the
losses and every parameter and running statistic afterwards equal bit for bit, and no
divergence reported (the check changes no number). Then timed on one BLAS thread with the
benchmark's harness (``fastbn.bench.inference._time``): steps per call sized by
``fastbn.bench.timing._block_size`` to about ``--block-seconds``, before and after taking turns
(the order reversed every repeat), ``--repeats`` calls each; a call in which the process got
less than ``MIN_CPU_SHARE`` of a CPU is timed again. Reported: the median µs per step of each,
the ratio of the medians and the median of the ratios of the calls timed next to each other,
the smallest CPU share of a kept call, the calls timed again, the load average before and after
and the float32 GEMM speed (1024³, one thread) before and after the timings.

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python bench/divergence_ab.py --before DIR

``--out FILE`` also writes the report as Markdown (``bench/results/divergence_check.md``).
"""
import argparse
import datetime
import functools
import os
import statistics
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if any((ROOT / "fastbn").glob("_kernels*.so")):
    sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
from ab import load_before  # noqa: E402  (bench/ab.py)

import fastbn  # noqa: E402  (after choosing which fastbn to import)
from fastbn.bench.inference import _time  # noqa: E402
from fastbn.bench.machine import loadavg, machine_info  # noqa: E402
from fastbn.bench.peers import LR, PEERS, make_model, model_state  # noqa: E402
from fastbn.bench.runner import one_thread  # noqa: E402
from fastbn.bench.timing import MIN_CPU_SHARE, _block_size, gemm_peak  # noqa: E402
from fastbn.data import load_dataset  # noqa: E402

PATHS = {"fused": "compiled loop (`FusedTrainer._run`)",
         "per_layer": "per-layer (`CharMLP.train_step`)",
         "per_layer_unheld": "per-layer, after without the one-thread hold"}


class _Loop:
    """The compiled loop as ``fastbn.train`` runs it: data checked once, ``run_loaded`` per
    call (``_run`` in a build from before it)."""

    def __init__(self, pkg, model, B, X, Y, seed):
        self.trainer = pkg.fused.FusedTrainer(model, B)
        self.sampler = pkg.fused.BatchSampler(seed)
        if hasattr(self.trainer, "load_data"):
            self.trainer.load_data(X, Y)
            self.steps = lambda n, lr, losses: self.trainer.run_loaded(n, lr, self.sampler, losses)
        else:
            X, Y = self.trainer._data(X, Y)
            self.steps = lambda n, lr, losses: self.trainer._run(X, Y, n, lr, self.sampler, losses)
        self.model, self.losses = model, None

    def run(self, n, lr):
        if self.losses is None or self.losses.shape != (n,):
            self.losses = np.empty(n, np.float64)
        done, _ = self.steps(n, lr, self.losses)
        if done != n:
            raise SystemExit(f"the compiled loop diverged at step {done} of a timed call")
        return self.losses


def _same(a, b, what):
    sa, sb = model_state(a), model_state(b)
    if list(sa) != list(sb):
        raise SystemExit(f"{what}: the two builds name the arrays differently")
    for k in sa:
        if not np.array_equal(sa[k], sb[k]):
            raise SystemExit(f"{what}: the two builds give different {k}")


def verify(before, ds, ds_b, dt, B, seed, steps):
    """Both paths, ``steps`` steps on both builds: the same losses and arrays, bit for bit."""
    ma = make_model(ds.vocab, dt, np.random.default_rng(seed))
    mb = before.bench.peers.make_model(ds_b.vocab, dt, np.random.default_rng(seed))
    _same(ma, mb, f"{dt}: the initial models")
    la = _Loop(fastbn, ma, B, ds.Xtr, ds.Ytr, seed).run(steps, LR).copy()
    lb = _Loop(before, mb, B, ds_b.Xtr, ds_b.Ytr, seed).run(steps, LR).copy()
    if not np.array_equal(la, lb):
        i = int(np.flatnonzero(la != lb)[0])
        raise SystemExit(f"{dt} B={B} compiled loop: the losses differ from step {i} "
                         f"({la[i]!r} after, {lb[i]!r} before)")
    _same(ma, mb, f"{dt} B={B} compiled loop, after {steps} steps")
    pa = PEERS["per_layer"](ma, B, ds.Xtr, ds.Ytr, {"numpy": seed})
    pb = before.bench.peers.PEERS["per_layer"](mb, B, ds_b.Xtr, ds_b.Ytr, {"numpy": seed})
    rng = np.random.default_rng(seed)
    for i in range(steps):
        rows = rng.integers(0, ds.Xtr.shape[0], B)
        a, b = pa.step(rows, LR), pb.step(rows, LR)
        if a != b or not np.isfinite(a) or pa.model.divergence is not None:
            raise SystemExit(f"{dt} B={B} per-layer step {i}: loss {a!r} after, {b!r} before "
                             f"(divergence {pa.model.divergence})")
    _same(pa.model, pb.model, f"{dt} B={B} per-layer, after {steps} steps")
    return float(la[-1])


def peers(before, ds, ds_b, dt, B, seed):
    """{(path, "before" | "after"): peer with run(n, lr)} on fresh models from one seed."""
    ma = make_model(ds.vocab, dt, np.random.default_rng(seed))
    mb = before.bench.peers.make_model(ds_b.vocab, dt, np.random.default_rng(seed))
    out = {("fused", "before"): _Loop(before, mb, B, ds_b.Xtr, ds_b.Ytr, seed),
           ("fused", "after"): _Loop(fastbn, ma, B, ds.Xtr, ds.Ytr, seed)}
    mb2 = before.bench.peers.clone(mb)
    out[("per_layer", "before")] = before.bench.peers.PEERS["per_layer"](
        mb2, B, ds_b.Xtr, ds_b.Ytr, {"numpy": seed})
    out[("per_layer", "after")] = PEERS["per_layer"](ma, B, ds.Xtr, ds.Ytr, {"numpy": seed})
    unwrapped = getattr(type(ma).train_step, "__wrapped__", None)
    if unwrapped is not None:
        p = PEERS["per_layer"](ma, B, ds.Xtr, ds.Ytr, {"numpy": seed})
        p.train_step = functools.partial(unwrapped, p.model)
        out[("per_layer", "unheld")] = p
    return out


def time_pair(cell, repeats, block_seconds):
    """_time of the peers of one path; steps per call sized on the before peer, the same for
    all. Returns ({side: µs/step stats}, steps per call)."""
    n = _block_size(cell["before"], LR, block_seconds)
    fns = {side: functools.partial(p.run, n, LR) for side, p in cell.items()}
    t = _time(fns, repeats, block_seconds)
    out = {}
    for side, r in t.items():
        us = [1e6 * s / n for s in r["seconds_all"]]
        out[side] = {"us": statistics.median(us), "us_all": us,
                     "cpu_share": min(r["cpu_share"]), "discarded": r["discarded"],
                     "calls": r["calls_per_block"]}
    return out, n


def _shown_path(path):
    """``path`` relative to the checkout when it is inside it, else FILE (no machine paths)."""
    try:
        return Path(path).resolve().relative_to(ROOT).as_posix()
    except ValueError:
        return "FILE"


def _arch(m):
    return ", ".join(sorted({a for a in m["blas_architecture"].values() if a})) or "unknown"


def report(rows, m, settings, gemm, load, verified):
    """The Markdown report (a results file of bench/results/)."""
    cpu = m["cpu"]
    avx512 = "with AVX-512" if "avx512f" in cpu["flags"] else "without AVX-512"
    env = m["env"]
    env_s = ", ".join(f"{k} {'unset' if env[k] is None else 'set to ' + env[k]}"
                      for k in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE"))
    out = ["# The cost of the divergence check", "",
           f"Measured {settings['date']} on a {cpu['logical_cpus']}-core {cpu['model']} "
           f"{avx512} (OpenBLAS {_arch(m)} kernels, per threadpoolctl; {env_s}), shared with "
           f"other work: load average {load[0]} before the timings and {load[1]} after. "
           f"float32 GEMM 1024³ on one thread: {gemm[0]:.1f} GFLOP/s before the timings, "
           f"{gemm[1]:.1f} after. fastbn {m['fastbn']}, NumPy {m['numpy']}, Python "
           f"{m['python']}.", "",
           "The command (`DIR`: a checkout of the commit before the check, built in place):", "",
           "```", settings["command"], "```", "",
           f"One BLAS thread. Verified first, for each of {verified}: {settings['verify_steps']} "
           f"steps of each path on both builds from the same initial parameters gave the same "
           f"losses and the same parameters and running statistics, bit for bit, with no "
           f"divergence (the check changes no number). Timed: before and after "
           f"taking turns, the order reversed every repeat, {settings['repeats']} calls of "
           f"about {settings['block_seconds']} s each; a call in which the process got less "
           f"than {MIN_CPU_SHARE:.0%} of a CPU was timed again. µs per step, medians; "
           "*paired* is the median over the repeats of after / before within a repeat (calls timed "
           "one after the other).", "",
           "| dtype | path | B | before µs/step | after µs/step | after / before | paired | "
           "min CPU share | timed again |",
           "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        out.append(f"| {r['dtype']} | {PATHS[r['path']]} | {r['B']} | {r['before']:,.1f} | "
                   f"{r['after']:,.1f} | {r['ratio']:.3f} | {r['paired']:.3f} | "
                   f"{r['cpu_share']:.2f} | {r['discarded']} |")
    out += ["", "Between the two commits the compiled loop's C code changed for the check alone "
            "(the Python around it gained, once per call, the hold that keeps a model to one "
            "thread). The per-layer step gained that hold (`fastbn/_busy.py`) on every step as "
            "well as the check: the row *after without the one-thread hold* times this "
            "checkout's `train_step` without the hold, against the same before, to tell the "
            "two apart.", ""]
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0], allow_abbrev=False)
    p.add_argument("--before", required=True, help="a checkout with fastbn built in place")
    p.add_argument("--data", default=None, help="names.txt (default: fastbn's lookup)")
    p.add_argument("--dtypes", nargs="+", default=["float32", "float64"])
    p.add_argument("--batch-sizes", nargs="+", type=int, default=[32, 1024])
    p.add_argument("--repeats", type=int, default=21)
    p.add_argument("--block-seconds", type=float, default=0.3)
    p.add_argument("--verify-steps", type=int, default=200)
    p.add_argument("--seed", type=int, default=2147483647)
    p.add_argument("--out", default=None, help="also write the report (Markdown) here")
    args = p.parse_args(argv)
    shown = ["python", "bench/divergence_ab.py"]
    it = iter(argv if argv is not None else sys.argv[1:])
    for a in it:
        if a == "--before":
            shown += [a, "DIR"]
            next(it, None)
        elif a.startswith("--before="):
            shown.append("--before=DIR")
        elif a == "--out":
            shown += [a, _shown_path(next(it, ""))]
        elif a.startswith("--out="):
            shown.append(f"--out={_shown_path(a.split('=', 1)[1])}")
        else:
            shown.append(a)
    unset = [k for k in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE") if os.environ.get(k) is None]
    command = " ".join((["env"] + [f"-u {k}" for k in unset] if unset else []) + shown)
    with tempfile.TemporaryDirectory() as tmp, one_thread():
        before = load_before(args.before, tmp, ("bench.peers", "data", "fused"))
        print(f"after:  {Path(fastbn.__file__).parent}\nbefore: {args.before} (as "
              f"{before.__name__})", flush=True)
        ds = load_dataset(args.data)
        ds_b = before.data.load_dataset(args.data)                # its own Vocab class
        verified = []
        for dt in args.dtypes:
            for B in args.batch_sizes:
                last = verify(before, ds, ds_b, dt, B, args.seed, args.verify_steps)
                verified.append(f"{dt} B={B}")
                print(f"verified {dt} B={B}: {args.verify_steps} steps of both paths equal, "
                      f"bit for bit (last loss {last:.6f})", flush=True)
        load0 = loadavg()
        gemm0 = gemm_peak(n=1024)["gflops"]
        print(f"float32 GEMM 1024^3, one thread: {gemm0:.1f} GFLOP/s; load average {load0}",
              flush=True)
        rows = []
        for dt in args.dtypes:
            for B in args.batch_sizes:
                ps = peers(before, ds, ds_b, dt, B, args.seed)
                for path in ("fused", "per_layer"):
                    cell = {side: peer for (pt, side), peer in ps.items() if pt == path}
                    t, n = time_pair(cell, args.repeats, args.block_seconds)
                    for side in [s for s in t if s != "before"]:
                        a, b = t[side], t["before"]
                        row = {"dtype": dt, "B": B,
                               "path": path if side == "after" else "per_layer_unheld",
                               "before": b["us"], "after": a["us"], "ratio": a["us"] / b["us"],
                               "paired": statistics.median(
                                   x / y for x, y in zip(a["us_all"], b["us_all"])),
                               "cpu_share": min(a["cpu_share"], b["cpu_share"]),
                               "discarded": a["discarded"] + b["discarded"]}
                        rows.append(row)
                        print(f"{dt:<8} B={B:<5} {row['path']:<17} before {b['us']:9.2f}  "
                              f"after {a['us']:9.2f} us/step  {row['ratio']:.3f} (paired "
                              f"{row['paired']:.3f}; {n} steps a call, CPU share >= "
                              f"{row['cpu_share']:.2f}, {row['discarded']} timed again)",
                              flush=True)
        gemm1 = gemm_peak(n=1024)["gflops"]
        load1 = loadavg()
        print(f"float32 GEMM 1024^3, one thread, after the timings: {gemm1:.1f} GFLOP/s; "
              f"load average {load1}")

    def fmt(v):
        return "unknown" if v is None else f"{v[0]:.2f}"
    settings = {"date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d"),
                "command": command, "repeats": args.repeats,
                "block_seconds": args.block_seconds, "verify_steps": args.verify_steps}
    text = "\n".join(report(rows, machine_info(), settings, (gemm0, gemm1),
                            (fmt(load0), fmt(load1)), ", ".join(verified)))
    print("\n" + text)
    if args.out:
        Path(args.out).write_text(text + "\n", encoding="utf-8")
        print(f"results {args.out}")


if __name__ == "__main__":
    main()
