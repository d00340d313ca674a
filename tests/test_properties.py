"""Property-based tests: every op of fastbn.ops against fastbn.reference on drawn shapes and values.

Hypothesis draws the shapes, the dtype (float32 or float64), finite values in a sane range and the
memory layout of each input (contiguous or a reversed / strided view); the forward output, the
cache statistics and every gradient must match the plain-NumPy oracle evaluated in float64 on the
same (upcast) inputs.

Tolerance ``atol + rtol * |reference|`` with rtol 1e-10 (float64) or 1e-4 (float32) and
``atol = rtol * scale``, where ``scale`` is the magnitude of the terms the result is computed from,
elementwise: the rounding error of a sum is proportional to the sum of |terms|, not to the (possibly
cancelled) result. So a dot product is judged against ``|x| @ |w|``, a batch-norm dx against
``|gamma * invstd| * (|dout| + mean|dout| + |xhat| * mean|dout * xhat|)``, a normalized value
against
``invstd * (|x| + |mean|)``.
"""
import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from fastbn import ops, reference
from fastbn._opinfo import OPS

RTOL = {np.dtype(np.float32): 1e-4, np.dtype(np.float64): 1e-10}
SLOW = [HealthCheck.too_slow]       # arrays are drawn element by element

dtypes = st.sampled_from([np.dtype(np.float32), np.dtype(np.float64)])


def values(draw, dtype, shape, lo=-100.0, hi=100.0):
    """A float array of ``dtype`` and ``shape``, finite values in [lo, hi], in a drawn layout."""
    a = draw(hnp.arrays(dtype, shape, elements=st.floats(lo, hi, width=dtype.itemsize * 8)))
    return layout(draw, a)


def layout(draw, a):
    """``a`` itself, or a non-contiguous view holding the same values."""
    kind = draw(st.sampled_from(["contiguous", "reversed", "strided", "fortran"]))
    if kind == "reversed":
        return np.flip(np.flip(a).copy())
    if kind == "strided" and a.ndim:
        big = np.zeros(tuple(2 * s for s in a.shape), dtype=a.dtype)
        big[tuple(slice(None, None, 2) for _ in a.shape)] = a
        return big[tuple(slice(None, None, 2) for _ in a.shape)]
    if kind == "fortran" and a.ndim:
        return np.asfortranarray(a)
    return a


def f64(*arrays):
    return [None if a is None else np.asarray(a, dtype=np.float64) for a in arrays]


def check(got, want, scale, dtype, what):
    """|got - want| <= rtol * scale + rtol * |want| + tiny, elementwise, in the call's dtype.

    ``tiny``, the dtype's smallest normal number, allows for results that underflow to a
    subnormal or to zero: below it the dtype has no relative precision left.
    """
    got = np.asarray(got)
    assert got.dtype == dtype, f"{what}: dtype {got.dtype}, expected {dtype}"
    assert got.shape == np.shape(want), f"{what}: shape {got.shape}, expected {np.shape(want)}"
    assert np.all(np.isfinite(got)), f"{what}: non-finite values from finite inputs"
    rtol = RTOL[dtype]
    err = np.abs(got.astype(np.float64) - want)
    bound = rtol * np.asarray(scale) + rtol * np.abs(want) + np.finfo(dtype).tiny
    bad = err > bound
    assert not np.any(bad), (f"{what} ({dtype}): max error {err.max():.3g}, worst excess at "
                             f"{np.unravel_index(np.argmax(err - bound), err.shape)}: got "
                             f"{got[bad][:3]}, want {np.asarray(want)[bad][:3]}")


# ---------------------------------------------------------------------------------- embedding

@settings(max_examples=800, deadline=None, suppress_health_check=SLOW)
@given(data=st.data())
def test_embedding(data):
    draw = data.draw
    dt = draw(dtypes)
    V, D, B, T = draw(st.integers(1, 9)), draw(st.integers(1, 6)), draw(st.integers(1, 10)), \
        draw(st.integers(1, 4))
    one_d = draw(st.booleans())
    w = values(draw, dt, (V, D))
    idx = layout(draw, draw(hnp.arrays(np.int64, (B,) if one_d else (B, T),
                                       elements=st.integers(0, V - 1))))
    out, c = ops.embedding_forward(w, idx)
    want, rc = reference.embedding_forward(*f64(w), idx)
    np.testing.assert_array_equal(out, want if not one_d else want.reshape(B, D))  # a copy: exact
    assert out.dtype == dt
    dout = values(draw, dt, out.shape)
    d64 = f64(dout)[0]
    scale = reference.embedding_backward(np.abs(d64), rc)          # sum of |terms| per entry
    check(ops.embedding_backward(dout, c), reference.embedding_backward(d64, rc), scale, dt,
          "dweight")


# ---------------------------------------------------------------------------------- linear

@settings(max_examples=800, deadline=None, suppress_health_check=SLOW)
@given(data=st.data())
def test_linear(data):
    draw = data.draw
    dt = draw(dtypes)
    B, I, O = draw(st.integers(1, 12)), draw(st.integers(1, 12)), draw(st.integers(1, 12))
    x, w = values(draw, dt, (B, I), -10, 10), values(draw, dt, (I, O), -10, 10)
    b = values(draw, dt, (O,), -10, 10) if draw(st.booleans()) else None
    out, c = ops.linear_forward(x, w, b)
    x64, w64, b64 = f64(x, w, b)
    want, rc = reference.linear_forward(x64, w64, b64)
    check(out, want, np.abs(x64) @ np.abs(w64) + (0 if b is None else np.abs(b64)), dt, "out")
    dout = values(draw, dt, (B, O), -10, 10)
    d64 = f64(dout)[0]
    dx, dw, db = ops.linear_backward(dout, c)
    rdx, rdw, rdb = reference.linear_backward(d64, rc)
    check(dx, rdx, np.abs(d64) @ np.abs(w64).T, dt, "dx")
    check(dw, rdw, np.abs(x64).T @ np.abs(d64), dt, "dw")
    if b is None:
        assert db is None
    else:
        check(db, rdb, np.abs(d64).sum(0), dt, "db")


# ---------------------------------------------------------------------------------- elementwise

shapes = hnp.array_shapes(min_dims=0, max_dims=3, min_side=1, max_side=8)


@settings(max_examples=800, deadline=None, suppress_health_check=SLOW)
@given(data=st.data())
def test_elementwise(data):
    """Every elementwise op of the registry, its options drawn from their ranges."""
    draw = data.draw
    dt = draw(dtypes)
    name = draw(st.sampled_from([n for n, op in OPS.items() if op.elementwise]))
    op = OPS[name]
    shape = draw(shapes)
    x = values(draw, dt, shape, -20, 20)
    args = tuple(draw(st.floats(o.low, o.high, width=dt.itemsize * 8)) for o in op.options)
    out, c = op.forward(x, *args)
    x64 = f64(x)[0]
    want, rc = op.reference_forward(x64, *args)
    # one function of one exact input per element: to the dtype's rounding of the result
    check(out, want, 0 * x64, dt, f"{name} out")
    dout = values(draw, dt, shape, -20, 20)
    d64 = f64(dout)[0]
    got = op.backward(dout, c)
    want = op.reference_backward(d64, rc)
    # one product per element; tanh's uses the kernel's rounded t: d(1 - t^2) = 2 t dt
    check(got, want, 2 * np.abs(d64), dt, f"{name} dx")


# ---------------------------------------------------------------------------------- batch norm

eps_values = st.sampled_from([1e-5, 1e-3, 1.0])


@settings(max_examples=800, deadline=None, suppress_health_check=SLOW)
@given(data=st.data())
def test_batchnorm(data):
    draw = data.draw
    dt = draw(dtypes)
    B, D = draw(st.integers(2, 16)), draw(st.integers(1, 8))
    eps = draw(eps_values)
    unbiased = draw(st.booleans())                 # the lecture's variant: / (B - 1)
    x = values(draw, dt, (B, D))
    gamma, beta = values(draw, dt, (D,), -5, 5), values(draw, dt, (D,), -5, 5)
    out, c = ops.batchnorm_forward(x, gamma, beta, eps, unbiased=unbiased)
    x64, g64, b64 = f64(x, gamma, beta)
    want, rc = reference.batchnorm_forward(x64, g64, b64, eps, unbiased=unbiased)
    rxhat, _, rinvstd, rmean, rvar, _ = rc
    # the terms of x - mean, the mean carrying its own rounding (up to rtol * mean |x|, the bound
    # of the mean's check below: a sum in another order, as [2, -2, 1e-263, ...] shows, can be
    # off by far more than |mean| itself)
    spread = np.abs(x64) + np.abs(x64).mean(0)
    check(c.mean, rmean, np.abs(x64).mean(0), dt, "mean")
    check(c.var, rvar, (spread**2).max(0), dt, "unbiased var")
    check(c.invstd, rinvstd, 0 * rinvstd, dt, "invstd")
    check(c.xhat, rxhat, rinvstd * spread, dt, "xhat")
    check(out, want, np.abs(g64) * rinvstd * spread + np.abs(b64), dt, "out")
    dout = values(draw, dt, (B, D), -10, 10)
    d64 = f64(dout)[0]
    dx, dgamma, dbeta = ops.batchnorm_backward(dout, c)
    rdx, rdgamma, rdbeta = reference.batchnorm_backward(d64, rc)
    ad = np.abs(d64)
    check(dbeta, rdbeta, ad.sum(0), dt, "dbeta")
    check(dgamma, rdgamma, (ad * rinvstd * spread).sum(0), dt, "dgamma")
    # dx = gamma invstd / B (B dout - dbeta - k xhat dgamma), k = B / n (1, or B / (B - 1)):
    # the terms of the bracket, with the rounding of xhat (~ invstd * spread) and of dgamma
    # (~ sum |dout| invstd spread) carried
    k = B / (B - 1) if unbiased else 1.0
    bracket = (ad + ad.mean(0) + k * np.abs(rxhat) * (ad * rinvstd * spread).mean(0)
               + k * rinvstd * spread * (ad * np.abs(rxhat)).mean(0))
    check(dx, rdx, np.abs(g64) * rinvstd * bracket, dt, "dx")


@settings(max_examples=800, deadline=None, suppress_health_check=SLOW)
@given(data=st.data())
def test_batchnorm_eval(data):
    draw = data.draw
    dt = draw(dtypes)
    B, D = draw(st.integers(0, 12)), draw(st.integers(1, 8))
    eps = draw(eps_values)
    x = values(draw, dt, (B, D))
    gamma, beta, rm = (values(draw, dt, (D,), -5, 5) for _ in range(3))
    rv = values(draw, dt, (D,), 0, 50)
    out, c = ops.batchnorm_eval_forward(x, gamma, beta, rm, rv, eps)
    x64, g64, b64, rm64, rv64 = f64(x, gamma, beta, rm, rv)
    want, rc = reference.batchnorm_eval_forward(x64, g64, b64, rm64, rv64, eps)
    invstd = rc[2]
    spread = np.abs(x64) + np.abs(rm64)
    check(out, want, np.abs(g64) * invstd * spread + np.abs(b64), dt, "out")
    dout = values(draw, dt, (B, D), -10, 10)
    d64 = f64(dout)[0]
    dx, dgamma, dbeta = ops.batchnorm_eval_backward(dout, c)
    rdx, rdgamma, rdbeta = reference.batchnorm_eval_backward(d64, rc)
    ad = np.abs(d64)
    check(dx, rdx, ad * np.abs(g64) * invstd, dt, "dx")
    check(dgamma, rdgamma, (ad * invstd * spread).sum(0), dt, "dgamma")
    check(dbeta, rdbeta, ad.sum(0), dt, "dbeta")


# ---------------------------------------------------------------------------------- cross-entropy

@settings(max_examples=800, deadline=None, suppress_health_check=SLOW)
@given(data=st.data())
def test_cross_entropy(data):
    draw = data.draw
    dt = draw(dtypes)
    B, C = draw(st.integers(1, 12)), draw(st.integers(1, 12))
    logits = values(draw, dt, (B, C))
    target = layout(draw, draw(hnp.arrays(np.int64, (B,), elements=st.integers(0, C - 1))))
    loss, c = ops.cross_entropy_forward(logits, target)
    l64 = f64(logits)[0]
    want, rc = reference.cross_entropy_forward(l64, target)
    assert isinstance(loss, dt.type)
    rows = np.arange(B)
    # loss_b = m + log(sum exp(l - m)) - l[t]; float32 exp arguments carry eps * |l - m|
    shift = np.abs(l64 - l64.max(1, keepdims=True)).max(1)
    terms = np.abs(l64.max(1)) + np.log(C) + np.abs(l64[rows, target]) + shift
    check(loss, want, terms.mean(), dt, "loss")
    check(c.probs, rc[0], rc[0] * (1 + shift[:, None]), dt, "probs")
    dloss = draw(st.floats(-10, 10, width=dt.itemsize * 8))
    got = ops.cross_entropy_backward(dloss, c)
    onehot = np.eye(C)[target]
    check(got, reference.cross_entropy_backward(dloss, rc),
          abs(dloss) / B * (rc[0] + onehot) * (1 + shift[:, None]), dt, "dlogits")
