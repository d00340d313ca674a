"""``fastbn lab``, ``fastbn lab ladder`` and ``fastbn lab robustness``: the laboratory's
commands."""
import argparse
import sys
from pathlib import Path

from .._argtypes import momentum as _momentum
from .._argtypes import nonnegative as _nonnegative
from .._argtypes import positive as _positive
from .._argtypes import positive_floats as _positive_floats
from .._argtypes import schedule as _schedule
from ._common import SCHEDULE_HELP, Fail, check_trainable, check_writable, load_data

__all__ = ["LAB_FILES", "add_lab_parser"]


def _lab_data(args):
    """The names file of a lab command (checked in _validate), with a training split."""
    return check_trainable(load_data(args.data, getattr(args, "block_size", 3)))


def _written(e):
    """An OSError of writing a report's files, in words, with what was written before it."""
    done = [Path(p).name for p in getattr(e, "written", [])]
    return (f"cannot write {e.filename or 'the output'}: {e.strerror or e}; "
            + (f"written before it: {', '.join(done)}" if done else "nothing was written"))


def _cmd_lab(args):
    from .. import lab
    if args.gain is not None and args.init != "kaiming":
        args.parser.error(f"--gain applies to --init kaiming only, not {args.init}")
    if args.batch_size < 2 and not args.no_batchnorm:
        args.parser.error("--batch-size 1 cannot train with batch normalization; use "
                          "--batch-size >= 2 or --no-batchnorm")
    ds = _lab_data(args)
    out = Path(args.out).expanduser()
    check_writable(out)
    try:
        res = lab.run_lab(ds, None, steps=args.steps, every=args.every,
                          batch_size=args.batch_size, lr_schedule=args.lr_schedule,
                          seed=args.seed, fmt=args.format, quiet=args.quiet,
                          block_size=args.block_size, n_embd=args.n_embd,
                          n_hidden=args.n_hidden, n_layers=args.n_layers,
                          batchnorm=not args.no_batchnorm, final_bn=args.final_bn,
                          bn_momentum=args.bn_momentum,
                          bn_unbiased=args.bn_variance == "unbiased",
                          activation=args.activation, init=args.init, gain=args.gain,
                          dtype=args.dtype)
    except FloatingPointError as e:
        raise Fail(f"{e} (try a smaller --lr-schedule)") from e
    from ..lab.report import tables_text
    print(res.loss_check.explain())
    print()
    print(tables_text(res.tables), end="")     # printed first: a failed write loses nothing
    if args.steps:
        print(f"probe: {len(res.probe.snapshots)} snapshots, {res.probe.seconds:.2f} s of "
              f"{res.wall_time:.2f} s of training ({100 * res.overhead:.1f} % overhead)")
    try:
        lab.write_lab(res, out, args.format)
    except OSError as e:
        raise Fail(_written(e)) from e
    print(f"tables {out / 'stats.txt'}")
    print(f"report {res.report}")
    for path in res.files.values():
        print(f"figure {path}")
    return 0


def _cmd_lab_ladder(args):
    from .. import lab
    from ..lab.trials import lab_cluster
    from ..model import LADDER
    ds = _lab_data(args)
    out = Path(args.out).expanduser()
    check_writable(out)

    def say(msg):
        print(msg, file=sys.stderr, flush=True)
    progress = None if args.quiet else say     # None: the runs' own progress is off too

    n = (len(LADDER) if args.steps else 0) + \
        (0 if args.no_deep or not args.deep_steps else 2 * len(lab.DEEP_GAINS))
    try:
        with lab_cluster(args.scheduler, args.workers, n, progress) as where:
            rows = lab.run_ladder(ds, steps=args.steps, seed=args.seed, progress=progress,
                                  **where)
            deep = [] if args.no_deep else lab.run_deep(ds, steps=args.deep_steps,
                                                        seed=args.seed, progress=progress,
                                                        **where)
    except (ImportError, OSError, RuntimeError) as e:   # no Dask, no scheduler, workers
        raise Fail(str(e)) from e
    print(f"The init ladder, {args.steps:,} steps each (lecture: 200,000)")
    print(lab.ladder_table(rows))
    if deep:
        print(f"The deep net, {args.deep_steps:,} steps each")
        print(lab.deep_table(deep, steps=args.deep_steps))
    try:        # after the tables are printed: a failed write loses nothing
        files = lab.write_ladder(rows, deep, out, ext=args.format, steps=args.steps,
                                 deep_steps=args.deep_steps)
    except OSError as e:
        raise Fail(_written(e)) from e
    for key, path in files.items():
        print(f"{'report' if key == 'report' else 'figure'} {path}")
    return 0


def _cmd_lab_robustness(args):
    from ..lab import WriteError, robustness
    if args.steps < 1:
        args.parser.error("--steps must be >= 1 (every cell is a training run)")
    ds = _lab_data(args)
    check_writable(Path(args.out))
    try:
        m = robustness.run_robustness(
            ds, args.out, gains=args.gains, lrs=args.lrs, steps=args.steps, seeds=args.seeds,
            scheduler=args.scheduler, workers=args.workers, trial_timeout=args.trial_timeout,
            resume=args.resume, quiet=args.quiet, fmt=args.format)
    except FileExistsError as e:
        args.parser.error(f"{e} (here: --resume)")
    except KeyboardInterrupt:
        print(f"interrupted; what finished is in {Path(args.out) / 'robustness'}; continue with "
              "the same command and --resume", file=sys.stderr)
        return 130
    except WriteError as e:     # after the runs: their results are in OUT/robustness
        raise Fail(f"{_written(e)} (the runs' results are in "
                    f"{Path(args.out) / 'robustness' / 'results.csv'})") from e
    except (ImportError, OSError, ValueError, RuntimeError) as e:
        raise Fail(str(e)) from e
    print(m.markdown())
    for key, path in m.files.items():
        print(f"{key} {path}")
    return 0


def _given(cls):
    """An argparse action class that also records its option in ``namespace.lab_options``: the
    options of 'fastbn lab' given before the word 'ladder' or 'robustness', which _validate
    refuses (argparse would let the subcommand's defaults replace them silently)."""
    class Given(cls):
        def __call__(self, parser, namespace, values, option_string=None):
            namespace.lab_options = [*getattr(namespace, "lab_options", []), option_string]
            super().__call__(parser, namespace, values, option_string)
    return Given


# What each lab command writes into OUT: a folder holding one holds results.
LAB_FILES = {"lab": ("report.md", "stats.txt", "stats.md"), "ladder": ("ladder.md", "ladder.txt")}


def add_lab_parser(sub):
    from ..model import ACTIVATIONS, INIT_SCHEMES
    from ..training import DEFAULT_SEED

    def common(q, out, steps, steps_help, seed=True, force=True):
        q.add_argument("--data", metavar="PATH",
                       help="names file (default: $FASTBN_DATA, then the user cache, then a "
                            "verified download)")
        q.add_argument("--out", metavar="DIR", default=out,
                       help="where the figures, tables and report go (default %(default)s)")
        q.add_argument("--steps", type=_nonnegative, default=steps, metavar="N",
                       help=f"{steps_help} (default %(default)s)")
        if seed:
            q.add_argument("--seed", type=_nonnegative, default=DEFAULT_SEED, metavar="S",
                           help="seeds the parameters and the minibatches (default "
                                "%(default)s)")
        q.add_argument("--format", choices=["png", "svg"], default="png",
                       help="figure format (default %(default)s)")
        q.add_argument("--quiet", action="store_true", help="no progress output")
        if force:
            q.add_argument("--force", action="store_true",
                           help="replace the report already in OUT (refused without it)")

    lab = sub.add_parser(
        "lab", help="diagnostics: activations, gradients, update:data, dead units, initial loss",
        description="Train a model on the per-layer path (or only initialize it, --steps 0) "
                    "with a probe recording every --every steps; write figures, stats.txt, "
                    "stats.md and report.md into OUT. 'fastbn lab ladder' runs the lecture's "
                    "init ladder instead and 'fastbn lab robustness' the robustness map: their "
                    "options go after the word 'ladder' or 'robustness' (options before it are "
                    "refused).")
    for kind, cls in (("store", argparse._StoreAction),
                      ("store_true", argparse._StoreTrueAction)):
        lab.register("action", kind, _given(cls))
    lab.register("action", None, _given(argparse._StoreAction))
    common(lab, "fastbn-lab", 1000, "training steps; 0 only initializes")
    lab.add_argument("--every", type=_positive(), default=100, metavar="K",
                     help="record every K steps (default %(default)s)")
    lab.add_argument("--init", choices=INIT_SCHEMES, default="kaiming",
                     help="initialization scheme (default %(default)s)")
    lab.add_argument("--gain", type=_positive(float), default=None,
                     help="Kaiming gain of the hidden layers (default: 5/3 for tanh, sqrt(2) "
                          "for relu)")
    lab.add_argument("--activation", choices=ACTIVATIONS, default="tanh")
    lab.add_argument("--n-layers", type=_positive(), default=1, metavar="L")
    lab.add_argument("--n-hidden", type=_positive(), default=200, metavar="H")
    lab.add_argument("--n-embd", type=_positive(), default=10, metavar="D")
    lab.add_argument("--block-size", type=_positive(), default=3, metavar="T")
    lab.add_argument("--no-batchnorm", action="store_true",
                     help="hidden Linears with a bias, no BatchNorm")
    lab.add_argument("--final-bn", action="store_true",
                     help="a BatchNorm on the logits (the lecture's deep net)")
    lab.add_argument("--bn-momentum", type=_momentum, default=0.001,
                     help="(default %(default)s; the deep net of the lecture uses 0.1)")
    lab.add_argument("--bn-variance", choices=["biased", "unbiased"], default="biased",
                     help="the batch variance BatchNorm normalizes with in training: biased (/ B, "
                          "torch's) or unbiased (/ (B-1), the makemore lecture's) (default "
                          "%(default)s)")
    lab.add_argument("--batch-size", type=_positive(), default=32, metavar="B")
    lab.add_argument("--lr-schedule", type=_schedule, default=None, metavar="STEP:LR,...",
                     help=f"(default {SCHEDULE_HELP})")
    lab.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    lab.set_defaults(parser=lab, run=_cmd_lab)

    def cluster_options(q):
        q.add_argument("--workers", type=_positive(), metavar="W",
                       help="worker processes of the Dask LocalCluster the runs go to (default: "
                            "one per core; without Dask installed, one after another here)")
        q.add_argument("--scheduler", metavar="ADDRESS",
                       help="run on the Dask cluster of this scheduler instead")

    robustness_defaults = ("0.2,0.5,1,5/3,3,5", "0.01,0.03,0.1,0.3,1")
    lsub = lab.add_subparsers(dest="lab_command", metavar="{ladder,robustness}")
    ladder = lsub.add_parser(
        "ladder", help="the init ladder and the deep net",
        description="Train the lecture's five configurations of the BN-MLP (original init, fix "
                    "softmax, fix tanh, Kaiming, + BatchNorm) and print initial loss, tanh "
                    "saturation and std at init, final train and val loss; then the 5-layer "
                    "net with and without BatchNorm at gains 1, 5/3, 3. Writes ladder.md, "
                    "ladder.txt and figures into OUT.")
    common(ladder, "fastbn-ladder", 200_000, "training steps per configuration (the "
           "schedule: 0.1, then 0.01 from half the steps on, the lecture's for 200,000)")
    ladder.add_argument("--deep-steps", type=_nonnegative, default=1000, metavar="N",
                        help="training steps of each deep net (default %(default)s)")
    ladder.add_argument("--no-deep", action="store_true", help="skip the deep net")
    cluster_options(ladder)
    ladder.set_defaults(parser=ladder, run=_cmd_lab_ladder)

    rob = lsub.add_parser(
        "robustness", help="batch norm's robustness map: val loss over init gain x lr",
        description="Train the lecture's 5-layer tanh net, with and without BatchNorm, at every "
                    "init gain x learning rate of a grid (a sweep on Dask, see fastbn sweep), "
                    "and draw the val losses as two heatmaps side by side. Writes "
                    "robustness.png and robustness.md into OUT, the sweep's results into "
                    "OUT/robustness/.")
    common(rob, "fastbn-robustness", 10_000, "training steps per run", seed=False,
           force=False)
    rob.add_argument("--gains", type=_positive_floats, default=robustness_defaults[0],
                     metavar="G1,G2,...",
                     help="Kaiming gains (fractions allowed: 5/3; default %(default)s)")
    rob.add_argument("--lrs", type=_positive_floats, default=robustness_defaults[1],
                     metavar="LR1,LR2,...", help="constant learning rates (default %(default)s)")
    rob.add_argument("--seeds", type=_positive(), default=1, metavar="K",
                     help="runs of every cell, with the seeds 2147483647 (fastbn train's "
                          "default), 1, ..., K-1 (default 1)")
    rob.add_argument("--resume", action="store_true",
                     help="continue the sweep in OUT/robustness (its finished runs are kept)")
    rob.add_argument("--trial-timeout", type=_positive(float), metavar="SECONDS",
                     help="a run still going after this long is recorded as failed")
    cluster_options(rob)
    rob.set_defaults(parser=rob, run=_cmd_lab_robustness)
