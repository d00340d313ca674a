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
from fastbn import CharMLP, checkpoint
from fastbn.cli import main
from fastbn.data import Vocab
from fastbn.train import train

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


def test_divergence_keeps_the_last_good_checkpoint(tmp_path, words):
    out = tmp_path / "run"
    rc = main(["train", "--data", str(words), "--no-batchnorm", "--steps", "5000",
               "--batch-size", "16", "--lr-schedule", "0:0.1,2500:1e30",
               "--checkpoint-every", "1000", "--out", str(out), "--quiet", "--no-plot"])
    assert rc == 1
    m = checkpoint.load(out / "model.npz")  # loads: finite parameters, consistent state
    assert m.train_state.step == 2000 and not m.meta.get("complete")
    assert all(np.all(np.isfinite(p)) for p in m.parameters())


def test_ctrl_c_saves_a_resumable_checkpoint(tmp_path, words):
    out = tmp_path / "run"
    args = ["--data", str(words), "--steps", "400000", "--batch-size", "16", "--n-hidden", "24",
            "--checkpoint-every", "2000", "--quiet", "--no-plot", "--seed", "3"]
    p = subprocess.Popen([sys.executable, "-m", "fastbn", "train", *args, "--out", str(out)],
                         cwd=tmp_path, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True)
    deadline = time.time() + 60
    while not (out / "model.npz").exists() and time.time() < deadline and p.poll() is None:
        time.sleep(0.05)
    p.send_signal(signal.SIGINT)
    stdout, stderr = p.communicate(timeout=60)
    assert p.returncode == 130, stderr
    assert "Traceback" not in stderr and "continue with: fastbn train --resume" in stderr
    m = checkpoint.load(out / "model.npz")
    step = m.train_state.step
    assert 0 < step < 400_000

    # resume to a short end: rewrite the run's length in the checkpoint, then compare with an
    # uninterrupted run of that length
    m.meta["run"]["steps"] = step + 500
    checkpoint.save(m, out / "model.npz", meta=m.meta, state=m.train_state)
    assert main(["train", "--resume", str(out / "model.npz"), "--quiet", "--no-plot"]) == 0
    resumed = checkpoint.load(out / "model.npz")
    assert resumed.meta["complete"] and resumed.train_state.step == step + 500

    ref = tmp_path / "ref"
    assert main(["train", *args[:2], "--steps", str(step + 500), *args[4:],
                 "--out", str(ref)]) == 0
    whole = checkpoint.load(ref / "model.npz")
    np.testing.assert_array_equal(resumed.train_state.history, whole.train_state.history)
    for a, b in zip(arrays(resumed), arrays(whole)):
        np.testing.assert_array_equal(a, b)


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
        np.testing.assert_array_equal(m.layers[1].weight.shape, (30, 400))
