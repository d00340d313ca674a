"""fastbn sweep against a real Dask cluster: a `dask scheduler` and a `dask worker --nworkers 2
--nthreads 1` started here as separate processes on 127.0.0.1 (module fixture), reached through
--scheduler. A worker killed in the middle of a trial, a client interrupted (SIGINT) or killed
(SIGKILL) and resumed, a trial past --trial-timeout.

Every process started here is stopped by its PID at the end (the workers' and the killed
clients' children too); every wait has a timeout.
"""
import csv
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import fastbn
from fastbn.cli import main
from fastbn.sweep import Space
from fastbn.sweep.results import STATUSES, columns
from fastbn.training import seed_streams

distributed = pytest.importorskip("distributed",
                                  reason="the sweep tests need Dask: pip install 'fastbn[sweep]'")
psutil = pytest.importorskip("psutil")

PKG_PARENT = str(Path(fastbn.__file__).resolve().parent.parent)
ENV = dict(os.environ, PYTHONPATH=os.pathsep.join([PKG_PARENT, os.environ.get("PYTHONPATH", "")]))
WAIT = 120          # seconds: the bound of every wait


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _stop(procs, timeout=30):
    """SIGTERM the processes, then SIGKILL them and every descendant still alive (by PID)."""
    family = []
    for p in procs:
        try:
            family += psutil.Process(p.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            pass
    for p in procs:
        if p.poll() is None:
            p.terminate()
    for p in procs:
        try:
            p.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(timeout=timeout)
    for child in family:
        try:
            child.kill()
        except psutil.NoSuchProcess:
            pass


def _client(address):
    return distributed.Client(address, timeout=30)


def _wait_for_workers(address, n=2):
    with _client(address) as c:
        c.wait_for_workers(n, timeout=WAIT)
        return sorted(c.scheduler_info(n_workers=-1)["workers"])


@pytest.fixture(scope="module")
def dask_cluster(tmp_path_factory):
    logs = tmp_path_factory.mktemp("dask")
    port = _free_port()
    address = f"tcp://127.0.0.1:{port}"
    dask = [sys.executable, "-m", "dask"]
    procs = []
    try:
        procs.append(subprocess.Popen(
            dask + ["scheduler", "--host", "127.0.0.1", "--port", str(port),
                    "--dashboard-address", "127.0.0.1:0", "--no-dashboard"],
            stdout=open(logs / "scheduler.log", "w"), stderr=subprocess.STDOUT, env=ENV,
            cwd=logs))         # not the repository root: there -m imports the unbuilt source
        procs.append(subprocess.Popen(
            dask + ["worker", address, "--nworkers", "2", "--nthreads", "1", "--host",
                    "127.0.0.1", "--dashboard-address", "127.0.0.1:0", "--no-dashboard"],
            stdout=open(logs / "workers.log", "w"), stderr=subprocess.STDOUT, env=ENV,
            cwd=logs))
        _wait_for_workers(address)
        yield address
    finally:
        _stop(procs[::-1], timeout=5)


def _sweep_cli(*args, cwd):
    """`fastbn sweep ...` as a client process of its own."""
    return subprocess.Popen([sys.executable, "-m", "fastbn", "sweep", *args], cwd=cwd, env=ENV,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _wait_rows(path, n, proc):
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        if path.exists() and len(path.read_text().splitlines()) > n:
            return
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.02)
    raise AssertionError(f"no {n} rows in {path} after {WAIT} s")


def _direct(ds, params, seed):
    """The trial with fastbn.train in this process (BLAS on one thread, as a worker runs it)."""
    from threadpoolctl import threadpool_limits
    init, batches = seed_streams(seed)
    model_kw = {k: params[k] for k in ("n_hidden", "batchnorm") if k in params}
    model = fastbn.CharMLP(ds.vocab, seed=np.random.default_rng(init), **model_kw)
    with threadpool_limits(1, user_api="blas"):
        return fastbn.train(model, ds, steps=params["steps"], lr_schedule=params["lr"],
                            seed=batches, quiet=True).losses


def _losses(row):
    return {k: float(row[f"{k}_loss"]) for k in ("train", "val", "test")}


def test_sweep_on_a_scheduler_and_its_workers(dask_cluster, names, names_path, tmp_path):
    workers = _wait_for_workers(dask_cluster)
    space = Space({"lr": [0.05, 0.1], "n_hidden": [50, 100], "steps": 300}, seeds=2)
    assert main(["sweep", "--scheduler", dask_cluster, "--param", "lr=0.05,0.1", "--param",
                 "n_hidden=50,100", "--param", "steps=300", "--seeds", "2", "--data",
                 names_path, "--out", str(tmp_path / "out"), "--quiet"]) == 0
    rows = _rows(tmp_path / "out" / "results.csv")
    assert sorted(r["trial"] for r in rows) == sorted(t.id for t in space.trials())
    assert {r["worker"] for r in rows} == set(workers)   # run there, on both
    for t in space.trials()[::7]:       # two of them (test_sweep.py checks all on a LocalCluster)
        row = next(r for r in rows if r["trial"] == t.id)
        assert _losses(row) == _direct(names, t.params, t.seed), t.label()
    assert (tmp_path / "out" / "report.md").is_file()


def test_a_worker_killed_mid_trial_reruns_it_and_every_trial_is_there_once(
        dask_cluster, names, names_path, tmp_path):
    _wait_for_workers(dask_cluster)
    # per-layer trials (no batch norm) of about a second each at full speed
    args = ["--scheduler", dask_cluster, "--param", "lr=0.05,0.1", "--param", "batchnorm=false",
            "--param", "steps=6000", "--seeds", "2", "--data", names_path, "--out", "out",
            "--quiet"]
    space = Space({"lr": [0.05, 0.1], "batchnorm": [False], "steps": 6000}, seeds=2)
    proc = _sweep_cli(*args, cwd=tmp_path)
    try:
        killed = None
        with _client(dask_cluster) as c:
            deadline = time.monotonic() + WAIT
            while killed is None and time.monotonic() < deadline:
                assert proc.poll() is None, proc.communicate()
                busy = {w: k for w, ks in c.run(_executing).items() for k in ks}
                for w, key in busy.items():
                    time.sleep(0.2)                         # inside the trial
                    if key in c.run(_executing, workers=[w]).get(w, []):
                        pid = c.run(os.getpid, workers=[w])[w]
                        os.kill(pid, signal.SIGKILL)
                        killed = (w, key)
                        break
                time.sleep(0.05)
        assert killed is not None, "no trial was seen running"
        out, err = proc.communicate(timeout=WAIT)
        assert proc.returncode == 0, err
    finally:
        _stop([proc])
    rows = _rows(tmp_path / "out" / "results.csv")
    assert sorted(r["trial"] for r in rows) == sorted(t.id for t in space.trials())
    assert all(r["status"] == "ok" for r in rows)
    tid = killed[1].split("-")[2]
    row = next(r for r in rows if r["trial"] == tid)
    assert row["worker"] != killed[0] and int(row["runs"]) >= 2    # ran again, elsewhere
    t = next(t for t in space.trials() if t.id == tid)
    assert _losses(row) == _direct(names, t.params, t.seed)


# the trials a worker is running (a lambda: cloudpickle sends it by value, where a function of
# this module would be sent by name, which the workers cannot import)
_executing = lambda dask_worker: [  # noqa: E731
    str(ts.key) for ts in dask_worker.state.tasks.values()
    if ts.state == "executing" and str(ts.key).startswith("fastbn-trial-")]


# six trials of ~1.5 s each on this machine (20,000 fused steps): long enough that a signal sent
# when the first row is written finds trials still to run (at 2,000 steps, once fastbn's GEMMs got
# faster, all six could finish, and be written, before the client handled Ctrl-C)
SWEEP6 = ["--param", "lr=0.02,0.05,0.1", "--param", "steps=20000", "--seeds", "2"]


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGKILL], ids=["ctrl-c", "kill"])
def test_a_stopped_client_leaves_a_whole_results_file_and_resumes(dask_cluster, names_path,
                                                                  tmp_path, sig):
    _wait_for_workers(dask_cluster)
    out = tmp_path / "out"
    proc = _sweep_cli("--scheduler", dask_cluster, *SWEEP6, "--data", names_path, "--out",
                      "out", "--quiet", cwd=tmp_path)
    try:
        _wait_rows(out / "results.csv", 1, proc)
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=WAIT)
    finally:
        _stop([proc])
    if sig == signal.SIGINT:
        assert proc.returncode == 130, err
        assert "continue with: fastbn sweep --resume out" in err
    else:
        assert proc.returncode == -signal.SIGKILL
    text = (out / "results.csv").read_text()
    assert text.splitlines()[0] == ",".join(columns(["lr"])) and text.endswith("\n")
    before = _rows(out / "results.csv")
    assert 1 <= len(before) < 6
    for r in before:            # every row complete
        assert None not in r.values() and r["status"] in STATUSES and float(r["val_loss"]) > 0
    assert main(["sweep", "--resume", str(out), "--scheduler", dask_cluster, "--quiet"]) == 0
    after = _rows(out / "results.csv")
    assert len(after) == 6 == len({r["trial"] for r in after})
    assert after[:len(before)] == before        # the finished trials were not run again


def test_a_trial_past_the_timeout_is_failed_and_its_worker_restarted(dask_cluster, names_path,
                                                                      tmp_path):
    _wait_for_workers(dask_cluster)
    assert main(["sweep", "--scheduler", dask_cluster, "--param", "steps=200,100000000",
                 "--param", "n_hidden=20", "--trial-timeout", "3", "--data", names_path,
                 "--out", str(tmp_path / "out"), "--quiet"]) == 0
    rows = {r["steps"]: r for r in _rows(tmp_path / "out" / "results.csv")}
    assert rows["200"]["status"] == "ok"
    hung = rows["100000000"]
    assert hung["status"] == "failed" and "timed out" in hung["error"]
    assert 3 <= float(hung["trial_time"]) < 60
    assert len(_wait_for_workers(dask_cluster)) == 2     # the restarted worker came back
