"""Sweeps: many ``fastbn.train`` runs over a space of options and seeds, on Dask.

    from fastbn.sweep import Space, sweep
    space = Space({"lr": [0.03, 0.1, 0.3], "n_hidden": [100, 200]}, seeds=3)
    result = sweep(space, out="lr-width")        # a LocalCluster, one worker per core
    result.best()                                 # configurations by mean val loss

The command line is ``fastbn sweep`` (``--param NAME=V1,V2``, ``--random N``, ``--seeds K``,
``--scheduler ADDRESS``, ``--resume OUT``). Dask (``pip install 'fastbn[sweep]'``) runs the
trials: a ``LocalCluster`` of worker processes on this machine, or any cluster by its
scheduler's address with the same code. Importing this package does not import Dask; running a
sweep does.

One job a module:

- ``space``: parameters, values, ranges, seeds; the trials and their stable ids;
- ``trial``: one trial as a worker runs it (``run_trial``, ``execute``: BLAS on one thread,
  exceptions recorded);
- ``runner``: the Dask side: the cluster, shipping the data, futures, timeouts, lost workers;
- ``results``: ``results.csv``, written atomically as trials finish, read back to resume;
- ``progress``: the progress bar (trials done, running, failed, ETA);
- ``report`` and ``figures``: configurations ranked, report.md, val loss against each
  parameter, heatmaps;
- ``run``: ``sweep()``, which puts them together.
"""
from .run import SweepInterrupted, SweepResult, dataset_for, load_sweep, sweep
from .space import PARAMS, Range, Space, Trial, default_seeds, parse_param, trial_id
from .trial import execute, run_trial

__all__ = ["PARAMS", "Range", "Space", "SweepInterrupted", "SweepResult", "Trial",
           "dataset_for", "default_seeds", "execute", "load_sweep", "parse_param", "run_trial",
           "sweep", "trial_id"]
