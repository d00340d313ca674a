"""Long runs lose nothing: periodic checkpoints, Ctrl-C, --resume, divergence, atomic saves."""
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import fastbn
import fastbn.data
from fastbn import CharMLP, checkpoint
from fastbn.cli import main
from fastbn.data import Vocab
from fastbn.training import train

VOCAB = Vocab.from_chars(".abcdefghijklmnopqrstuvwxyz")
# run subprocesses outside the source tree, importing the same fastbn as these tests
ENV = dict(os.environ, PYTHONPATH=str(Path(fastbn.__file__).resolve().parents[1]))


@pytest.fixture(scope="module")
def data():
    g = np.random.default_rng(0)
    X = g.integers(0, 27, size=(3000, 3))
    Y = np.where(g.random(3000) < 0.8, X[:, 2], g.integers(0, 27, 3000))
    return X, Y


@pytest.fixture
def words(tmp_path):
    g = np.random.default_rng(1)
    letters = np.array(list("abcdefghijklmnopqrstuvwxyz"))
    lines = ["".join(g.choice(letters, g.integers(3, 8))) for _ in range(2000)]
    p = tmp_path / "words.txt"
    p.write_text("\n".join(lines) + "\n")
    return p


def arrays(model):
    return [p.copy() for p in model.parameters()] + [b.copy() for _, b in model.named_buffers()]


@pytest.mark.parametrize("fused", [True, False])
def test_resume_equals_an_uninterrupted_run(tmp_path, data, fused):
    kw = dict(steps=700, batch_size=16, lr_schedule="0:0.1,400:0.01", seed=5, quiet=True,
              evaluate=False, fused=fused)
    whole = CharMLP(VOCAB, n_hidden=32, seed=2)
    r_whole = train(whole, data, **kw)

    saved = []
    first = CharMLP(VOCAB, n_hidden=32, seed=2)
    path = tmp_path / "run.npz"

    def save(state):
        checkpoint.save(first, path, state=state)
        saved.append(state.step)
        if state.step == 300:
            raise KeyboardInterrupt         # stands in for the end of a killed process
    with pytest.raises(KeyboardInterrupt):
        train(first, data, checkpoint=save, checkpoint_every=100, **kw)
    assert saved == [100, 200, 300]

    second = checkpoint.load(path)          # a new process: everything from the file
    r = train(second, data, resume=second.train_state, **kw)
    assert r.state.step == 700 and not r.interrupted
    np.testing.assert_array_equal(r.history, r_whole.history)
    for a, b in zip(arrays(second), arrays(whole)):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("batchnorm", [False, True])
def test_divergence_keeps_the_last_good_checkpoint(tmp_path, words, capsys, batchnorm):
    """lr 1e39 is +inf in float32: step 2500's update makes every parameter +-inf or NaN on
    every CPU, so the run diverges at step 2500 exactly (the fused path with batch norm, the
    per-layer one without); the checkpoint of step 2000 stays, and resuming from it diverges at
    step 2500 again, leaving it as it was."""
    out = tmp_path / "run"
    rc = main(["train", "--data", str(words), "--steps", "5000", "--batch-size", "16",
               "--lr-schedule", "0:0.1,2500:1e39", "--checkpoint-every", "1000",
               "--out", str(out), "--quiet", "--no-plot"]
              + ([] if batchnorm else ["--no-batchnorm"]))
    assert rc == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert err.startswith("fastbn train: error: training diverged at step 2500 (lr 1e+39)")
    assert f"the last good checkpoint is {out / 'model.npz'} (step 2000)" in err
    m = checkpoint.load(out / "model.npz")  # loads: finite parameters, consistent state
    assert m.train_state.step == 2000 and not m.meta.get("complete")
    assert all(np.all(np.isfinite(p)) for p in m.parameters())
    saved = (out / "model.npz").read_bytes()
    assert main(["train", "--resume", str(out / "model.npz"), "--quiet", "--no-plot"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert err.startswith("fastbn train: error: training diverged at step 2500 (lr 1e+39)")
    assert (out / "model.npz").read_bytes() == saved


TRAIN_ARGS = ["--steps", "400000", "--batch-size", "16", "--n-hidden", "24",
              "--checkpoint-every", "2000", "--quiet", "--no-plot", "--seed", "3",
              "--lr-schedule", "0:0.1,100000:0.01"]     # the same for the shorter reference run


def start_and_stop(tmp_path, words, sig):
    """`fastbn train` in a subprocess, sent ``sig`` once its first periodic checkpoint is on
    disk; returns (the process, its stdout, its stderr, the output folder)."""
    out = tmp_path / "run"
    p = subprocess.Popen([sys.executable, "-m", "fastbn", "train", "--data", str(words),
                          *TRAIN_ARGS, "--out", str(out)],
                         cwd=tmp_path, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True)
    deadline = time.time() + 60
    while not (out / "model.npz").exists() and time.time() < deadline and p.poll() is None:
        time.sleep(0.05)
    assert p.poll() is None, p.communicate()
    p.send_signal(sig)
    stdout, stderr = p.communicate(timeout=60)
    return p, stdout, stderr, out


def resume_equals_uninterrupted(tmp_path, words, ckpt, extra=500):
    """Resume ``ckpt`` to ``extra`` steps past where it stands and compare, bit for bit, with an
    uninterrupted run of that length."""
    m = checkpoint.load(ckpt)
    step = m.train_state.step
    # resume to a short end: rewrite the run's length in the checkpoint, then compare with an
    # uninterrupted run of that length
    m.meta["run"]["steps"] = step + extra
    checkpoint.save(m, ckpt, meta=m.meta, state=m.train_state)
    assert main(["train", "--resume", str(ckpt), "--quiet", "--no-plot"]) == 0
    resumed = checkpoint.load(ckpt)
    assert resumed.meta["complete"] and resumed.train_state.step == step + extra

    ref = tmp_path / "ref"
    args = [a if a != "400000" else str(step + extra) for a in TRAIN_ARGS]
    assert main(["train", "--data", str(words), *args, "--out", str(ref)]) == 0
    whole = checkpoint.load(ref / "model.npz")
    np.testing.assert_array_equal(resumed.train_state.history, whole.train_state.history)
    for a, b in zip(arrays(resumed), arrays(whole)):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("sig, status", [(signal.SIGINT, 130), (signal.SIGTERM, 143)],
                         ids=["SIGINT", "SIGTERM"])
def test_ctrl_c_or_sigterm_saves_a_resumable_checkpoint(tmp_path, words, sig, status):
    """Ctrl-C, or the SIGTERM a cluster scheduler sends before it preempts a job: the run stops
    after the step under way, writes its checkpoint, says how to continue, and exits with the
    shell's status of that signal (128 + its number); --resume continues it bit for bit."""
    p, stdout, stderr, out = start_and_stop(tmp_path, words, sig)
    assert p.returncode == status, stderr
    assert "Traceback" not in stderr and "continue with: fastbn train --resume" in stderr
    if sig == signal.SIGTERM:
        assert "interrupted by SIGTERM after step" in stderr
    m = checkpoint.load(out / "model.npz")
    step = m.train_state.step
    assert 0 < step < 400_000
    assert f"after step {step:,} of 400,000" in stderr      # the checkpoint of the stop
    resume_equals_uninterrupted(tmp_path, words, out / "model.npz")


def test_sigkill_resumes_from_the_last_periodic_checkpoint(tmp_path, words):
    """SIGKILL cannot be caught: what is left is the last periodic checkpoint, whole and
    loadable, and --resume continues from it exactly."""
    p, _, _, out = start_and_stop(tmp_path, words, signal.SIGKILL)
    assert p.returncode == -signal.SIGKILL
    m = checkpoint.load(out / "model.npz")
    step = m.train_state.step
    assert step > 0 and step % 2000 == 0 and not m.meta.get("complete")
    resume_equals_uninterrupted(tmp_path, words, out / "model.npz")


def test_resume_needs_a_training_state(tmp_path, capsys):
    path = checkpoint.save(CharMLP(VOCAB, seed=0), tmp_path / "m.npz")
    assert main(["train", "--resume", str(path), "--quiet"]) == 1
    assert "no training state" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        main(["train", "--resume", str(tmp_path / "missing.npz")])
    assert e.value.code == 2


def test_a_kill_during_save_leaves_the_previous_checkpoint(tmp_path):
    path = tmp_path / "model.npz"
    old = CharMLP(VOCAB, seed=0, n_hidden=400)
    new = CharMLP(VOCAB, seed=1, n_hidden=400)      # what the killed process saves
    checkpoint.save(old, path)
    code = (f"import numpy as np\nfrom fastbn import CharMLP, checkpoint\nfrom fastbn.data import "
            f"Vocab\nm = CharMLP(Vocab.from_chars({VOCAB.chars!r}), seed=1, n_hidden=400)\n"
            f"print('ready', flush=True)\nwhile True:\n    checkpoint.save(m, {str(path)!r})\n")
    for delay in (0.05, 0.13, 0.31):
        p = subprocess.Popen([sys.executable, "-c", code], cwd=tmp_path, env=ENV,
                             stdout=subprocess.PIPE, text=True)
        assert p.stdout.readline().strip() == "ready"
        time.sleep(delay)
        p.kill()                            # SIGKILL: no cleanup runs
        p.wait()
        m = checkpoint.load(path)          # whole: the old one or a complete new one
        loaded = arrays(m)
        same = [all(np.array_equal(a, b) for a, b in zip(loaded, arrays(ref)))
                for ref in (old, new)]
        assert len(loaded) == len(arrays(old)) and any(same), \
            "the checkpoint left by the kill holds neither the old nor the new model's weights"


# ----------------------------------------------------------------------------------------------
# --resume continues the same run: same data (by hash), same settings (from the checkpoint)

# one schedule for the part and the whole run (the default one scales with --steps)
RUN = ["--batch-size", "16", "--n-hidden", "16", "--no-plot", "--quiet", "--seed", "4",
       "--lr-schedule", "0:0.1,150:0.01"]


def stopped_run(tmp_path, words, at=200, steps=300):
    """A `fastbn train` checkpoint at step ``at`` of a ``steps``-step run (as Ctrl-C leaves it)."""
    out = tmp_path / "run"
    assert main(["train", "--data", str(words), "--steps", str(at), *RUN, "--out", str(out)]) == 0
    ckpt = out / "model.npz"
    m = checkpoint.load(ckpt)
    m.meta["run"]["steps"] = steps
    del m.meta["complete"]
    checkpoint.save(m, ckpt, meta=m.meta, state=m.train_state)
    return ckpt


def test_resume_checks_the_data_by_its_hash(tmp_path, words, capsys):
    ckpt = stopped_run(tmp_path, words)
    run = checkpoint.load(ckpt).meta["run"]
    assert run["data"] == str(words.resolve())
    assert run["data_sha256"] == fastbn.data.sha256_file(words)
    before = ckpt.read_bytes()

    # other words with the same vocabulary: refused (once only the vocabulary was compared)
    original = words.read_text()
    words.write_text("\n".join(reversed(original.splitlines())) + "\n")
    assert main(["train", "--resume", str(ckpt), "--quiet", "--no-plot"]) == 1
    err = capsys.readouterr().err
    assert f"fastbn train: error: {words.resolve()} has changed since this run trained on " \
           "it: its SHA-256 is" in err
    assert ckpt.read_bytes() == before
    other = tmp_path / "other.txt"
    other.write_text(words.read_text())
    assert main(["train", "--resume", str(ckpt), "--data", str(other), "--quiet",
                 "--no-plot"]) == 1
    assert f"{other.resolve()} is not the data this run trained on ({words.resolve()})" in \
        capsys.readouterr().err

    # moved: the stored path is gone, and --data points at a copy, which the hash accepts
    copy = tmp_path / "elsewhere" / "copy.txt"
    copy.parent.mkdir()
    copy.write_text(original)
    words.unlink()
    assert main(["train", "--resume", str(ckpt), "--quiet", "--no-plot"]) == 1
    assert "if it moved, pass --data PATH" in capsys.readouterr().err
    assert main(["train", "--resume", str(ckpt), "--data", str(copy), "--quiet",
                 "--no-plot"]) == 0
    resumed = checkpoint.load(ckpt)
    assert resumed.meta["complete"] and resumed.train_state.step == 300
    assert resumed.meta["run"]["data"] == str(copy.resolve())

    ref = tmp_path / "ref"
    assert main(["train", "--data", str(copy), "--steps", "300", *RUN, "--out", str(ref)]) == 0
    whole = checkpoint.load(ref / "model.npz")
    np.testing.assert_array_equal(resumed.train_state.history, whole.train_state.history)
    for a, b in zip(arrays(resumed), arrays(whole)):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("edit, match", [
    ({"steps": "many"}, "its run's steps must be a positive integer, got 'many'"),
    ({"steps": 100}, "its state is at step 200, past the run's 100 steps"),
    ({"batch_size": 0}, "its run's batch_size must be a positive integer"),
    ({"batch_size": 1}, "its run's batch size 1 cannot train with batch normalization"),
    ({"seed": -1}, "its run's seed must be a non-negative integer"),
    ({"lr_schedule": "fast"}, "its run's lr_schedule: cannot read"),
    ({"calibrate": "no"}, "its run's calibrate must be true or false"),
    ({"data": 7}, "its run's data must be a string"),
])
def test_resume_refuses_an_edited_run(tmp_path, words, capsys, edit, match):
    """The run settings in a checkpoint's meta are checked like the flags they came from: an
    edited file gives a message, not a traceback from deep in train()."""
    ckpt = stopped_run(tmp_path, words)
    m = checkpoint.load(ckpt)
    m.meta["run"].update(edit)
    checkpoint.save(m, ckpt, meta=m.meta, state=m.train_state)
    assert main(["train", "--resume", str(ckpt), "--quiet", "--no-plot"]) == 1
    err = capsys.readouterr().err
    assert f"fastbn train: error: cannot resume {ckpt}: {match}" in err, err


def test_resume_of_a_checkpoint_without_a_data_hash_warns(tmp_path, words, capsys):
    """Checkpoints written before the hash was stored still resume, with a warning."""
    ckpt = stopped_run(tmp_path, words)
    m = checkpoint.load(ckpt)
    del m.meta["run"]["data_sha256"]
    checkpoint.save(m, ckpt, meta=m.meta, state=m.train_state)
    assert main(["train", "--resume", str(ckpt), "--quiet", "--no-plot"]) == 0
    assert "stores no hash of its data" in capsys.readouterr().err
    resumed = checkpoint.load(ckpt)
    assert resumed.meta["run"]["data_sha256"] == fastbn.data.sha256_file(words)
