#!/usr/bin/env python
"""The per-op table before and after a change, side by side in one process.

Loads a second fastbn, built in place in another checkout (``--before``), as ``fastbn_before``
(``bench/ab.py``), next to the fastbn of this checkout. For every row of the benchmark's per-op
table (``fastbn.bench.opcalls``: the ops' entries' shapes and options) at each batch size, the
same arrays go to ``ops.<op>_forward`` / ``_backward`` of both builds; the outputs and gradients
are checked to be the same bits, then both are timed as the table times its implementations
(``time_case``: blocks of calls taking turns, the median of ``--repeats``, a preempted block
timed again), on one thread. Prints µs per call and after / before.

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python bench/opcalls_ab.py --before DIR
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

import fastbn  # noqa: E402,F401  (after choosing which fastbn to import)
from fastbn.bench import opcalls  # noqa: E402
from fastbn.bench.runner import one_thread  # noqa: E402


def _bits(value):
    items = value if isinstance(value, tuple) else (value,)
    return [np.asarray(v).tobytes() for v in items if v is not None and not hasattr(v, "op")]


def ab_case(op, row, B, dt, builds):
    """An ``opcalls.Case`` whose implementations are the builds ({name: ops module})."""
    arrays = {k: v for k, v in op.arrays(dt, 0, B=B, **row.dims).items() if k not in row.drop}
    args = [*arrays.values(), *row.options.values()]
    case = opcalls.Case(row.key, row.label, B)
    case.calls = {"forward": {}, "backward": {}}
    results = {}
    for name, ops in builds.items():
        fwd, bwd = getattr(ops, op.name + "_forward"), getattr(ops, op.name + "_backward")
        out, cache = fwd(*args)
        d = 1.0 if np.ndim(out) == 0 else \
            np.random.default_rng(1).standard_normal(np.shape(out)).astype(dt)
        results[name] = (_bits(out), _bits(bwd(d, cache)))
        case.calls["forward"][name] = lambda fwd=fwd: fwd(*args)
        case.calls["backward"][name] = lambda bwd=bwd, d=d, cache=cache: bwd(d, cache)
    first, *others = results.values()
    if any(r != first for r in others):
        raise SystemExit(f"{row.key} at B={B}: the builds disagree")
    return case


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--before", required=True, help="a checkout with fastbn built in place")
    p.add_argument("--dtype", default="float32")
    p.add_argument("--batch-sizes", default="32,1024")
    p.add_argument("--repeats", type=int, default=15)
    p.add_argument("--block-seconds", type=float, default=0.05)
    a = p.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        before = load_before(a.before, tmp)
        builds = {"before": before.ops, "after": fastbn.ops}
        dt = np.dtype(a.dtype)
        print(f"per-op table, {dt.name}, one thread, median of {a.repeats} blocks of "
              f"~{a.block_seconds:g} s; µs per call")
        print(f"{'op':<16}{'B':>6} {'pass':<9}{'before':>9}{'after':>9}{'after/before':>14}")
        with one_thread():
            for B in (int(b) for b in a.batch_sizes.split(",")):
                for op, row in opcalls._rows():
                    case = ab_case(op, row, B, dt, builds)
                    for ps in opcalls.PASSES:
                        t = opcalls.time_case(case, ps, list(builds), a.repeats,
                                              a.block_seconds)
                        b, af = t["before"]["us"], t["after"]["us"]
                        print(f"{row.key:<16}{B:>6} {ps:<9}{b:>9.3f}{af:>9.3f}{af / b:>14.3f}",
                              flush=True)


if __name__ == "__main__":
    main()
