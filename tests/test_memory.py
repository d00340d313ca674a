"""Memory: long runs keep the process's resident memory flat.

Each path is warmed up (BLAS buffers, allocator pools, first-touch of workspaces), then the
current RSS (``/proc/self/statm``) is read before and after thousands more steps; it may not grow
by more than a few MB. A leak of one small array per step (the per-layer path allocates every
activation and gradient afresh; the Cython kernels malloc and free their double accumulators on
every call) would grow it by tens of MB over these runs.
"""
import gc
import os
import sys

import numpy as np
import pytest

from fastbn import ops
from fastbn._opinfo import OPS
from fastbn.data import Vocab
from fastbn.fused import BatchSampler, FusedTrainer
from fastbn.model import CharMLP

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"),
                                reason="reads the resident set size from /proc/self/statm")

VOCAB = Vocab.from_chars(".abcdefghijklmnopqrstuvwxyz")
LIMIT = 5 * 2**20          # bytes of growth allowed after the warm-up


def rss():
    """Current resident set size of this process, in bytes."""
    gc.collect()
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


@pytest.fixture(scope="module")
def data():
    """A synthetic dataset (no names file): the next id repeats the last one 90 % of the time."""
    g = np.random.default_rng(7)
    X = g.integers(0, 27, size=(20_000, 3))
    Y = np.where(g.random(20_000) < 0.9, X[:, 2], g.integers(0, 27, 20_000))
    return X, Y


def growth(fn, warmup, repeats):
    """RSS growth over ``repeats`` calls of ``fn`` after ``warmup`` calls."""
    for _ in range(warmup):
        fn()
    before = rss()
    for _ in range(repeats):
        fn()
    return rss() - before


def mb(n):
    return f"{n / 2**20:.2f} MB"


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_per_layer_train_step_keeps_memory_flat(data, dtype):
    X, Y = data
    model = CharMLP(VOCAB, seed=0, dtype=dtype)
    sampler = BatchSampler(1)
    rows = np.empty(32, np.int64)

    def step():
        sampler.draw(len(X), 32, out=rows)
        loss = model.train_step(X[rows], Y[rows], 0.05)
        assert np.isfinite(loss)

    grew = growth(step, warmup=300, repeats=8000)
    assert grew < LIMIT, f"RSS grew by {mb(grew)} over 8,000 per-layer steps"
    assert model.evaluate(X[:2000], Y[:2000]) < np.log(27)       # it did train


def test_compiled_loop_keeps_memory_flat(data):
    X, Y = data
    model = CharMLP(VOCAB, seed=0)
    trainer = FusedTrainer(model, 32)
    sampler = BatchSampler(2)
    losses = np.empty(1000)

    def chunk():
        done, _ = trainer.run(X, Y, 1000, 0.05, sampler, losses=losses)
        assert done == 1000

    grew = growth(chunk, warmup=2, repeats=40)
    assert grew < LIMIT, f"RSS grew by {mb(grew)} over 40,000 compiled steps"
    assert losses[-100:].mean() < 1.5


def test_fused_step_calls_keep_memory_flat(data):
    """The Python side of the fused step (validation, rebinding checks) allocates per call."""
    X, Y = data
    trainer = FusedTrainer(CharMLP(VOCAB, seed=0, dtype=np.float64), 32)
    sampler = BatchSampler(3)
    rows = np.empty(32, np.int64)

    def step():
        sampler.draw(len(X), 32, out=rows)
        trainer.step(X, Y, 0.05, rows)

    grew = growth(step, warmup=200, repeats=8000)
    assert grew < LIMIT, f"RSS grew by {mb(grew)} over 8,000 fused step() calls"


def test_binding_and_rebinding_keep_memory_flat(data):
    """Each binding allocates the workspaces; replaced trainers and rebinds must free them."""
    X, Y = data
    model = CharMLP(VOCAB, seed=0)
    rows = np.arange(64)

    def bind():
        t = FusedTrainer(model, 64)
        model.layers[1].weight = model.layers[1].weight.copy()     # forces a rebind
        t.step(X, Y, 0.01, rows)

    grew = growth(bind, warmup=20, repeats=400)
    assert grew < LIMIT, f"RSS grew by {mb(grew)} over 400 bindings"


def test_every_op_forward_backward_keeps_memory_flat():
    # every op of the registry, on a batch of 64 and 100 features
    calls = []
    for op in OPS.values():                    # (the last, cross-entropy, is not linear)
        args = op.args(B=64, D=100, I=100, O=50, V=27, T=3, C=100)
        out, _ = op.forward(*args)
        dout = 1.0 if np.ndim(out) == 0 else np.ones_like(out)
        calls.append((op.forward, op.backward, args, dout))

    def all_ops():
        for forward, backward, args, dout in calls:
            _, c = forward(*args)
            backward(dout, c)
        try:                                   # and a refused call: another op's cache
            ops.linear_backward(np.ones((3, 3)), c)
        except TypeError:
            pass
        else:
            raise AssertionError(f"a {c.op} cache passed to linear_backward was accepted")

    grew = growth(all_ops, warmup=100, repeats=5000)
    assert grew < LIMIT, f"RSS grew by {mb(grew)} over 5,000 rounds of every op"
