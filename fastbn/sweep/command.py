"""``fastbn sweep``: the command line of ``fastbn.sweep.sweep`` (its options are in
``fastbn.cli``). Usage errors exit with status 2 (``parser.error``); a sweep that cannot run
(no Dask, no scheduler at the address, workers without fastbn) raises ``SweepError``, which the
command line prints as an error (status 1)."""
import sys
import warnings
from pathlib import Path

from .space import Space

__all__ = ["SweepError", "run_from_args"]


class SweepError(Exception):
    """A sweep that cannot run; the message says why."""


def _space(args):
    """The Space of the command line, or a usage error."""
    params = {}
    for name, values in args.param or []:
        if name in params:
            args.parser.error(f"--param {name} is given twice; list its values once: "
                              f"--param {name}=V1,V2,...")
        params[name] = values
    try:
        return Space(params, random=args.random, seeds=args.seeds or 1,
                     space_seed=args.space_seed or 0)
    except ValueError as e:
        args.parser.error(str(e))


def _check_usage(args):
    parser = args.parser
    if args.resume is not None:
        given = [flag for flag, v in (("--param", args.param), ("--random", args.random),
                                      ("--seeds", args.seeds), ("--space-seed", args.space_seed),
                                      ("--out", args.out)) if v is not None]
        if given:
            parser.error(f"--resume OUT continues the sweep stored in OUT (its space, data and "
                         f"folder); {', '.join(given)} cannot change it")
        if not (Path(args.resume) / "sweep.json").is_file():
            parser.error(f"--resume {args.resume}: no sweep.json there (not a sweep's folder)")
    elif args.retry_failed:
        parser.error("--retry-failed goes with --resume OUT")
    if args.scheduler is not None and args.workers is not None:
        parser.error("--workers sets the size of a LocalCluster; the cluster at --scheduler has "
                     "its own workers")
    if args.data is not None and not Path(args.data).expanduser().is_file():
        parser.error(f"--data {args.data}: no such file")


def _print_summary(res, out):
    points = res.points()
    counts = ", ".join(f"{v} {k}" for k, v in res.counts().items()) or "none"
    print(f"{len(res.rows)} of {len(res.trials)} trials finished ({counts})"
          + (f" in {res.wall_time:.1f} s on {res.cluster}" if res.cluster else ""))
    ranked = [p for p in points if p.val]
    if ranked:
        print("best configurations (val loss, mean ± sd over seeds):")
        for i, p in enumerate(ranked[:5], start=1):
            sd = f" ± {p.val_sd:.4f}" if len(p.val) > 1 else ""
            print(f"  {i}. {p.label()}: val {p.val_mean:.4f}{sd} ({len(p.val)} of "
                  f"{len(p.trials)} seeds)")
    if out is not None:
        for key, path in res.files.items():
            print(f"{'figure' if key not in ('results', 'report') else key} {path}")


def run_from_args(args):
    """Run ``fastbn sweep`` from parsed arguments; returns the exit status."""
    from .run import SweepInterrupted, load_sweep, sweep
    from .runner import require_dask
    _check_usage(args)
    if args.resume is not None:
        out = Path(args.resume)
        try:
            spaces, data_path, _ = load_sweep(out)
        except (OSError, ValueError) as e:
            raise SweepError(str(e)) from e
        data = args.data or data_path
    else:
        spaces, out, data = [_space(args)], Path(args.out or "fastbn-sweep"), args.data
    if args.dry_run:
        trials = [t for s in spaces for t in s.trials()]
        print(" + ".join(s.describe() for s in spaces))
        for t in trials:
            print(f"{t.id}  {t.label()}")
        return 0
    try:
        require_dask()
    except ImportError as e:
        raise SweepError(str(e)) from e
    if not args.quiet:
        print(" + ".join(s.describe() for s in spaces), file=sys.stderr)
    try:
        with warnings.catch_warnings():      # an interrupt is reported below, as a line
            warnings.simplefilter("ignore", SweepInterrupted)
            res = sweep(spaces, data, out, scheduler=args.scheduler, workers=args.workers,
                        trial_timeout=args.trial_timeout, resume=args.resume is not None,
                        retry_failed=args.retry_failed, quiet=args.quiet, fmt=args.format)
    except FileExistsError as e:
        args.parser.error(str(e))
    except (OSError, ValueError, RuntimeError) as e:   # data, scheduler, workers, folder
        raise SweepError(str(e)) from e
    _print_summary(res, out)
    if res.interrupted:
        print(f"\ninterrupted after {len(res.rows)} of {len(res.trials)} trials; continue "
              f"with: fastbn sweep --resume {out}", file=sys.stderr)
        return 130
    return 0
