#!/usr/bin/env python
"""Inference before and after a change, side by side in one process.

Loads a second fastbn, built in place in another checkout (``--before``; e.g. ``git archive
<commit> | tar -x -C DIR`` and ``python setup.py build_ext --inplace`` there), as the package
``fastbn_before`` (a copy of its ``fastbn/`` in a temporary directory), next to the fastbn of
this checkout. Per dtype, each trains the benchmark's model (``fastbn.bench.inference``: its
``TRAIN_STEPS`` steps of ``fastbn.train``, from the same seed) and the two models are checked to
be the same arrays; then, verified first (the same val loss, float for float, and the same
names), timed on one BLAS thread in blocks of about ``--block-seconds``, before and after taking
turns (the order reversed every repeat), ``--repeats`` blocks each, the median reported:

- ``evaluate`` over the val split of the unfolded model and of ``fold_batchnorm(model)``;
- ``sample(SAMPLE_N, seed)`` of both;
- the two inference kernels on their own, at 1,024 rows (``fastbn.inference.CHUNK``): the
  cross-entropy (logits (1024, V)) with probabilities (before) and loss only (``probs=None``),
  and eval-mode batch norm (1024, n_hidden) with xhat (before) and without (``xhat=None``).

The timing is the benchmark's (``fastbn.bench.inference``): a block in which the process got
less than ``MIN_CPU_SHARE`` of a CPU is timed again. The float32
GEMM speed of the machine (1024³, one thread) is printed before and after the timings.

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python bench/inference_ab.py --before DIR
"""
import argparse
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if any((ROOT / "fastbn").glob("_kernels*.so")):
    sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
from ab import load_before  # noqa: E402  (bench/ab.py)

import fastbn  # noqa: E402  (after choosing which fastbn to import)
from fastbn.bench.inference import SAMPLE_N, TRAIN_STEPS, _time, _trained  # noqa: E402
from fastbn.bench.runner import one_thread  # noqa: E402
from fastbn.bench.timing import gemm_peak  # noqa: E402
from fastbn.data import load_dataset  # noqa: E402
from fastbn.inference import CHUNK  # noqa: E402


def same_model(a, b):
    """Raise unless models a and b (of the two packages) hold the same arrays."""
    for la, lb in zip(a.layers, b.layers, strict=True):
        for k, v in vars(la).items():
            if isinstance(v, np.ndarray) and k in ("weight", "bias", "gamma", "beta",
                                                   "running_mean", "running_var"):
                if not np.array_equal(v, getattr(lb, k)):
                    raise SystemExit(f"the two builds trained different models ({k})")


def kernels(before, after, dt, V, H, rows, seed):
    """{task: (before fn, after fn)} of the two inference kernels, verified equal."""
    g = np.random.default_rng(seed)
    logits = (g.standard_normal((rows, V)) * 3).astype(dt)
    target = g.integers(0, V, rows)
    probs = np.empty((rows, V), dt)
    x = g.standard_normal((rows, H)).astype(dt)
    gamma, beta, mean = (g.standard_normal(H).astype(dt) for _ in range(3))
    invstd = g.uniform(0.2, 2, H).astype(dt)
    out0, xhat, out1 = (np.empty((rows, H), dt) for _ in range(3))
    Kb, Ka = before._kernels, after._kernels

    def ce_before():
        return Kb.cross_entropy_forward(logits, target, probs)

    def ce_after():
        return Ka.cross_entropy_forward(logits, target, None)

    def bn_before():
        Kb.batchnorm_eval_forward(x, gamma, beta, mean, invstd, out0, xhat)

    def bn_after():
        Ka.batchnorm_eval_forward(x, gamma, beta, mean, invstd, out1, None)
    bn_before()
    bn_after()
    if ce_before() != ce_after() or not np.array_equal(out0, out1):
        raise SystemExit(f"{dt}: the kernels' inference paths differ from the full ones")
    return {f"cross_entropy ({rows}, {V})": (ce_before, ce_after),
            f"batchnorm_eval ({rows}, {H})": (bn_before, bn_after)}


def rate(name, seconds, examples):
    """The task's rate (evaluate, sample) or the kernel's µs per call."""
    if name.startswith("evaluate"):
        return f"{examples / seconds:,.0f} examples/s"
    if name.startswith("sample"):
        return f"{SAMPLE_N / seconds:,.0f} names/s"
    return f"{seconds * 1e6:,.1f} µs"


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0], allow_abbrev=False)
    p.add_argument("--before", required=True, help="a checkout with fastbn built in place")
    p.add_argument("--data", default=None, help="names.txt (default: fastbn's lookup)")
    p.add_argument("--dtypes", nargs="+", default=["float32", "float64"])
    p.add_argument("--repeats", type=int, default=15)
    p.add_argument("--block-seconds", type=float, default=0.3)
    p.add_argument("--seed", type=int, default=2147483647)
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp, one_thread():
        before = load_before(args.before, tmp, ("bench.inference", "data"))
        print(f"after:  {Path(fastbn.__file__).parent}\nbefore: {args.before} (as "
              f"{before.__name__})")
        ds = load_dataset(args.data)
        ds_before = before.data.load_dataset(args.data)           # its own Vocab class
        X, Y = ds.split("val")
        print(f"val split: {X.shape[0]:,} rows; one BLAS thread; {args.repeats} blocks of "
              f"~{args.block_seconds} s each, medians")
        gemm = gemm_peak(n=1024)["gflops"]
        print(f"float32 GEMM 1024^3, one thread: {gemm:.1f} GFLOP/s")
        rows = []
        for dt in args.dtypes:
            ma = _trained(ds, dt, args.seed, TRAIN_STEPS)
            mb = before.bench.inference._trained(ds_before, dt, args.seed, TRAIN_STEPS)
            same_model(ma, mb)
            fa, fb = fastbn.fold_batchnorm(ma), before.fold_batchnorm(mb)
            seed = args.seed % 2**32
            pairs = {}
            for name, a, b in (("evaluate, unfolded", ma, mb), ("evaluate, folded", fa, fb)):
                if a.evaluate(X, Y) != b.evaluate(X, Y):
                    raise SystemExit(f"{dt} {name}: the losses differ")
                pairs[name] = ((lambda m=b: m.evaluate(X, Y)), (lambda m=a: m.evaluate(X, Y)))
            for name, a, b in (("sample, unfolded", ma, mb), ("sample, folded", fa, fb)):
                if a.sample(SAMPLE_N, seed=seed) != b.sample(SAMPLE_N, seed=seed):
                    raise SystemExit(f"{dt} {name}: the names differ")
                pairs[name] = ((lambda m=b, s=seed: m.sample(SAMPLE_N, seed=s)),
                               (lambda m=a, s=seed: m.sample(SAMPLE_N, seed=s)))
            H = ma.layers[1].weight.shape[1]
            pairs.update(kernels(before, fastbn, np.dtype(dt), ma.vocab.size, H,
                                 CHUNK, args.seed))
            fns = {}
            for name, (fb_, fa_) in pairs.items():
                fns[(name, "before")], fns[(name, "after")] = fb_, fa_
            t = {k: v["seconds"] for k, v in _time(fns, args.repeats,
                                                   args.block_seconds).items()}
            for name in pairs:
                tb, ta = t[(name, "before")], t[(name, "after")]
                rows.append((dt, name, tb, ta))
                print(f"{dt:<8} {name:<28} before {tb * 1e6:10.1f} us  after {ta * 1e6:10.1f} "
                      f"us  {tb / ta:5.2f}x", flush=True)
        gemm2 = gemm_peak(n=1024)["gflops"]
        print(f"float32 GEMM 1024^3, one thread, after the timings: {gemm2:.1f} GFLOP/s")
        print("\n| dtype | call | before | after | after / before speed |")
        print("|---|---|---:|---:|---:|")
        for dt, name, tb, ta in rows:
            print(f"| {dt} | {name} | {rate(name, tb, X.shape[0])} | "
                  f"{rate(name, ta, X.shape[0])} | {tb / ta:.2f}× |")


if __name__ == "__main__":
    main()
