"""One trial, as a worker runs it: ``execute(fn, data, trial)`` around ``fn(data, trial)``.

``run_trial`` is the sweep's trial: the ``CharMLP`` of the trial's parameters, trained by
``fastbn.train`` (the compiled loop where the model allows it, ``fused="auto"``) with the trial's
seed split exactly as ``fastbn train --seed S`` splits it (``fastbn.training.seed_streams``), and
the losses of the three splits. ``execute`` is what every trial goes through on a worker
(``run_trial`` or a laboratory experiment's function):

- it announces the start (a Dask event on ``topic``, which the client uses for the running count
  and ``trial_timeout``);
- it runs the trial with BLAS on one thread, restoring the worker's setting afterwards
  (``one_blas_thread``): a worker process runs one trial per thread, and a cluster's workers
  may belong to other work too, so the limit is held only while trials run;
- it turns an exception into a result: ``FloatingPointError`` (the run diverged, as
  ``fastbn.train`` defines it: a non-finite loss, hidden pre-activation or logit, or a parameter
  or running statistic left non-finite by an update; the message names the step) is
  ``"diverged"``, any other ``Exception`` is ``"failed"``, with the message; the sweep goes on.

The result is a dict: ``status``, ``train_loss``/``val_loss``/``test_loss``, ``steps``,
``wall_time`` (the training loop, as ``TrainResult.wall_time``), ``path`` ("fused" or
"per-layer"), ``error``, ``trial_time`` (the whole call, seconds), ``worker`` (address), and
``extra`` (anything else ``fn`` returns that is not a column, e.g. a loss history).

This module imports no Dask at import time (``execute`` asks for the worker it runs on, if any).
"""
from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import numpy as np

from ..model import CharMLP
from ..training import seed_streams, train
from .space import resolve

if TYPE_CHECKING:
    from ..data import Dataset
    from ..training import TrainResult
    from .space import Trial

__all__ = ["COLUMNS", "execute", "finished", "one_blas_thread", "run_trial"]

# the result columns a trial returns (results.csv holds these after the parameters and seed)
COLUMNS = ("status", "train_loss", "val_loss", "test_loss", "steps", "wall_time", "trial_time",
           "path", "worker", "error")

_blas_lock = threading.Lock()
_blas_users = 0
_blas_limiter: Any = None      # a threadpoolctl.threadpool_limits while trials run


@contextlib.contextmanager
def one_blas_thread() -> Iterator[None]:
    """BLAS on one thread while any trial of this process runs; the process's setting back
    when the last one ends.

    The limit is a setting of the whole process (``threadpoolctl``), shared by every thread: a
    count of the trials under way makes the first set it and the last restore it, so trials that
    overlap in a worker with several threads never restore it under each other.
    """
    global _blas_users, _blas_limiter
    from threadpoolctl import threadpool_limits  # type: ignore[import-untyped]  # (no stubs)
    with _blas_lock:
        if _blas_users == 0:
            _blas_limiter = threadpool_limits(1, user_api="blas")
        _blas_users += 1
    try:
        yield
    finally:
        with _blas_lock:
            _blas_users -= 1
            if _blas_users == 0:
                _blas_limiter.restore_original_limits()
                _blas_limiter = None


def _worker():
    """The Dask worker this runs in, or None (in the client's process, or without Dask)."""
    try:
        from distributed import get_worker
        return get_worker()
    except (ImportError, ValueError):
        return None


def execute(fn: Callable[[Any, Trial], dict[str, Any] | None], data: Any, trial: Trial,
            topic: str | None = None) -> dict[str, Any]:
    """Run ``fn(data, trial)`` as one trial and return its result dict (see the module).

    ``fn`` returns a dict of result columns (``status`` "ok" unless it says otherwise) and may
    put anything else under ``extra``. ``topic``: the Dask event topic on which the start is
    announced as ``{"trial": trial.id}``.

    Parameters
    ----------
    fn : callable
        ``fn(data, trial)``, the trial function.
    data : object
        What the sweep shipped to the workers (a ``fastbn.data.Dataset`` by default).
    trial : Trial
        The trial.
    topic : str, optional
        The Dask event topic.

    Returns
    -------
    dict
        The trial's result columns.
    """
    worker = _worker()
    if worker is not None and topic is not None:
        worker.log_event(topic, {"trial": trial.id, "worker": worker.address})
    t0 = time.perf_counter()
    out: dict[str, Any] = {"status": "ok"}
    try:
        with one_blas_thread():
            out.update(fn(data, trial) or {})
    except FloatingPointError as e:
        out = {"status": "diverged", "error": str(e)}
    except Exception as e:          # recorded; the sweep goes on (KeyboardInterrupt is not)
        out = {"status": "failed", "error": f"{type(e).__name__}: {e}"}
    out["trial_time"] = time.perf_counter() - t0
    out["worker"] = worker.address if worker is not None else "local"
    return out


def finished(res: TrainResult) -> TrainResult:
    """``res`` (a ``TrainResult``) if its run went to the end; KeyboardInterrupt if Ctrl-C or
    SIGTERM stopped it (a trial that runs ``train`` in the main thread, as without Dask): a
    partial run is not a result, and the sweep stops, as it does on Ctrl-C anywhere else."""
    if res.interrupted:
        # an interrupted result always has its state (train sets both)
        raise KeyboardInterrupt(f"the trial's training stopped after step "
                                f"{res.state.step:,} "  # type: ignore[union-attr]
                                f"of {res.steps:,}")
    return res


def run_trial(data: Dataset, trial: Trial, keep_history: bool = False) -> dict[str, Any]:
    """Train the trial's ``CharMLP`` on ``data`` (a ``fastbn.data.Dataset`` of the trial's
    block size) and return its result columns.

    Exactly ``fastbn train --seed S`` with the trial's options: the parameters from
    ``default_rng(init)``, the minibatches from ``batches``, ``(init, batches) =
    seed_streams(S)``. ``keep_history``: also return the per-step losses (``extra["history"]``,
    float64 of shape (steps,)).

    Parameters
    ----------
    data : fastbn.data.Dataset
        Of the trial's block size.
    trial : Trial
        The trial.
    keep_history : bool, default False
        Also return the per-step losses.

    Returns
    -------
    dict
        The result columns.
    """
    model_kw, run_kw = resolve(trial.params)
    if data.block_size != model_kw["block_size"]:
        raise ValueError(f"the trial has block_size {model_kw['block_size']}, its data "
                         f"{data.block_size}")
    init, batches = seed_streams(trial.seed)
    model = CharMLP(data.vocab, seed=np.random.default_rng(init), **model_kw)
    res = finished(train(model, data, seed=batches, quiet=True, fused="auto", **run_kw))
    out: dict[str, Any] = {"train_loss": res.losses["train"], "val_loss": res.losses["val"],
           "test_loss": res.losses.get("test"), "steps": res.steps, "wall_time": res.wall_time,
           "path": res.path}
    if keep_history:
        out["extra"] = {"history": res.history}
    return out


def run_trial_with_history(data: Dataset, trial: Trial) -> dict[str, Any]:
    """``run_trial(data, trial, keep_history=True)``, as a function a worker can be sent."""
    return run_trial(data, trial, keep_history=True)
