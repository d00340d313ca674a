"""Tests for fastbn.model.CharMLP: structure, init schemes, modes, evaluation, calibration,
sampling, and the whole forward/backward against finite differences.

Tests that need names.txt read it from $FASTBN_DATA and are skipped when it is not set.
"""
import math

import numpy as np
import pytest

from fastbn import CharMLP, data, init, nn
from fastbn._opinfo import NONLINEARITIES, OPS
from fastbn.gradchecks import GradcheckError, gradcheck
from fastbn.model import ACTIVATIONS, INIT_SCHEMES, LADDER

SMALL_VOCAB = data.Vocab(".abcdef")


def small(**kw):
    args = {"block_size": 3, "n_embd": 4, "n_hidden": 8, "seed": 0}
    args.update(kw)
    return CharMLP(SMALL_VOCAB, **args)


def small_batch(n=16, seed=1, block_size=3):
    rng = np.random.default_rng(seed)
    return rng.integers(0, SMALL_VOCAB.size, (n, block_size)), rng.integers(0, SMALL_VOCAB.size, n)


# ----------------------------------------------------------------------------------------------
# structure

def test_default_model_is_the_lectures_bn_mlp():
    m = CharMLP(data.Vocab(".abcdefghijklmnopqrstuvwxyz"), seed=0)
    assert m.num_parameters() == 12_097
    kinds = [type(layer) for layer in m.layers]
    assert kinds == [nn.Embedding, nn.Linear, nn.BatchNorm1d, nn.Tanh, nn.Linear]
    shapes = {n: p.shape for n, p in m.named_parameters()}
    assert shapes == {"0.weight": (27, 10), "1.weight": (30, 200), "2.gamma": (200,),
                      "2.beta": (200,), "4.weight": (200, 27), "4.bias": (27,)}
    bn = m.layers[2]
    assert bn.momentum == 0.001 and bn.eps == 1e-5
    assert all(p.dtype == np.float32 for p in m.parameters())
    assert [g.shape for g in m.grads()] == [p.shape for p in m.parameters()]
    assert [n for n, _ in m.named_buffers()] == ["2.running_mean", "2.running_var"]


def test_parameter_counts_of_the_lectures_other_models():
    V = data.Vocab(".abcdefghijklmnopqrstuvwxyz")
    assert CharMLP(V, batchnorm=False, seed=0).num_parameters() == 11_897
    deep = CharMLP(V, n_hidden=100, n_layers=5, final_bn=True, bn_momentum=0.1, seed=0)
    assert deep.num_parameters() == 47_024
    assert type(deep.layers[-1]) is nn.BatchNorm1d and deep.layers[-2].bias is None
    np.testing.assert_array_equal(deep.layers[-1].gamma, np.full(27, 0.1, np.float32))
    assert len(deep.batchnorms()) == 6


def test_bn_unbiased_reaches_every_batchnorm_config_and_repr():
    m = small(n_layers=2, final_bn=True, bn_unbiased=True)
    assert m.config["bn_unbiased"] is True and len(m.batchnorms()) == 3
    assert all(bn.unbiased for bn in m.batchnorms())
    assert repr(m).count("unbiased=True") == 3
    d = small()
    assert d.config["bn_unbiased"] is False and not any(bn.unbiased for bn in d.batchnorms())
    assert "unbiased" not in repr(d)
    # the same parameters either way (the option changes no draw); the training losses differ
    for a, b in zip(m.parameters(), small(n_layers=2, final_bn=True).parameters()):
        np.testing.assert_array_equal(a, b)
    X, Y = small_batch()
    assert m.train().forward(X, Y) != small(n_layers=2, final_bn=True).train().forward(X, Y)


def test_options():
    m = small(batchnorm=False, activation="relu")
    assert not m.batchnorms() and not m.named_buffers()
    assert all(layer.bias is not None for layer in m.layers if isinstance(layer, nn.Linear))
    assert any(isinstance(layer, nn.ReLU) for layer in m.layers)
    m = small(n_layers=3, activation="leaky_relu", negative_slope=0.2)
    assert len(m.batchnorms()) == 3
    leaky = [layer for layer in m.layers if isinstance(layer, nn.LeakyReLU)]
    assert len(leaky) == 3 and leaky[0].negative_slope == 0.2
    assert [layer.bias is None for layer in m.layers if isinstance(layer, nn.Linear)] == \
        [True, True, True, False]
    m = small(dtype=np.float64)
    assert all(p.dtype == np.float64 for p in m.parameters() + m.grads())
    X, Y = small_batch()
    assert m.train().forward(X, Y).dtype == np.float64
    assert m.config["n_layers"] == 1 and m.dtype == np.float64


@pytest.mark.parametrize("kw, err, match", [
    ({"n_hidden": 0}, ValueError, "n_hidden"),
    ({"n_layers": 1.5}, ValueError, "n_layers"),
    ({"block_size": True}, ValueError, "block_size"),
    ({"activation": "gelu"}, ValueError, "activation"),
    ({"init": "xavier"}, ValueError, "init"),
    ({"bn_momentum": 1.5}, ValueError, "bn_momentum"),
    ({"bn_eps": -1}, ValueError, "bn_eps"),
    ({"bn_unbiased": "yes"}, TypeError, "bn_unbiased must be True or False"),
    ({"bn_unbiased": 1}, TypeError, "bn_unbiased must be True or False"),
    ({"dtype": np.float16}, TypeError, "float32 or float64"),
])
def test_invalid_options(kw, err, match):
    with pytest.raises(err, match=match):
        small(**kw)
    with pytest.raises(TypeError, match="vocab"):
        CharMLP(27)


def test_same_seed_same_parameters_and_generator_accepted():
    a, b, c = small(seed=5), small(seed=5), small(seed=6)
    for p, q in zip(a.parameters(), b.parameters()):
        np.testing.assert_array_equal(p, q)
    assert not np.array_equal(a.parameters()[0], c.parameters()[0])
    d = small(seed=np.random.default_rng(5))
    for p, q in zip(a.parameters(), d.parameters()):
        np.testing.assert_array_equal(p, q)


# ----------------------------------------------------------------------------------------------
# init schemes

def _params64(init, **kw):
    m = small(init=init, batchnorm=False, dtype=np.float64, n_hidden=50, seed=11, **kw)
    return dict(m.named_parameters())


def test_init_schemes_scale_the_same_draws():
    o = _params64("original")
    fs, ft, k = _params64("fix_softmax"), _params64("fix_tanh"), _params64("kaiming")
    for p in (fs, ft, k):
        np.testing.assert_array_equal(p["0.weight"], o["0.weight"])   # embedding: N(0,1)
    # hidden Linear (layer 1): W and b
    np.testing.assert_array_equal(fs["1.weight"], o["1.weight"])
    np.testing.assert_array_equal(fs["1.bias"], o["1.bias"])
    np.testing.assert_allclose(ft["1.weight"], 0.2 * o["1.weight"], rtol=1e-15)
    np.testing.assert_allclose(ft["1.bias"], 0.01 * o["1.bias"], rtol=1e-15)
    np.testing.assert_allclose(k["1.weight"], o["1.weight"] * (5 / 3) / math.sqrt(12),
                               rtol=1e-15)
    np.testing.assert_array_equal(k["1.bias"], 0)
    # output Linear (layer 3)
    for p in (fs, ft, k):
        np.testing.assert_allclose(p["3.weight"], 0.01 * o["3.weight"], rtol=1e-15)
        np.testing.assert_array_equal(p["3.bias"], 0)
    assert abs(o["3.bias"]).max() > 0.1   # original: N(0,1) bias


@pytest.mark.parametrize("activation, gain", [("relu", math.sqrt(2)),
                                              ("leaky_relu", math.sqrt(2 / (1 + 0.01**2)))])
def test_kaiming_uses_the_activations_gain(activation, gain):
    o, k = _params64("original", activation=activation), _params64("kaiming", activation=activation)
    np.testing.assert_allclose(k["1.weight"], o["1.weight"] * gain / math.sqrt(12), rtol=1e-15)


@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_every_activation_of_the_registry_is_a_model_activation(activation):
    """Its layer after each hidden block, and the kaiming init scaled by its gain."""
    assert ACTIVATIONS == NONLINEARITIES
    m = small(n_layers=2, activation=activation)
    acts = [layer for layer in m.layers if isinstance(layer, OPS[activation].nonlinearity.layer)]
    assert len(acts) == 2 and m.config["activation"] == activation
    o, k = _params64("original", activation=activation), _params64("kaiming", activation=activation)
    np.testing.assert_allclose(k["1.weight"],
                               o["1.weight"] * init.calculate_gain(activation) / math.sqrt(12),
                               rtol=1e-15)


def test_ladder_names_cover_the_lectures_five_configurations():
    assert list(LADDER) == ["original", "fix_softmax", "fix_tanh", "kaiming", "batchnorm"]
    assert {cfg["init"] for cfg in LADDER.values()} == set(INIT_SCHEMES)
    assert LADDER["batchnorm"] == {"init": "kaiming", "batchnorm": True}


def test_initial_loss_is_ln27_on_names(names):
    m = CharMLP(names.vocab, seed=0)
    X, Y = names.Xtr[:5000], names.Ytr[:5000]
    assert float(m.train().forward(X, Y)) == pytest.approx(math.log(27), abs=0.05)
    assert m.evaluate(names.Xdev, names.Ydev) == pytest.approx(math.log(27), abs=0.05)


def test_ladder_initial_losses_on_names(names):
    X, Y = names.Xtr[:5000], names.Ytr[:5000]
    losses = {k: float(CharMLP(names.vocab, seed=0, **cfg).train().forward(X, Y))
              for k, cfg in LADDER.items()}
    assert losses["original"] > 15          # the lecture's ~27: confidently wrong
    for k in ("fix_softmax", "fix_tanh", "kaiming", "batchnorm"):
        assert losses[k] == pytest.approx(math.log(27), abs=0.05), k


# ----------------------------------------------------------------------------------------------
# modes, forward, backward, step

def test_train_and_eval_modes():
    m = small()
    X, Y = small_batch()
    bn = m.batchnorms()[0]
    rm0, rv0 = bn.running_mean.copy(), bn.running_var.copy()
    assert m.training
    m.eval().forward(X, Y)
    assert not m.training and not bn.training
    np.testing.assert_array_equal(bn.running_mean, rm0)
    m.train().forward(X, Y)
    assert bn.training and not np.array_equal(bn.running_mean, rm0)
    np.testing.assert_allclose(bn.running_var, 0.999 * rv0 + 0.001 * bn._cache.var, rtol=1e-6)


def test_forward_checks_shapes():
    m = small()
    with pytest.raises(ValueError, match=r"shape \(B, 3\)"):
        m.forward(np.zeros((4, 2), np.int64), np.zeros(4, np.int64))
    with pytest.raises(IndexError):
        m.forward(np.full((4, 3), 7), np.zeros(4, np.int64))
    with pytest.raises(RuntimeError, match="before forward"):
        small().backward()


def test_train_step_is_forward_backward_sgd():
    X, Y = small_batch()
    a, b = small(dtype=np.float64), small(dtype=np.float64)
    loss = a.train_step(X, Y, 0.5)
    assert loss == float(b.forward(X, Y))
    b.backward()
    for p, q, g in zip(a.parameters(), b.parameters(), b.grads()):
        np.testing.assert_array_equal(p, q - 0.5 * g)


class _Declining:
    """fastbn._kernels with every compiled common case declining (ops's general path, NumPy's
    update of the parameters and of the running statistics)."""

    def __getattr__(self, name):
        from fastbn import _kernels
        if name.endswith("_fast"):
            return lambda *args: None
        if name in ("sgd_update", "copy_arrays", "batchnorm_running_update"):
            return lambda *args: False
        if name == "sgd_update_finite":
            return lambda *args: None
        return getattr(_kernels, name)


def formula_step(model, X, Y, lr):
    """``train_step`` as it was written before issue 14: the running statistics copied and put
    back on a non-finite loss, then ``p -= lr * g`` by NumPy, one parameter at a time."""
    if model.batchnorms():
        saved = [b.copy() for _, b in model.named_buffers()]
    loss = model.forward(X, Y)
    if not np.isfinite(loss):
        if model.batchnorms():
            for (_, b), old in zip(model.named_buffers(), saved):
                b[...] = old
        return float(loss)
    model.backward()
    for p, g in zip(model.parameters(), model.grads()):
        p -= lr * g
    return float(loss)


def state(model):
    return ([a.copy() for a in model.parameters() + model.grads()]
            + [b.copy() for _, b in model.named_buffers()])


@pytest.mark.parametrize("lr", [0.1, np.float64(0.1), np.float32(0.25), 1], ids=repr)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("kw", [{}, {"batchnorm": False, "activation": "relu"},
                                {"n_layers": 2, "activation": "elu", "final_bn": True}],
                         ids=["default", "relu", "deep-elu"])
def test_train_step_equals_the_formula_step_by_step(kw, dtype, lr, monkeypatch):
    """The per-layer step (compiled common cases, one compiled SGD update, the buffers copied by
    one compiled call) against the formula it replaced, run on ops's general path: the same
    losses, parameters, gradients, running statistics and layer outputs, bit for bit, step by
    step; and each step's .out and .dout are new arrays (the lab tells steps apart by them)."""
    a, b = small(dtype=dtype, **kw), small(dtype=dtype, **kw)
    for step in range(6):
        X, Y = small_batch(seed=step)
        before = [layer.out for layer in a.layers] if step else None
        loss_a = a.train_step(X, Y, lr)
        with monkeypatch.context() as m:
            m.setattr("fastbn.ops.K", _Declining())
            m.setattr("fastbn.model._kernels", _Declining())
            m.setattr("fastbn.nn._kernels", _Declining())
            loss_b = formula_step(b, X, Y, lr)
        assert loss_a == loss_b, step
        for p, q in zip(state(a), state(b)):
            assert p.dtype == q.dtype and p.tobytes() == q.tobytes(), step
        for la, lb in zip(a.layers, b.layers):
            assert la.out.tobytes() == lb.out.tobytes() and la.dout.tobytes() == lb.dout.tobytes()
        if before:
            assert all(layer.out is not old for layer, old in zip(a.layers, before))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_a_non_finite_loss_changes_nothing(dtype):
    m = small(dtype=dtype, n_layers=2)
    X, Y = small_batch()
    m.train_step(X, Y, 0.1)                        # the buffer copies exist from here on
    m.layers[-1].bias[0] = np.nan
    before = state(m)
    assert math.isnan(m.train_step(X, Y, 0.1))
    for p, q in zip(state(m), before):
        assert p.tobytes() == q.tobytes()


def test_train_step_takes_a_replaced_buffer():
    """A running statistic replaced by an array of another layout (not the compiled copy's
    common case) is saved and restored all the same."""
    m = small()
    X, Y = small_batch()
    m.train_step(X, Y, 0.1)
    bn = m.batchnorms()[0]
    bn.running_var = np.repeat(bn.running_var, 2)[::2]
    assert not bn.running_var.flags.c_contiguous
    m.layers[-1].bias[0] = np.inf
    before = state(m)
    m.train_step(X, Y, 0.1)
    for p, q in zip(state(m), before):
        assert p.tobytes() == q.tobytes()


def test_layers_keep_outputs_for_diagnostics():
    m = small(n_layers=2)
    X, Y = small_batch()
    m.forward(X, Y)
    tanhs = [layer for layer in m.layers if isinstance(layer, nn.Tanh)]
    assert len(tanhs) == 2 and tanhs[0].out.shape == (16, 8)
    assert np.abs(tanhs[-1].out).max() <= 1


# ----------------------------------------------------------------------------------------------
# gradient of the whole model vs finite differences

def model_vjp(model, X, Y):
    """The model as fn(*params) -> (loss, backward), for fastbn.gradcheck."""
    def loss_of(*params):
        for p, v in zip(model.parameters(), params):
            p[...] = v
        loss = model.forward(X, Y)

        def backward(dloss):
            model.backward(dloss)
            return [g.copy() for g in model.grads()]
        return loss, backward
    return loss_of


@pytest.mark.parametrize("kw", [
    {},                                                       # the default BN-MLP
    {"batchnorm": False, "activation": "relu"},
    {"n_layers": 2, "activation": "leaky_relu", "final_bn": True},
    {"init": "original", "batchnorm": False},
    {"bn_unbiased": True},                                    # the lecture's batch norm
    {"n_layers": 2, "final_bn": True, "bn_unbiased": True},
])
def test_gradcheck_whole_model_float64(kw):
    m = small(dtype=np.float64, **kw).train()
    X, Y = small_batch(seed=2)
    # float64 finite differences of a loss ~2 are good to ~1e-10, and these gradients are
    # small (~1e-3 behind the 0.01-scaled output layer), so the tolerances are far tighter than
    # gradcheck's defaults (atol 1e-5 would pass a backward that is 1 % off)
    report = gradcheck(model_vjp(m, X, Y), [p.copy() for p in m.parameters()],
                       name="CharMLP", max_elements=None, atol=1e-8, rtol=1e-6)
    assert report.passed and len(report.rows) == len(m.parameters())


@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_gradcheck_whole_model_of_every_activation(activation):
    m = small(dtype=np.float64, n_layers=2, activation=activation).train()
    X, Y = small_batch(seed=3)
    report = gradcheck(model_vjp(m, X, Y), [p.copy() for p in m.parameters()],
                       name="CharMLP", max_elements=None, atol=1e-8, rtol=1e-6)
    assert report.passed and len(report.rows) == len(m.parameters())


def test_gradcheck_catches_a_broken_model_backward():
    m = small(dtype=np.float64).train()
    X, Y = small_batch(seed=2)
    f = model_vjp(m, X, Y)

    def broken(*params):
        loss, backward = f(*params)

        def bad(dloss):
            grads = backward(dloss)
            grads[1] = grads[1] * 1.01          # 1 % off in dW1
            return grads
        return loss, bad
    with pytest.raises(GradcheckError, match="input1"):
        gradcheck(broken, [p.copy() for p in m.parameters()], name="broken", atol=1e-8,
                  rtol=1e-6)


# ----------------------------------------------------------------------------------------------
# evaluation, calibration, sampling

def test_evaluate_is_the_eval_mode_mean_in_any_chunking():
    m = small(dtype=np.float64)
    X, Y = small_batch(n=101)
    m.train().forward(X, Y)                    # move the running statistics off their init
    expected = float(m.eval().forward(X, Y))
    m.train()
    assert m.evaluate(X, Y) == pytest.approx(expected, rel=1e-12)
    assert m.evaluate(X, Y, chunk=7) == pytest.approx(expected, rel=1e-12)
    assert m.training                          # the mode is restored
    with pytest.raises(ValueError, match="Y must have shape"):
        m.evaluate(X, Y[:-1])


def with_statistics(m, seed=7):
    """m with gamma, beta and running statistics far from their initial values."""
    g = np.random.default_rng(seed)
    for bn in m.batchnorms():
        bn.gamma[...] = g.uniform(0.5, 2, bn.gamma.shape)
        bn.beta[...] = g.normal(0, 0.5, bn.beta.shape)
        bn.running_mean[...] = g.normal(0, 1, bn.running_mean.shape)
        bn.running_var[...] = g.uniform(0.1, 3, bn.running_var.shape)
    return m


def layers_eval_loss(m, X, Y):
    """The eval-mode loss through the layers (``CharMLP.evaluate`` before it ran a Plan)."""
    was = m.training
    loss = float(m.eval().forward(X, Y))
    m.train(was)
    return loss


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_evaluate_is_the_layers_eval_loss_and_changes_nothing(activation, dtype):
    m = with_statistics(small(activation=activation, n_layers=2, final_bn=True, dtype=dtype))
    X, Y = small_batch(n=300)
    want = layers_eval_loss(m, X, Y)
    params = [p.copy() for p in m.parameters()] + [b.copy() for _, b in m.named_buffers()]
    rel = 1e-6 if dtype == np.float32 else 1e-13
    for mode in (True, False):
        m.train(mode)
        assert m.evaluate(X, Y) == pytest.approx(want, rel=rel, abs=0)
        assert m.evaluate(X, Y, chunk=64) == pytest.approx(want, rel=rel, abs=0)
        assert m.training == mode
    for a, b in zip(m.parameters() + [b for _, b in m.named_buffers()], params):
        assert np.array_equal(a, b)
    for bad, err, match in [((X[:, :2], Y), ValueError, r"shape \(B, 3\)"),
                            ((X, Y[:5]), ValueError, r"Y must have shape \(300,\)"),
                            ((X[:0], Y[:0]), ValueError, "zero examples"),
                            ((np.full((2, 3), 7), Y[:2]), IndexError, "X holds 7"),
                            ((X[:2], np.full(2, 7)), IndexError, "Y holds 7"),
                            ((X.astype(float), Y), TypeError, "integer")]:
        with pytest.raises(err, match=match):
            m.evaluate(*bad)
    with pytest.raises(ValueError, match="chunk must be a positive integer"):
        m.evaluate(X, Y, chunk=0)


def layers_sample(m, n, seed, max_len=50):
    """``CharMLP.sample``'s algorithm with the logits of the layers in eval mode (as it ran
    before it ran a Plan)."""
    was = m.training
    m.eval()
    rng = np.random.default_rng(seed)
    ctx = np.zeros((n, m.block_size), np.int64)
    out = np.zeros((n, max_len), np.int64)
    done = np.zeros(n, bool)
    for t in range(max_len):
        logits = m.net(ctx).astype(np.float64)
        p = np.exp(logits - logits.max(1, keepdims=True))
        cdf = np.cumsum(p, axis=1)
        u = rng.random(n) * cdf[:, -1]
        ix = np.minimum((cdf <= u[:, None]).sum(1), cdf.shape[1] - 1)
        ix[done] = 0
        out[:, t] = ix
        done |= ix == 0
        if done.all():
            break
        ctx = np.concatenate([ctx[:, 1:], ix[:, None]], axis=1)
    m.train(was)
    return [m.vocab.decode(r[:list(r).index(0)] if 0 in r else r) for r in out.tolist()]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_sample_gives_the_names_of_the_layers_eval_logits(dtype):
    """The plan's logits of n rows are the layers' bit for bit (one GEMM of the same shape), so
    the names are the same, not merely close."""
    m = with_statistics(small(dtype=dtype, n_hidden=16))
    for n, seed in ((1, 0), (7, 1), (40, 2)):
        assert m.sample(n, seed=seed) == layers_sample(m, n, seed)


def test_calibrate_batchnorm_sets_whole_set_statistics():
    m = small(n_layers=2, dtype=np.float64)
    X, _ = small_batch(n=203)
    m.calibrate_batchnorm(X, chunk=50)
    bn1, bn2 = m.batchnorms()
    h1 = m.layers[1](m.layers[0](X))           # input of the first BN
    np.testing.assert_allclose(bn1.running_mean, h1.mean(0), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(bn1.running_var, h1.var(0, ddof=1), rtol=1e-10)
    m.eval()
    h2 = m.layers[4](m.layers[3](m.layers[2](h1)))   # uses the calibrated first BN
    np.testing.assert_allclose(bn2.running_mean, h2.mean(0), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(bn2.running_var, h2.var(0, ddof=1), rtol=1e-10)
    # calibrated stats make eval mode equal to training mode on the same (whole) batch,
    # up to biased vs unbiased variance
    assert float(m.eval().forward(X, X[:, 0])) == pytest.approx(
        float(m.train().forward(X, X[:, 0])), rel=1e-2)


def test_sample_is_reproducible_per_seed_and_well_formed():
    m = small()
    bn = m.batchnorms()[0]
    rm = bn.running_mean.copy()
    a = m.sample(30, seed=4)
    assert a == m.sample(30, seed=4)
    assert a != m.sample(30, seed=5)
    assert m.training and np.array_equal(bn.running_mean, rm)   # mode restored, stats untouched
    assert len(a) == 30
    for name in a:
        assert set(name) <= set("abcdef") and len(name) <= 50
    assert all(len(s) <= 3 for s in m.sample(30, seed=4, max_len=3))


def test_samples_on_names_look_like_names(names):
    m = CharMLP(names.vocab, seed=0)
    names_out = m.sample(20, seed=0)
    assert len(names_out) == 20 and all(set(s) <= set("abcdefghijklmnopqrstuvwxyz")
                                        for s in names_out)
