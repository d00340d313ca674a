"""``fastbn.inference.Plan``: the eval-mode function of a model, through the layers' own kernels.

A plan runs the kernels the layers run, so on rows that go through BLAS together it gives the
layers' eval-mode logits bit for bit; in chunks, float32 GEMMs of another row count may round
differently (OpenBLAS picks kernels by shape), so chunked logits are compared to tolerance.
"""
import threading
from types import SimpleNamespace

import numpy as np
import pytest

from fastbn import _kernels as K
from fastbn import nn
from fastbn.inference import (
    CHUNK,
    TABLE_CACHE_BYTES,
    TABLE_MAX_RATIO,
    TABLE_MIN_ROWS_PER_V,
    Plan,
    table_pays,
)
from fastbn.model import ACTIVATIONS, CharMLP


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
    t = Plan(m, table=True)                                 # the table: to rounding
    assert t.table.shape == (m.block_size, m.vocab.size, 24) and t.steps[0].vocab_size == 11
    tol = (1e-6 if dtype == "float32" else 1e-13) * np.abs(ref).max()
    assert np.abs(t.logits(X) - ref).max() <= tol
    assert np.abs(t.logits(X, chunk=7) - ref).max() <= tol


@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_every_activation_has_a_step(activation):
    m = model("float64", activation=activation, n_layers=2)
    X = ids(m, 50)
    assert np.array_equal(Plan(m).logits(X), m.logits(X))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("T", [1, 2, 3, 4, 5, 6, 7, 8, 11])   # the kernel sums 4, then 3 at a time
def test_table_forward_is_the_gather_sum_in_position_order(dtype, T):
    g = np.random.default_rng(5)
    V, H, B = 9, 37, 60
    tab = g.normal(size=(T, V, H)).astype(dtype)
    idx = g.integers(0, V, (B, T))
    out = np.full((B, H), np.nan, dtype)
    K.table_forward(tab, idx, out)
    want = tab[0][idx[:, 0]]
    for t in range(1, T):
        want = want + tab[t][idx[:, t]]                     # the kernel's order: bit for bit
    assert np.array_equal(out, want)
    K.table_forward(tab, idx[:0], out[:0])                  # no rows: nothing to do
    for bad in (lambda: K.table_forward(tab, np.concatenate([idx, idx[:, :1]], axis=1), out),
                lambda: K.table_forward(tab, idx, out[:, :5].copy()),
                lambda: K.table_forward(tab, idx, out[:7])):
        with pytest.raises(ValueError, match="table_forward: the arguments' shapes disagree"):
            bad()


def test_the_table_rule():
    def ratio(T, V, D, H):
        return T * V * H / (V * D + T * D * H)
    # by size: T*V*H <= TABLE_MAX_RATIO * (V*D + T*D*H), or a table of <= TABLE_CACHE_BYTES
    assert ratio(3, 27, 10, 200) <= TABLE_MAX_RATIO and table_pays(3, 27, 10, 200, 8)
    assert ratio(3, 27, 2, 200) > TABLE_MAX_RATIO and 3 * 27 * 200 * 8 <= TABLE_CACHE_BYTES
    assert table_pays(3, 27, 2, 200, 8)                      # small: it stays in the cache
    assert ratio(3, 200, 2, 400) > TABLE_MAX_RATIO and 3 * 200 * 400 * 4 > TABLE_CACHE_BYTES
    assert not table_pays(3, 200, 2, 400, 4) and not table_pays(3, 200, 2, 400, 4, rows=10**9)
    # at the bounds. Ratio: with T = D = 1, V*H = r (V + H) when (V - r)(H - r) = r^2 (an
    # itemsize too large for the cache clause)
    r = TABLE_MAX_RATIO
    V = H = 2 * r
    assert table_pays(1, V, 1, H, 2**30) and not table_pays(1, V, 1, H + 1, 2**30)
    # bytes: a table of exactly TABLE_CACHE_BYTES, far above the ratio
    V, H = 128, TABLE_CACHE_BYTES // (128 * 8)
    assert ratio(1, V, 1, H) > TABLE_MAX_RATIO
    assert table_pays(1, V, 1, H, 8) and not table_pays(1, V, 1, H + 1, 8)
    # by rows: a call of at least TABLE_MIN_ROWS_PER_V * V rows
    least = TABLE_MIN_ROWS_PER_V * 27
    assert table_pays(3, 27, 10, 200, 4, rows=least)
    assert not table_pays(3, 27, 10, 200, 4, rows=least - 1)


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


@pytest.mark.parametrize("table", [False, True])
def test_a_plan_is_a_private_read_only_snapshot(table):
    m = model()
    X = ids(m, 50)
    p = Plan(m, table=table)
    before = p.logits(X)
    for a in m.parameters() + [b for _, b in m.named_buffers()]:
        a[...] = 0
    assert np.array_equal(p.logits(X), before)
    arrays = [a for s in p.steps for a in vars(s).values() if isinstance(a, np.ndarray)]
    assert len(arrays) == (7 if table else 8)   # C and W1, or the table; BN's 4; W2, b2
    for a in arrays:
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
    with pytest.raises(ValueError, match="a table needs a Linear right after the Embedding"):
        Plan(SimpleNamespace(layers=[m.layers[0], nn.Tanh()], dtype=np.float64, block_size=3),
             table=True)
    with pytest.raises(ValueError, match="follows an embedding of width 30"):
        Plan(SimpleNamespace(layers=[m.layers[0], m.layers[-1]], dtype=np.float64,
                             block_size=3), table=True)


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
