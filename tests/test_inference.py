"""``fastbn.inference.Plan``: the eval-mode function of a model, through the layers' own kernels.

A plan runs the kernels the layers run, so on rows that go through BLAS together it gives the
layers' eval-mode logits bit for bit; in chunks, float32 GEMMs of another row count may round
differently (OpenBLAS picks kernels by shape), so chunked logits are compared to tolerance.
"""
import threading
from types import SimpleNamespace

import numpy as np
import pytest

from fastbn import nn
from fastbn.inference import CHUNK, Plan
from fastbn.model import CharMLP


def model(dtype="float64", **config):
    m = CharMLP(".abcdefghij", dtype=dtype, seed=3, n_hidden=24, **config)
    g = np.random.default_rng(4)
    for bn in m.batchnorms():
        bn.gamma[...] = g.uniform(0.5, 2, bn.gamma.shape)
        bn.beta[...] = g.normal(0, 0.5, bn.beta.shape)
        bn.running_mean[...] = g.normal(0, 1, bn.running_mean.shape)
        bn.running_var[...] = g.uniform(0.1, 3, bn.running_var.shape)
    return m.eval()


def ids(m, n, seed=0):
    return np.random.default_rng(seed).integers(0, m.vocab.size, (n, m.block_size))


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("config", [{}, {"n_layers": 3, "final_bn": True},
                                    {"batchnorm": False, "activation": "leaky_relu"}],
                         ids=["default", "deep-final_bn", "no-bn-leaky"])
def test_a_plan_computes_the_layers_eval_logits(dtype, config):
    m = model(dtype, **config)
    X = ids(m, 500)
    ref = m.logits(X)
    p = Plan(m)
    assert np.array_equal(p.logits(X), ref)                 # one chunk: bit for bit
    for chunk in (1, 7, 128):
        got = p.logits(X, chunk=chunk)
        tol = (1e-6 if dtype == "float32" else 1e-13) * np.abs(ref).max()
        assert np.abs(got - ref).max() <= tol
    Y = np.random.default_rng(1).integers(0, m.vocab.size, 500)
    assert p.loss(X, Y) == pytest.approx(m.evaluate(X, Y), rel=1e-6 if dtype == "float32"
                                         else 1e-13, abs=0)
    assert p.loss(X, Y, chunk=33) == pytest.approx(p.loss(X, Y), rel=1e-6, abs=0)
    f = p.logits_fn(64)
    assert np.array_equal(f(X[:64]), p.logits(X[:64])) and np.array_equal(f(X[:5]),
                                                                         p.logits(X[:5]))


def test_a_plan_keeps_a_batchnorm_that_follows_no_linear():
    """A BatchNorm1d on the embedding (no Linear before it) is an eval-mode step of its own."""
    g = np.random.default_rng(0)
    emb = nn.Embedding(11, 4, dtype=np.float64, generator=1)
    bn = nn.BatchNorm1d(12, dtype=np.float64)
    bn.gamma[...], bn.beta[...] = g.uniform(0.5, 2, 12), g.normal(size=12)
    bn.running_mean[...], bn.running_var[...] = g.normal(size=12), g.uniform(0.2, 2, 12)
    layers = [emb, bn, nn.Linear(12, 9, dtype=np.float64, generator=2), nn.Tanh(),
              nn.Linear(9, 11, dtype=np.float64, generator=3)]
    net = nn.Sequential(*layers).eval()
    fake = SimpleNamespace(layers=layers, dtype=np.float64, block_size=3)
    p = Plan(fake)
    assert [type(s).__name__ for s in p.steps] == ["_Embed", "_BatchNormEval", "_Linear",
                                                   "_Tanh", "_Linear"]
    X = g.integers(0, 11, (40, 3))
    assert np.array_equal(p.logits(X), net(X))
    bn.running_mean[...] += 1                               # the plan is a snapshot
    assert not np.array_equal(p.logits(X), net(X)) and np.array_equal(Plan(fake).logits(X),
                                                                       net(X))


def test_a_plan_is_a_private_read_only_snapshot():
    m = model()
    X = ids(m, 50)
    p = Plan(m)
    before = p.logits(X)
    for a in m.parameters() + [b for _, b in m.named_buffers()]:
        a[...] = 0
    assert np.array_equal(p.logits(X), before)
    for s in p.steps:
        for a in vars(s).values():
            if isinstance(a, np.ndarray):
                assert not a.flags.writeable
                assert not any(np.shares_memory(a, q) for q in m.parameters())


def test_bad_input_gets_a_clear_exception():
    m = model()
    p = Plan(m)
    X = ids(m, 10)
    Y = np.zeros(10, np.int64)
    with pytest.raises(ValueError, match=r"shape \(B, 3\)"):
        p.logits(X[:, :2])
    with pytest.raises(IndexError, match="holds 11"):
        p.logits(np.full((2, 3), 11))
    with pytest.raises(IndexError, match="holds -1"):
        p.loss(np.full((2, 3), -1), Y[:2])
    with pytest.raises(TypeError, match="integer"):
        p.logits(X.astype(np.float64))
    with pytest.raises(IndexError, match="Y holds 11"):
        p.loss(X, np.full(10, 11))
    with pytest.raises(ValueError, match=r"Y must have shape \(10,\)"):
        p.loss(X, Y[:3])
    with pytest.raises(ValueError, match="zero examples"):
        p.loss(X[:0], Y[:0])
    for bad in (0, -1, 2.5, True):
        with pytest.raises(ValueError, match="positive integer"):
            p.logits(X, chunk=bad)
    with pytest.raises(ValueError, match="at most 4 rows"):
        p.logits_fn(4)(X)
    assert p.logits(X[:0]).shape == (0, m.vocab.size)
    with pytest.raises(TypeError, match="no inference step"):
        Plan(SimpleNamespace(layers=[m.layers[0], object()], dtype=np.float64, block_size=3))
    with pytest.raises(ValueError, match="starts with an Embedding"):
        Plan(SimpleNamespace(layers=m.layers[1:], dtype=np.float64, block_size=3))
    with pytest.raises(ValueError, match="follows a layer of width"):
        Plan(SimpleNamespace(layers=[m.layers[0], m.layers[-1]], dtype=np.float64,
                             block_size=3))


def test_a_plan_serves_several_threads_at_once():
    m = model("float32")
    p = Plan(m)
    X = [ids(m, 700 + 13 * i, seed=i) for i in range(4)]
    want = [p.logits(x) for x in X]
    got = [None] * 4

    def work(i):
        for _ in range(20):
            got[i] = p.logits(X[i])

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(np.array_equal(a, b) for a, b in zip(got, want))
    assert CHUNK >= 256
