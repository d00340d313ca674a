"""The laboratory's experiments as sweeps: their runs go through ``fastbn.sweep`` (a Dask
LocalCluster with a worker per core, or a cluster by address), one trial per configuration.

The ladder and the deep net keep the laboratory's own recipe, so their numbers are those of the
one-after-another runs they replace, to the bit: the parameters and minibatches from
``seed_generators(seed)`` (generators of ``seed_streams(seed)``), the per-layer path, the
losses of the splits they report. ``ladder_trial`` and ``deep_trial`` are those runs as trial
functions (module-level, so Dask workers import them by name). ``run_sweep`` runs trials and
returns their rows: on Dask when it is installed, else one after another in this process.
"""
import contextlib
import warnings

import numpy as np

from ..model import CharMLP
from ..sweep.space import resolve
from ..sweep.trial import finished
from ..training import seed_streams, train
from .probe import Probe

__all__ = ["deep_trial", "lab_cluster", "ladder_trial", "run_sweep"]

DEEP_LR = 0.1       # the deep net trains at the lecture's lr 0.1 throughout (its 1,000 steps)


def seed_generators(seed):
    """Generators of ``train.seed_streams(seed)``: (parameters, minibatches)."""
    return tuple(np.random.default_rng(s) for s in seed_streams(seed))


def _train_quiet(model, ds, steps, seed, probe=None, splits=("train", "val"), lr_schedule=None):
    """Train on the per-layer path without output; (loss history, {split: eval loss}). The
    schedule defaults to train's (the lecture's scaled to ``steps``)."""
    res = finished(train(model, ds, steps=steps, seed=seed, quiet=True, evaluate=False,
                         callback=probe, every=probe.every if probe else 1000, fused=False,
                         lr_schedule=lr_schedule))
    return res.history, {n: model.evaluate(*ds.split(n)) for n in splits}


def ladder_trial(data, trial):
    """One configuration of the init ladder (``run_ladder``): train and val loss and the loss
    of every step (``extra["history"]``)."""
    model_kw, run_kw = resolve(trial.params)
    init_rng, batch_rng = seed_generators(trial.seed)
    model = CharMLP(data.vocab, seed=init_rng, **model_kw)
    history, losses = _train_quiet(model, data, run_kw["steps"], batch_rng)
    return {"train_loss": losses["train"], "val_loss": losses["val"], "steps": run_kw["steps"],
            "path": "per-layer", "extra": {"history": history}}


def deep_trial(data, trial):
    """The deep net at one gain, with or without batch norm (``run_deep``): val loss and the
    probe's snapshots of the first and the last step (``extra``). A diverging run keeps the
    snapshots it has (status "diverged")."""
    model_kw, run_kw = resolve(trial.params)
    init_rng, batch_rng = seed_generators(trial.seed)
    model = CharMLP(data.vocab, seed=init_rng, **model_kw)
    steps = run_kw["steps"]
    probe = Probe(model, every=max(steps, 1))
    out = {"steps": steps, "path": "per-layer"}
    try:
        _, losses = _train_quiet(model, data, steps, batch_rng, probe, ("val",),
                                 lr_schedule=DEEP_LR)
        out["val_loss"] = losses["val"]
    except FloatingPointError as e:
        out.update(status="diverged", error=str(e))
    out["extra"] = {"init": probe.first if probe.snapshots else None,
                    "final": probe.last if probe.snapshots else None}
    return out


@contextlib.contextmanager
def lab_cluster(scheduler=None, workers=None, n_trials=None, progress=None):
    """``with lab_cluster(...) as kw: run_ladder(ds, **kw); run_deep(ds, **kw)``: one cluster
    for several experiments. ``kw`` is ``{"client": ...}``, or ``{"workers": 0}`` (one after
    another in this process) when Dask is not installed and no scheduler is given. The
    LocalCluster has ``workers`` processes (default: one per core, at most ``n_trials``)."""
    from ..sweep.runner import cluster, default_workers, require_dask
    if n_trials == 0 and scheduler is None:     # nothing to train: no cluster to start
        yield {"workers": 0}
        return
    if scheduler is None:
        try:
            require_dask()
        except ImportError as e:
            if workers is not None and workers > 0:
                raise
            if progress:
                progress(f"{e}; the trials run one after another here")
            yield {"workers": 0}
            return
        if workers is None:
            workers = max(1, min(default_workers(), n_trials or default_workers()))
    with cluster(scheduler=scheduler, workers=workers) as (client, _):
        yield {"client": client}


def run_sweep(spaces, ds, fn=None, *, client=None, scheduler=None, workers=None,
              progress=None):
    """Run the trials of ``spaces`` (``fastbn.sweep.sweep``, nothing written) and return
    ``[(trial, row, extra)]`` in the spaces' order.

    The cluster: ``client``, ``scheduler`` or ``workers`` as for ``sweep``; none given, a
    LocalCluster with a worker per core (at most one per trial) when Dask is installed, else the
    trials one after another in this process (``progress`` says so). ``progress``: a callable
    taking a message, and the sweep's progress is shown (None: quiet). Ctrl-C raises
    KeyboardInterrupt once the sweep has stopped.
    """
    from ..sweep import SweepInterrupted, sweep
    from ..sweep.runner import default_workers, require_dask
    trials = [t for s in spaces for t in s.trials()]
    if client is None and scheduler is None and workers is None:
        try:
            require_dask()
            workers = max(1, min(default_workers(), len(trials)))
        except ImportError as e:
            workers = 0
            if progress:
                progress(f"{e}; running the {len(trials)} trials one after another here")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SweepInterrupted)
        res = sweep(spaces, ds, None, fn=fn, client=client, scheduler=scheduler,
                    workers=workers, quiet=progress is None, report=False)
    if res.interrupted:
        raise KeyboardInterrupt
    return [(t, res.rows[t.id], res.extras.get(t.id, {})) for t in trials]
