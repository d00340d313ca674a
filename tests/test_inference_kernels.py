"""The kernels' inference paths: the cross-entropy's loss alone (``probs=None``) and eval-mode batch
norm's output alone (``xhat=None``) give the numbers of the full kernels, bit for bit.

The full kernels (probabilities and xhat written) are what ``fastbn.ops`` and training run, and
what ``fastbn.inference.Plan`` ran before it had the inference paths; here they are the
reference, compared with ``np.array_equal`` (or ``==`` on the loss, a Python float) on float32
and float64, at odd row counts (1, 2, 3, 1023, 1025), at ``CHUNK``, and at the val split's row
count; and end to end, a plan's loss and logits (batch norm now in place, on every kind of step
before it) against the same plan run through the full kernels, out of place.
"""
from types import SimpleNamespace

import numpy as np
import pytest

from fastbn import _kernels as K
from fastbn import nn, ops
from fastbn.inference import CHUNK, Plan
from fastbn.model import CharMLP

DTYPES = [np.float32, np.float64]
VAL_ROWS = 22655                         # the val split of names.txt at block size 3
ROWS = [1, 2, 3, 1023, CHUNK, 1025, VAL_ROWS]


def same_float(a, b):
    return a == b or (np.isnan(a) and np.isnan(b))


def logits_of(g, rows, C, dt):
    """Logits (rows, C) of several scales, some rows with a spread that underflows exp."""
    x = g.standard_normal((rows, C)) * g.choice([0.1, 3.0, 30.0], size=(rows, 1))
    x[::7] *= 50.0                                              # exp(-hundreds): 0 or subnormal
    return x.astype(dt)


@pytest.mark.parametrize("dt", DTYPES)
@pytest.mark.parametrize("C", [1, 2, 27, 31])
def test_the_loss_only_cross_entropy_is_the_full_kernels_loss(dt, C):
    g = np.random.default_rng(C)
    for rows in ROWS:
        logits = logits_of(g, rows, C, dt)
        target = g.integers(0, C, rows)
        probs = np.full((rows, C), np.nan, dt)
        full = K.cross_entropy_forward(logits, target, probs)
        alone = K.cross_entropy_forward(logits, target, None)
        assert alone == full, (rows, alone, full)
        # the general API's loss is the same double, rounded to the dtype
        assert ops.cross_entropy_forward(logits, target)[0] == dt(full)


@pytest.mark.parametrize("dt", DTYPES)
def test_the_loss_only_cross_entropy_row_by_row_at_every_alignment(dt):
    """Each row's loss alone against the full kernel's with its probabilities at every offset
    within 64 bytes (the scratch row and the probabilities' rows start anywhere), and rows of
    +-1e4, +-inf and NaN logits."""
    g = np.random.default_rng(7)
    C = 27
    logits = logits_of(g, 40, C, dt)
    logits[3, 5], logits[4, :] = 1e4, -1e4
    logits[5, 2], logits[6, 0], logits[7, 9] = np.inf, -np.inf, np.nan
    target = g.integers(0, C, 40)
    flat = np.empty(C + 64, dt)
    for i in range(40):
        row, t = logits[i:i + 1], target[i:i + 1]
        alone = K.cross_entropy_forward(row, t, None)
        for off in range(64 // dt().itemsize):
            full = K.cross_entropy_forward(row, t, flat[off:off + C].reshape(1, C))
            assert same_float(alone, full), (i, off, alone, full)


@pytest.mark.parametrize("dt", DTYPES)
@pytest.mark.parametrize("D", [1, 7, 200])
def test_the_output_only_eval_batchnorm_is_the_full_kernels_output(dt, D):
    g = np.random.default_rng(D)
    gamma, beta = g.uniform(0.5, 2, D).astype(dt), g.normal(0, 0.5, D).astype(dt)
    rm, rv = g.normal(0, 1, D).astype(dt), g.uniform(0.1, 3, D).astype(dt)
    eps = 1e-5
    invstd = (1.0 / np.sqrt(rv.astype(np.float64) + eps)).astype(dt)     # as ops computes it
    for rows in ROWS:
        x = (g.standard_normal((rows, D)) * 4).astype(dt)
        x[0, 0] = np.nan
        out, xhat = np.full((rows, D), np.nan, dt), np.full((rows, D), np.nan, dt)
        K.batchnorm_eval_forward(x, gamma, beta, rm, invstd, out, xhat)
        alone = np.full((rows, D), np.nan, dt)
        K.batchnorm_eval_forward(x, gamma, beta, rm, invstd, alone, None)
        assert np.array_equal(alone, out, equal_nan=True)
        api, _ = ops.batchnorm_eval_forward(x, gamma, beta, rm, rv, eps)
        assert np.array_equal(api, out, equal_nan=True)
        y = x.copy()                                            # in place: out is x
        K.batchnorm_eval_forward(y, gamma, beta, rm, invstd, y, None)
        assert np.array_equal(y, out, equal_nan=True)


def full_kernels(plan, X, Y, chunk=CHUNK):
    """(logits, loss) of ``plan`` on (X, Y) as the plan computed them before the inference
    paths: the same steps and chunks, batch norm writing xhat, the cross-entropy writing the
    probabilities."""
    X, Y = np.asarray(X, np.int64), np.asarray(Y, np.int64)
    N = X.shape[0]
    logits = np.empty((N, plan.classes), plan.dtype)
    total = 0.0
    for a in range(0, N, chunk):
        h = X[a:a + chunk]
        for s, w in zip(plan.steps, plan.widths):
            if type(s).__name__ == "_BatchNormEval":
                out, xhat = (np.empty((h.shape[0], w), plan.dtype) for _ in range(2))
                K.batchnorm_eval_forward(h, s.gamma, s.beta, s.mean, s.invstd, out, xhat)
                h = out
            elif getattr(s, "inplace", False):
                h = s.run(h)
            else:
                h = s.run(h, np.empty((h.shape[0], w), plan.dtype))
        logits[a:a + h.shape[0]] = h
        probs = np.empty_like(h)
        total += K.cross_entropy_forward(h, Y[a:a + h.shape[0]], probs) * h.shape[0]
    return logits, total / N


def check_plan(m, X, Y):
    p = Plan(m)
    assert sum(type(s).__name__ == "_BatchNormEval" for s in p.steps) == len(m.batchnorms())
    for n in (1, 2, 3, 1023, 1025, X.shape[0]):
        want_logits, want_loss = full_kernels(p, X[:n], Y[:n])
        assert np.array_equal(p.logits(X[:n]), want_logits), n
        assert p.loss(X[:n], Y[:n]) == want_loss, n
        assert m.evaluate(X[:n], Y[:n]) == want_loss, n


def trained_like(m, g):
    """Batch norm statistics and affine parameters away from their initial values."""
    for bn in m.batchnorms():
        bn.gamma[...] = g.uniform(0.5, 2, bn.gamma.shape)
        bn.beta[...] = g.normal(0, 0.5, bn.beta.shape)
        bn.running_mean[...] = g.normal(0, 1, bn.running_mean.shape)
        bn.running_var[...] = g.uniform(0.1, 3, bn.running_var.shape)
    return m.eval()


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("config", [{}, {"n_layers": 2, "final_bn": True}],
                         ids=["default", "deep-final_bn"])
def test_a_plan_gives_the_full_kernels_numbers(dtype, config):
    m = trained_like(CharMLP(".abcdefghijklmnopqrstuvwxyz", dtype=dtype, seed=5, **config),
                     np.random.default_rng(6))
    g = np.random.default_rng(8)
    X = g.integers(0, m.vocab.size, (2100, m.block_size))
    check_plan(m, X, g.integers(0, m.vocab.size, 2100))


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_a_plan_gives_the_full_kernels_numbers_on_the_val_split(dtype, names):
    m = trained_like(CharMLP(names.vocab, dtype=dtype, seed=5), np.random.default_rng(9))
    X, Y = names.split("val")
    assert X.shape[0] == VAL_ROWS
    check_plan(m, X, Y)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_batch_norm_in_place_after_every_kind_of_step(dtype):
    """Batch norm runs in place on whatever step precedes it: the embedding's buffer, a
    Linear's, tanh's (in place itself) and another activation's new array."""
    g = np.random.default_rng(10)
    bns = [nn.BatchNorm1d(n, dtype=dtype) for n in (12, 9, 9, 7)]
    for bn in bns:
        bn.gamma[...] = g.uniform(0.5, 2, bn.gamma.shape)
        bn.beta[...] = g.normal(size=bn.gamma.shape)
        bn.running_mean[...] = g.normal(size=bn.gamma.shape)
        bn.running_var[...] = g.uniform(0.2, 2, bn.gamma.shape)
    layers = [nn.Embedding(11, 4, dtype=dtype, generator=1), bns[0],
              nn.Linear(12, 9, dtype=dtype, generator=2), bns[1], nn.Tanh(), bns[2],
              nn.Linear(9, 7, dtype=dtype, generator=3), nn.ReLU(), bns[3],
              nn.Linear(7, 11, dtype=dtype, generator=4)]
    net = nn.Sequential(*layers).eval()
    p = Plan(SimpleNamespace(layers=layers, dtype=dtype, block_size=3))
    assert [type(s).__name__ for s in p.steps].count("_BatchNormEval") == 4
    X, Y = g.integers(0, 11, (1025, 3)), g.integers(0, 11, 1025)
    want_logits, want_loss = full_kernels(p, X, Y)
    assert np.array_equal(p.logits(X), want_logits)
    assert np.array_equal(p.logits(X[:300]), net(X[:300]))   # one chunk: the layers' numbers
    assert p.loss(X, Y) == want_loss
    with pytest.raises(ValueError, match="a BatchNorm1d of 9 features follows a layer of width 12"):
        Plan(SimpleNamespace(layers=[layers[0], bns[1]], dtype=dtype, block_size=3))
