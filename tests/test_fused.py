"""The fused step and compiled loop against the per-layer path (the teaching path)."""
import tracemalloc

import numpy as np
import pytest

from fastbn import _kernels as K
from fastbn.data import Vocab
from fastbn.fused import BatchSampler, FusedTrainer, supports
from fastbn.inference import table_pays
from fastbn.model import CharMLP
from fastbn.registry import NONLINEARITIES

VOCAB = Vocab.from_chars(".abcdefghijklmnopqrstuvwxyz")


@pytest.fixture(scope="module")
def data():
    """A synthetic character dataset: the next id repeats the last one, 90 % of the time."""
    g = np.random.default_rng(7)
    X = g.integers(0, 27, size=(5000, 3))
    Y = np.where(g.random(5000) < 0.9, X[:, 2], g.integers(0, 27, 5000))
    return X, Y


def pair(dtype, seed=3, **kw):
    return tuple(CharMLP(VOCAB, dtype=dtype, seed=seed, **kw) for _ in range(2))


@pytest.mark.parametrize("dtype,tol", [(np.float64, 1e-12), (np.float32, 2e-5)])
@pytest.mark.parametrize("kw", [{}, dict(n_layers=3, n_hidden=40, n_embd=6, block_size=3),
                                dict(bn_momentum=0.1, n_hidden=17),
                                dict(block_size=5, n_embd=4, n_hidden=30, V=11),
                                dict(block_size=1, n_embd=7, n_hidden=12, n_layers=2, V=40),
                                dict(bn_unbiased=True),                # the lecture's BN
                                dict(bn_unbiased=True, n_layers=3, n_hidden=40, n_embd=6)])
@pytest.mark.parametrize("table", [False, True])
@pytest.mark.parametrize("B", [32, 7, 100])   # 100: several GEMM panels, softmax and sum blocks
def test_fused_steps_equal_per_layer_steps(data, dtype, tol, kw, table, B):
    kw = dict(kw)
    V, T = kw.pop("V", 27), kw.get("block_size", 3)
    X, Y = data
    X, Y = np.tile(X, 2)[:, :T] % V, Y % V             # T context ids, V classes
    letters = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
    vocab = Vocab.from_chars("." + letters[:V - 1])
    ref, fused = (CharMLP(vocab, dtype=dtype, seed=3, **kw) for _ in range(2))
    trainer = FusedTrainer(fused, B, table=table)
    sampler = BatchSampler(11)
    for step in range(30):
        rows = sampler.draw(len(X), B)
        lr = 0.1 if step < 20 else 0.01
        a = ref.train_step(X[rows], Y[rows], lr)
        b = trainer.step(X, Y, lr, rows)
        assert b == pytest.approx(a, rel=tol, abs=tol), step
    for (name, p), q in zip(ref.named_parameters(), fused.parameters()):
        np.testing.assert_allclose(q, p, rtol=50 * tol, atol=50 * tol, err_msg=name)
    for (name, p), (_, q) in zip(ref.named_buffers(), fused.named_buffers()):
        np.testing.assert_allclose(q, p, rtol=50 * tol, atol=50 * tol, err_msg=name)
    for p, q in zip(ref.grads(), fused.grads()):         # the last step's gradients are kept
        np.testing.assert_allclose(q, p, rtol=100 * tol, atol=100 * tol)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_compiled_loop_equals_fused_steps(data, dtype):
    X, Y = data
    a, b = pair(dtype)
    s1, s2 = BatchSampler(5), BatchSampler(5)
    ta, tb = FusedTrainer(a, 16), FusedTrainer(b, 16)
    done, losses = ta.run(X, Y, 50, 0.05, s1)
    assert done == 50
    steps = [tb.step(X, Y, 0.05, s2.draw(len(X), 16)) for _ in range(50)]
    np.testing.assert_array_equal(losses, steps)
    for p, q in zip(a.parameters(), b.parameters()):
        np.testing.assert_array_equal(p, q)
    np.testing.assert_array_equal(s1.state, s2.state)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_the_compiled_loop_runs_the_unbiased_variant(data, dtype):
    """bn_unbiased=True in the compiled loop: its fused steps, not the default's (the comparison
    with the per-layer path above says they are the right ones), and the loop equals its steps."""
    X, Y = data
    lecture, default, steps = (CharMLP(VOCAB, dtype=dtype, seed=4, bn_unbiased=u)
                               for u in (True, False, True))
    _, la = FusedTrainer(lecture, 32).run(X, Y, 20, 0.1, BatchSampler(6))
    _, lb = FusedTrainer(default, 32).run(X, Y, 20, 0.1, BatchSampler(6))
    assert la[0] != lb[0] and not np.allclose(la, lb, rtol=1e-4)
    t, s = FusedTrainer(steps, 32), BatchSampler(6)
    np.testing.assert_array_equal(la, [t.step(X, Y, 0.1, s.draw(len(X), 32)) for _ in range(20)])
    for p, q in zip(lecture.parameters(), steps.parameters()):
        np.testing.assert_array_equal(p, q)


def test_one_variance_for_every_batchnorm_and_a_changed_one_rebinds(data):
    X, Y = data
    model = CharMLP(VOCAB, n_layers=2, n_hidden=20, seed=0)
    model.batchnorms()[1].unbiased = True
    with pytest.raises(ValueError, match="one variance"):
        FusedTrainer(model, 8)
    a, b = CharMLP(VOCAB, seed=5), CharMLP(VOCAB, seed=5, bn_unbiased=True)
    ta, tb = FusedTrainer(a, 8), FusedTrainer(b, 8)
    for bn in a.batchnorms():                      # switched after binding: the step sees it
        bn.unbiased = True
    rows = np.arange(8)
    assert ta.step(X, Y, 0.1, rows) == tb.step(X, Y, 0.1, rows)
    for bn in a.batchnorms():
        bn.unbiased = "yes"
    with pytest.raises(ValueError, match="unbiased must be True or False"):
        ta.step(X, Y, 0.1, rows)


def test_table_is_chosen_by_batch_size():
    model = CharMLP(VOCAB, seed=0)
    assert not FusedTrainer(model, 32).uses_table
    assert FusedTrainer(model, 1024).uses_table
    # by the one table rule (fastbn.inference.table_pays), its training case
    for B in (2, 47, 48, 49, 1024):
        assert FusedTrainer(model, B).uses_table == table_pays(3, 27, 10, 200, 4, rows=B,
                                                               training=True) == (B >= 48)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("lr,momentum", [(0.1, 0.001), (0.0123, 0.1), (3.7, 0.37)])
def test_fused_update_is_the_per_layer_update_bit_for_bit(data, dtype, lr, momentum):
    """The fused step's SGD and running-statistics update run the per-layer path's compiled
    loops (csrc/layers_impl.h): ``p - lr * g`` as NumPy rounds it, and, from the same running
    statistics and batch statistics, the per-layer update (nn.BatchNorm1d's)."""
    X, Y = data
    model = CharMLP(VOCAB, n_layers=2, n_hidden=40, bn_momentum=momentum, dtype=dtype, seed=1)
    trainer = FusedTrainer(model, 64)
    for bn in model.batchnorms():            # not the initial (0, 1): every value counts
        bn.running_mean[...] = np.linspace(-1, 1, bn.running_mean.size)
        bn.running_var[...] = np.linspace(0.5, 2, bn.running_var.size)
    rows = np.arange(64)
    old = [p.copy() for p in model.parameters()]
    old_buffers = [b.copy() for _, b in model.named_buffers()]
    trainer.step(X[rows], Y[rows], lr)
    for (name, p), p0, g in zip(model.named_parameters(), old, model.grads()):
        np.testing.assert_array_equal(p, p0 - lr * g, err_msg=name)
    # the running statistics: r (1 - m) + m batch, each product rounded, as nn.BatchNorm1d's
    # compiled update (K.batchnorm_running_update) computes it from the fused step's batch
    # statistics, recovered exactly with momentum 1 (keep 0, take 1) on a copy
    ones = CharMLP(VOCAB, n_layers=2, n_hidden=40, bn_momentum=1.0, dtype=dtype, seed=1)
    for p, q in zip(ones.parameters(), old):
        p[...] = q
    FusedTrainer(ones, 64).step(X[rows], Y[rows], lr)
    batch = [b for _, b in ones.named_buffers()]
    want = [b.copy() for b in old_buffers]
    for i in range(0, len(want), 2):
        assert K.batchnorm_running_update(want[i], want[i + 1], batch[i], batch[i + 1],
                                          float(momentum))
    for (name, got), w in zip(model.named_buffers(), want):
        np.testing.assert_array_equal(got, w, err_msg=name)


def test_run_is_reproducible_and_resumable(data):
    X, Y = data
    a, b = pair(np.float32)
    sa = BatchSampler(9)
    _, la = FusedTrainer(a, 32).run(X, Y, 100, 0.1, sa)
    sb = BatchSampler(9)
    tb = FusedTrainer(b, 32)
    _, l1 = tb.run(X, Y, 40, 0.1, sb)
    state = sb.state.copy()                          # a checkpoint of the sampler ...
    sb2 = BatchSampler(0)
    sb2.state[:] = state                             # ... restored into a new one
    _, l2 = tb.run(X, Y, 60, 0.1, sb2)
    np.testing.assert_array_equal(la, np.concatenate([l1, l2]))
    for p, q in zip(a.parameters(), b.parameters()):
        np.testing.assert_array_equal(p, q)


def test_training_lowers_the_loss(data):
    X, Y = data
    model = CharMLP(VOCAB, seed=0)
    _, losses = FusedTrainer(model, 64).run(X, Y, 1500, 0.1, BatchSampler(1))
    assert losses[0] == pytest.approx(np.log(27), abs=0.1)    # ~ln 27 at init
    assert losses[-200:].mean() < 1.0                 # the rule is learnable (optimum ~0.5)
    assert model.evaluate(X, Y) < 1.0                 # eval mode with the running statistics


def test_eval_loss_matches_the_model(data):
    X, Y = data
    model = CharMLP(VOCAB, seed=1)
    t = FusedTrainer(model, 64)
    t.run(X, Y, 200, 0.1, BatchSampler(2))
    rows = np.arange(64)
    assert t.loss(X, Y, rows) == pytest.approx(model.evaluate(X[:64], Y[:64]), rel=1e-5)
    model.train()
    assert t.loss(X, Y, rows, training=True) == pytest.approx(
        float(model.forward(X[:64], Y[:64])), rel=1e-5)


def test_non_finite_loss_stops_before_the_update(data):
    X, Y = data
    model = CharMLP(VOCAB, seed=2)
    t = FusedTrainer(model, 32)
    sampler = BatchSampler(3)
    done, losses = t.run(X, Y, 500, 1e37, sampler)           # absurd lr: diverges
    assert done < 500 and t.divergence is not None and np.isfinite(losses[:done]).all()
    # found in the forward: step done not applied; after the update (which overflow comes first
    # depends on the CPU's arithmetic): applied
    applied = t.divergence.applied
    assert applied or all(np.all(np.isfinite(p)) for p in model.parameters())
    # the sampler has drawn the rows of steps 0..done, the failing one's included, and no more
    # (the loop draws a step ahead, and takes that draw back)
    drawn = BatchSampler(3)
    for _ in range(done + 1):
        drawn.draw(len(X), 32)
    np.testing.assert_array_equal(sampler.state, drawn.state)
    # the state is that after step done - 1 (or done, applied): replaying reproduces it
    ref = CharMLP(VOCAB, seed=2)
    FusedTrainer(ref, 32).run(X, Y, done + applied, 1e37, BatchSampler(3))
    for p, q in zip(model.parameters(), ref.parameters()):
        np.testing.assert_array_equal(p, q)


def test_rebinds_when_the_model_arrays_are_replaced(data):
    X, Y = data
    a, b = pair(np.float64)
    ta, tb = FusedTrainer(a, 8), FusedTrainer(b, 8)
    fresh = CharMLP(VOCAB, dtype=np.float64, seed=99)
    a.layers[1].weight = fresh.layers[1].weight.copy()        # replaced, not written in place
    b.layers[1].weight[...] = fresh.layers[1].weight
    rows = np.arange(8)
    assert ta.step(X, Y, 0.1, rows) == tb.step(X, Y, 0.1, rows)


@pytest.mark.parametrize("kw,reason", [
    (dict(batchnorm=False), "batch norm"),
    (dict(final_bn=True), "final batch norm"),
] + [pytest.param(dict(activation=a), "written for tanh", id=a)
      for a in NONLINEARITIES if a != "tanh"])
def test_unsupported_models_are_refused(kw, reason):
    model = CharMLP(VOCAB, seed=0, **kw)
    ok, why = supports(model)
    assert not ok and reason in why
    with pytest.raises(ValueError, match=reason):
        FusedTrainer(model, 32)


def test_bad_arguments(data):
    X, Y = data
    t = FusedTrainer(CharMLP(VOCAB, seed=0), 4)
    with pytest.raises(ValueError, match="batch_size"):
        FusedTrainer(CharMLP(VOCAB, seed=0), 1)
    tracemalloc.start()                         # NumPy reports its buffers to tracemalloc
    try:
        with pytest.raises(ValueError, match=r"exceed 2\*\*30"):
            FusedTrainer(CharMLP(VOCAB, seed=0), 2**30 + 1)
        assert tracemalloc.get_traced_memory()[1] < 2**26      # refused before allocating
    finally:
        tracemalloc.stop()
    with pytest.raises(IndexError):
        t.step(X, Y, 0.1, np.array([0, 1, 2, len(X)]))
    with pytest.raises(ValueError, match="rows"):
        t.step(X, Y, 0.1, np.arange(5))
    with pytest.raises(IndexError, match="27"):
        t.run(np.where(X == 0, 27, X), Y, 3, 0.1, BatchSampler(0))
    with pytest.raises(TypeError):
        t.run(X.astype(float), Y, 3, 0.1, BatchSampler(0))
    with pytest.raises(ValueError, match=r"\(N, 3\)"):
        t.run(X[:, :2], Y, 3, 0.1, BatchSampler(0))


def test_sampler_is_seeded_uniform_and_unbiased():
    a, b = BatchSampler(42), BatchSampler(42)
    x = a.draw(10, 200_000)
    np.testing.assert_array_equal(x, b.draw(10, 200_000))
    assert not np.array_equal(BatchSampler(43).draw(10, 100), BatchSampler(42).draw(10, 100))
    assert x.min() == 0 and x.max() == 9
    counts = np.bincount(x, minlength=10)
    # chi-square with 9 degrees of freedom: 99.99 % quantile is 33.7
    chi2 = ((counts - 20_000) ** 2 / 20_000).sum()
    assert chi2 < 33.7
    # a non-power-of-two bound near 2^32 would show modulo bias: all draws stay in range
    big = BatchSampler(1).draw(3_000_000_019, 1000)
    assert big.min() >= 0 and big.max() < 3_000_000_019


def ulps(got, exact, dtype):
    """|got - exact| in ulps of ``exact`` rounded to ``dtype`` (the ulp of a subnormal, or of 0,
    is the smallest subnormal); ``exact`` in long double (64-bit mantissa, exponent to 16383)."""
    return np.abs(got.astype(np.longdouble) - exact) / \
        np.spacing(np.abs(exact).astype(dtype)).astype(np.longdouble)


def test_fast_tanh_float32_is_within_6_ulp_subnormals_included():
    tiny = np.geomspace(1e-45, 1, 20_000)              # subnormal float32 below 1.2e-38
    x = np.concatenate([np.linspace(-12, 12, 200_001), tiny, -tiny, [0.0, 1e-5, 4e-4]])
    x = x.astype(np.float32)
    t = np.empty_like(x)
    K.fast_tanh_f32(x, t)
    u = ulps(t, np.tanh(x.astype(np.longdouble)), np.float32)
    assert float(u.max()) <= 6                          # measured 4.6 ulp near |x| = 7.9
    assert np.all(np.abs(t) <= 1)
    small = np.abs(x) < 1e-30                          # tanh(x) rounds to x: exactly x
    np.testing.assert_array_equal(t[small], x[small])
    special = np.array([np.nan, np.inf, -np.inf, -1000.0, -0.0, 1e-45], dtype=np.float32)
    s = np.empty_like(special)
    K.fast_tanh_f32(special, s)
    assert np.isnan(s[0]) and s[1] == 1 and s[2] == -1 and s[3] == -1
    assert s[4] == 0 and np.signbit(s[4]) and s[5] == special[5]


def test_fast_exp_float32_is_within_4_ulp_down_to_0_and_up_to_inf():
    x = np.linspace(-110, 89, 400_001).astype(np.float32)
    e = np.empty_like(x)
    K.fast_exp_f32(x, e)
    exact = np.exp(x.astype(np.longdouble))
    big = exact > np.finfo(np.float32).max             # x > 88.72: +inf, as exp
    assert np.all(np.isinf(e[big]) & (e[big] > 0))
    assert float(ulps(e[~big], exact[~big], np.float32).max()) <= 4      # measured 1.0
    # gradual underflow: subnormal results (x < -87.34) within one 2^-149, then 0 below
    # exp(x) = 2^-150 (x < -103.97), where the exact value rounds to 0
    sub = exact < np.finfo(np.float32).tiny
    assert np.abs(e[sub] - exact[sub]).max() <= 2.0**-149
    assert np.all(e[exact < 2.0**-150] == 0) and np.all(e[exact > 2.0**-149] > 0)
    special = np.array([np.nan, np.inf, -np.inf, -1000.0, -104.0, 89.0, 0.0, -0.0],
                       dtype=np.float32)
    s = np.empty_like(special)
    K.fast_exp_f32(special, s)
    assert np.isnan(s[0]) and s[1] == np.inf and s[5] == np.inf
    assert s[2] == 0 and s[3] == 0 and s[4] == 0 and s[6] == 1 and s[7] == 1


def test_fast_exp_float64_is_within_2_ulp_down_to_0_and_up_to_inf():
    # the float64 softmax's exp, over the whole range: subnormal results below x = -708.4,
    # 0 below -745.13, +inf above 709.78
    x = np.concatenate([np.linspace(-750, 711, 400_001), np.linspace(-1, 1, 20_001)])
    e = np.empty_like(x)
    K.fast_exp_f64(x, e)
    exact = np.exp(x.astype(np.longdouble))                  # 64-bit mantissa reference
    big = exact > np.finfo(np.float64).max
    assert np.all(np.isinf(e[big]) & (e[big] > 0))
    assert float(ulps(e[~big], exact[~big], np.float64).max()) <= 2      # measured 1.6 ulp
    assert np.all(e[exact < 2.0**-1075] == 0) and np.all(e[exact > 2.0**-1074] > 0)
    special = np.array([np.nan, -np.inf, np.inf, -1000.0, 1000.0, 0.0, -0.0])
    s = np.empty(len(special))
    K.fast_exp_f64(special, s)
    assert np.isnan(s[0]) and s[1] == 0 and s[2] == np.inf and s[3] == 0 and s[4] == np.inf
    assert s[5] == 1 and s[6] == 1


def test_fast_tanh_float64_is_within_2_ulp():
    x = np.concatenate([np.linspace(-25, 25, 400_001), np.geomspace(1e-300, 1, 2000),
                        -np.geomspace(1e-300, 1, 2000), np.geomspace(5e-324, 1e-300, 200),
                        [0.625, np.nextafter(0.625, 1), 20.0]])
    t = np.empty_like(x)
    K.fast_tanh_f64(x, t)
    assert float(ulps(t, np.tanh(x.astype(np.longdouble)), np.float64).max()) <= 2
    special = np.array([np.nan, np.inf, -np.inf, -0.0])
    s = np.empty(4)
    K.fast_tanh_f64(special, s)
    assert np.isnan(s[0]) and s[1] == 1 and s[2] == -1 and s[3] == 0 and np.signbit(s[3])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_a_huge_logit_gap_gives_exact_probabilities(dtype):
    """The softmax's exp at its edge: logits 1000 apart have probabilities exp(-1000) = 0, so the
    gradient of every other class's bias is exactly 0 (the old clamps of exp gave 1.2e-38 in
    float32 and 3.3e-308 in float64), and the losses are exactly 0 and the gap."""
    model = CharMLP(VOCAB, seed=0, dtype=dtype)
    out = model.layers[-1]
    out.weight[...] = 0
    out.bias[...] = 0
    out.bias[5] = 1000.0                    # every example predicts class 5 by a gap of 1000
    t = FusedTrainer(model, 4)
    X = np.zeros((4, 3), np.int64)
    assert t.loss(X, np.full(4, 6), training=True) == 1000.0
    assert t.step(X, np.full(4, 5), 0.1) == 0.0
    assert np.all(out.dbias == 0), out.dbias


# ------------------------------------------------------------------ the sampler against a model

_M = 2**64


def _pcg32(st):
    """O'Neill's pcg32_random_r, in Python: the model the C sampler is held to."""
    old = st[0]
    st[0] = (old * 6364136223846793005 + st[1]) % _M
    xs = (((old >> 18) ^ old) >> 27) & 0xFFFFFFFF
    rot = old >> 59
    return ((xs >> rot) | (xs << ((-rot) & 31))) & 0xFFFFFFFF


def _srandom(seed, seq):
    st = [0, ((seq << 1) | 1) % _M]
    _pcg32(st)
    st[0] = (st[0] + seed) % _M
    _pcg32(st)
    return st


def _lemire(st, n):
    m = _pcg32(st) * n
    low = m & 0xFFFFFFFF
    if low < n:
        threshold = (2**32 - n) % n
        while low < threshold:
            m = _pcg32(st) * n
            low = m & 0xFFFFFFFF
    return m >> 32


def test_pcg32_matches_the_reference_and_lemire_is_exact():
    st = _srandom(42, 54)
    # pcg32-demo's first outputs for srandom(42, 54), from the PCG paper's reference code
    assert [_pcg32(st) for _ in range(6)] == [0xA15C02B7, 0x7B47F409, 0xBA1D3330, 0x83D2F293,
                                               0xBFA4784B, 0xCBED606E]
    # fastbn's seeding is srandom(seed, the default stream)
    s = BatchSampler(42)
    assert [int(v) for v in s.state] == _srandom(42, 0xDA3E39CB94B95BDB)
    # the bounded draws, rejection included: n near 2^32 rejects often
    for n in (3, 27, 182_625, 3 * 2**30 + 1, 2**32 - 5):
        model = [int(v) for v in s.state]
        got = s.draw(n, 2000)
        assert got.tolist() == [_lemire(model, n) for _ in range(2000)], n
        assert [int(v) for v in s.state] == model
