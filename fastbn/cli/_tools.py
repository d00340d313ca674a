"""``fastbn gradcheck``, ``fastbn bench`` and ``fastbn sweep``: the commands that hand over to a
module of their own (gradchecks, bench, sweep)."""
from pathlib import Path

from .. import _bench_options as bench_options
from .._argtypes import nonnegative as _nonnegative
from .._argtypes import positive as _positive
from .._argtypes import tolerance as _tolerance
from ..gradchecks import gradcheck, standard_checks
from ._common import Fail

__all__ = ["BENCH_FILES", "add_bench_parser", "add_gradcheck_parser", "add_sweep_parser"]


def _cmd_gradcheck(args):
    checks = standard_checks(seed=args.seed)
    w = max([18] + [len(label) for label, _, _ in checks])
    header = (f"{'op':<{w}} {'input':<9} {'checked':>9} {'max abs err':>12} "
              f"{'max rel err':>12}  result")
    print(header)
    print("-" * len(header))
    failed = 0
    for label, fn, inputs in checks:
        report = gradcheck(fn, inputs, eps=args.eps, atol=args.atol, rtol=args.rtol,
                               seed=args.seed, raise_exception=False)
        for row in report.rows:
            failed += not row.passed
            print(f"{label:<{w}} {row.input:<9} {row.checked:>9} {row.max_abs_err:>12.2e} "
                  f"{row.max_rel_err:>12.2e}  {'pass' if row.passed else 'FAIL'}")
    n = sum(1 for _ in checks)
    print(f"\n{n} ops checked in float64 (eps={args.eps:g}, atol={args.atol:g}, "
          f"rtol={args.rtol:g}): {'all pass' if not failed else f'{failed} input(s) FAILED'}")
    return 1 if failed else 0


def add_gradcheck_parser(sub):
    """The parser of ``fastbn gradcheck``."""
    g = sub.add_parser("gradcheck", help="check every backward against finite differences")
    g.add_argument("--eps", type=_positive(float), default=1e-6)
    g.add_argument("--atol", type=_tolerance, default=1e-5)
    g.add_argument("--rtol", type=_tolerance, default=1e-3)
    g.add_argument("--seed", type=_nonnegative, default=0)
    g.set_defaults(parser=g, run=_cmd_gradcheck)


def _cmd_bench(args):
    import json

    from .. import bench
    try:
        bench.run_from_args(args, stdout=None)    # the report goes to results.md, not here
    except (OSError, ImportError, ValueError, bench.VerificationError) as e:
        # no names file, no threadpoolctl, a bad --targets file, or a peer that disagrees with
        # the fused step
        raise Fail(str(e)) from e
    out = Path(args.out)
    chart = json.loads((out / "results.json").read_text(encoding="utf-8")).get("chart")
    print(f"results {out / 'results.md'}")
    print(f"results {out / 'results.json'}")
    if chart:
        print(f"figure {out / chart}")
    return 0


def add_bench_parser(sub):
    """The parser of ``fastbn bench``."""
    b = sub.add_parser("bench", help="time a training step: fused loop, per-layer API, NumPy, "
                                     "PyTorch",
                       description=bench_options.DESCRIPTION)
    bench_options.add_arguments(b)
    b.add_argument("--force", action="store_true",
                   help="replace the results already in --out (refused without it)")
    b.set_defaults(parser=b, run=_cmd_bench)


def _cmd_sweep(args):
    from ..sweep.command import SweepError, run_from_args
    try:
        return run_from_args(args)
    except SweepError as e:
        raise Fail(str(e)) from e


def add_sweep_parser(sub):
    from ..sweep.command import DESCRIPTION, add_arguments
    s = sub.add_parser("sweep", help="many training runs over a grid (or random search) of "
                                     "options and seeds, on Dask", description=DESCRIPTION)
    add_arguments(s)
    s.set_defaults(parser=s, run=_cmd_sweep)


# What fastbn bench writes into OUT: a folder holding one holds results.
BENCH_FILES = ("results.json", "results.md")
