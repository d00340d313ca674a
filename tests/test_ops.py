"""fastbn.ops against the plain-NumPy reference, finite differences, and itself across dtypes."""
import functools

import numpy as np
import pytest

from fastbn import gradcheck, ops, reference
from fastbn._opinfo import OPS
from fastbn.gradchecks import GradcheckError, standard_checks

DTYPES = [np.float32, np.float64]
ELEMENTWISE = [n for n, op in OPS.items() if op.elementwise]
# each elementwise op at its defaults and, when it has options, at their sample values
ELEMENTWISE_CALLS = [pytest.param(n, (), id=n) for n in ELEMENTWISE] + [
    pytest.param(n, tuple(OPS[n].sample_options().values()),
                 id=f"{n}({', '.join(f'{k}={v}' for k, v in OPS[n].sample_options().items())})")
    for n in ELEMENTWISE if OPS[n].options]


def tol(dtype):
    return dict(rtol=1e-12, atol=1e-12) if dtype == np.float64 else dict(rtol=1e-5, atol=1e-6)


def close(a, b, dtype, per=None):
    """``a`` against ``b`` at the dtype's tolerance; with ``per``, an array of ``a``'s shape, an
    elementwise allowance of ``rtol * per`` more (``|dout|`` for a gradient read from the saved
    output: a forward a few ulp off moves it by a few ulp of |dout|)."""
    assert a.dtype == np.dtype(dtype)
    if per is None:
        np.testing.assert_allclose(a, b, **tol(dtype))
        return
    t = tol(dtype)
    err = np.abs(a.astype(np.float64) - b)
    bound = t["atol"] + t["rtol"] * (np.abs(b) + per)
    assert np.all(err <= bound), f"max excess {np.max(err - bound):.3g} at " \
        f"{np.unravel_index(np.argmax(err - bound), err.shape)}"


# ------------------------------------------------------------------ forward/backward vs reference

@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("B,T,V,D", [(1, 1, 1, 1), (32, 3, 27, 10), (64, 8, 5, 3)])
def test_embedding_matches_reference(rng, dtype, B, T, V, D):
    w = rng.standard_normal((V, D)).astype(dtype)
    idx = rng.integers(0, V, size=(B, T))
    out, c = ops.embedding_forward(w, idx)
    rout, rc = reference.embedding_forward(w, idx)
    assert out.shape == (B, T * D)
    close(out, rout, dtype)
    dout = rng.standard_normal(out.shape).astype(dtype)
    close(ops.embedding_backward(dout, c), reference.embedding_backward(dout, rc), dtype)


def test_embedding_repeated_indices_accumulate(rng):
    w = rng.standard_normal((4, 2))
    idx = np.zeros((50, 3), dtype=np.int64)          # every lookup hits row 0
    idx[:, 2] = 3
    _, c = ops.embedding_forward(w, idx)
    dw = ops.embedding_backward(np.ones((50, 6)), c)
    np.testing.assert_array_equal(dw, [[100, 100], [0, 0], [0, 0], [50, 50]])


def test_embedding_1d_index(rng):
    w = rng.standard_normal((5, 3))
    out, c = ops.embedding_forward(w, np.array([4, 0, 4]))
    np.testing.assert_array_equal(out, w[[4, 0, 4]])
    dw = ops.embedding_backward(np.ones((3, 3)), c)
    np.testing.assert_array_equal(dw[:, 0], [1, 0, 0, 0, 2])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("B,I,O", [(1, 1, 1), (32, 30, 200), (7, 200, 27), (3, 5, 1)])
@pytest.mark.parametrize("bias", [True, False])
def test_linear_matches_reference(rng, dtype, B, I, O, bias):
    x = rng.standard_normal((B, I)).astype(dtype)
    w = rng.standard_normal((I, O)).astype(dtype)
    b = rng.standard_normal(O).astype(dtype) if bias else None
    out, c = ops.linear_forward(x, w, b)
    rout, rc = reference.linear_forward(x, w, b)
    close(out, rout, dtype)
    dout = rng.standard_normal((B, O)).astype(dtype)
    got, want = ops.linear_backward(dout, c), reference.linear_backward(dout, rc)
    for g, r in zip(got[:2], want[:2]):
        close(g, r, dtype)
    if bias:
        close(got[2], want[2], dtype)
    else:
        assert got[2] is None


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name,args", ELEMENTWISE_CALLS)
@pytest.mark.parametrize("shape", [(1,), (32, 200), (4, 3, 5)])
def test_elementwise_matches_reference(rng, dtype, name, args, shape):
    op = OPS[name]
    x = (3 * rng.standard_normal(shape)).astype(dtype)
    out, c = op.forward(x, *args)
    rout, rc = op.reference_forward(x, *args)
    assert out.shape == shape
    close(out, rout, dtype)
    dout = rng.standard_normal(shape).astype(dtype)
    close(op.backward(dout, c), op.reference_backward(dout, rc), dtype,
          per=np.abs(dout) if op.grad_from_output else None)


@pytest.mark.parametrize("dtype", DTYPES)
def test_tanh_backward_on_its_saved_output(rng, dtype):
    """The backward is dout * (1 - t**2) of the saved t: on the same t, to the last bits. (The
    two forwards' t differ by a few ulp, and 1 - t**2 magnifies that where |t| -> 1.)"""
    x = (3 * rng.standard_normal((32, 200))).astype(dtype)
    t, c = ops.tanh_forward(x)
    dout = rng.standard_normal(x.shape).astype(dtype)
    close(ops.tanh_backward(dout, c), reference.tanh_backward(dout, c.out), dtype)


@pytest.mark.parametrize("unbiased", [False, True])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("B,D", [(2, 1), (2, 7), (32, 200), (1000, 3)])
def test_batchnorm_matches_reference(rng, dtype, B, D, unbiased):
    x = (rng.standard_normal((B, D)) * 3 + 5).astype(dtype)
    g = rng.uniform(0.5, 1.5, D).astype(dtype)
    b = rng.standard_normal(D).astype(dtype)
    out, c = ops.batchnorm_forward(x, g, b, 1e-5, unbiased=unbiased)
    rout, rc = reference.batchnorm_forward(x, g, b, 1e-5, unbiased=unbiased)
    close(out, rout, dtype)
    close(c.mean, rc[3], dtype)
    close(c.var, rc[4], dtype)
    close(c.invstd, rc[2], dtype)
    assert c.unbiased is unbiased
    dout = rng.standard_normal((B, D)).astype(dtype)
    # dx sums B terms that nearly cancel (for B = 2 it is ~0): judge float32 on the scale of
    # those terms, |dout * gamma * invstd|, against a float64 reference of the same inputs
    scale = np.abs(dout * g * c.invstd).max()
    r64 = reference.batchnorm_backward(dout.astype(np.float64),
                                       reference.batchnorm_forward(x.astype(np.float64),
                                                                   g.astype(np.float64),
                                                                   b.astype(np.float64),
                                                                   unbiased=unbiased)[1])
    for g_, r_ in zip(ops.batchnorm_backward(dout, c), r64):
        assert g_.dtype == np.dtype(dtype)
        np.testing.assert_allclose(g_, r_, **(tol(dtype) if dtype == np.float64 else
                                              dict(rtol=1e-4, atol=1e-5 * scale)))


def test_batchnorm_cache_exposes_batch_mean_and_unbiased_var(rng):
    x = rng.standard_normal((5, 3))
    _, c = ops.batchnorm_forward(x, np.ones(3), np.zeros(3))
    np.testing.assert_allclose(c.mean, x.mean(0), rtol=1e-14)
    np.testing.assert_allclose(c.var, x.var(0, ddof=1), rtol=1e-14)
    np.testing.assert_allclose(c.invstd, 1 / np.sqrt(x.var(0) + 1e-5), rtol=1e-14)


def test_batchnorm_normalizes_with_biased_variance(rng):
    x = rng.standard_normal((4, 6)) * 7 + 2
    out, _ = ops.batchnorm_forward(x, np.ones(6), np.zeros(6), eps=0.0)
    np.testing.assert_allclose(out.mean(0), 0, atol=1e-14)
    np.testing.assert_allclose(out.var(0), 1, rtol=1e-12)       # biased var of the output is 1


@pytest.mark.parametrize("B", [2, 4, 33])
def test_unbiased_batchnorm_normalizes_with_the_bessel_corrected_variance(rng, B):
    """unbiased=True: the output's unbiased variance is 1 (the biased one (B-1)/B); the cache's
    var is the unbiased batch variance, as in the default, and invstd is of that variance."""
    x = rng.standard_normal((B, 6)) * 7 + 2
    out, c = ops.batchnorm_forward(x, np.ones(6), np.zeros(6), eps=0.0, unbiased=True)
    np.testing.assert_allclose(out.mean(0), 0, atol=1e-14)
    np.testing.assert_allclose(out.var(0, ddof=1), 1, rtol=1e-12)
    np.testing.assert_allclose(out.var(0), (B - 1) / B, rtol=1e-12)
    np.testing.assert_allclose(c.var, x.var(0, ddof=1), rtol=1e-14)
    np.testing.assert_allclose(c.invstd, 1 / np.sqrt(x.var(0, ddof=1)), rtol=1e-14)
    _, cb = ops.batchnorm_forward(x, np.ones(6), np.zeros(6), eps=0.0)
    np.testing.assert_array_equal(c.var, cb.var)
    np.testing.assert_array_equal(c.mean, cb.mean)


def test_batchnorm_backward_follows_the_cache_not_a_guess(rng):
    """The backward differentiates the variant the forward ran, which its cache records: the
    lecture's closed form (B/(B-1) on the xhat * dgamma term) for an unbiased cache, torch's for
    the default; the same xhat, invstd and gamma under the other flag give the other gradient."""
    B = 5
    x, dout = rng.standard_normal((B, 4)) * 2 + 1, rng.standard_normal((B, 4))
    g = rng.uniform(0.5, 2, 4)
    _, c = ops.batchnorm_forward(x, g, np.zeros(4), unbiased=True)
    dx, dgamma, dbeta = ops.batchnorm_backward(dout, c)
    lecture = g * c.invstd / B * (B * dout - dout.sum(0)
                                  - B / (B - 1) * c.xhat * (dout * c.xhat).sum(0))
    np.testing.assert_allclose(dx, lecture, rtol=1e-12, atol=1e-14)
    c.unbiased = False
    assert not np.allclose(ops.batchnorm_backward(dout, c)[0], dx)


@pytest.mark.parametrize("dtype", DTYPES)
def test_batchnorm_eval_matches_reference(rng, dtype):
    x = rng.standard_normal((9, 4)).astype(dtype)
    g, b, m = (rng.standard_normal(4).astype(dtype) for _ in range(3))
    v = rng.uniform(0.1, 3, 4).astype(dtype)
    out, c = ops.batchnorm_eval_forward(x, g, b, m, v, 1e-5)
    rout, rc = reference.batchnorm_eval_forward(x, g, b, m, v, 1e-5)
    close(out, rout, dtype)
    dout = rng.standard_normal(x.shape).astype(dtype)
    for g_, r_ in zip(ops.batchnorm_eval_backward(dout, c),
                      reference.batchnorm_eval_backward(dout, rc)):
        close(g_, r_, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("B,C", [(1, 1), (1, 27), (32, 27), (100, 3)])
def test_cross_entropy_matches_reference(rng, dtype, B, C):
    logits = (3 * rng.standard_normal((B, C))).astype(dtype)
    t = rng.integers(0, C, B)
    loss, c = ops.cross_entropy_forward(logits, t)
    rloss, rc = reference.cross_entropy_forward(logits, t)
    assert isinstance(loss, np.dtype(dtype).type)
    np.testing.assert_allclose(loss, rloss, **tol(dtype))
    for dloss in (1.0, 0.5):
        close(ops.cross_entropy_backward(dloss, c), reference.cross_entropy_backward(dloss, rc),
              dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_cross_entropy_is_stable_for_huge_logits(dtype):
    logits = np.array([[1e4, -1e4, 0.0], [-1e4, -1e4, -1e4], [1e4, 1e4, -1e4]], dtype=dtype)
    t = np.array([1, 2, 0])
    loss, c = ops.cross_entropy_forward(logits, t)
    d = ops.cross_entropy_backward(1.0, c)
    assert np.isfinite(loss) and np.all(np.isfinite(d))
    # row 0: 2e4; row 1: log 3; row 2: log 2
    np.testing.assert_allclose(loss, (2e4 + np.log(3) + np.log(2)) / 3, rtol=1e-6)
    np.testing.assert_allclose(d[0], np.array([1, -1, 0]) / 3, atol=1e-7)


def test_cross_entropy_uniform_logits_give_log_c():
    loss, _ = ops.cross_entropy_forward(np.zeros((32, 27)), np.arange(32) % 27)
    assert loss == pytest.approx(np.log(27), rel=1e-14)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("alpha", [1.0, 0.3, 2.0])
def test_elu_backward_on_its_saved_output(rng, dtype, alpha):
    """dx = dout where out > 0, dout * (out + alpha) elsewhere, of the saved output, to the last
    bits; and out + alpha = alpha e^x (the reference, from x) up to one ulp of alpha."""
    x = (3 * rng.standard_normal((32, 200))).astype(dtype)
    out, c = ops.elu_forward(x, alpha)
    dout = rng.standard_normal(x.shape).astype(dtype)
    dx = ops.elu_backward(dout, c)
    a = np.asarray(alpha, dtype)
    close(dx, np.where(out > 0, dout, dout * (out + a)), dtype)
    want = reference.elu_backward(dout.astype(np.float64), (x.astype(np.float64), alpha))
    eps = np.finfo(dtype).eps
    assert np.all(np.abs(dx - want) <= 4 * eps * (alpha + np.abs(want)) * np.abs(dout) + 1e-300)


@pytest.mark.parametrize("dtype", DTYPES)
def test_elu_with_alpha_0_is_relu(rng, dtype):
    x = (3 * rng.standard_normal((16, 20))).astype(dtype)
    x[0, :3] = 0
    out, c = ops.elu_forward(x, 0.0)
    rout, rc = ops.relu_forward(x)
    np.testing.assert_array_equal(out, rout)
    dout = rng.standard_normal(x.shape).astype(dtype)
    np.testing.assert_array_equal(ops.elu_backward(dout, c), ops.relu_backward(dout, rc))


def test_elu_default_alpha_is_1(rng):
    x = rng.standard_normal(50)
    np.testing.assert_array_equal(ops.elu_forward(x)[0], ops.elu_forward(x, 1.0)[0])
    np.testing.assert_allclose(ops.elu_forward(np.array([-1.0]))[0], np.exp(-1.0) - 1, rtol=1e-15)


def test_elu_alpha_must_be_finite_and_nonnegative():
    """(a negative, non-finite or non-number alpha given to the forward: its error inputs)"""
    np.testing.assert_array_equal(ops.elu_forward(np.ones(3), np.float32(0.5))[0], 1)
    _, c = ops.elu_forward(np.ones(3))
    c.alpha = -1.0                                   # a cache changed after the forward
    with pytest.raises(ValueError, match="alpha must be a finite number >= 0"):
        ops.elu_backward(np.ones(3), c)


# ------------------------------------------------------------------ float32 agrees with float64

@pytest.mark.parametrize("name", list(OPS))
def test_float32_agrees_with_float64(rng, name):
    args = OPS[name].args(B=16, D=12, I=12, C=12, seed=5)
    fwd, bwd = OPS[name].forward, OPS[name].backward
    as32 = [a.astype(np.float32) if isinstance(a, np.ndarray) and a.dtype == np.float64 else a
            for a in args]
    o64, c64 = fwd(*args)
    o32, c32 = fwd(*as32)
    assert np.asarray(o32).dtype == np.float32
    np.testing.assert_allclose(o32, o64, rtol=1e-5, atol=1e-5)
    dout = rng.standard_normal(np.shape(o64)) if np.ndim(o64) else 1.0
    g64, g32 = bwd(dout, c64), bwd(np.float32(dout) if np.ndim(o64) == 0
                                   else dout.astype(np.float32), c32)
    for a, b in zip(np.atleast_1d(g32) if isinstance(g32, np.ndarray) else g32,
                    np.atleast_1d(g64) if isinstance(g64, np.ndarray) else g64):
        if a is None:
            continue
        assert a.dtype == np.float32
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


# ------------------------------------------------------------------ finite differences

@pytest.mark.parametrize("check", standard_checks(seed=0),
                         ids=lambda c: c[0] if isinstance(c, tuple) else "")
def test_gradcheck_standard(check):
    label, fn, inputs = check
    report = gradcheck(fn, inputs)
    assert report.passed and report.rows


@pytest.mark.parametrize("unbiased", [False, True])
@pytest.mark.parametrize("B,D", [(2, 1), (2, 5), (3, 4), (16, 3)])
def test_gradcheck_batchnorm_shapes(rng, B, D, unbiased):
    x = rng.standard_normal((B, D)) * 2 + 1
    forward = functools.partial(ops.batchnorm_forward, unbiased=unbiased)
    assert gradcheck((forward, ops.batchnorm_backward),
                     (x, rng.uniform(0.5, 2, D), rng.standard_normal(D))).passed


def _biased_backward(dout, c):
    """torch's closed form whatever the cache says: no B/(B-1)."""
    B = dout.shape[0]
    dbeta, dgamma = dout.sum(0), (dout * c.xhat).sum(0)
    return c.gamma * c.invstd / B * (B * dout - dbeta - c.xhat * dgamma), dgamma, dbeta


@pytest.mark.parametrize("B", [2, 8])
def test_gradcheck_catches_the_biased_backward_of_the_unbiased_forward(B):
    """The classic bug of the lecture's exercise, the missing B/(B-1): caught at B = 2 and 8
    (and the same backward passes the default forward, so the check is about the factor)."""
    args = OPS["batchnorm"].args(B=B)[:3]
    unbiased = functools.partial(ops.batchnorm_forward, unbiased=True)
    with pytest.raises(GradcheckError) as e:
        gradcheck((unbiased, _biased_backward), args)
    assert [r.input for r in e.value.report.rows if not r.passed] == ["x"]
    assert gradcheck((ops.batchnorm_forward, _biased_backward), args).passed


@pytest.mark.parametrize("B,T,V,D", [(1, 1, 3, 2), (40, 4, 3, 2), (6, 2, 30, 5)])
def test_gradcheck_embedding_shapes(rng, B, T, V, D):
    idx = rng.integers(0, min(V, 3), size=(B, T))         # at most 3 distinct rows: repetition
    assert gradcheck((ops.embedding_forward, ops.embedding_backward),
                     (rng.standard_normal((V, D)), idx)).passed


@pytest.mark.parametrize("B,I,O", [(1, 1, 1), (2, 9, 4), (13, 3, 17)])
def test_gradcheck_linear_shapes(rng, B, I, O):
    assert gradcheck((ops.linear_forward, ops.linear_backward),
                     (rng.standard_normal((B, I)), rng.standard_normal((I, O)),
                      rng.standard_normal(O))).passed


@pytest.mark.parametrize("B,C", [(1, 2), (5, 27), (30, 4)])
def test_gradcheck_cross_entropy_shapes(rng, B, C):
    assert gradcheck((ops.cross_entropy_forward, ops.cross_entropy_backward),
                     (4 * rng.standard_normal((B, C)), rng.integers(0, C, B))).passed


@pytest.mark.parametrize("shape", [(1,), (3, 4), (2, 3, 4)])
@pytest.mark.parametrize("name", ELEMENTWISE)
def test_gradcheck_elementwise_shapes(rng, shape, name):
    x = rng.standard_normal(shape)
    x[np.abs(x) < 1e-3] = 0.1                          # away from the kink
    op = OPS[name]
    assert gradcheck((op.forward, op.backward), (x, *op.sample_options().values())).passed


# A gradient test is trusted once a broken backward has been seen to fail it: one per op, each
# entry's ``broken``.
BROKEN = {n: op.broken for n, op in OPS.items()}


def test_every_op_has_a_broken_backward():
    assert sorted(BROKEN) == sorted(OPS) and all(callable(f) for f in BROKEN.values())


@pytest.mark.parametrize("name", sorted(BROKEN))
def test_gradcheck_catches_broken_backward(name):
    op = OPS[name]
    with pytest.raises(GradcheckError) as e:
        gradcheck((op.forward, BROKEN[name]), op.args(), constants=op.constants)
    assert "analytic" in str(e.value) and "numeric" in str(e.value)
    assert not e.value.report.passed


# ------------------------------------------------------------------ the Python layer's checks

def test_inputs_are_not_modified_and_outputs_are_fresh(rng):
    x = rng.standard_normal((4, 3))
    keep = x.copy()
    out, c = ops.tanh_forward(x)
    ops.tanh_backward(np.ones_like(x), c)
    np.testing.assert_array_equal(x, keep)
    assert not np.shares_memory(out, x)


def test_non_contiguous_inputs_give_the_same_results(rng):
    x = rng.standard_normal((8, 6))
    w = rng.standard_normal((6, 4))
    want, _ = ops.linear_forward(x[::-1].copy(), w.T.copy().T.copy())
    got, _ = ops.linear_forward(x[::-1], np.asfortranarray(w))
    np.testing.assert_allclose(got, want, rtol=1e-14)
    got, _ = ops.batchnorm_forward(x[:, ::2], np.ones(3), np.zeros(3))
    want, _ = ops.batchnorm_forward(x[:, ::2].copy(), np.ones(3), np.zeros(3))
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("call", [
    lambda: ops.tanh_forward(np.ones(3, dtype=np.int64)),
    lambda: ops.tanh_forward(np.ones(3, dtype=np.float16)),
    lambda: ops.linear_forward(np.ones((2, 3)), np.ones((3, 2), dtype=np.float32)),
    lambda: ops.embedding_forward(np.ones((3, 2)), np.array([[0.0, 1.0]])),
    lambda: ops.cross_entropy_forward(np.ones((2, 3)), np.array([0.5, 1.0])),
    lambda: ops.tanh_backward(np.ones(3), ops.relu_forward(np.ones(3))[1]),
])
def test_bad_types_raise_type_error(call):
    with pytest.raises(TypeError):
        call()


@pytest.mark.parametrize("call,match", [
    (lambda: ops.linear_forward(np.ones((2, 3)), np.ones((4, 2))), r"\(2, 3\).*\(4, 2\)"),
    (lambda: ops.linear_forward(np.ones((2, 3)), np.ones((3, 2)), np.ones(3)), "b must have"),
    (lambda: ops.batchnorm_forward(np.ones((1, 3)), np.ones(3), np.zeros(3)),
     "more than 1 value per channel"),
    (lambda: ops.batchnorm_forward(np.ones((4, 3)), np.ones(3), np.zeros(3), eps=-1),
     "eps must be >= 0"),
    (lambda: ops.tanh_backward(np.ones(4), ops.tanh_forward(np.ones(3))[1]), "dout must have"),
])
def test_bad_shapes_raise_value_error(call, match):
    with pytest.raises(ValueError, match=match):
        call()


@pytest.mark.parametrize("call,match", [
    (lambda: ops.embedding_forward(np.ones((3, 2)), np.array([[0, 3]])), "holds 3"),
    (lambda: ops.embedding_forward(np.ones((3, 2)), np.array([[-1, 0]])), "holds -1"),
    (lambda: ops.cross_entropy_forward(np.ones((2, 3)), np.array([0, 7])), "holds 7"),
])
def test_out_of_range_indices_raise_index_error(call, match):
    with pytest.raises(IndexError, match=match):
        call()
