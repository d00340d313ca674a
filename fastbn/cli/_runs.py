"""``fastbn train``, ``fastbn eval`` and ``fastbn sample``: a run, its checkpoint, its resume."""
import contextlib
import signal
import sys
import warnings
from pathlib import Path

from .._argtypes import momentum as _momentum
from .._argtypes import nonnegative as _nonnegative
from .._argtypes import positive as _positive
from .._argtypes import schedule as _schedule
from ._common import SCHEDULE_HELP, Fail, check_trainable, check_writable, load_data

__all__ = ["DEFAULT_CHECKPOINT", "RUN_FILES", "add_run_parsers", "out_dir", "run_defaults"]


def _load_checkpoint(path):
    from .. import checkpoint
    try:
        return checkpoint.load(path)
    except (OSError, ValueError) as e:
        raise Fail(str(e)) from e


def _print_losses(losses, label):
    print(f"{label}: " + "  ".join(f"{k} {v:.4f}" for k, v in losses.items()))


# The flags that define a run. A new run takes them (or these defaults); `--resume` takes them
# from the checkpoint and refuses them on the command line. Their argparse defaults are None, so
# that `_validate` can see which were given; `--help` shows these.
def run_defaults():
    from ..training import DEFAULT_SEED
    # lr_schedule None: the lecture's scaled to --steps (training.default_lr_schedule)
    return {"steps": 200_000, "batch_size": 32, "n_hidden": 200, "n_embd": 10, "block_size": 3,
            "n_layers": 1, "no_batchnorm": False, "bn_momentum": 0.001, "bn_variance": "biased",
            "calibrate": False,
            "dtype": "float32", "seed": DEFAULT_SEED,
            "lr_schedule": None}


# The files `fastbn train` writes into its folder: a folder holding one holds a run.
RUN_FILES = ("model.npz", "loss.png")
DEFAULT_CHECKPOINT = "fastbn-run/model.npz"     # fastbn train's default folder


def out_dir(args):
    """Where `fastbn train` writes: --out, else the folder of --resume, else fastbn-run."""
    if args.out is not None:
        return Path(args.out).expanduser()
    return Path(args.resume).parent if args.resume else Path("fastbn-run")


def _check_run(run, model, state, path):
    """The run settings a checkpoint stores in meta["run"], checked (the file may be edited)."""
    from ..training import format_lr_schedule, parse_lr_schedule

    def bad(why):
        return Fail(f"cannot resume {path}: {why}")
    for key in ("steps", "batch_size", "seed"):
        v = run.get(key)
        if isinstance(v, bool) or not isinstance(v, int) or v < (key != "seed"):
            kind = "non-negative" if key == "seed" else "positive"
            raise bad(f"its run's {key} must be a {kind} integer, got {v!r}")
    try:
        schedule = format_lr_schedule(parse_lr_schedule(str(run.get("lr_schedule"))))
    except ValueError as e:
        raise bad(f"its run's lr_schedule: {e}") from None
    if not isinstance(run.get("calibrate"), bool):
        raise bad(f"its run's calibrate must be true or false, got {run.get('calibrate')!r}")
    for key in ("data", "data_sha256"):
        if not isinstance(run.get(key), (str, type(None))):
            raise bad(f"its run's {key} must be a string, got {run.get(key)!r}")
    if run["batch_size"] < 2 and model.batchnorms():
        raise bad("its run's batch size 1 cannot train with batch normalization")
    if state.step > run["steps"]:
        raise bad(f"its state is at step {state.step:,}, past the run's {run['steps']:,} steps")
    return {**run, "lr_schedule": schedule}


def _sha256(path):
    from ..data import sha256_file
    try:
        return sha256_file(path)
    except OSError as e:
        raise Fail(f"cannot read {path}: {e}") from e


def _resume_data(args, run, block_size):
    """The dataset of the run being resumed: --data or the stored path, the same file by its
    SHA-256 (a copy elsewhere is fine). Records where it is now in ``run``."""
    try:
        ds = load_data(args.data or run.get("data"), block_size)
    except Fail as e:
        if args.data is None and run.get("data"):
            raise Fail(f"{e} (the run's data; if it moved, pass --data PATH)") from e
        raise
    digest = _sha256(ds.path)
    if run.get("data_sha256") is None:
        print(f"fastbn train: warning: {args.resume} stores no hash of its data (an older "
              "fastbn wrote it); only the vocabulary can be compared", file=sys.stderr)
    elif digest != run["data_sha256"]:
        same = run.get("data") == str(ds.path.resolve())
        what = "has changed since this run trained on it" if same else \
            f"is not the data this run trained on ({run.get('data')})"
        raise Fail(f"{ds.path} {what}: its SHA-256 is {digest}, the checkpoint's "
                    f"{run['data_sha256']}; resuming on other data would not continue the run")
    run.update(data=str(ds.path.resolve()), data_sha256=digest)
    return ds


def _cmd_train(args):
    import numpy as np

    from .. import checkpoint
    from ..model import CharMLP
    from ..training import (
        TrainingInterrupted,
        default_lr_schedule,
        format_lr_schedule,
        plot_history,
        seed_streams,
        train,
    )

    if args.resume:
        # the run's settings come from the checkpoint; the flags only choose output and noise
        model = _load_checkpoint(args.resume)
        if model.folded:
            raise Fail(f"{args.resume} holds a folded model (fastbn.fold_batchnorm), for "
                        "inference only: it cannot be trained. Resume from the unfolded "
                        "checkpoint")
        run, state = model.meta.get("run"), model.train_state
        if not isinstance(run, dict) or state is None:
            raise Fail(f"{args.resume} holds no training state to resume (it was not written "
                        "by a 'fastbn train' that stopped early)")
        run = _check_run(run, model, state, args.resume)
        if state.step == run["steps"]:      # nothing left: a "resume" would only overwrite it
            raise Fail(f"{args.resume} holds a complete run ({run['steps']:,} steps): nothing "
                        f"to resume (its losses: fastbn eval {args.resume}; to train longer, "
                        "start a new run with more --steps)")
        ds = _resume_data(args, run, model.block_size)
        if ds.vocab != model.vocab:
            raise Fail(f"the data's vocabulary {ds.vocab.chars!r} is not the checkpoint's")
        _, batch_ss = seed_streams(run["seed"])
    else:
        state = None
        ds = check_trainable(load_data(args.data, args.block_size))
        schedule = default_lr_schedule(args.steps) if args.lr_schedule is None \
            else args.lr_schedule
        run = {"steps": args.steps, "batch_size": args.batch_size,
               "lr_schedule": format_lr_schedule(schedule), "seed": args.seed,
               "calibrate": args.calibrate, "data": str(ds.path.resolve()),
               "data_sha256": _sha256(ds.path)}
        # one --seed, two independent streams: parameters and minibatch indices
        init_ss, batch_ss = seed_streams(args.seed)
        model = CharMLP(ds.vocab, block_size=args.block_size, n_embd=args.n_embd,
                        n_hidden=args.n_hidden, n_layers=args.n_layers,
                        batchnorm=not args.no_batchnorm, bn_momentum=args.bn_momentum,
                        bn_unbiased=args.bn_variance == "unbiased",
                        dtype=args.dtype, seed=np.random.default_rng(init_ss))
    out = out_dir(args)
    ckpt, png = out / "model.npz", out / "loss.png"
    check_writable(out)    # before any training: an unwritable folder would lose the whole run
    if not args.quiet:
        print(f"data {ds.path}: {len(ds.Xtr):,} / {len(ds.Xdev):,} / {len(ds.Xte):,} examples, "
              f"vocabulary {ds.vocab.size}")
        unbiased = model.config["bn_unbiased"] and model.batchnorms()
        print(f"model: {model.num_parameters():,} parameters, {model.dtype.name}"
              f"{', BN with the unbiased variance' if unbiased else ''}; "
              f"{run['steps']:,} steps of batch {run['batch_size']}, lr {run['lr_schedule']}, "
              f"seed {run['seed']}" + (f"; resuming at step {state.step:,}" if state else ""))

    saved = []                           # the steps this run checkpointed

    def save(st, **extra):
        try:
            checkpoint.save(model, ckpt, meta={"run": run, **extra}, state=st)
        except OSError as e:
            raise Fail(f"cannot save the checkpoint {ckpt} at step {st.step:,}: {e}") from e
        saved.append(st.step)

    try:
        with warnings.catch_warnings():      # an interrupt is reported below, as a line
            warnings.simplefilter("ignore", TrainingInterrupted)
            res = train(model, ds, steps=run["steps"], batch_size=run["batch_size"],
                        lr_schedule=run["lr_schedule"], seed=batch_ss, quiet=args.quiet,
                        calibrate=run["calibrate"], resume=state, checkpoint=save,
                        checkpoint_every=args.checkpoint_every)
    except FloatingPointError as e:    # diverged: no checkpoint since, the last one stays
        kept = (f"the last good checkpoint is {ckpt} (step {saved[-1]})" if saved
                else f"{ckpt} is left as it was" if ckpt.exists()
                else "no checkpoint was written")
        raise Fail(f"{e}; {kept} (try a smaller --lr-schedule)") from e
    if res.interrupted:
        _print_losses(res.losses, f"loss after step {res.state.step:,}")
        signum = res.interrupt_signal or signal.SIGINT
        by = "" if signum == signal.SIGINT else f" by {signal.Signals(signum).name}"
        print(f"\ninterrupted{by} after step {res.state.step:,} of {run['steps']:,}; checkpoint "
              f"{ckpt}\ncontinue with: fastbn train --resume {ckpt}", file=sys.stderr)
        return 128 + signum         # the shell's status of a process ended by that signal
    save(res.state, complete=True, calibrated=res.calibrated, losses=res.losses,
         losses_running=res.losses_running, wall_time=res.wall_time)
    if res.losses_running is not None:
        _print_losses(res.losses_running, "loss (running BN statistics)")
        _print_losses(res.losses, "loss (calibrated BN statistics)")
    else:
        _print_losses(res.losses, "loss")
    print(f"wall time {res.wall_time:.1f} s ({res.us_per_step:.0f} us/step, {res.path} path)")
    print(f"checkpoint {ckpt}")
    if not args.no_plot:     # after the checkpoint: a failed plot loses nothing
        try:
            plot_history(res.history, png, schedule=res.lr_schedule)
        except OSError as e:
            raise Fail(f"cannot write the loss plot {png}: {e} (the checkpoint is saved)") from e
        print(f"loss plot {png}")
    else:       # a loss plot left by the run this one replaced (--force) is not this run's
        with contextlib.suppress(FileNotFoundError):
            png.unlink()
    return 0


def _folded(model):
    """The model ``fastbn eval`` and ``fastbn sample`` run: ``model`` with its batch norm folded
    into its Linears, and its embedding and first Linear into a table (``fastbn.fold_batchnorm``;
    a folded checkpoint as it is). Its losses and names are the unfolded model's, up to
    rounding: float64 losses agree to ~1e-15, float32 to ~1e-7, below the 4 decimals printed
    unless a loss lies that close to a rounding boundary of its last digit; a sampled character
    differs only when its uniform draw lands within that rounding of a boundary of the
    cumulative distribution (none in 20,000 names of the lecture's model in either dtype; the
    docs' user guide, "Batch norm: conventions and the folded model")."""
    from ..folding import fold_batchnorm
    if model.folded:
        return model
    try:
        return fold_batchnorm(model)
    except ValueError as e:   # its batch norm overflows the dtype when folded, or holds NaN
        raise Fail(f"cannot run the model of this checkpoint: {e}") from e


def _trained_on(model):
    """The names file the checkpoint's run trained on, when it is still there and unchanged (its
    SHA-256 is the one the run stored), else None."""
    run = model.meta.get("run") if isinstance(model.meta, dict) else None
    path, digest = (run.get("data"), run.get("data_sha256")) if isinstance(run, dict) else (None,
                                                                                            None)
    if not (isinstance(path, str) and isinstance(digest, str) and Path(path).is_file()):
        return None
    from ..data import sha256_file
    try:
        return path if sha256_file(path) == digest else None
    except OSError:
        return None


def _cmd_eval(args):
    model = _load_checkpoint(args.checkpoint)
    ds = load_data(args.data or _trained_on(model), model.block_size)
    if ds.vocab != model.vocab:
        raise Fail(f"the data's vocabulary {ds.vocab.chars!r} is not the checkpoint's "
                    f"{model.vocab.chars!r}")
    if args.calibrate and model.folded:
        raise Fail(f"{args.checkpoint} holds a folded model (fastbn.fold_batchnorm): its batch "
                    "norm statistics are part of its Linears and cannot be calibrated; use the "
                    "unfolded checkpoint with --calibrate")
    splits = {n: ds.split(n) for n in ("train", "val", "test")}
    folded = _folded(model)
    losses = {n: folded.evaluate(X, Y) for n, (X, Y) in splits.items() if len(X)}
    if args.calibrate and model.batchnorms():
        _print_losses(losses, "loss (running BN statistics)")
        model.calibrate_batchnorm(ds.Xtr)
        folded = _folded(model)
        losses = {n: folded.evaluate(X, Y) for n, (X, Y) in splits.items() if len(X)}
        _print_losses(losses, "loss (calibrated BN statistics)")
    else:
        _print_losses(losses, "loss")
    return 0


def _cmd_sample(args):
    model = _folded(_load_checkpoint(args.checkpoint))
    try:
        names = model.sample(args.n, seed=args.seed, max_len=args.max_len)
    except ValueError as e:      # -n x --max-len past what an array can hold
        raise Fail(f"cannot sample {args.n:,} names of up to {args.max_len:,} characters: "
                    f"{e}") from e
    for name in names:
        print(name)
    return 0


def add_run_parsers(sub):
    """The parsers of ``fastbn train``, ``fastbn eval`` and ``fastbn sample``."""
    data_help = ("names file (default: $FASTBN_DATA, then the user cache, then a verified "
                 "download)")
    t = sub.add_parser("train", help="train the makemore BN-MLP",
                       description="Train the makemore BN-MLP by minibatch SGD; the defaults are "
                                   "the lecture's model and recipe. Writes OUT/model.npz and "
                                   "OUT/loss.png.")
    t.add_argument("--data", metavar="PATH", help=data_help)
    # the run-defining flags: default None (see run_defaults), so --resume can refuse them
    d = run_defaults()
    t.add_argument("--steps", type=_positive(), metavar="N",
                   help=f"SGD steps (default {d['steps']})")
    t.add_argument("--batch-size", type=_positive(), metavar="B",
                   help=f"examples per step (default {d['batch_size']})")
    t.add_argument("--lr-schedule", type=_schedule, metavar="STEP:LR,...",
                   help="piecewise-constant learning rate from each STEP on, or one number "
                        f"(default {SCHEDULE_HELP}; the header prints the schedule used)")
    t.add_argument("--n-hidden", type=_positive(), metavar="H",
                   help=f"hidden width (default {d['n_hidden']})")
    t.add_argument("--n-embd", type=_positive(), metavar="E",
                   help=f"embedding size (default {d['n_embd']})")
    t.add_argument("--block-size", type=_positive(), metavar="K",
                   help=f"characters of context (default {d['block_size']})")
    t.add_argument("--n-layers", type=_positive(), metavar="L",
                   help=f"hidden [Linear, BatchNorm1d, Tanh] blocks (default {d['n_layers']})")
    t.add_argument("--no-batchnorm", action="store_true", default=None,
                   help="no BatchNorm (the hidden Linears get a bias)")
    t.add_argument("--bn-momentum", type=_momentum, metavar="M",
                   help="weight of the new batch in the running statistics (default "
                        f"{d['bn_momentum']})")
    t.add_argument("--bn-variance", choices=["biased", "unbiased"],
                   help="the batch variance BatchNorm normalizes with in training: biased (/ B, "
                        "torch's) or unbiased (/ (B-1), the makemore lecture's); running_var "
                        f"is the unbiased one either way (default {d['bn_variance']})")
    t.add_argument("--calibrate", action="store_true", default=None,
                   help="after training, set the BN statistics from the whole training set "
                        "(the losses with the running statistics are printed too)")
    t.add_argument("--dtype", choices=["float32", "float64"],
                   help=f"(default {d['dtype']})")
    t.add_argument("--seed", type=_nonnegative, metavar="S",
                   help="seeds the parameters and the minibatches, as two independent streams "
                        f"(default {d['seed']})")
    t.add_argument("--out", metavar="DIR", default=None,
                   help="where model.npz and loss.png go (default fastbn-run, or the folder of "
                        "the --resume checkpoint); a folder that holds another run is refused "
                        "unless --force")
    t.add_argument("--force", action="store_true",
                   help="replace the run already in --out")
    t.add_argument("--checkpoint-every", type=_positive(), default=10_000, metavar="N",
                   help="save a resumable OUT/model.npz every N steps (default %(default)s); "
                        "Ctrl-C saves one too")
    t.add_argument("--resume", metavar="PATH",
                   help="continue the run saved in this checkpoint, with its settings (the "
                        "flags above that define a run are refused) and its data (the same "
                        "file, by SHA-256; --data may point at a copy); the result equals that "
                        "of an uninterrupted run")
    t.add_argument("--no-plot", action="store_true", help="do not write the loss plot")
    t.add_argument("--quiet", action="store_true", help="no progress output")
    t.set_defaults(parser=t, run=_cmd_train)

    def checkpoint_arguments(q):
        q.add_argument("checkpoint", nargs="?", metavar="CHECKPOINT",
                       help=f"the checkpoint (default {DEFAULT_CHECKPOINT}, where fastbn train "
                            "saves by default)")
        q.add_argument("--checkpoint", dest="checkpoint_option", metavar="PATH",
                       help="the same, as an option")

    folded = ("The model runs folded (fastbn.fold_batchnorm): its batch norm folded into its "
              "Linears, its embedding and first Linear into one table: the unfolded model's "
              "numbers, to float rounding, faster.")
    e = sub.add_parser("eval", help="train/val/test losses of a checkpoint",
                       description="The train/val/test losses of a checkpoint, in eval mode. "
                                   + folded)
    checkpoint_arguments(e)
    e.add_argument("--data", metavar="PATH",
                   help="names file (default: the file the checkpoint's run trained on, if it "
                        "is still there unchanged; else $FASTBN_DATA, then the user cache, then "
                        "a verified download)")
    e.add_argument("--calibrate", action="store_true",
                   help="also report the losses with BN statistics from the whole training set")
    e.set_defaults(parser=e, run=_cmd_eval)

    s = sub.add_parser("sample", help="generate names from a checkpoint",
                       description="Names generated by a checkpoint, in eval mode. " + folded)
    checkpoint_arguments(s)
    s.add_argument("-n", type=_positive(), default=20, help="how many names")
    s.add_argument("--seed", type=_nonnegative, default=None, help="same seed, same names")
    s.add_argument("--max-len", type=_positive(), default=50, help="longest name, in characters")
    s.set_defaults(parser=s, run=_cmd_sample)
