"""Tests for fastbn.train: the schedule, reproducibility, learning, calibration, progress, plot.

Tests that need names.txt read it from $FASTBN_DATA and are skipped when it is not set.
"""
import io
import math

import numpy as np
import pytest

from fastbn import CharMLP, data, train
from fastbn.registry import NONLINEARITIES
from fastbn.training import (
    DEFAULT_LR_SCHEDULE,
    TrainResult,
    format_lr_schedule,
    lr_at,
    parse_lr_schedule,
    plot_history,
)


@pytest.fixture
def tiny():
    """A small word list and model: fast, no names.txt needed."""
    words = ["ab", "abc", "bca", "cab", "bb", "acca", "cc", "ba"] * 10
    vocab = data.Vocab.from_words(words)
    X, Y = data.build_dataset(words, vocab, 3)
    return vocab, X, Y


def tiny_model(vocab, **kw):
    return CharMLP(vocab, n_embd=4, n_hidden=16, seed=kw.pop("seed", 0), **kw)


# ----------------------------------------------------------------------------------------------
# learning-rate schedule

def test_parse_lr_schedule():
    assert parse_lr_schedule("0:0.1,100000:0.01") == DEFAULT_LR_SCHEDULE
    assert parse_lr_schedule(" 0:0.1, 100_000:0.01 ") == DEFAULT_LR_SCHEDULE
    assert parse_lr_schedule("0.05") == ((0, 0.05),)
    assert parse_lr_schedule("0:1e-3") == ((0, 0.001),)
    assert format_lr_schedule(DEFAULT_LR_SCHEDULE) == "0:0.1,100000:0.01"
    assert parse_lr_schedule(format_lr_schedule(((0, 0.3), (5, 0.2)))) == ((0, 0.3), (5, 0.2))


@pytest.mark.parametrize("text, match", [
    ("", "empty"),
    ("abc", "cannot read"),
    ("0:0.1,x:0.01", "cannot read"),
    ("0:0.1:3", "cannot read"),
    ("0", "> 0"),
    ("-0.1", "> 0"),
    ("0:0.1,10:0", "> 0"),
    ("0:nan", "> 0"),
    ("0:inf", "> 0"),
    ("5:0.1", "start at step 0"),
    ("0:0.1,10:0.01,10:0.001", "increase"),
    ("0:0.1,-10:0.01", "increase|>= 0"),
])
def test_parse_lr_schedule_errors(text, match):
    with pytest.raises(ValueError, match=match):
        parse_lr_schedule(text)


def test_lr_at():
    assert [lr_at(DEFAULT_LR_SCHEDULE, s) for s in (0, 99_999, 100_000, 10**9)] == \
        [0.1, 0.1, 0.01, 0.01]
    assert lr_at(0.5, 123) == 0.5


def test_the_schedule_is_applied_per_step(tiny):
    vocab, X, Y = tiny
    seen = []
    train(tiny_model(vocab), (X, Y), steps=10, batch_size=8, lr_schedule="0:0.3,4:0.2,7:0.1",
          quiet=True, callback=lambda step, loss, lr: seen.append((step, lr)), every=1)
    assert seen == [(i, 0.3) for i in range(4)] + [(i, 0.2) for i in range(4, 7)] + \
        [(i, 0.1) for i in range(7, 10)]


# ----------------------------------------------------------------------------------------------
# the loop

def test_train_result(tiny):
    vocab, X, Y = tiny
    m = tiny_model(vocab)
    calls = []
    r = train(m, (X, Y), steps=50, batch_size=8, lr_schedule=0.1, seed=3, quiet=True,
              callback=lambda *a: calls.append(a[0]), every=20)
    assert isinstance(r, TrainResult)
    assert r.history.shape == (50,) and r.history.dtype == np.float64
    assert np.all(np.isfinite(r.history))
    np.testing.assert_allclose(r.log10_history, np.log10(r.history))
    assert r.steps == 50 and r.batch_size == 8 and r.wall_time > 0
    assert r.us_per_step == pytest.approx(1e6 * r.wall_time / 50)
    assert calls == [0, 20, 40, 49]
    assert set(r.losses) == {"train"} and r.losses_running is None and not r.calibrated
    assert r.losses["train"] == pytest.approx(m.evaluate(X, Y))
    assert m.training                        # left in the mode it was in (training)


def test_two_runs_with_the_same_seed_are_bit_identical(tiny):
    vocab, X, Y = tiny

    def run(seed):
        m = tiny_model(vocab, seed=1)
        r = train(m, (X, Y), steps=200, batch_size=8, lr_schedule="0:0.2,100:0.05", seed=seed,
                  quiet=True, evaluate=False)
        return r.history, m.parameters() + [b for _, b in m.named_buffers()]

    h1, p1 = run(7)
    h2, p2 = run(7)
    h3, _ = run(8)
    np.testing.assert_array_equal(h1, h2)
    for a, b in zip(p1, p2):
        np.testing.assert_array_equal(a, b)
    assert not np.array_equal(h1, h3)


def test_generator_and_seedsequence_seeds_are_reproducible(tiny):
    vocab, X, Y = tiny

    def run(seed):
        return train(tiny_model(vocab), (X, Y), steps=30, batch_size=4, seed=seed, quiet=True,
                     evaluate=False).history

    np.testing.assert_array_equal(run(np.random.default_rng(5)), run(np.random.default_rng(5)))
    np.testing.assert_array_equal(run(np.random.SeedSequence(5)), run(np.random.SeedSequence(5)))
    assert not np.array_equal(run(np.random.default_rng(5)), run(np.random.default_rng(6)))


@pytest.mark.parametrize("bn_unbiased", [False, True])
@pytest.mark.parametrize("dtype,tol", [(np.float64, 1e-12), (np.float32, 1e-4)])
def test_fused_and_per_layer_paths_agree(tiny, dtype, tol, bn_unbiased):
    """Same seed and data: the compiled loop and the teaching path see the same minibatches and
    compute the same losses, to float tolerance (with either batch-norm variance: "auto" takes
    the compiled loop for the lecture's too)."""
    vocab, X, Y = tiny
    runs = {}
    for fused in (True, False):
        m = CharMLP(vocab, block_size=X.shape[1], n_embd=5, n_hidden=24, dtype=dtype, seed=4,
                    bn_unbiased=bn_unbiased)
        assert train(CharMLP(vocab, block_size=X.shape[1], bn_unbiased=bn_unbiased), (X, Y),
                     steps=1, batch_size=4, quiet=True, evaluate=False).path == "fused"
        r = train(m, (X, Y), steps=300, batch_size=16, lr_schedule="0:0.2,150:0.05", seed=3,
                  quiet=True, evaluate=False, fused=fused)
        assert r.path == ("fused" if fused else "per-layer")
        runs[fused] = (r.history, m.parameters())
    np.testing.assert_allclose(runs[True][0][:50], runs[False][0][:50], rtol=tol, atol=tol)
    assert abs(runs[True][0][-50:].mean() - runs[False][0][-50:].mean()) < 1e3 * tol + 1e-9


@pytest.mark.parametrize("activation", NONLINEARITIES)
def test_every_activation_trains_and_only_tanh_on_the_fused_path(tiny, activation):
    vocab, X, Y = tiny
    m = tiny_model(vocab, activation=activation, dtype=np.float64)
    r = train(m, (X, Y), steps=300, batch_size=16, lr_schedule="0.2", seed=1, quiet=True,
              evaluate=False)
    assert r.path == ("fused" if activation == "tanh" else "per-layer")
    assert r.history[-50:].mean() < r.history[:10].mean() - 0.3
    if activation != "tanh":
        with pytest.raises(ValueError, match="written for tanh"):
            train(m, (X, Y), steps=1, quiet=True, evaluate=False, fused=True)


def test_default_model_trains_on_the_fused_path_and_callback_sees_its_step(tiny):
    vocab, X, Y = tiny
    seen = []
    m = CharMLP(vocab, block_size=X.shape[1], n_embd=5, n_hidden=24, seed=4)
    r = train(m, (X, Y), steps=250, batch_size=8, seed=1, quiet=True, evaluate=False, every=100,
              callback=lambda step, loss, lr: seen.append((step, loss)))
    assert r.path == "fused"
    assert [s for s, _ in seen] == [0, 100, 200, 249]
    assert all(loss == r.history[s] for s, loss in seen)


def test_the_callback_sees_the_gradients_of_its_step(tiny):
    """On both paths, model.grads() in the callback are those of the step it reports."""
    vocab, X, Y = tiny
    grads = {}
    for fused in (True, False):
        m = CharMLP(vocab, block_size=X.shape[1], n_embd=5, n_hidden=24, dtype=np.float64,
                    seed=4)
        seen = grads[fused] = {}

        def keep(step, loss, lr, m=m, seen=seen):
            seen[step] = [g.copy() for g in m.grads()]
        train(m, (X, Y), steps=120, batch_size=8, seed=1, quiet=True, evaluate=False, every=50,
              fused=fused, callback=keep)
    assert sorted(grads[True]) == [0, 50, 100, 119]
    for step in grads[True]:
        for a, b in zip(grads[True][step], grads[False][step]):
            np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-12)
    with pytest.raises(ValueError, match="fused step"):
        train(CharMLP(vocab, block_size=X.shape[1], activation="relu", seed=0), (X, Y), steps=5,
              quiet=True, fused=True)


@pytest.mark.parametrize("kw, err, match", [
    ({"steps": 0}, ValueError, "steps"),
    ({"batch_size": 0}, ValueError, "batch_size"),
    ({"batch_size": 1}, ValueError, "batch normalization"),
    ({"lr_schedule": -0.1}, ValueError, "> 0"),
    ({"lr_schedule": ((0, 0.1), (0, 0.2))}, ValueError, "increase"),
])
def test_train_argument_errors(tiny, kw, err, match):
    vocab, X, Y = tiny
    with pytest.raises(err, match=match):
        train(tiny_model(vocab), (X, Y), **{"quiet": True, **kw})
    with pytest.raises(TypeError, match="Dataset"):
        train(tiny_model(vocab), X, steps=1)


def test_batch_size_one_without_batchnorm_trains(tiny):
    vocab, X, Y = tiny
    r = train(tiny_model(vocab, batchnorm=False), (X, Y), steps=20, batch_size=1, quiet=True)
    assert np.all(np.isfinite(r.history))


@pytest.mark.parametrize("batchnorm", [False, True])
def test_non_finite_loss_stops_with_the_step(tiny, batchnorm):
    """Divergence at a known step on every CPU: lr 1e39 is +inf once rounded to the float32
    model's dtype, so step 13's update makes every parameter +-inf or NaN (inf * g), whatever
    the arithmetic; the steps before, at lr 0.1, are good."""
    vocab, X, Y = tiny
    m = tiny_model(vocab, batchnorm=batchnorm)
    with pytest.raises(FloatingPointError, match=r"^training diverged at step 13 \(lr 1e\+39\): "
                                                 r"weight of layer 0 is not finite"):
        train(m, (X, Y), steps=100, batch_size=8, lr_schedule="0:0.1,13:1e39", quiet=True)


def test_calibration_after_training(tiny):
    vocab, X, Y = tiny
    m = tiny_model(vocab, dtype=np.float64)
    r = train(m, (X, Y), steps=40, batch_size=8, quiet=True, calibrate=True)
    assert r.calibrated and set(r.losses_running) == {"train"}
    bn = m.batchnorms()[0]
    rm, rv = bn.running_mean.copy(), bn.running_var.copy()
    m.calibrate_batchnorm(X)                      # calibrating again changes nothing
    np.testing.assert_allclose(bn.running_mean, rm, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(bn.running_var, rv, rtol=1e-12)
    assert r.losses["train"] == pytest.approx(m.evaluate(X, Y), rel=1e-12)


# ----------------------------------------------------------------------------------------------
# progress output

class FakeTTY(io.StringIO):
    def isatty(self):
        return True


def test_progress_bar_on_a_terminal_lines_otherwise_nothing_when_quiet(tiny):
    vocab, X, Y = tiny
    kw = {"steps": 25, "batch_size": 8, "evaluate": False, "log_every": 10}
    tty = FakeTTY()
    train(tiny_model(vocab), (X, Y), stream=tty, **kw)
    assert "\r" in tty.getvalue() and "25/25" in tty.getvalue() and "loss" in tty.getvalue()
    log = io.StringIO()
    train(tiny_model(vocab), (X, Y), stream=log, **kw)
    lines = log.getvalue().splitlines()
    assert "\r" not in log.getvalue()
    assert [ln.split("/")[0].strip() for ln in lines] == ["0", "10", "20", "24"]
    quiet = FakeTTY()
    train(tiny_model(vocab), (X, Y), stream=quiet, quiet=True, **kw)
    assert quiet.getvalue() == ""


# ----------------------------------------------------------------------------------------------
# the loss plot

def test_plot_history_writes_a_png(tmp_path):
    pytest.importorskip("matplotlib")
    h = np.exp(-np.linspace(0, 1, 2500)) + 2
    from matplotlib.figure import Figure
    fig = plot_history(h, tmp_path / "sub" / "loss.png", schedule=((0, 0.1), (1000, 0.01)))
    out = tmp_path / "sub" / "loss.png"
    assert isinstance(fig, Figure) and fig._repr_png_()[:8] == b"\x89PNG\r\n\x1a\n"
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert isinstance(plot_history(h), Figure)          # no path: a figure, no file
    assert sorted(p.name for p in out.parent.iterdir()) == ["loss.png"]   # no temp file left


def test_2000_steps_bring_the_loss_below_2_6(names, tmp_path):
    """2,000 steps of the default recipe (lr 0.1). Judged honestly in eval mode (running BN
    statistics, momentum 0.001) on the held-out dev split, and on the minibatch losses."""
    m = CharMLP(names.vocab, seed=0)
    r = train(m, names, steps=2000, seed=0, quiet=True, plot=tmp_path / "loss.png")
    assert r.history[:10].mean() == pytest.approx(math.log(27), abs=0.15)
    assert r.history[-200:].mean() < 2.6
    assert r.losses["val"] < 2.6 and r.losses["train"] < 2.6 and r.losses["test"] < 2.6
    assert set(r.losses) == {"train", "val", "test"}
    if r.plot_path is not None:
        assert r.plot_path.is_file()


# ----------------------------------------------------------------------------------------------
# no silent state: the mode, the layers' outputs, probes, interrupts, reprs

@pytest.mark.parametrize("fused", [True, False])
def test_train_leaves_the_mode_as_it_found_it_and_train_step_refuses_eval_mode(tiny, fused):
    vocab, X, Y = tiny
    m = tiny_model(vocab)
    train(m, (X, Y), steps=20, batch_size=8, quiet=True, fused=fused)
    assert m.training
    before = [b.copy() for _, b in m.named_buffers()]
    m.train_step(X[:8], Y[:8], 0.1)                    # trains: the running statistics move
    assert any(not np.array_equal(a, b) for a, (_, b) in zip(before, m.named_buffers()))
    m.eval()
    train(m, (X, Y), steps=20, batch_size=8, quiet=True, fused=fused)
    assert not m.training
    with pytest.raises(RuntimeError, match=r"eval mode.*model\.train\(\)"):
        m.train_step(X[:8], Y[:8], 0.1)


def _draws(seed, n, N, B, steps):
    from fastbn.fused import BatchSampler
    from fastbn.training import _sampler_seed
    s = BatchSampler(_sampler_seed(seed))
    for _ in range(steps):
        ix = s.draw(N, B)
    return ix


@pytest.mark.parametrize("fused", [True, False])
def test_after_train_the_layers_hold_the_last_training_minibatch_not_the_evaluation(tiny, fused):
    vocab, X, Y = tiny
    m = tiny_model(vocab)
    r = train(m, (X, Y), steps=37, batch_size=8, seed=5, quiet=True, fused=fused, every=10)
    assert r.path == ("fused" if fused else "per-layer")
    ix = _draws(5, 1, len(X), 8, 37)                   # the run's last minibatch
    emb, lin, bn, tanh = m.layers[:4]
    assert tanh.out.shape == (8, 16) and tanh.dout.shape == (8, 16)
    if fused:       # recomputed through the final parameters: exactly the embedding of that batch
        np.testing.assert_array_equal(emb.out, emb.weight[X[ix]].reshape(8, -1))
    else:           # the last step's own forward, before its update
        assert emb.out.shape == (8, 12)
    # the refresh put back the running statistics and the last step's gradients
    m2 = tiny_model(vocab)
    train(m2, (X, Y), steps=37, batch_size=8, seed=5, quiet=True, fused=fused, every=10,
          evaluate=False)
    for (_, a), (_, b) in zip(m.named_buffers(), m2.named_buffers()):
        np.testing.assert_array_equal(a, b)
    for a, b in zip(m.grads(), m2.grads()):
        np.testing.assert_array_equal(a, b)


def test_evaluate_and_sample_leave_the_layers_outputs_and_caches_alone(tiny):
    vocab, X, Y = tiny
    m = tiny_model(vocab)
    m.forward(X[:8], Y[:8])
    m.backward()
    held = [(layer, {k: getattr(layer, k, None) for k in ("out", "dout", "_cache")})
            for layer in m.layers]
    ce = m._ce_cache
    m.evaluate(X, Y)
    m.sample(3, seed=0)
    m.calibrate_batchnorm(X)
    for layer, attrs in held:
        for k, v in attrs.items():
            assert getattr(layer, k, None) is v, (layer, k)
    assert m._ce_cache is ce and m.training
    m.backward()                                       # still the training batch's backward


def test_a_probe_takes_the_per_layer_path_and_fused_true_refuses_it(tiny):
    from fastbn import lab
    vocab, X, Y = tiny
    m = tiny_model(vocab)
    probe = lab.Probe(m, every=10)
    r = train(m, (X, Y), steps=30, batch_size=8, quiet=True, callback=probe, every=10)
    assert r.path == "per-layer" and [s.step for s in probe.snapshots] == [0, 10, 20, 29]
    m2 = tiny_model(vocab)
    probe2 = lab.Probe(m2, every=10)
    with pytest.raises(ValueError, match="fused=False"):
        train(m2, (X, Y), steps=30, batch_size=8, quiet=True, callback=probe2, fused=True)
    assert probe2.snapshots == []                      # refused before recording anything


def test_train_result_repr_is_short(tiny):
    vocab, X, Y = tiny
    r = train(tiny_model(vocab), (X, Y), steps=200, batch_size=8, quiet=True)
    text = repr(r)
    assert len(text) < 200, text
    assert text.startswith("TrainResult(200 steps of batch 8, fused path") and "train " in text


class _Terminal(io.StringIO):
    def isatty(self):
        return True


def test_progress_bar_on_a_terminal_shows_rate_eta_and_loss(tiny):
    vocab, X, Y = tiny
    out = _Terminal()
    train(tiny_model(vocab), (X, Y), steps=3000, batch_size=8, stream=out)
    text = out.getvalue()
    assert "3000/3000" in text and "step/s" in text and "loss " in text and "<" in text
    assert text.count("\n") <= 2                       # one line, rewritten in place
