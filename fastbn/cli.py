"""The ``fastbn`` console command.

    fastbn gradcheck     check every op and the whole BN-MLP stack by finite differences
"""
import argparse
import sys

from .gradcheck import gradcheck, standard_checks


def _cmd_gradcheck(args):
    checks = standard_checks(seed=args.seed)
    header = f"{'op':<18} {'input':<9} {'checked':>9} {'max abs err':>12} {'max rel err':>12}  result"
    print(header)
    print("-" * len(header))
    failed = 0
    for label, fn, inputs in checks:
        report = gradcheck(fn, inputs, eps=args.eps, atol=args.atol, rtol=args.rtol,
                               seed=args.seed, raise_exception=False)
        for row in report.rows:
            failed += not row.passed
            print(f"{label:<18} {row.input:<9} {row.checked:>9} {row.max_abs_err:>12.2e} "
                  f"{row.max_rel_err:>12.2e}  {'pass' if row.passed else 'FAIL'}")
    n = sum(1 for _ in checks)
    print(f"\n{n} ops checked in float64 (eps={args.eps:g}, atol={args.atol:g}, "
          f"rtol={args.rtol:g}): {'all pass' if not failed else f'{failed} input(s) FAILED'}")
    return 1 if failed else 0


def build_parser():
    p = argparse.ArgumentParser(prog="fastbn", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    g = sub.add_parser("gradcheck", help="check every backward against finite differences")
    g.add_argument("--eps", type=float, default=1e-6)
    g.add_argument("--atol", type=float, default=1e-5)
    g.add_argument("--rtol", type=float, default=1e-3)
    g.add_argument("--seed", type=int, default=0)
    g.set_defaults(run=_cmd_gradcheck)
    return p


def main(argv=None):
    args = build_parser().parse_args(argv)
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
