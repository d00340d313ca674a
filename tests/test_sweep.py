"""fastbn.sweep: the space and its trial ids, the results file, usage errors of fastbn sweep, and
sweeps on a LocalCluster of two worker processes (results equal to fastbn.train, bit for bit;
a diverging trial; the laboratory's runs through it).

The sweeps against a scheduler and workers started as separate processes (--scheduler, a killed
worker, an interrupted or killed client, a timeout) are in test_sweep_cluster.py.
"""
import csv
import io
import json
import math
import warnings
from contextlib import redirect_stdout

import numpy as np
import pytest

import fastbn
from fastbn.cli import main
from fastbn.sweep import Range, Space, default_seeds, parse_param, sweep, trial_id
from fastbn.sweep.results import ResultsFile, columns
from fastbn.training import DEFAULT_SEED, seed_streams

pytest.importorskip("distributed", reason="the sweep tests need Dask: pip install 'fastbn[sweep]'")

STEPS = 300


# ----------------------------------------------------------------------------------------------
# the space

def test_grid_is_the_product_times_the_seeds_in_order():
    s = Space({"lr": ["0.05", "0.1"], "n_hidden": [50, 100], "steps": STEPS}, seeds=2)
    trials = s.trials()
    assert len(trials) == 2 * 2 * 2 == len({t.id for t in trials})
    assert [(t.params["lr"], t.params["n_hidden"], t.seed) for t in trials[:3]] == \
        [(0.05, 50, DEFAULT_SEED), (0.05, 50, 1), (0.05, 100, DEFAULT_SEED)]
    assert s.swept() == ["lr", "n_hidden"]
    assert default_seeds(3) == [DEFAULT_SEED, 1, 2]


def test_parse_param():
    assert parse_param("lr=0.1,1e-2,0.1") == ("lr", [0.1, 0.01])      # duplicates dropped
    assert parse_param("n-hidden=100, 200") == ("n_hidden", [100, 200])
    assert parse_param("lr=1e-3:1") == ("lr", Range(1e-3, 1.0, "log"))
    assert parse_param("bn_momentum=0:0.5:lin") == ("bn_momentum", Range(0.0, 0.5, "lin"))
    assert parse_param("lr_schedule=0:0.1,100:0.01;0.05") == \
        ("lr_schedule", [((0, 0.1), (100, 0.01)), ((0, 0.05),)])


def test_trial_ids_are_stable_and_mean_the_values():
    a = Space.parse(["lr=0.1,0.01", "n-hidden=100", "batchnorm=on"], seeds=2)
    b = Space({"lr": [1e-1, 1e-2], "n_hidden": [100], "batchnorm": [True]}, seeds=2)
    assert [t.id for t in a.trials()] == [t.id for t in b.trials()]
    assert [t.id for t in Space.from_dict(json.loads(json.dumps(a.to_dict()))).trials()] == \
        [t.id for t in a.trials()]
    t = a.trials()[0]
    assert trial_id(t.params, t.seed) == t.id
    assert trial_id(t.params, t.seed + 1) != t.id
    assert trial_id({**t.params, "lr": 0.1000001}, t.seed) != t.id


def test_bn_unbiased_is_a_parameter_and_a_trial_with_it_is_fastbn_train_bn_variance_unbiased(
        names_path, tmp_path):
    """bn_unbiased=true,false sweeps the batch-norm variance (default false, CharMLP's); a trial
    with it, run in this process, is `fastbn train --bn-variance unbiased` with its seed."""
    from fastbn.sweep.space import DEFAULTS, resolve
    from fastbn.sweep.trial import one_blas_thread, run_trial

    assert DEFAULTS["bn_unbiased"] is False
    space = Space.parse(["bn_unbiased=true,false", "steps=60", "n_hidden=20"], seeds=[5])
    assert [t.params["bn_unbiased"] for t in space.trials()] == [True, False]
    assert resolve(space.trials()[0].params)[0]["bn_unbiased"] is True
    assert space.trials()[0].label() == "bn_unbiased=true steps=60 n_hidden=20 seed=5"
    ds = fastbn.data.load_dataset(names_path)
    # on one BLAS thread, as a trial runs in a sweep (execute) and as `fastbn train` runs: float32
    # GEMMs may round differently on two threads, and evaluate keeps each chunk's mean in float64
    with one_blas_thread():
        got = [run_trial(ds, t) for t in space.trials()]
    assert all(g["path"] == "fused" for g in got)
    with redirect_stdout(io.StringIO()):
        assert main(["train", "--data", names_path, "--steps", "60", "--n-hidden", "20",
                     "--bn-variance", "unbiased", "--seed", "5", "--quiet", "--no-plot",
                     "--out", str(tmp_path / "run")]) == 0
    losses = fastbn.load(tmp_path / "run" / "model.npz").meta["losses"]
    assert {k: got[0][f"{k}_loss"] for k in ("train", "val", "test")} == losses
    assert got[0]["val_loss"] != got[1]["val_loss"]


def test_random_draws_are_reproducible_and_inside_their_ranges():
    spec = ["lr=1e-3:1", "n_hidden=20:400", "bn_momentum=0:0.5:lin", "init=kaiming,fix_tanh"]
    a, b = (Space.parse(spec, random=40, space_seed=3) for _ in range(2))
    c = Space.parse(spec, random=40, space_seed=4)
    assert [t.id for t in a.trials()] == [t.id for t in b.trials()]
    assert [t.id for t in a.trials()] != [t.id for t in c.trials()]
    pts = [t.params for t in a.trials()]
    assert all(1e-3 <= p["lr"] <= 1 and 20 <= p["n_hidden"] <= 400 and isinstance(
        p["n_hidden"], int) and 0 <= p["bn_momentum"] <= 0.5 for p in pts)
    lrs = np.log10([p["lr"] for p in pts])
    assert lrs.min() < -2 and lrs.max() > -1         # log-uniform: every decade is visited
    assert {p["init"] for p in pts} == {"kaiming", "fix_tanh"}
    assert isinstance(a.params["lr"], Range) and a.params["lr"].scale == "log"


@pytest.mark.parametrize("spec, random, message", [
    (["foo=1"], None, "unknown parameter 'foo'"),
    (["lr="], None, "empty list"),
    (["lr=0.1,,0.2"], None, "empty value"),
    (["n_hidden=1.5"], None, "expected an integer"),
    (["lr=fast"], None, "expected a number"),
    (["batchnorm=maybe"], None, "expected true or false"),
    (["bn_unbiased=unbiased"], None, "bn_unbiased: expected true or false"),
    (["init=he"], None, "expected one of"),
    (["lr=0:1"], 5, "log-uniform, which needs LOW > 0"),
    (["lr=1e-3:1"], None, "is a range: draw from it with random=N"),
    (["activation=1:2"], 5, "expected one of"),
    (["lr=0.1", "lr_schedule=0:0.1"], None, "not both"),
    (["batch_size=1"], None, "batch_size 1 cannot train with batch normalization"),
    (["gain=2", "init=original"], None, "gain applies to init kaiming only"),
])
def test_bad_specs_are_value_errors(spec, random, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(")):
        Space.parse(spec, random=random)


@pytest.mark.parametrize("argv, message", [
    (["--param", "foo=1"], "unknown parameter 'foo'"),
    (["--param", "lr="], "empty list"),
    (["--param", "n_layers=two"], "expected an integer"),
    (["--param", "lr=0:1", "--random", "4"], "needs LOW > 0"),
    (["--param", "lr=0.001:1"], "is a range"),
    (["--param", "lr=0.1", "--param", "lr=0.2"], "given twice"),
    (["--param", "lr"], "expected NAME=V1,V2"),
    (["--seeds", "0"], "must be > 0"),
    (["--workers", "2", "--scheduler", "tcp://127.0.0.1:1"], "--workers"),
    (["--retry-failed"], "--retry-failed goes with --resume"),
    (["--resume", "nowhere"], "no sweep.json"),
    (["--data", "/nonexistent/names.txt"], "no such file"),
])
def test_cli_usage_errors_exit_2(argv, message, capsys):
    with pytest.raises(SystemExit) as e:
        main(["sweep", *argv, "--dry-run"])
    assert e.value.code == 2
    assert message in capsys.readouterr().err


def test_cli_dry_run_lists_the_trials(capsys):
    assert main(["sweep", "--param", "lr=0.05,0.1", "--param", "n_hidden=50,100",
                 "--seeds", "2", "--dry-run"]) == 0
    out = capsys.readouterr().out
    ids = [t.id for t in Space({"lr": [0.05, 0.1], "n_hidden": [50, 100]}, seeds=2).trials()]
    assert "8 trials" in out and all(i in out for i in ids)


# ----------------------------------------------------------------------------------------------
# the results file

def test_results_file_round_trips_floats_and_refuses_another_sweeps_file(tmp_path):
    trials = Space({"lr": [0.1, 0.2]}, seeds=2).trials()
    path = tmp_path / "results.csv"
    rf = ResultsFile(path, ["lr"], interval=0)
    x = 2.0 / 3.0
    rf.add(trials[0], {"status": "ok", "train_loss": x, "val_loss": math.pi, "test_loss": 1e-300,
                       "steps": 5, "wall_time": 0.1, "trial_time": 0.2, "path": "fused",
                       "worker": "w"})
    rf.add(trials[1], {"status": "diverged", "error": "the loss is nan\nat step 3"}, steps=7)
    back = ResultsFile(path, ["lr"])
    rows = back.load([t.id for t in trials])
    assert list(rows) == [trials[0].id, trials[1].id]
    r0, r1 = rows[trials[0].id], rows[trials[1].id]
    assert (r0["train_loss"], r0["val_loss"], r0["test_loss"]) == (x, math.pi, 1e-300)
    assert r1["status"] == "diverged" and math.isnan(r1["val_loss"]) and r1["steps"] == "7"
    assert r1["error"] == "the loss is nan at step 3"            # one line
    assert next(csv.reader(io.StringIO(path.read_text()))) == columns(["lr"])
    with pytest.raises(ValueError, match="not in this sweep's space"):
        ResultsFile(path, ["lr"]).load([trials[0].id])
    with pytest.raises(ValueError, match="another sweep"):
        ResultsFile(path, ["lr", "n_hidden"]).load([t.id for t in trials])
    path.write_text(path.read_text() + path.read_text().splitlines()[1] + "\n")
    with pytest.raises(ValueError, match="appears twice"):
        ResultsFile(path, ["lr"]).load([t.id for t in trials])


def test_results_file_keeps_the_old_file_when_a_write_fails(tmp_path, monkeypatch):
    trials = Space({"lr": [0.1, 0.2]}).trials()
    path = tmp_path / "results.csv"
    rf = ResultsFile(path, ["lr"], interval=0)
    rf.add(trials[0], {"status": "failed", "error": "x"})
    before = path.read_bytes()
    monkeypatch.setattr(ResultsFile, "text", lambda self: (_ for _ in ()).throw(OSError("disk")))
    with pytest.raises(OSError, match="disk"):
        rf.add(trials[1], {"status": "failed", "error": "y"})
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["results.csv"]   # no temporary left


@pytest.mark.parametrize("edit, why", [
    (lambda r: r.replace(",ok,", ",done,"), "unknown status 'done'"),
    (lambda r: r.rsplit(",", 1)[0] + "\n", "columns, not"),
    (lambda r: r.replace(",0.25,", ",0.2x5,"), "is not a number"),
    (lambda r: r.replace(",3.5,", ",,"), "val_loss: is empty"),
    (lambda r: r.replace(",3.5,", ",nan,"), "val_loss: 'nan' is not a finite number"),
    (lambda r: r.replace(",w,", ",,"), "worker: is empty"),
    (lambda r: r.rsplit(",", 1)[0] + ",0\n", "runs: '0' is not a finite number >= 1"),
    (lambda r: r.replace(",0.1,", ",0.3,", 1), "lr '0.3' is not the trial's '0.1'"),
    (lambda r: r.rstrip("\n"), "cut short"),
])
def test_results_file_drops_a_row_that_is_not_complete_and_valid(tmp_path, edit, why):
    """A row that does not read back whole is not a finished trial: dropped (it runs again),
    and the file is rewritten with the good rows."""
    trials = Space({"lr": [0.1, 0.2]}).trials()
    path = tmp_path / "results.csv"
    rf = ResultsFile(path, ["lr"], interval=0)
    res = {"status": "ok", "train_loss": 3.25, "val_loss": 3.5, "test_loss": 3.75,
           "steps": 5, "wall_time": 0.25, "trial_time": 0.5, "path": "fused", "worker": "w"}
    rf.add(trials[1], {"status": "failed", "error": "ValueError: x"}, steps=5)
    rf.add(trials[0], res)
    good, last = path.read_text().splitlines(keepends=True)[1:]
    assert ResultsFile(path, ["lr"]).load(trials).keys() == {trials[0].id, trials[1].id}
    path.write_text(path.read_text().replace(last, edit(last)))
    back = ResultsFile(path, ["lr"], interval=0)
    assert list(back.load(trials)) == [trials[1].id]
    assert len(back.dropped) == 1 and back.dropped[0][:2] == (3, trials[0].id)
    assert why in back.dropped[0][2], back.dropped
    back.flush()                                    # repaired: the good rows, nothing else
    assert path.read_text().splitlines(keepends=True)[1:] == [good]


# ----------------------------------------------------------------------------------------------
# on a LocalCluster of two worker processes

@pytest.fixture(scope="module")
def client():
    from fastbn.sweep.runner import cluster
    with cluster(workers=2) as (c, _):
        yield c


def _direct(ds, params, seed):
    """The trial run with fastbn.train in this process, as fastbn train --seed runs it."""
    from threadpoolctl import threadpool_limits
    init, batches = seed_streams(seed)
    model = fastbn.CharMLP(ds.vocab, n_hidden=params.get("n_hidden", 200),
                           seed=np.random.default_rng(init))
    with threadpool_limits(1, user_api="blas"):
        return fastbn.train(model, ds, steps=STEPS, lr_schedule=params["lr"], seed=batches,
                            quiet=True).losses


def test_local_cluster_sweep_equals_fastbn_train_bit_for_bit(names, client, tmp_path):
    space = Space({"lr": [0.05, 0.1], "n_hidden": [50, 100], "steps": STEPS}, seeds=2)
    res = sweep(space, names, tmp_path / "out", client=client, quiet=True)
    assert not res.interrupted and res.counts() == {"ok": 8}
    with open(tmp_path / "out" / "results.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert sorted(r["trial"] for r in rows) == sorted(t.id for t in space.trials())
    assert len({r["worker"] for r in rows}) == 2           # both worker processes ran trials
    for t in space.trials():
        row = next(r for r in rows if r["trial"] == t.id)
        want = _direct(names, t.params, t.seed)
        got = {k: float(row[f"{k}_loss"]) for k in ("train", "val", "test")}
        assert got == want, t.label()                      # exactly: repr round-trips
        assert row["path"] == "fused" and row["status"] == "ok" and row["runs"] == "1"
    report = (tmp_path / "out" / "report.md").read_text()
    best = res.best(1)[0]
    assert f"{best.val_mean:.4f}" in report.split("## Best configurations first")[1][:600]
    for f in ("val_vs_lr.png", "val_vs_n_hidden.png", "heatmap_lr_n_hidden.png"):
        assert (tmp_path / "out" / f).stat().st_size > 1000 and f"]({f})" in report
    assert json.loads((tmp_path / "out" / "sweep.json").read_text())["spaces"] == \
        [space.to_dict()]


def test_a_trial_is_fastbn_train_with_the_same_seed(names_path, client, tmp_path):
    """A trial with seed S is `fastbn train --seed S` with the same options."""
    space = Space({"lr": [0.05], "n_hidden": [50], "steps": STEPS}, seeds=[7])
    res = sweep(space, names_path, None, client=client, quiet=True)
    row = res.rows[space.trials()[0].id]
    with redirect_stdout(io.StringIO()):
        assert main(["train", "--data", names_path, "--steps", str(STEPS), "--n-hidden", "50",
                     "--lr-schedule", "0.05", "--seed", "7", "--quiet", "--no-plot",
                     "--out", str(tmp_path / "run")]) == 0
    losses = fastbn.load(tmp_path / "run" / "model.npz").meta["losses"]
    assert {k: row[f"{k}_loss"] for k in ("train", "val", "test")} == losses


def test_a_diverging_trial_is_recorded_and_the_sweep_goes_on(names, client):
    # lr 1e39 is +inf in the float32 model: step 0's update makes every parameter +-inf or NaN
    # on every CPU
    space = Space({"lr": [0.1, 1e39], "steps": STEPS})
    res = sweep(space, names, None, client=client, quiet=True)
    ok, bad = (res.rows[t.id] for t in space.trials())
    assert ok["status"] == "ok" and bad["status"] == "diverged"
    assert bad["error"].startswith("training diverged at step 0 (lr 1e+39)")
    assert math.isnan(bad["val_loss"])
    assert [p.diverged for p in res.points()] == [0, 1]      # ranked: the finished one first
    assert "## Diverged and failed trials" in res.markdown(embed=False)


def test_resume_skips_what_is_done_and_an_existing_folder_is_refused(names, client, tmp_path):
    small = Space({"lr": [0.1], "steps": STEPS}, seeds=1)
    sweep(small, names, tmp_path, client=client, quiet=True, report=False)
    first = (tmp_path / "results.csv").read_text().splitlines()[1]
    with pytest.raises(FileExistsError, match="resume"):
        sweep(small, names, tmp_path, client=client, quiet=True)
    more = Space({"lr": [0.1], "steps": STEPS}, seeds=2)                # one seed more
    res = sweep(more, names, tmp_path, client=client, quiet=True, resume=True, report=False)
    lines = (tmp_path / "results.csv").read_text().splitlines()
    assert lines[1] == first and len(lines) == 3 and len(res.rows) == 2
    with pytest.raises(ValueError, match="not in this sweep's space"):
        sweep(Space({"lr": [0.2], "steps": STEPS}), names, tmp_path, client=client,
              quiet=True, resume=True)


@pytest.mark.parametrize("cut", ["in val_loss", "after a comma", "in the trial id",
                                 "before the newline"])
def test_resume_reruns_a_last_row_cut_short(names, names_path, client, tmp_path, cut, capsys):
    """A crash or a full disk while results.csv was written can leave its last row cut
    anywhere: --resume runs that trial again (it is not a finished trial) and ranks its real,
    full-precision val loss; the rows before it are kept as they were."""
    space = Space({"lr": [0.05, 0.1], "steps": STEPS})
    out = tmp_path / "out"
    sweep(space, names, out, client=client, quiet=True, report=False)
    path = out / "results.csv"
    text = path.read_text()
    header_and_first, last = text[:text.rindex("\n", 0, -1) + 1], text[text.rindex("\n", 0, -1)
                                                                      + 1:]
    row = next(csv.DictReader(io.StringIO(text.splitlines()[0] + "\n" + last)))
    tid, val = row["trial"], float(row["val_loss"])
    assert len(row["val_loss"]) > 8
    start = last.index(row["val_loss"])
    at = {"in val_loss": start + 3, "after a comma": start + len(row["val_loss"]) + 1,
          "in the trial id": 5, "before the newline": len(last) - 1}[cut]
    path.write_text(header_and_first + last[:at])
    if cut == "in val_loss":        # through the command, as a user resumes it
        assert main(["sweep", "--resume", str(out), "--workers", "1", "--quiet"]) == 0
        rows = {r["trial"]: r for r in csv.DictReader(io.StringIO(path.read_text()))}
        assert float(rows[tid]["val_loss"]) == val
    else:
        res = sweep(space, names_path, out, client=client, resume=True, stream=io.StringIO())
        assert res.rows[tid]["val_loss"] == val and res.rows[tid]["status"] == "ok"
    new = path.read_text()
    assert new.startswith(header_and_first) and len(new.splitlines()) == 3
    report = (out / "report.md").read_text()
    assert f"{val:.4f}" in report
    if cut == "in val_loss":
        assert f"{float(row['val_loss'][:3]):.4f}" not in report     # 2.6 was never trusted


def test_block_size_sweep_ships_one_dataset_per_size(names, client):
    space = Space({"block_size": [2, 3], "steps": STEPS})
    res = sweep(space, names, None, client=client, quiet=True, report=False)
    assert res.counts() == {"ok": 2}
    a, b = (res.rows[t.id]["val_loss"] for t in space.trials())
    assert a != b


def test_the_ladder_and_the_deep_net_through_the_sweep_match_one_after_another(names, client):
    from fastbn import lab
    rows = lab.run_ladder(names, steps=100, configs=["fix_tanh", "batchnorm"], client=client)
    local = lab.run_ladder(names, steps=100, configs=["fix_tanh", "batchnorm"], workers=0)
    for r, q in zip(rows, local):
        assert r.losses == q.losses and np.array_equal(r.history, q.history)
    deep = lab.run_deep(names, steps=20, gains=(1.0,), client=client)
    deep0 = lab.run_deep(names, steps=20, gains=(1.0,), workers=0)
    assert [d.losses for d in deep] == [d.losses for d in deep0]
    assert [d.final.loss for d in deep] == [d.final.loss for d in deep0]


def test_robustness_map(names, client, tmp_path):
    from fastbn.lab import robustness
    # lr 1e39 is +inf in the float32 nets: every run at it diverges at step 0 on every CPU
    m = robustness.run_robustness(names, tmp_path, gains=(0.5, 5 / 3), lrs=(0.1, 1e39),
                                  steps=50, client=client)
    for bn in (True, False):
        assert np.isfinite(m.val[bn][:, 0]).all() and np.isnan(m.val[bn][:, 1]).all()
        assert (m.diverged[bn][:, 1] == 1).all()
    md = (tmp_path / "robustness.md").read_text()
    assert "diverged" in md and "![robustness map](robustness.png)" in md
    assert (tmp_path / "robustness.png").stat().st_size > 1000
    rows = list(csv.DictReader(open(tmp_path / "robustness" / "results.csv", newline="")))
    assert len(rows) == 2 * 2 * 2


def test_sweep_without_dask_says_how_to_install_it(tmp_path):
    import os
    import subprocess
    import sys
    from pathlib import Path
    code = ("import sys; sys.modules['distributed'] = None; sys.modules['dask'] = None\n"
            "from fastbn.cli import main\n"
            "sys.exit(main(['sweep', '--param', 'steps=10', '--out', 'o']))\n")
    env = dict(os.environ, PYTHONPATH=str(Path(fastbn.__file__).resolve().parent.parent))
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                       cwd=tmp_path, timeout=120, check=False)
    assert r.returncode == 1, r.stderr
    assert "pip install 'fastbn[sweep]'" in r.stderr


def test_sweep_interrupt_is_a_warning_and_results_stay(names, tmp_path, monkeypatch):
    """Ctrl-C in the Python API: the sweep returns interrupted, having written what finished."""
    from fastbn.sweep import run as run_mod
    calls = []

    def fake_run_trials(client, todo, data, fn, on_result, **kw):
        from fastbn.sweep.trial import execute
        on_result(todo[0], execute(fn, data[3], todo[0]), 1)
        calls.append(len(todo))
        raise KeyboardInterrupt

    monkeypatch.setattr(run_mod, "run_trials", fake_run_trials)
    space = Space({"lr": [0.1, 0.2], "steps": 20})
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        res = sweep(space, names, tmp_path, client=object(), quiet=True)
    assert res.interrupted and len(res.rows) == 1 and calls == [2]
    assert any(issubclass(x.category, run_mod.SweepInterrupted) for x in w)
    assert len((tmp_path / "results.csv").read_text().splitlines()) == 2


_STOPPED_TRIAL = r"""
import json, os, signal, sys, threading, time, warnings
import numpy as np
from fastbn.data import Vocab, build_dataset, Dataset
from fastbn.sweep import Space, sweep

words = ["ab", "abc", "bca", "cab", "bb", "acca", "cc", "ba"] * 50
vocab = Vocab.from_words(words)
X, Y = build_dataset(words, vocab, 3)
ds = Dataset(None, words, vocab, 3, X, Y, X, Y, X, Y)


def terminate():            # once train() has taken SIGTERM over: the trial is under way
    while signal.getsignal(signal.SIGTERM) == signal.SIG_DFL:
        time.sleep(0.01)
    os.kill(os.getpid(), getattr(signal, sys.argv[2]))


threading.Thread(target=terminate, daemon=True).start()
space = Space({"steps": 50_000_000, "n_hidden": 8, "n_embd": 2})
with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    res = sweep(space, ds, sys.argv[1], workers=0, quiet=True, report=False)
print("RESULT " + json.dumps({"interrupted": res.interrupted, "rows": len(res.rows),
      "lines": len(open(os.path.join(sys.argv[1], "results.csv")).read().splitlines())}))
"""


@pytest.mark.parametrize("sig", ["SIGTERM", "SIGINT"])
def test_a_trial_in_the_main_thread_stopped_by_a_signal_is_not_recorded(tmp_path, sig):
    """Without Dask workers the trials train in the main thread, where train() stops on Ctrl-C
    or SIGTERM after the step under way: that partial run is not the trial's result (it would
    be ranked as finished); the sweep stops as interrupted, with nothing recorded for it."""
    import os
    import subprocess
    import sys
    from pathlib import Path
    env = dict(os.environ, PYTHONPATH=str(Path(fastbn.__file__).resolve().parent.parent))
    r = subprocess.run([sys.executable, "-c", _STOPPED_TRIAL, str(tmp_path / "out"), sig],
                       capture_output=True,
                       text=True, env=env, cwd=tmp_path, timeout=300, check=False)
    assert r.returncode == 0, r.stderr
    line = next(ln for ln in r.stdout.splitlines() if ln.startswith("RESULT "))
    assert json.loads(line[len("RESULT "):]) == {"interrupted": True, "rows": 0, "lines": 1}
