"""Trials on Dask: a cluster to run on, the data shipped once, futures as they finish.

``cluster()`` gives a ``distributed.Client``: the caller's, one connected to a scheduler's
address (a ``dask scheduler``/``dask worker`` cluster, dask-jobqueue, Kubernetes: the same code),
or a ``LocalCluster`` of worker processes on 127.0.0.1 with one thread each. ``run_trials`` then:

1. checks that the workers can import fastbn (a clear error if they cannot);
2. ships each dataset to every worker once (``Client.scatter(broadcast=True)``): workers need
   fastbn, not the data file;
3. submits one task per trial (``fastbn.sweep.trial.execute``) and handles them as they finish
   (``as_completed``), calling ``on_result`` in the caller's thread.

Faults, and who handles them:

- a worker dies under a trial (killed, out of memory, its machine gone): the scheduler runs the
  trial again on another worker (Dask reschedules the tasks of a lost worker, up to
  ``distributed.scheduler.allowed-failures`` times; then the trial is recorded as failed with
  Dask's ``KilledWorker``). A trial is recorded once, when it finishes;
- the data is lost with its last worker (``scatter`` data cannot be recomputed): the trials that
  needed it come back cancelled; the client scatters the data again and resubmits them (at most
  ``MAX_SUBMITS`` times each);
- a trial runs longer than ``trial_timeout`` seconds (counted from its latest start, which the
  trial announces as a Dask event): it is recorded as failed, its task is cancelled and its
  worker restarted through its nanny (the only way to stop a thread stuck in compiled code);
  a worker without a nanny cannot be restarted and stays busy (a warning says so);
- the client stops (Ctrl-C, an exception): the tasks under way are cancelled; what finished is
  the caller's (the sweep writes it to results.csv, which ``--resume`` reads).

``run_local`` runs the same trials one after another in this process, without Dask (the
laboratory's fallback when Dask is not installed).
"""
import contextlib
import logging
import os
import queue
import time
import uuid

from .trial import execute

__all__ = ["INSTALL_HINT", "MAX_SUBMITS", "cluster", "default_workers", "require_dask",
           "run_local", "run_trials"]

INSTALL_HINT = "pip install 'fastbn[sweep]' (or pip install 'dask[distributed]')"
MAX_SUBMITS = 3         # a trial whose task the cluster cancels is submitted at most this often
_POLL = 0.05            # seconds between looks at the futures, the events and the clock


def require_dask():
    """``distributed``, or ImportError saying how to install it."""
    try:
        import distributed
    except ImportError as e:
        raise ImportError(f"fastbn sweeps run their trials on Dask, which is not installed: "
                          f"{INSTALL_HINT}") from e
    return distributed


def default_workers():
    """The number of cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0)) or 1
    except AttributeError:          # not Linux
        return os.cpu_count() or 1


@contextlib.contextmanager
def cluster(client=None, scheduler=None, workers=None, timeout=30):
    """``with cluster(...) as (client, description):`` a Dask client to run trials on.

    ``client``: used as it is (not closed). ``scheduler``: an address (``tcp://host:8786``) to
    connect to, ConnectionError if nothing answers within ``timeout`` seconds. Otherwise a new
    ``LocalCluster`` of ``workers`` processes (default: ``default_workers()``), one thread each,
    on 127.0.0.1 and without a dashboard, closed on exit. Its workers start with one BLAS thread
    (Dask's nanny sets OMP/OPENBLAS/MKL_NUM_THREADS=1); each trial also pins it
    (``trial.one_blas_thread``), which holds on any cluster.
    """
    if client is not None:
        yield client, "the given Dask client"
        return
    distributed = require_dask()
    if scheduler is not None:
        try:
            c = distributed.Client(scheduler, timeout=timeout)
        except (OSError, TimeoutError, ValueError) as e:
            raise ConnectionError(f"cannot connect to the Dask scheduler at {scheduler}: "
                                  f"{e}") from e
        with c:
            n = len(c.scheduler_info(n_workers=-1).get("workers", {}))
            yield c, f"the Dask cluster at {scheduler} ({n} workers at the start)"
        return
    n = default_workers() if workers is None else int(workers)
    if n < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    with _environ_kept(), _local_cluster(n) as lc, distributed.Client(lc) as c:
        yield c, f"a LocalCluster of {n} worker process{'es' if n > 1 else ''}, one thread each"


def _local_cluster(n):
    """A LocalCluster of ``n`` worker processes with one thread each, on 127.0.0.1.

    Its nannies start the workers with Dask's ``pre-spawn-environ`` (one OpenMP/OpenBLAS/MKL
    thread) except ``MALLOC_TRIM_THRESHOLD_``: setting it turns off glibc's adaptive mmap
    threshold, so every large temporary is mapped and unmapped again, which doubled the time of a
    trial's evaluation here (0.24 s -> 0.48 s over the three splits). The setting is read when
    the nannies are made; the configuration is put back right after.
    """
    import dask
    import distributed
    with dask.config.set({"distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_": None}), \
            _sigint_ignored():
        # no dashboard; the scheduler's HTTP server (health, metrics) on a free port, not 8787
        return distributed.LocalCluster(n_workers=n, threads_per_worker=1, processes=True,
                                        host="127.0.0.1", dashboard_address=None,
                                        scheduler_kwargs={"dashboard_address": "127.0.0.1:0"},
                                        silence_logs=logging.ERROR)


@contextlib.contextmanager
def _sigint_ignored():
    """SIGINT ignored while the workers are spawned, which they inherit (an ignored signal stays
    ignored across exec, and Python then installs no handler): Ctrl-C in a terminal signals the
    whole foreground process group, and the sweep's client, not each worker, handles it (it
    cancels the trials and closes the cluster). Only in the main thread, where handlers can be
    set; the previous handler is put back as soon as the cluster is up (a Ctrl-C in those
    seconds is lost)."""
    import signal
    import threading
    old = None
    if threading.current_thread() is threading.main_thread():
        with contextlib.suppress(ValueError):
            old = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        if old is not None:
            signal.signal(signal.SIGINT, old)


@contextlib.contextmanager
def _environ_kept():
    """Put ``os.environ`` back as it was: a Dask nanny writes its workers' pre-spawn variables
    (OMP_NUM_THREADS, PYTHONHASHSEED, ...) into the environment of the process that runs it,
    which for a LocalCluster is the caller's."""
    before = dict(os.environ)
    try:
        yield
    finally:
        for k in set(os.environ) - set(before):
            del os.environ[k]
        for k, v in before.items():
            if os.environ.get(k) != v:
                os.environ[k] = v


def _worker_check():
    """Run on each worker: the fastbn it imports (its compiled kernels included)."""
    import fastbn
    return fastbn.__version__


def check_workers(client):
    """The fastbn version of every worker now connected ({address: version}); RuntimeError
    when a worker cannot import fastbn."""
    try:
        return client.run(_worker_check)
    except Exception as e:      # ModuleNotFoundError on a worker, or its compiled kernels
        raise RuntimeError(f"the Dask workers cannot run fastbn ({type(e).__name__}: {e}); "
                           "install fastbn where the workers run") from e


def _failed(message):
    return {"status": "failed", "error": message}


def run_trials(client, trials, data, fn, *, data_key=None, trial_timeout=None, on_result=None,
               on_start=None, log=None):
    """Run ``fn(dataset, trial)`` for every trial on the client's cluster.

    Parameters
    ----------
    client : distributed.Client
    trials : list of Trial
    data : dict
        Key -> dataset; ``data_key(trial)`` gives a trial's key (default: the only key).
    fn : callable
        A module-level function (workers import it by name), run through ``trial.execute``.
    trial_timeout : float, optional
        Seconds a trial may run (see the module).
    on_result : callable
        ``on_result(trial, result, runs)`` in this thread, once per trial, as each finishes;
        ``runs`` is how often it was seen to start.
    on_start : callable, optional
        ``on_start(trial, worker, runs)`` when a trial starts (again) on a worker.
    log : callable, optional
        ``log(message)`` for what the user should know (a timed-out trial, a restart).
    """
    log = log or (lambda msg: None)
    keys = list(data)
    if data_key is None:
        if len(keys) != 1:
            raise ValueError("data_key is needed with more than one dataset")
        data_key = lambda trial: keys[0]            # noqa: E731
    distributed = require_dask()
    check_workers(client)
    token = uuid.uuid4().hex[:10]
    topic = f"fastbn-sweep-{token}"
    events = queue.SimpleQueue()
    client.subscribe_topic(topic, events.put)
    scattered = {}

    def scatter(which):
        futs = client.scatter([data[k] for k in which], broadcast=True, hash=False)
        scattered.update(zip(which, futs))

    pending = {}        # future key -> (future, trial, submission number)
    by_trial = {}       # trial id -> future key
    started = {}        # trial id -> (time.monotonic() of its latest start, worker)
    runs = {}

    def submit(trial, n):
        key = f"fastbn-trial-{trial.id}-{token}-{n}"
        f = client.submit(execute, fn, scattered[data_key(trial)], trial, topic, key=key,
                          pure=False)
        pending[key] = (f, trial, n)
        by_trial[trial.id] = key
        return f

    def finish(key, result):
        f, trial, _ = pending.pop(key)
        del by_trial[trial.id]
        started.pop(trial.id, None)
        on_result(trial, result, max(runs.get(trial.id, 0), 1))

    try:
        scatter(sorted({data_key(t) for t in trials}, key=keys.index))
        ac = distributed.as_completed([submit(t, 1) for t in trials])
        while pending:
            batch = ac.next_batch(block=False)
            while True:
                try:
                    _, msg = events.get_nowait()
                except queue.Empty:
                    break
                tid = msg.get("trial")
                if tid in by_trial:     # a late event of a finished trial is ignored
                    runs[tid] = runs.get(tid, 0) + 1
                    started[tid] = (time.monotonic(), msg.get("worker"))
                    if on_start is not None:
                        on_start(pending[by_trial[tid]][1], msg.get("worker"), runs[tid])
            for f in batch:
                if f.key not in pending:        # cancelled by us (a timeout)
                    continue
                _, trial, n = pending[f.key]
                if f.status == "finished":
                    finish(f.key, f.result())
                elif f.status == "error":
                    e = f.exception()
                    finish(f.key, _failed(f"{type(e).__name__}: {e}"))
                else:                           # cancelled by the cluster: data lost, restart
                    lost = [k for k, d in scattered.items() if d.status != "finished"]
                    if n >= MAX_SUBMITS:
                        finish(f.key, _failed(f"the cluster cancelled the trial {n} times "
                                              f"(last status {f.status!r})"))
                        continue
                    if lost:
                        log(f"the data was lost with its workers: shipping it again "
                            f"({len(lost)} dataset{'s' if len(lost) > 1 else ''})")
                        scatter(lost)
                    pending.pop(f.key)
                    started.pop(trial.id, None)
                    ac.add(submit(trial, n + 1))
            if trial_timeout is not None:
                now = time.monotonic()
                for tid, (t0, worker) in list(started.items()):
                    if now - t0 > trial_timeout and tid in by_trial:
                        _time_out(client, pending[by_trial[tid]][0], worker, trial_timeout,
                                  now - t0, log, lambda r, tid=tid: finish(by_trial[tid], r))
            if not batch:
                time.sleep(_POLL)
    finally:
        futs = [f for f, _, _ in pending.values()]
        with contextlib.suppress(Exception):
            if futs:
                client.cancel(futs)
        with contextlib.suppress(Exception):
            client.unsubscribe_topic(topic)
        for f in scattered.values():
            with contextlib.suppress(Exception):
                f.release()


def _time_out(client, future, worker, timeout, elapsed, log, record):
    """Record a trial that ran past ``timeout`` as failed, cancel it and restart its worker."""
    record({**_failed(f"timed out: still running after {timeout:g} s (its worker was "
                      "restarted)"), "worker": worker, "trial_time": elapsed})
    with contextlib.suppress(Exception):
        future.cancel()
    try:
        client.restart_workers([worker], timeout=60)
        log(f"a trial ran past {timeout:g} s: recorded as failed, worker {worker} restarted")
    except Exception as e:      # no nanny (dask worker --no-nanny), or it did not come back
        log(f"a trial ran past {timeout:g} s: recorded as failed, but its worker {worker} could "
            f"not be restarted ({type(e).__name__}: {e}) and may stay busy")


def run_local(trials, data, fn, *, data_key=None, on_result=None, on_start=None):
    """The same trials one after another in this process (no Dask, no timeout)."""
    keys = list(data)
    for trial in trials:
        if on_start is not None:
            on_start(trial, "local", 1)
        d = data[data_key(trial) if data_key is not None else keys[0]]
        on_result(trial, execute(fn, d, trial), 1)
