"""``fastbn sweep``: the command line of ``fastbn.sweep.sweep``: its options
(``add_arguments``, which ``fastbn.cli`` adds to its ``sweep`` subcommand) and the command
(``run_from_args``). Usage errors exit with status 2 (``parser.error``); a sweep that cannot run
(no Dask, no scheduler at the address, workers without fastbn) raises ``SweepError``, which the
command line prints as an error (status 1). Imports no Dask until a sweep runs."""
import argparse
import sys
import warnings
from pathlib import Path

from .._argtypes import nonnegative, positive
from .space import PARAMS, Space, parse_param

__all__ = ["DESCRIPTION", "SweepError", "add_arguments", "run_from_args"]

DESCRIPTION = (
    "Train one model per trial of a search space, in parallel on Dask: a LocalCluster of "
    "--workers processes on this machine, or the cluster of --scheduler ADDRESS. A trial with "
    "seed S is 'fastbn train --seed S' with its options. Results stream into OUT/results.csv "
    "(one row per trial); at the end OUT/report.md ranks the configurations by val loss (mean "
    "± sd over seeds) with a figure per parameter and heatmaps. Needs Dask: pip install "
    "'fastbn[sweep]'.")


def sweep_param(text):
    """A sweep's ``NAME=V1,V2,...`` or ``NAME=LOW:HIGH[:lin]`` -> (name, values or Range)
    (``fastbn.sweep.space.parse_param``; an argparse ``type=``)."""
    try:
        return parse_param(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def add_arguments(s):
    """The options of ``fastbn sweep`` on the argparse parser ``s``."""
    s.epilog = ("parameters: " + "; ".join(f"{p.name} ({p.help})" for p in PARAMS.values())
                + ". Unset ones keep fastbn train's defaults.")
    s.add_argument("--param", action="append", type=sweep_param, metavar="NAME=V1,V2,...",
                   help="values of one parameter (repeatable; the grid is their product); "
                        "NAME=LOW:HIGH is a log-uniform range (LOW:HIGH:lin uniform) for "
                        "--random; lr_schedule values are separated by ';'")
    s.add_argument("--random", type=positive(), metavar="N",
                   help="N random draws from the lists and ranges instead of the grid")
    s.add_argument("--seeds", type=positive(), metavar="K",
                   help="K runs of every configuration, with the seeds 2147483647 (fastbn "
                        "train's default), 1, ..., K-1 (default 1)")
    s.add_argument("--space-seed", type=nonnegative, metavar="S",
                   help="seed of the random draws (default 0)")
    s.add_argument("--data", metavar="PATH",
                   help="names file, loaded here once and shipped to the workers (default: "
                        "$FASTBN_DATA, then the user cache, then a verified download)")
    s.add_argument("--out", metavar="DIR",
                   help="where sweep.json, results.csv, report.md and the figures go (default "
                        "fastbn-sweep)")
    s.add_argument("--resume", metavar="OUT",
                   help="continue the sweep in OUT (its space and data): the trials in its "
                        "results.csv are not run again")
    s.add_argument("--retry-failed", action="store_true",
                   help="with --resume: run the failed trials again (not the diverged ones)")
    s.add_argument("--scheduler", metavar="ADDRESS",
                   help="run on the Dask cluster of this scheduler (tcp://host:8786) instead of "
                        "a LocalCluster")
    s.add_argument("--workers", type=positive(), metavar="W",
                   help="worker processes of the LocalCluster, one thread each (default: the "
                        "number of cores)")
    s.add_argument("--trial-timeout", type=positive(float), metavar="SECONDS",
                   help="a trial still running after this long is recorded as failed and its "
                        "worker restarted")
    s.add_argument("--format", choices=["png", "svg"], default="png",
                   help="figure format (default %(default)s)")
    s.add_argument("--dry-run", action="store_true",
                   help="list the trials (id and options) and exit")
    s.add_argument("--quiet", action="store_true", help="no progress output")


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
