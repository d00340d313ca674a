"""Training a ``CharMLP``: minibatch SGD with a step learning-rate schedule, as in the lecture::

    sampler = BatchSampler(seed)                          # PCG32, in compiled code
    for step in range(steps):
        ix = sampler.draw(Ntr, batch_size)
        loss = model.train_step(Xtr[ix], Ytr[ix], lr_at(schedule, step))

That is the per-layer path (the teaching path: one ``model.train_step`` per step). For the models
it supports (batch norm + tanh, the default), ``train`` runs the compiled loop of
``fastbn.fused`` instead: the same steps on the same minibatches, many at a time without returning
to Python, coming back every ``every`` steps (at most ``CHUNK``) for progress and the callback.
Both paths draw the minibatches from the same seeded generator, so a run is bit-for-bit
reproducible for the same seed, dtype, path and machine.

Divergence, one definition for both paths (``train`` raises ``TrainingDiverged``, a
``FloatingPointError``): a run diverges at step s when step s's loss (in the model's dtype), or an
intermediate that feeds it, is not finite: a hidden layer's pre-activation (the input of its
nonlinearity: the batch-norm output with batch norm, the Linear's output without) or the logits;
or when, after step s's update, a parameter or a running statistic is not finite. The compiled
step raises flags in the passes that compute those values, ``CharMLP.train_step`` checks them in
compiled calls: the same step is found on both paths, on every CPU, whatever an overflow does
downstream (an infinite pre-activation through tanh is a finite +-1 and a zero gradient, and the
loss stays finite).

After the loop: optionally the lecture's BatchNorm calibration over the whole training set, then
the loss of each split in eval mode.
"""
from __future__ import annotations

import os
import signal
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TextIO

import numpy as np
from numpy.typing import ArrayLike, NDArray

from ._busy import holds_model
from ._figures import plot_history
from ._interrupt import CatchInterrupt
from ._progress import Progress, progress_mode
from ._schedule import (
    DEFAULT_LR_SCHEDULE,
    Schedule,
    ScheduleLike,
    check_schedule,
    default_lr_schedule,
    format_lr_schedule,
    lr_at,
    parse_lr_schedule,
)
from .fused import BatchSampler, FusedTrainer, supports

if TYPE_CHECKING:

    from ._divergence import Divergence
    from .data import Dataset
    from .model import CharMLP

__all__ = [
    "DEFAULT_LR_SCHEDULE",
    "DEFAULT_SEED",
    "TrainResult",
    "TrainState",
    "TrainingDiverged",
    "TrainingInterrupted",
    "default_lr_schedule",
    "format_lr_schedule",
    "lr_at",
    "parse_lr_schedule",
    "plot_history",
    "seed_streams",
    "train",
]

DEFAULT_SEED = 2147483647   # the lecture's torch.Generator seed (our generators draw differently)
CHUNK = 1000                # the compiled loop returns to Python at least every CHUNK steps


# ----------------------------------------------------------------------------------------------
# the loop

@dataclass
class TrainState:
    """Where a run stands: steps done, the minibatch generator's state, the losses so far.

    Enough, with the model's parameters and running statistics, to continue the run exactly as
    if it had not stopped (``train(..., resume=state)``).

    Parameters
    ----------
    step : int
        The steps done.
    sampler_state : numpy.ndarray of uint64, shape (2,)
        The minibatch generator's state (``fastbn.fused.BatchSampler.state``).
    history : numpy.ndarray of float64, shape (step,)
        Every step's loss so far.
    """

    step: int
    sampler_state: NDArray[np.uint64]        # (2,) uint64, fastbn.fused.BatchSampler.state
    history: NDArray[np.float64]        # (step,) float64


@dataclass(repr=False)
class TrainResult:
    """What ``train`` returns.

    Parameters
    ----------
    history : ndarray of float64, shape (steps,)
        The minibatch loss of every step (training mode, batch statistics), raw.
    losses : dict
        Split name -> mean loss in eval mode of the final model (after calibration if it ran).
    losses_running : dict or None
        When calibration ran: the same losses before it, i.e. with the running statistics.
    wall_time : float
        Seconds spent in the training loop (evaluation excluded).
    steps, batch_size, seed, lr_schedule, calibrated, plot_path : as run
    path : str
        "fused" (the compiled loop) or "per-layer" (``model.train_step``).
    interrupted : bool
        Ctrl-C or SIGTERM stopped the run after a complete step (``state.step < steps``).
    interrupt_signal : int or None
        The signal that stopped it (``signal.SIGINT`` or ``signal.SIGTERM``), else None.
    state : TrainState
        Where the run stopped, to resume from.
    steps_run : int
        The steps this call ran (fewer than ``steps`` for a resumed or interrupted run).
    """

    history: NDArray[np.float64]
    losses: dict[str, float] = field(default_factory=dict)
    losses_running: dict[str, float] | None = None
    wall_time: float = 0.0
    steps: int = 0
    batch_size: int = 0
    seed: object = None
    lr_schedule: Schedule = DEFAULT_LR_SCHEDULE
    calibrated: bool = False
    plot_path: Path | None = None
    path: str = "per-layer"
    interrupted: bool = False
    state: TrainState | None = None
    interrupt_signal: int | None = None

    @property
    def log10_history(self) -> NDArray[np.float64]:
        """``log10`` of the per-step losses, as the lecture plots them."""
        return np.log10(self.history)

    @property
    def us_per_step(self) -> float:
        """Wall time per step run in this call (a resumed run counts only its own steps)."""
        return 1e6 * self.wall_time / self.steps_run if self.steps_run else float("nan")

    steps_run: int = 0

    def __repr__(self) -> str:
        # an interrupted result always has its state (train sets both)
        done = (f"{self.state.step:,} of {self.steps:,} steps (interrupted)"  # type: ignore[union-attr]
                if self.interrupted
                else f"{self.steps:,} steps")
        losses = ", ".join(f"{k} {v:.4f}" for k, v in self.losses.items()) or "not evaluated"
        plot = f", plot={str(self.plot_path)!r}" if self.plot_path else ""
        return (f"TrainResult({done} of batch {self.batch_size}, {self.path} path, "
                f"{self.wall_time:.2f} s ({self.us_per_step:.1f} us/step); loss {losses}{plot})")


def _splits(data):
    """(X, Y) of the training split and a {name: (X, Y)} of the splits to evaluate."""
    if isinstance(data, (tuple, list)) and len(data) == 2:
        return (np.asarray(data[0]), np.asarray(data[1])), {"train": tuple(data)}
    if hasattr(data, "split"):
        names = ("train", "val", "test")
        return data.split("train"), {n: data.split(n) for n in names}
    raise TypeError("data must be a fastbn.data.Dataset or an (X, Y) pair of training arrays")


@holds_model("fastbn.train")
def train(model: CharMLP, data: Dataset | tuple[ArrayLike, ArrayLike], steps: int = 200_000,
          batch_size: int = 32, lr_schedule: ScheduleLike | None = None,
          seed: int | np.random.SeedSequence | np.random.Generator | None = DEFAULT_SEED, *,
          quiet: bool = False, calibrate: bool = False, evaluate: bool = True,
          callback: Callable[[int, float, float], object] | None = None, every: int = 1000,
          log_every: int = 10_000, plot: str | os.PathLike[str] | None = None,
          stream: TextIO | None = None, fused: bool | Literal["auto"] = "auto",
          threads: None = None, resume: TrainState | None = None,
          checkpoint: Callable[[TrainState], object] | None = None,
          checkpoint_every: int | None = None) -> TrainResult:
    """Train ``model`` by minibatch SGD and evaluate it.

    Parameters
    ----------
    model : CharMLP
        Trained in place, and left in the mode it was in (training mode unless you put it in eval
        mode). Its layers' ``.out`` and ``.dout`` are those of the last minibatch (on the compiled
        path, recomputed once at the end through the final parameters), never of the evaluation.
    data : fastbn.data.Dataset, or (Xtr, Ytr)
        Minibatches come from the training split; a Dataset's train/val/test splits are evaluated.
    steps, batch_size : int
        The lecture's 200,000 and 32. With batch normalization, batch_size must be >= 2.
    lr_schedule : number, sequence of (step, lr), str, or None
        Piecewise constant; the lecture's is ((0, 0.1), (100000, 0.01)), as a string
        "0:0.1,100000:0.01" (see ``parse_lr_schedule``). None (the default) is the lecture's
        scaled to ``steps``, ``default_lr_schedule(steps)``: 0.1, then 0.01 from step
        ``steps // 2``, which for the lecture's 200,000 steps is exactly its schedule (a shorter
        run decays too, instead of never reaching step 100,000).
    seed : int, numpy.random.SeedSequence, numpy.random.Generator or None
        Of the minibatch indices: seeds the ``fastbn.fused.BatchSampler`` both paths draw from
        (a Generator or SeedSequence gives it a 64-bit seed; None, fresh entropy).
    quiet : bool
        No progress output. Otherwise a progress bar (tqdm) with the running loss, rate and ETA:
        a widget in a Jupyter notebook (text there without ipywidgets), one updating line on a
        terminal; when ``stream`` (default sys.stderr) is neither, a log line every
        ``log_every`` steps.
    calibrate : bool
        After training, set the BatchNorm running statistics from the whole training split
        (``CharMLP.calibrate_batchnorm``); the losses before it are kept in ``losses_running``.
    evaluate : bool
        Compute the eval-mode losses of the splits at the end.
    callback : callable, optional
        ``callback(step, loss, lr)`` after every ``every``-th step (and the last), once the update
        is applied; ``model.grads()`` still hold that step's gradients (for diagnostics). The
        compiled loop does not run the layers, so their ``.out`` and ``.dout`` are only current
        on the per-layer path: a callback with ``reads_layers = True`` (a ``fastbn.lab.Probe``)
        makes ``fused="auto"`` take the per-layer path, and ``fused=True`` refuse it.
    plot : str or Path, optional
        Write the loss curve there (see ``plot_history``).
    fused : "auto", True or False
        Run the compiled loop ("auto": when ``fastbn.fused.supports(model)``; True: required,
        ValueError otherwise) or the per-layer path (False).
    threads : None
        Must be None (BLAS is left as it is). The number of BLAS threads is a setting of the
        whole process, so a library call does not change it (it would change the speed of every
        other thread, and two overlapping runs would leave it changed). To pin it, as
        ``fastbn train`` does (one thread: this model's GEMMs are small and lose more to
        threading than they gain), wrap your call::

            from threadpoolctl import threadpool_limits
            with threadpool_limits(1, user_api="blas"):
                train(model, data)
    resume : TrainState, optional
        Continue a run from this state (the model must hold that run's parameters and buffers,
        e.g. from its checkpoint); the result is that of the uninterrupted run.
    checkpoint : callable, optional
        ``checkpoint(state)`` with a :class:`TrainState`, after every ``checkpoint_every``-th step
        and when Ctrl-C stops the run; never once the run has diverged, so the last file it
        wrote stays the last good state.

    every : int, default 1000
        How often ``callback`` is called (in steps).
    log_every : int, default 10000
        How often a log line is written when the progress is not a bar.
    stream : file, optional
        Where the progress goes (default sys.stderr).
    checkpoint_every : int, optional
        How often ``checkpoint`` is called (in steps); None: only when the run is stopped.

    Returns
    -------
    TrainResult
        The losses, the history, the path taken and the state to resume from.

    Raises
    ------
    TrainingDiverged (a FloatingPointError)
        The run diverged; the message names the step, the learning rate and what was not
        finite ("training diverged at step 1234 (lr 1e+06): running_var of layer 2 is not
        finite; ..."), and the exception has them as ``step``, ``lr`` and ``divergence``.

    Notes
    -----
    Ctrl-C does not abort mid-step: the run stops after the step (or compiled chunk) under way,
    warns (``TrainingInterrupted``), evaluates the model as it stands and returns with
    ``interrupted=True`` (resume it from ``result.state``). That holds in the main thread while
    SIGINT would raise KeyboardInterrupt (Python's default handler; in a terminal, and in a
    Jupyter cell, where the kernel's interrupt sends SIGINT); the handler is swapped only during
    the loop and the previous one is restored, also when the loop raises. A run in another
    thread, or under any other SIGINT handler (a handler of yours, SIGINT ignored), leaves
    signal handling alone (Python calls signal handlers in the main thread only).

    SIGTERM (what a cluster scheduler sends before it preempts a job, and ``kill``'s default) is
    handled the same way, in the main thread and only while its handler is the operating
    system's default (which would end the process at once, losing every step since the last
    checkpoint): the run stops after the step under way, ``checkpoint`` is called, and the result
    says ``interrupt_signal == signal.SIGTERM``. A SIGTERM handler of yours, or SIGTERM ignored,
    is left in place.

    One model trains in one thread at a time: a second ``train`` (or ``train_step``, or fused
    run) of the same model from another thread while this one runs raises RuntimeError at once.

    Divergence. The run diverges at step s when step s's loss (in the model's dtype), or an
    intermediate that feeds the loss, is not finite: the pre-activation of any hidden layer (the
    input of its nonlinearity: the batch-norm output with batch norm, the Linear's output
    without) or the logits. Step s is then not applied: the model holds the state after step
    s - 1. It also diverges at step s when, after step s's update, a parameter or a running
    statistic is not finite: the model then holds the state after that update, non-finite
    values included (``fastbn.save`` refuses to write it; reload the last checkpoint to go on).
    The definition is the same on the compiled and the per-layer path, which find the same step.
    Either way ``train`` raises ``TrainingDiverged``, the model is put back in the mode it was
    in, and ``checkpoint`` is not called again.
    """
    if getattr(model, "folded", False):      # fastbn.fold_batchnorm's inference-only model
        raise RuntimeError("fastbn.train cannot train a folded model (its batch norm is folded "
                           "into the Linears for inference, by fastbn.fold_batchnorm): train the "
                           "unfolded model, then fold it again")
    steps = int(steps)
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    if isinstance(batch_size, bool) or int(batch_size) != batch_size or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    batch_size = int(batch_size)
    if batch_size < 2 and model.batchnorms():
        raise ValueError("batch_size must be >= 2 with batch normalization (the batch variance "
                         "of one example is undefined)")
    every = int(every)
    if every < 1 or int(log_every) < 1:
        raise ValueError("every and log_every must be >= 1")
    schedule = check_schedule(default_lr_schedule(steps) if lr_schedule is None else lr_schedule)
    (Xtr, Ytr), evals = _splits(data)
    N = Xtr.shape[0]
    if N == 0:
        raise ValueError("the training split is empty")
    sampler = BatchSampler(_sampler_seed(seed))
    history = np.empty(steps, dtype=np.float64)
    step = 0
    if resume is not None:
        step = int(resume.step)
        if not 0 <= step <= steps or np.shape(resume.history) != (step,):
            raise ValueError(f"resume state at step {step} does not fit a run of {steps} steps "
                             f"(history of shape {np.shape(resume.history)})")
        sampler.state[:] = resume.sampler_state
        history[:step] = resume.history
    if checkpoint_every is not None and int(checkpoint_every) < 1:
        raise ValueError(f"checkpoint_every must be >= 1, got {checkpoint_every}")
    use_fused = _use_fused(fused, model, callback)
    stream = sys.stderr if stream is None else stream
    progress = progress_mode(quiet, stream)
    bar = Progress(steps, progress, stream, int(log_every),
                    initial=0 if resume is None else int(resume.step))
    if threads is not None:
        raise ValueError(
            f"train() no longer sets BLAS threads (threads={threads!r}): that limit is "
            "process-wide. Leave threads=None and wrap the call in "
            "threadpoolctl.threadpool_limits(n, user_api='blas') to pin BLAS yourself")

    was_training = model.training
    model.train()
    last_chunk = None          # (sampler state before the last compiled chunk, its steps)
    if use_fused:
        trainer = FusedTrainer(model, batch_size)
        # checked once, into the trainer's own arrays (a callback cannot change them under the
        # loop); Xtr, Ytr: read-only views of them
        Xtr, Ytr = trainer.load_data(Xtr, Ytr)
        chunk_losses = np.empty(CHUNK, dtype=np.float64)

    def state():
        return TrainState(step, sampler.state.copy(), history[:step].copy())

    def next_stop(step):
        """The number of steps until the next point where Python must see the run."""
        lr_end = next((s for s, _ in schedule if s > step), steps)
        stops = [lr_end, steps, -(-step // every) * every + 1, step + CHUNK]
        if checkpoint is not None and checkpoint_every:
            stops.append((step // checkpoint_every + 1) * checkpoint_every)
        return min(stops) - step

    first = step
    with CatchInterrupt() as interrupt:
        t0 = time.perf_counter()
        while step < steps and not interrupt.caught:
            lr = next(v for s, v in reversed(schedule) if s <= step)   # checked above
            if use_fused:
                n = next_stop(step)
                before = sampler.state.copy()
                done, out = trainer.run_loaded(n, lr, sampler, chunk_losses[:n])
                last_chunk = (before, done)
                losses = out[:done]
            else:
                ix = sampler.draw(N, batch_size)
                losses = np.array([model.train_step(Xtr[ix], Ytr[ix], lr)])
                n, done = 1, int(model.divergence is None)
            if done < n:
                bar.close()
                model.train(was_training)
                # done < n: the step that stopped the run recorded its divergence
                raise TrainingDiverged(step + done, lr, trainer.divergence if use_fused
                                       else model.divergence)  # type: ignore[arg-type]
            history[step:step + n] = losses
            for loss in losses:
                if progress != "off":
                    bar.update(step, float(loss), lr)
                if callback is not None and (step % every == 0 or step + 1 == steps):
                    callback(step, float(loss), lr)
                step += 1
            if checkpoint is not None and checkpoint_every and step % checkpoint_every == 0:
                checkpoint(state())
        wall = time.perf_counter() - t0
        bar.close()
        # still under our handlers: a second Ctrl-C or SIGTERM cannot cut this write short
        if interrupt.caught and checkpoint is not None:
            checkpoint(state())

    result = TrainResult(history=history[:step], wall_time=wall, steps=steps,
                         batch_size=batch_size,
                         seed=seed if not isinstance(seed, np.random.Generator) else None,
                         lr_schedule=schedule, path="fused" if use_fused else "per-layer",
                         interrupted=step < steps, state=state(), steps_run=step - first,
                         interrupt_signal=interrupt.signum if step < steps else None)
    if result.interrupted:
        by = f" by {signal.Signals(interrupt.signum).name}" if interrupt.signum else ""
        warnings.warn(f"training interrupted{by} after step {step:,} of {steps:,}: the model is "
                      "as those steps left it (resume with train(..., resume=result.state))",
                      TrainingInterrupted, stacklevel=3)    # past holds_model: train's caller
    if use_fused and last_chunk is not None:
        _refresh_layers(model, Xtr, Ytr, batch_size, *last_chunk)
    if calibrate and model.batchnorms() and not result.interrupted:
        if evaluate:
            result.losses_running = {n: model.evaluate(X, Y) for n, (X, Y) in evals.items()
                                     if len(X)}
        model.calibrate_batchnorm(Xtr)
        result.calibrated = True
    if evaluate:
        result.losses = {n: model.evaluate(X, Y) for n, (X, Y) in evals.items() if len(X)}
    model.train(was_training)
    if plot is not None:
        plot_history(history[:step], plot, schedule=schedule)
        result.plot_path = Path(plot)
    return result


class TrainingDiverged(FloatingPointError):
    """``train`` stopped: the run diverged (see ``train``). ``step`` and ``lr`` are those of the
    step that diverged, ``divergence`` (a ``fastbn._divergence.Divergence``) what was not finite
    (``kind``, ``what``) and whether that step was applied (``applied``).

    Parameters
    ----------
    step : int
        The step that diverged.
    lr : float
        Its learning rate.
    divergence : fastbn._divergence.Divergence
        What was not finite, and whether the step was applied.
    """

    def __init__(self, step: int, lr: float, divergence: Divergence) -> None:
        self.step, self.lr, self.divergence = int(step), float(lr), divergence
        after = ("the model holds the state after this step's update" if divergence.applied
                 else "the step was not applied")
        super().__init__(f"training diverged at step {self.step} (lr {self.lr:g}): "
                         f"{divergence.what}; {after}")

    # pickles (e.g. from a worker) with its attributes
    def __reduce__(self) -> tuple[Any, ...]:
        return type(self), (self.step, self.lr, self.divergence)


class TrainingInterrupted(UserWarning):
    """``train`` was stopped by Ctrl-C (or a Jupyter interrupt) or SIGTERM between two steps."""


def _refresh_layers(model, X, Y, batch_size, sampler_state, steps):
    """After the compiled loop, which does not run the layers: put the last minibatch of the run
    through the model (training mode, forward and backward) so its layers' ``.out`` and ``.dout``
    hold a real training batch, as after the per-layer path, but computed with the final
    parameters. The running statistics and ``grads()`` (the last step's) are put back."""
    if steps < 1:
        return
    sampler = BatchSampler(0)
    sampler.state[:] = sampler_state
    for _ in range(steps):                     # the draws of the last chunk; keep the last
        ix = sampler.draw(len(X), batch_size)
    buffers = [b.copy() for _, b in model.named_buffers()]
    grads = [g.copy() for g in model.grads()]
    model.forward(X[ix], Y[ix])
    model.backward()
    for (_, b), old in zip(model.named_buffers(), buffers):
        b[...] = old
    for g, old in zip(model.grads(), grads):
        g[...] = old


def seed_streams(seed: int) -> tuple[np.random.SeedSequence, np.random.SeedSequence]:
    """The two independent seed streams of a run from one int seed: (parameters, minibatches).

    ``fastbn train --seed S`` and the benchmark's full run use this, so a seed means the same
    run everywhere: ``CharMLP(..., seed=np.random.default_rng(init))`` and
    ``train(..., seed=batches)``.

    Parameters
    ----------
    seed : int
        The run's seed.

    Returns
    -------
    init, batches : numpy.random.SeedSequence
        The parameters' stream and the minibatches' stream.
    """
    init, batches = np.random.SeedSequence(int(seed)).spawn(2)
    return init, batches


def _sampler_seed(seed):
    """A 64-bit seed for the BatchSampler from an int, SeedSequence, Generator or None."""
    if isinstance(seed, np.random.Generator):
        return int(seed.integers(0, 2**63))
    if seed is None or isinstance(seed, np.random.SeedSequence):
        ss = seed if seed is not None else np.random.SeedSequence()
        return int(ss.generate_state(1, np.uint64)[0])
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or not 0 <= seed < 2**64:
        raise ValueError(f"seed must be an integer in [0, 2**64), a SeedSequence, a Generator or "
                         f"None, got {seed!r}")
    return int(seed)


def _use_fused(fused, model, callback=None):
    reads_layers = getattr(callback, "reads_layers", False) is True
    if fused == "auto":
        return supports(model)[0] and not reads_layers
    if fused is True:
        ok, why = supports(model)
        if not ok:
            raise ValueError(f"fused=True, but this model cannot use the fused step: {why}")
        if reads_layers:
            raise ValueError(
                f"fused=True, but the callback ({type(callback).__name__}) reads the layers' "
                ".out and .dout, which only the per-layer path computes: pass fused=False (or "
                "leave fused='auto', which then takes the per-layer path)")
        return True
    if fused is False:
        return False
    raise ValueError(f"fused must be 'auto', True or False, got {fused!r}")
