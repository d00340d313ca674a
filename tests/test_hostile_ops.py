"""Hostile input to every op of fastbn.ops and every layer of fastbn.nn (issue 6).

The kernels check nothing and run without the GIL, so the Python layer must refuse, with a clear
exception, anything they cannot take: wrong dtypes (TypeError), wrong shapes (ValueError naming the
shapes), out-of-range or non-integer indices (IndexError / TypeError naming the value), a cache of
another op, a dimension BLAS cannot address. What it accepts, it must compute right: any memory
layout (strided, reversed, Fortran, read-only) gives the result of a contiguous copy, and NaN/Inf
propagate as IEEE arithmetic says.

Empty batches, per op (what is mathematically defined; torch 2.x agrees except where noted):
- embedding, linear, the elementwise ops, eval-mode batch norm: handled. Outputs are empty,
  parameter gradients are zeros of the parameter's shape (a sum over no rows), linear's db of an
  empty batch is 0 and its output for I = 0 is the broadcast bias (an empty dot product is 0).
- training-mode batch norm: B < 2 refused ("Expected more than 1 value per channel when
  training", torch's message; torch returns an empty output for B = 0, but the batch statistics
  of no rows are undefined and would turn the running statistics into NaN). D = 0 is handled.
- cross-entropy: refused for B = 0 (the mean over no rows is 0/0; torch returns NaN) and C = 0.
Only the shape tests here (test_ops.py has the basic validation tests; they are not repeated).
"""
import functools
import os
import re
import sys

import numpy as np
import pytest

from fastbn import nn, ops
from fastbn._opinfo import OPS as REGISTRY

DTYPES = [np.float32, np.float64]
OPS = list(REGISTRY)
ELEMENTWISE = [n for n in OPS if REGISTRY[n].elementwise]
FLOAT_POS = {n: REGISTRY[n].float_positions for n in OPS}
INDEX_POS = {n: REGISTRY[n].index_positions for n in OPS if REGISTRY[n].index_positions}
BAD_DTYPES = [np.int64, np.int32, np.float16, object, np.complex128, np.bool_]
# the sizes of every op's inputs here: a batch of 6, 5 features (x (6, 5), w (5, 3),
# logits (6, 5)), a table of 7 rows, 3 characters of context
DIMS = {"T": 3, "V": 7, "D": 5, "I": 5, "O": 3, "C": 5}
# every op at its defaults, then each set of options a variant of the registry gives the forward
# (batch norm's unbiased=True): the input, layout and cache tests run every one
CALLS = [pytest.param(n, {}, id=n) for n in OPS] + [
    pytest.param(n, o, id=f"{n}({', '.join(f'{k}={v}' for k, v in o.items())})")
    for n in OPS for o in {tuple(sorted(v.options.items())): v.options
                           for v in REGISTRY[n].variants if v.options}.values()]


def inputs(name, dtype=np.float64, B=6, seed=0):
    """Valid positional arguments of ``<name>_forward`` (floats of ``dtype``): the registry's
    sample arrays at DIMS, then its options (eps of batch norm, the slope of leaky_relu)."""
    return REGISTRY[name].args(dtype, seed, B=B, **DIMS)


def fwd(name, options=None):
    """``ops.<name>_forward``, with ``options`` (keyword arguments of a variant) bound."""
    f = getattr(ops, name + "_forward")
    return functools.partial(f, **options) if options else f


def bwd(name):
    return getattr(ops, name + "_backward")


def dout_for(out, seed=1):
    """An upstream gradient for ``out`` (a scalar dloss for the loss)."""
    if np.ndim(out) == 0:
        return 0.7
    return np.random.default_rng(seed).standard_normal(np.shape(out)).astype(out.dtype)


def run(name, args, dout=None, options=None):
    """Forward then backward; returns (out, [gradients]) with None gradients dropped."""
    out, cache = fwd(name, options)(*args)
    grads = bwd(name)(dout_for(out) if dout is None else dout, cache)
    grads = grads if isinstance(grads, tuple) else (grads,)
    return out, [g for g in grads if g is not None]


# the ops whose output is an array (all but the loss, a scalar): their backward takes a dout
ARRAY_OUT = [n for n in OPS if np.ndim(fwd(n)(*inputs(n))[0])]


def rss_bytes():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


# ---------------------------------------------------------------------------------- dtypes

@pytest.mark.parametrize("bad", BAD_DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("name,options,pos", [(*c.values, p) for c in CALLS
                                              for p in FLOAT_POS[c.values[0]]])
def test_wrong_float_dtype_is_a_type_error(name, options, pos, bad):
    args = inputs(name)
    args[pos] = args[pos].astype(bad)
    with pytest.raises(TypeError, match=np.dtype(bad).name):
        fwd(name, options)(*args)


@pytest.mark.parametrize("name,options,pos", [(*c.values, p) for c in CALLS
                                              for p in FLOAT_POS[c.values[0]]
                                              if len(FLOAT_POS[c.values[0]]) > 1])
@pytest.mark.parametrize("base,other", [(np.float32, np.float64), (np.float64, np.float32)])
def test_mixed_float32_float64_is_a_type_error(name, options, pos, base, other):
    args = inputs(name, base)
    args[pos] = args[pos].astype(other)
    with pytest.raises(TypeError, match="float32|float64"):
        fwd(name, options)(*args)


@pytest.mark.parametrize("bad", [np.float64, np.float32, np.bool_, object, np.complex64],
                         ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("name", sorted(INDEX_POS))
def test_non_integer_indices_are_a_type_error(name, bad):
    args = inputs(name)
    args[1] = args[1].astype(bad)             # integer-valued, but not an integer dtype
    with pytest.raises(TypeError, match=np.dtype(bad).name):
        fwd(name)(*args)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("bad", [np.int64, np.float16, object, np.complex128, np.bool_, "other"])
@pytest.mark.parametrize("name,options", [c for c in CALLS if c.values[0] in ARRAY_OUT])
def test_dout_of_the_wrong_dtype_is_a_type_error(name, options, dtype, bad):
    out, cache = fwd(name, options)(*inputs(name, dtype))
    bad = (np.float64 if dtype == np.float32 else np.float32) if bad == "other" else bad
    with pytest.raises(TypeError, match="dout"):
        bwd(name)(np.ones(out.shape, dtype=bad), cache)


@pytest.mark.parametrize("dloss,exc", [
    (np.array([1.0, 2.0]), ValueError), (np.ones((2, 2)), ValueError), (np.array([]), ValueError),
    (1j, TypeError), (True, TypeError), (np.array("1.0"), TypeError),
    (np.array(1.0, dtype=object), TypeError)])
def test_cross_entropy_dloss_must_be_a_real_scalar(dloss, exc):
    _, cache = ops.cross_entropy_forward(*inputs("cross_entropy"))
    with pytest.raises(exc, match="dloss"):
        ops.cross_entropy_backward(dloss, cache)


def test_cross_entropy_dloss_accepts_any_real_scalar():
    _, cache = ops.cross_entropy_forward(*inputs("cross_entropy"))
    want = ops.cross_entropy_backward(2.0, cache)
    for dloss in (2, np.float32(2), np.array([[2.0]]), np.int8(2)):
        np.testing.assert_array_equal(ops.cross_entropy_backward(dloss, cache), want)


# ---------------------------------------------------------------------------------- shapes

# every error input of the registry (wrong shapes, an index out of range, a batch norm of one row,
# a negative eps, an unbiased that is not a bool, ...) at DIMS, a batch of 6
ERROR_INPUTS = [pytest.param(*case, id=case[0]) for n in OPS
                for case in REGISTRY[n].error_cases(B=6, **DIMS)]


@pytest.mark.parametrize("label,args,options,exc,match", ERROR_INPUTS)
def test_error_inputs_raise_their_exception_naming_the_problem(label, args, options, exc, match):
    name = label.split(" ")[0]
    with pytest.raises(exc, match=match):
        fwd(name, options)(*args)


@pytest.mark.parametrize("change", ["one_more_row", "one_more_col", "transposed", "flat",
                                    "extra_axis"])
@pytest.mark.parametrize("name,options", [c for c in CALLS if c.values[0] in ARRAY_OUT])
def test_dout_of_the_wrong_shape_is_a_value_error_naming_both(name, options, change):
    out, cache = fwd(name, options)(*inputs(name))
    B, D = out.shape
    shape = {"one_more_row": (B + 1, D), "one_more_col": (B, D + 1), "transposed": (D, B),
             "flat": (B * D,), "extra_axis": (B, D, 1)}[change]
    with pytest.raises(ValueError, match=re.escape(f"dout must have shape {(B, D)}, got {shape}")):
        bwd(name)(np.ones(shape), cache)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", ELEMENTWISE)
def test_elementwise_ops_take_any_shape(dtype, name):
    op = REGISTRY[name]
    for options in ({}, op.sample_options()):
        for shape in [(), (1,), (3, 4, 5), (2, 1, 3, 1)]:
            x = np.linspace(-3, 3, int(np.prod(shape))).reshape(shape).astype(dtype)
            want, _ = op.reference_forward(x.astype(np.float64), **options)
            out, cache = fwd(name)(x, **options)
            assert out.shape == shape and out.dtype == dtype
            np.testing.assert_allclose(out, want, rtol=1e-6, atol=1e-7)
            assert bwd(name)(np.ones(shape, dtype), cache).shape == shape


# ---------------------------------------------------------------------------------- layouts

def layouts(a):
    """Views of ``a``'s values in other memory layouts (name, array)."""
    if a.ndim == 0:
        return []
    big = np.zeros(tuple(2 * s + 1 for s in a.shape), dtype=a.dtype)
    step = tuple(slice(1, None, 2) for _ in a.shape)
    big[step] = a
    rev = np.flip(a).copy()
    ro = a.copy()
    ro.flags.writeable = False
    out = [("strided", big[step]), ("reversed", np.flip(rev)), ("fortran", np.asfortranarray(a)),
           ("readonly", ro)]
    if a.ndim == 2:
        out.append(("transposed", a.T.copy().T))
        out.append(("reversed_rows", a[::-1].copy()[::-1]))
    for _, v in out:
        np.testing.assert_array_equal(v, a)
    # the same values elsewhere in memory (a 1-D Fortran array is C-contiguous: dropped)
    return [(label, v) for label, v in out if label == "readonly" or not v.flags.c_contiguous]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name,options", CALLS)
def test_any_memory_layout_gives_the_result_of_a_contiguous_copy(name, options, dtype):
    args = inputs(name, dtype)
    want_out, want_grads = run(name, args, options=options)
    dout = dout_for(want_out)
    arrays = [i for i, a in enumerate(args) if isinstance(a, np.ndarray)]
    labels = [label for label, _ in layouts(args[arrays[0]])]
    for label in labels:
        # every array argument in this layout at once, and dout too
        moved = [dict(layouts(a))[label] if isinstance(a, np.ndarray) and
                 label in dict(layouts(a)) else a for a in args]
        d = dict(layouts(dout)).get(label, dout) if np.ndim(dout) else dout
        out, grads = run(name, moved, d, options)
        np.testing.assert_array_equal(out, want_out, err_msg=label)
        assert len(grads) == len(want_grads)
        for g, w in zip(grads, want_grads):
            assert g.flags.c_contiguous and g.flags.writeable
            np.testing.assert_array_equal(g, w, err_msg=label)


def test_reversed_index_arrays_are_read_in_their_logical_order():
    w = np.arange(20.0).reshape(5, 4)
    idx = np.array([[0, 1, 2], [3, 4, 0]])
    out, _ = ops.embedding_forward(w, idx[::-1, ::-1])
    np.testing.assert_array_equal(out, w[idx[::-1, ::-1]].reshape(2, -1))
    logits = np.random.default_rng(0).standard_normal((4, 3))
    t = np.array([0, 1, 2, 2])
    a, _ = ops.cross_entropy_forward(logits[::-1], t[::-1])
    b, _ = ops.cross_entropy_forward(logits[::-1].copy(), t[::-1].copy())
    assert a == b


def test_inputs_are_never_written_even_when_writeable():
    for name, options in (c.values for c in CALLS):
        args = inputs(name)
        keep = [a.copy() if isinstance(a, np.ndarray) else a for a in args]
        out, cache = fwd(name, options)(*args)
        dout = dout_for(out)
        keep_dout = np.copy(dout)
        bwd(name)(dout, cache)
        for a, k in zip(args, keep):
            np.testing.assert_array_equal(a, k)
        np.testing.assert_array_equal(dout, keep_dout)


# ---------------------------------------------------------------------------------- empty batches

@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("idx_shape", [(0, 3), (0,), (4, 0)])
def test_embedding_empty_batch_or_context(dtype, idx_shape):
    w = np.ones((7, 4), dtype)
    out, c = ops.embedding_forward(w, np.zeros(idx_shape, np.int64))
    T = idx_shape[1] if len(idx_shape) == 2 else 1
    assert out.shape == (idx_shape[0], T * 4) and out.dtype == dtype
    dw = ops.embedding_backward(np.ones(out.shape, dtype), c)
    assert dw.shape == (7, 4) and dw.dtype == dtype
    np.testing.assert_array_equal(dw, 0)


def test_embedding_zero_width_and_empty_table():
    out, c = ops.embedding_forward(np.ones((7, 0)), np.array([[1, 6], [0, 0]]))
    assert out.shape == (2, 0)
    assert ops.embedding_backward(np.ones((2, 0)), c).shape == (7, 0)
    out, c = ops.embedding_forward(np.ones((0, 3)), np.zeros((5, 0), np.int64))
    assert out.shape == (5, 0)
    with pytest.raises(IndexError, match=r"holds 0, outside \[0, 0\)"):
        ops.embedding_forward(np.ones((0, 3)), np.zeros((5, 1), np.int64))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("B,I,O", [(0, 5, 3), (4, 0, 3), (4, 5, 0), (0, 0, 0)])
@pytest.mark.parametrize("bias", [True, False])
def test_linear_empty_dimensions(dtype, B, I, O, bias):
    g = np.random.default_rng(0)
    x, w = g.standard_normal((B, I)).astype(dtype), g.standard_normal((I, O)).astype(dtype)
    b = g.standard_normal(O).astype(dtype) if bias else None
    out, c = ops.linear_forward(x, w, b)
    assert out.shape == (B, O) and out.dtype == dtype
    np.testing.assert_array_equal(out, np.broadcast_to(b if bias else 0, (B, O)) if I == 0
                                  else x @ w + (b if bias else 0))
    dout = g.standard_normal((B, O)).astype(dtype)
    dx, dw, db = ops.linear_backward(dout, c)
    assert dx.shape == (B, I) and dw.shape == (I, O)
    np.testing.assert_array_equal(dx, 0)          # every case here has B*I*O == 0: empty sums
    np.testing.assert_array_equal(dw, 0)
    if bias:
        assert db.shape == (O,) and db.dtype == dtype
        np.testing.assert_allclose(db, dout.sum(0), rtol=1e-6)
    else:
        assert db is None


@pytest.mark.parametrize("shape", [(0,), (0, 5), (3, 0), (0, 0, 2)])
@pytest.mark.parametrize("name", ELEMENTWISE)
def test_elementwise_empty(name, shape):
    out, c = fwd(name)(np.ones(shape, np.float32))
    assert out.shape == shape and out.dtype == np.float32
    dx = bwd(name)(np.ones(shape, np.float32), c)
    assert dx.shape == shape and dx.dtype == np.float32


@pytest.mark.parametrize("dtype", DTYPES)
def test_batchnorm_zero_features(dtype):
    """D = 0 is handled (empty outputs); torch raises an IndexError from inside batch_norm."""
    e = np.ones(0, dtype)
    out, c = ops.batchnorm_forward(np.ones((4, 0), dtype), e, e)
    assert out.shape == (4, 0) and c.mean.shape == (0,) and c.var.shape == (0,)
    dx, dg, db = ops.batchnorm_backward(np.ones((4, 0), dtype), c)
    assert dx.shape == (4, 0) and dg.shape == (0,) and db.shape == (0,)
    out, c = ops.batchnorm_eval_forward(np.ones((4, 0), dtype), e, e, e, e)
    assert out.shape == (4, 0)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("B", [0, 1])
def test_batchnorm_eval_handles_empty_and_single_rows(dtype, B):
    g = np.random.default_rng(0)
    x = g.standard_normal((B, 5)).astype(dtype)
    gamma, beta, rm = (g.standard_normal(5).astype(dtype) for _ in range(3))
    rv = g.uniform(0.5, 2, 5).astype(dtype)
    out, c = ops.batchnorm_eval_forward(x, gamma, beta, rm, rv)
    assert out.shape == (B, 5)
    np.testing.assert_allclose(out, gamma * (x - rm) / np.sqrt(rv + 1e-5) + beta, rtol=1e-6)
    dx, dg, db = ops.batchnorm_eval_backward(np.ones((B, 5), dtype), c)
    assert dx.shape == (B, 5) and dg.shape == (5,) and db.shape == (5,)
    np.testing.assert_allclose(db, B)
    if B == 0:
        np.testing.assert_array_equal(dg, 0)


def test_empty_batches_agree_with_torch(torch):
    """The handled cases give torch's shapes and gradients (zeros)."""
    g = np.random.default_rng(0)
    w, W, b = g.standard_normal((7, 4)), g.standard_normal((5, 3)), g.standard_normal(3)
    idx = np.zeros((0, 3), np.int64)
    tw, tW, tb = (torch.tensor(a, requires_grad=True) for a in (w, W, b))
    temb = tw[torch.tensor(idx)].reshape(0, 12)
    tout = temb[:, :5] @ tW + tb
    tout.sum().backward()
    out, c = ops.embedding_forward(w, idx)
    assert out.shape == tuple(temb.shape)
    np.testing.assert_array_equal(ops.embedding_backward(np.ones(out.shape), c), tw.grad.numpy())
    lo, lc = ops.linear_forward(out[:, :5], W, b)
    assert lo.shape == tuple(tout.shape)
    _, dW, db = ops.linear_backward(np.ones(lo.shape), lc)
    np.testing.assert_array_equal(dW, tW.grad.numpy())
    np.testing.assert_array_equal(db, tb.grad.numpy())


# ---------------------------------------------------------------------------------- eps, momentum

@pytest.mark.parametrize("eps", [-1e-12, -1.0, float("nan"), float("-inf")])
def test_negative_or_nan_eps_is_a_value_error(eps):
    """(the ops refuse it too: their error inputs)"""
    with pytest.raises(ValueError, match="eps must be >= 0"):
        nn.BatchNorm1d(5, eps=eps)


def test_zero_eps_is_allowed_and_a_constant_column_gives_nan_as_torch():
    x = np.array([[1.0, 2.0], [1.0, 3.0], [1.0, 4.0]])
    out, _ = ops.batchnorm_forward(x, np.ones(2), np.zeros(2), eps=0.0)
    assert np.all(np.isnan(out[:, 0]))                   # 0 / sqrt(0): torch gives NaN too
    assert np.all(np.isfinite(out[:, 1]))


@pytest.mark.parametrize("momentum", [-0.1, 1.0 + 1e-9, 2, float("nan"), float("inf")])
def test_batchnorm1d_momentum_outside_unit_interval(momentum):
    with pytest.raises(ValueError, match=r"momentum must be in \[0, 1\]"):
        nn.BatchNorm1d(5, momentum=momentum)


@pytest.mark.parametrize("momentum", [0, 1])
def test_batchnorm1d_momentum_at_the_bounds(momentum):
    bn = nn.BatchNorm1d(3, momentum=momentum, dtype=np.float64)
    x = np.random.default_rng(0).standard_normal((8, 3)) * 2 + 1
    bn(x)
    if momentum == 0:        # the running statistics never move
        np.testing.assert_array_equal(bn.running_mean, 0)
        np.testing.assert_array_equal(bn.running_var, 1)
    else:                    # they are the last batch's statistics (unbiased variance)
        np.testing.assert_allclose(bn.running_mean, x.mean(0), rtol=1e-14)
        np.testing.assert_allclose(bn.running_var, x.var(0, ddof=1), rtol=1e-14)


# ---------------------------------------------------------------------------------- indices

@pytest.mark.parametrize("name", sorted(INDEX_POS))
@pytest.mark.parametrize("value,dtype", [(-1, np.int64), (-(2**63), np.int64), (7, np.int64),
                                         (2**40, np.int64), (2**64 - 1, np.uint64),
                                         (200, np.uint8), (-128, np.int8)])
def test_out_of_range_indices_are_an_index_error_naming_the_value(name, value, dtype):
    args = inputs(name)
    bound = 7 if name == "embedding" else 5           # the table's rows / the classes
    idx = args[1].astype(dtype)
    idx.flat[len(idx.flat) // 2] = value
    args[1] = idx
    with pytest.raises(IndexError, match=rf"holds {value}, outside \[0, {bound}\)"):
        fwd(name)(*args)


def test_embedding_layer_and_model_refuse_bad_indices():
    emb = nn.Embedding(5, 3)
    with pytest.raises(IndexError, match="holds 5"):
        emb(np.array([[0, 5]]))
    with pytest.raises(TypeError, match="bool"):
        emb(np.array([[True, False]]))
    with pytest.raises(TypeError, match="float64"):
        emb(np.array([[0.0, 1.0]]))
    np.testing.assert_array_equal(emb(np.array([[4, 0]], dtype=np.uint16)),
                                  emb.weight[[4, 0]].reshape(1, -1))


def test_a_reused_index_buffer_does_not_change_the_backward():
    """The cache keeps its own copy: refilling the caller's buffer between forward and backward
    (a data loader reusing one array) neither changes the gradient nor reaches the kernel."""
    w = np.ones((7, 2))
    buf = np.array([[1, 2], [3, 1]])
    _, c = ops.embedding_forward(w, buf)
    logits = np.zeros((2, 3))
    tbuf = np.array([0, 2])
    _, cc = ops.cross_entropy_forward(logits, tbuf)
    buf[:] = 10**9                                        # out of range for the table
    tbuf[:] = -(10**9)
    dw = ops.embedding_backward(np.ones((2, 4)), c)
    np.testing.assert_array_equal(dw[:, 0], [0, 2, 1, 1, 0, 0, 0])
    d = ops.cross_entropy_backward(1.0, cc)
    np.testing.assert_allclose(d, (np.full((2, 3), 1 / 3) - np.eye(3)[[0, 2]]) / 2)
    with pytest.raises(ValueError, match="read-only"):
        c.idx[0, 0] = 10**9


# ---------------------------------------------------------------------------------- caches

@pytest.mark.parametrize("name,other", [(n, o) for n in OPS for o in OPS if n != o])
def test_a_cache_of_another_op_is_a_type_error(name, other):
    out, _ = fwd(name)(*inputs(name))
    _, cache = fwd(other)(*inputs(other))
    with pytest.raises(TypeError, match=f"{name}_backward needs the cache returned by "
                                        f"{name}_forward, got '{other}'"):
        bwd(name)(dout_for(out), cache)


@pytest.mark.parametrize("name", OPS)
def test_things_that_are_not_caches_are_a_type_error(name):
    out, cache = fwd(name)(*inputs(name))
    _, ref_cache = REGISTRY[name].reference_forward(*inputs(name))
    for bad in (None, ref_cache, vars(cache), (cache,), "cache"):
        with pytest.raises(TypeError, match=f"{name}_backward needs the cache"):
            bwd(name)(dout_for(out), bad)


@pytest.mark.parametrize("name,attr,value,exc,match", [
    ("embedding", "idx", np.full((6, 3), 7), IndexError, "holds 7"),
    ("embedding", "idx", np.zeros((6, 4), np.int64), ValueError, "cannot reshape"),
    ("embedding", "idx", np.zeros(6, np.int64), ValueError, "cache.idx"),
    ("linear", "w", np.ones((3, 5)), ValueError, r"cache.w .*shape \(5, 5\).*\(3, 5\)"),
    ("linear", "x", np.ones((6, 5), np.float32), ValueError, "cache.x"),
    ("batchnorm", "gamma", np.ones(4), ValueError, r"cache.gamma .*shape \(5,\)"),
    ("batchnorm", "invstd", np.ones(500), ValueError, "cache.invstd"),
    ("batchnorm", "xhat", np.ones((6, 5))[:, ::-1], ValueError, "C-contiguous"),
    ("batchnorm", "xhat", np.ones((1, 5)), ValueError, r"cache.xhat must have at least 2 rows"),
    ("batchnorm", "unbiased", "yes", ValueError, "cache.unbiased must be True or False"),
    ("batchnorm", "unbiased", 1, ValueError, "cache.unbiased must be True or False"),
    ("batchnorm", "unbiased", None, ValueError, "cache.unbiased must be True or False"),
    ("batchnorm", "unbiased", np.array([True]), ValueError, "cache.unbiased must be True"),
    ("batchnorm_eval", "gamma", [1.0] * 5, ValueError, "cache.gamma"),
    ("cross_entropy", "target", np.array([0, 1, 2, 3, 4, 5]), IndexError, "holds 5"),
    ("cross_entropy", "target", np.zeros(3, np.int64), ValueError, "cache.target"),
])
def test_a_cache_modified_after_the_forward_is_refused(name, attr, value, exc, match):
    """Caches are public so teaching code can look inside; replacing what the kernel reads
    must give an error, not an out-of-bounds access."""
    out, cache = fwd(name)(*inputs(name))
    setattr(cache, attr, value)
    with pytest.raises(exc, match=match):
        bwd(name)(dout_for(out) if attr != "xhat" or value.shape[0] > 1 else
                  np.ones(value.shape), cache)


@pytest.mark.parametrize("unbiased", [False, True])
def test_a_batchnorm_cache_without_its_variant_is_refused(unbiased):
    """The backward reads the variant from the cache (it takes no flag, so it cannot mix them
    up): a cache that lost it is refused, and numpy's bool is read as the bool it is."""
    out, cache = ops.batchnorm_forward(*inputs("batchnorm"), unbiased=unbiased)
    want = ops.batchnorm_backward(dout_for(out), cache)
    cache.unbiased = np.bool_(unbiased)
    for g, w in zip(ops.batchnorm_backward(dout_for(out), cache), want):
        np.testing.assert_array_equal(g, w)
    del cache.unbiased
    with pytest.raises(ValueError, match="cache.unbiased must be True or False, got None"):
        ops.batchnorm_backward(dout_for(out), cache)


@pytest.mark.parametrize("bad", ["yes", "False", 1, 0, 1.0, None, [True], np.array([True]),
                                 np.array(True)])
def test_unbiased_must_be_a_bool(bad):
    """unbiased takes True or False (or numpy's bool scalar), nothing that merely converts (the
    forward refuses the same values: its error inputs)."""
    with pytest.raises(TypeError, match="unbiased must be True or False"):
        nn.BatchNorm1d(5, unbiased=bad)
    out, _ = ops.batchnorm_forward(*inputs("batchnorm"), unbiased=np.True_)
    np.testing.assert_array_equal(out, ops.batchnorm_forward(*inputs("batchnorm"),
                                                             unbiased=True)[0])


@pytest.mark.parametrize("B", [0, 1])
def test_unbiased_batchnorm_refuses_fewer_than_two_rows(B):
    """The variance / (B - 1) of one row is 0/0: refused as the default is (torch's message; the
    forward's refusal is an error input)."""
    bn = nn.BatchNorm1d(5, unbiased=True)
    with pytest.raises(ValueError, match="Expected more than 1 value per channel"):
        bn(np.ones((B, 5), np.float32))
    np.testing.assert_array_equal(bn.running_var, 1.0)


@pytest.mark.parametrize("dtype", DTYPES)
def test_unbiased_batchnorm_zero_features_and_a_constant_column(dtype):
    e = np.ones(0, dtype)
    out, c = ops.batchnorm_forward(np.ones((4, 0), dtype), e, e, unbiased=True)
    dx, dg, db = ops.batchnorm_backward(np.ones((4, 0), dtype), c)
    assert out.shape == dx.shape == (4, 0) and dg.shape == db.shape == (0,)
    x = np.array([[1.0, 2.0], [1.0, 3.0], [1.0, 4.0]], dtype)
    out, _ = ops.batchnorm_forward(x, np.ones(2, dtype), np.zeros(2, dtype), eps=0.0,
                                   unbiased=True)
    assert np.all(np.isnan(out[:, 0])) and np.all(np.isfinite(out[:, 1]))   # 0 / sqrt(0)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_unbiased_batchnorm_non_finite_stays_in_its_column(dtype, bad):
    x = np.random.default_rng(0).standard_normal((6, 4)).astype(dtype)
    x[3, 1] = bad
    out, c = ops.batchnorm_forward(x, np.ones(4, dtype), np.zeros(4, dtype), unbiased=True)
    assert np.all(np.isnan(out[:, 1])) and np.all(np.isfinite(out[:, [0, 2, 3]]))
    dx, dg, db = ops.batchnorm_backward(np.ones((6, 4), dtype), c)
    assert np.all(np.isnan(dx[:, 1])) and np.all(np.isfinite(dx[:, [0, 2, 3]]))
    assert np.isnan(dg[1]) and np.all(np.isfinite(dg[[0, 2, 3]]))


def unaligned(a):
    """``a``'s values in a C-contiguous array whose data is not aligned to its itemsize."""
    buf = np.zeros(a.nbytes + 1, np.uint8)
    out = buf[1:].view(a.dtype).reshape(a.shape)
    out[...] = a
    assert not out.flags.aligned and out.flags.c_contiguous
    return out


def cache_layouts(a):
    """``a``'s values in every layout a cache attribute may be replaced by: strided, reversed,
    Fortran, transposed (2-D), read-only, unaligned."""
    return layouts(a) + [("unaligned", unaligned(a))]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name,options", CALLS)
def test_every_cache_array_in_any_layout_gives_the_gradient_or_an_error(name, options, dtype):
    """Each array attribute of each op's cache, replaced by the same values in another layout:
    the backward returns what it returns for the original (read-only arrays are read as they
    are) or refuses with a ValueError naming the attribute; never anything else (a backward
    that filled an F-ordered copy of its output once returned uninitialized memory)."""
    args = inputs(name, dtype)
    out, cache = fwd(name, options)(*args)
    dout = dout_for(out)
    want = bwd(name)(dout, cache)
    want = want if isinstance(want, tuple) else (want,)
    attrs = [k for k, v in vars(cache).items() if isinstance(v, np.ndarray)]
    assert attrs
    for attr in attrs:
        original = getattr(cache, attr)
        for label, moved in cache_layouts(original):
            setattr(cache, attr, moved)
            try:
                got = bwd(name)(dout, cache)
            except ValueError as e:
                assert label != "readonly", (attr, e)
                assert f"cache.{attr} must be a C-contiguous, aligned" in str(e), (attr, label, e)
            else:
                got = got if isinstance(got, tuple) else (got,)     # (or not read at all:
                for g, w in zip(got, want):                           # batchnorm's mean, var)
                    if w is None:
                        assert g is None
                    else:
                        np.testing.assert_array_equal(g, w, err_msg=f"{attr} {label}")
            finally:
                setattr(cache, attr, original)


def test_linear_cache_sees_an_in_place_reshape_of_the_callers_array():
    x = np.ones((6, 4))
    _, c = ops.linear_forward(x, np.ones((4, 3)))
    x.shape = (3, 8)                     # the cache holds the caller's array (no copy)
    with pytest.raises(ValueError, match=r"cache.w .*shape \(8, 3\)"):
        ops.linear_backward(np.ones((3, 3)), c)


# ---------------------------------------------------------------------------------- NaN and Inf

INF, NAN = np.inf, np.nan


@pytest.mark.parametrize("dtype", DTYPES)
def test_tanh_of_nan_and_inf(dtype):
    x = np.array([-INF, INF, NAN, -0.0, 0.0, 1e30, -1e30], dtype)
    t, c = ops.tanh_forward(x)
    np.testing.assert_array_equal(t, [-1, 1, NAN, -0.0, 0.0, 1, -1])
    assert np.signbit(t[3]) and not np.signbit(t[4])
    dx = ops.tanh_backward(np.ones_like(x), c)
    np.testing.assert_array_equal(dx, [0, 0, NAN, 1, 1, 0, 0])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("slope", [0.01, 0.5])
def test_leaky_relu_of_nan_and_inf(dtype, slope):
    x = np.array([-INF, INF, NAN, -2.0, 2.0], dtype)
    out, c = ops.leaky_relu_forward(x, slope)
    np.testing.assert_array_equal(out, np.array([-INF, INF, NAN, -2 * slope, 2], dtype))
    dx = ops.leaky_relu_backward(np.ones_like(x), c)
    np.testing.assert_array_equal(dx, np.array([slope, 1, slope, slope, 1], dtype))
    dx = ops.leaky_relu_backward(np.full_like(x, NAN), c)
    assert np.all(np.isnan(dx))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("alpha", [1.0, 0.5])
def test_elu_of_nan_and_inf(dtype, alpha):
    x = np.array([-INF, INF, NAN, -0.0, 0.0, -1e30, 1e30, -2.0], dtype)
    out, c = ops.elu_forward(x, alpha)
    want = np.array([-alpha, INF, NAN, -0.0, 0.0, -alpha, 1e30, alpha * np.expm1(-2.0)], dtype)
    np.testing.assert_allclose(out, want, rtol=1e-6)
    assert np.signbit(out[3]) and not np.signbit(out[4])
    dx = ops.elu_backward(np.ones_like(x), c)
    # the slope at 0 is alpha (torch's); at NaN the gradient is NaN (torch: 1)
    np.testing.assert_allclose(dx, np.array([0, 1, NAN, alpha, alpha, 0, 1,
                                             alpha * np.exp(-2.0)], dtype), rtol=1e-6)
    # an infinite dout where the slope is 0 gives NaN (0 * inf), as torch
    assert np.isnan(ops.elu_backward(np.full_like(x, INF), c)[0])


@pytest.mark.parametrize("dtype", DTYPES)
def test_relu_of_nan_and_inf(dtype):
    x = np.array([INF, NAN, -2.0, 2.0, 0.0], dtype)
    out, c = ops.relu_forward(x)
    np.testing.assert_array_equal(out, np.array([INF, NAN, 0, 2, 0], dtype))
    # backward: dout * (x > 0), as fastbn.reference (0 where x is NaN or <= 0)
    np.testing.assert_array_equal(ops.relu_backward(np.ones_like(x), c), [1, 0, 0, 1, 0])


@pytest.mark.parametrize("dtype", DTYPES)
def test_relu_of_minus_inf_is_zero(dtype):
    out, c = ops.relu_forward(np.array([-INF, -1.0, 2.0], dtype))
    np.testing.assert_array_equal(out, [0, 0, 2])
    # an infinite upstream gradient where x <= 0 gives 0, not 0 * inf = NaN (as torch)
    np.testing.assert_array_equal(ops.relu_backward(np.array([INF, -INF, INF], dtype), c),
                                  [0, 0, INF])


@pytest.mark.parametrize("dtype", DTYPES)
def test_linear_nan_stays_in_its_row_and_column(dtype):
    x = np.ones((4, 3), dtype)
    x[1, 2] = NAN
    w = np.ones((3, 5), dtype)
    w[0, 4] = INF
    out, c = ops.linear_forward(x, w, np.zeros(5, dtype))
    assert np.all(np.isnan(out[1]))                         # the NaN row
    assert np.all(out[[0, 2, 3], 4] == INF)                 # the Inf column
    np.testing.assert_array_equal(out[[0, 2, 3], :4], 3)    # untouched elsewhere
    dx, dw, db = ops.linear_backward(np.ones((4, 5), dtype), c)
    assert np.all(np.isnan(dw[2])) and np.all(np.isfinite(dw[:2]))
    assert np.all(dx[:, 0] == INF) and np.all(np.isfinite(dx[:, 1:]))
    np.testing.assert_array_equal(db, 4)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("bad", [NAN, INF, -INF])
def test_batchnorm_non_finite_stays_in_its_column(dtype, bad):
    x = np.random.default_rng(0).standard_normal((6, 4)).astype(dtype)
    x[3, 1] = bad
    out, c = ops.batchnorm_forward(x, np.ones(4, dtype), np.zeros(4, dtype))
    assert np.all(np.isnan(out[:, 1]))                      # inf - inf in the deviations
    assert np.all(np.isfinite(out[:, [0, 2, 3]]))
    dx, dg, db = ops.batchnorm_backward(np.ones((6, 4), dtype), c)
    assert np.all(np.isnan(dx[:, 1])) and np.all(np.isfinite(dx[:, [0, 2, 3]]))
    assert np.isnan(dg[1]) and np.all(np.isfinite(dg[[0, 2, 3]]))
    np.testing.assert_array_equal(db, 6)                    # sum of dout: no x in it
    bn = nn.BatchNorm1d(4, dtype=dtype)
    bn(x)
    assert not np.isfinite(bn.running_var[1]) and np.all(np.isfinite(bn.running_var[[0, 2, 3]]))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("col", [0, 2, 4])                   # first (the initial max) or not
def test_a_nan_logit_makes_the_loss_nan(dtype, col):
    logits = np.zeros((3, 5), dtype)
    logits[1, col] = NAN
    loss, c = ops.cross_entropy_forward(logits, np.array([0, 1, 2]))
    assert np.isnan(loss)
    d = ops.cross_entropy_backward(1.0, c)
    assert np.all(np.isnan(d[1]))
    np.testing.assert_allclose(d[[0, 2]], (0.2 - np.eye(5)[[0, 2]]) / 3, rtol=1e-6)


@pytest.mark.parametrize("dtype", DTYPES)
def test_infinite_logits(dtype):
    t = np.array([0, 1])
    loss, _ = ops.cross_entropy_forward(np.array([[INF, 0, 0], [0, 0, 0]], dtype), t)
    assert np.isnan(loss)                                    # inf - inf, as torch
    loss, c = ops.cross_entropy_forward(np.array([[0, -INF, 0], [0, 0, 0]], dtype), t)
    np.testing.assert_allclose(loss, np.log(2) / 2 + np.log(3) / 2, rtol=1e-6)
    assert c.probs[0, 1] == 0
    loss, _ = ops.cross_entropy_forward(np.array([[-INF, 0, 0], [0, 0, 0]], dtype), t)
    assert loss == INF                                       # the target has probability 0


@pytest.mark.parametrize("dtype", DTYPES)
def test_embedding_copies_nan_rows_and_gradients_stay_finite(dtype):
    w = np.ones((4, 2), dtype)
    w[2] = NAN
    out, c = ops.embedding_forward(w, np.array([[2, 0], [1, 2]]))
    assert np.all(np.isnan(out[0, :2])) and np.all(out[0, 2:] == 1)
    dw = ops.embedding_backward(np.ones((2, 4), dtype), c)
    np.testing.assert_array_equal(dw, [[1, 1], [1, 1], [2, 2], [0, 0]])


# ---------------------------------------------------------------------------------- huge shapes

@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="RSS from /proc/self/statm")
@pytest.mark.parametrize("xs,ws", [((1, 2**31), (2**31, 1)), ((2**31, 1), (1, 1)),
                                   ((1, 1), (1, 2**31)), ((2**40, 4), (4, 3))])
@pytest.mark.parametrize("dtype", DTYPES)
def test_linear_refuses_dimensions_past_32_bit_blas_without_allocating(xs, ws, dtype):
    """Broadcast views stand for the huge arrays; the refusal comes before any copy."""
    before = rss_bytes()
    x = np.broadcast_to(np.ones((1, 1), dtype), xs)
    w = np.broadcast_to(np.ones((1, 1), dtype), ws)
    with pytest.raises(ValueError, match="exceed the 32-bit limit of BLAS"):
        ops.linear_forward(x, w)
    with pytest.raises(ValueError, match="exceed the 32-bit limit of BLAS"):
        ops.linear_forward(x, w, np.zeros(ws[1], dtype) if ws[1] < 2**20 else None)
    assert rss_bytes() - before < 64 * 2**20


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="RSS from /proc/self/statm")
def test_wrong_shapes_are_refused_before_huge_inputs_are_copied():
    before = rss_bytes()
    huge = np.broadcast_to(np.float32(1), (2**31, 8))        # 64 GB if materialized
    e = np.ones(7, np.float32)
    with pytest.raises(ValueError, match=r"gamma must have shape \(8,\), got \(7,\)"):
        ops.batchnorm_forward(huge, e, e)
    with pytest.raises(ValueError, match=r"running_var must have shape \(8,\), got \(7,\)"):
        ops.batchnorm_eval_forward(huge, *([np.ones(8, np.float32)] * 3), e)
    with pytest.raises(ValueError, match=r"b must have shape \(3,\), got \(7,\)"):
        ops.linear_forward(huge, np.ones((8, 3), np.float32), e)
    with pytest.raises(ValueError, match=r"target must have shape \(2147483648,\)"):
        ops.cross_entropy_forward(huge, np.zeros(3, np.int64))
    _, cache = ops.tanh_forward(np.ones((4, 8), np.float32))
    with pytest.raises(ValueError, match=r"dout must have shape \(4, 8\), got \(2147483648, 8\)"):
        ops.tanh_backward(huge, cache)
    assert rss_bytes() - before < 64 * 2**20


# ---------------------------------------------------------------------------------- layers

def layer_cases(dtype=np.float32):
    """(label, layer, a valid input) for every layer type of fastbn.nn."""
    g = np.random.default_rng(0)
    x = g.standard_normal((6, 5)).astype(dtype)
    return [
        ("Embedding", nn.Embedding(7, 4, dtype=dtype, generator=0), g.integers(0, 7, (6, 3))),
        ("Linear", nn.Linear(5, 3, dtype=dtype, generator=0), x),
        ("Linear_nobias", nn.Linear(5, 3, bias=False, dtype=dtype, generator=0), x),
        ("BatchNorm1d", nn.BatchNorm1d(5, dtype=dtype), x),
        ("BatchNorm1d_eval", nn.BatchNorm1d(5, dtype=dtype).eval(), x),
        ("BatchNorm1d_unbiased", nn.BatchNorm1d(5, unbiased=True, dtype=dtype), x),
    ] + [
        # every activation of the registry, at its options' sample values
        (op.nonlinearity.layer.__name__, op.nonlinearity.layer(**op.sample_options()), x)
        for op in REGISTRY.values() if op.nonlinearity
    ] + [
        ("Sequential", nn.Sequential(nn.Linear(5, 8, bias=False, dtype=dtype, generator=0),
                                     nn.BatchNorm1d(8, dtype=dtype), nn.Tanh(),
                                     nn.Linear(8, 3, dtype=dtype, generator=1)), x),
    ]


LAYERS = [c[0] for c in layer_cases()]


def layer(label, dtype=np.float32):
    return next((lay, x) for lab, lay, x in layer_cases(dtype) if lab == label)


def state(lay):
    """Copies of everything a layer keeps: parameters, gradients, running statistics."""
    arrays = lay.parameters() + lay.grads()
    for m in getattr(lay, "layers", [lay]):
        arrays += m.buffers() if isinstance(m, nn.BatchNorm1d) else []
    return [a.copy() for a in arrays]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("label", [lab for lab in LAYERS if lab != "Embedding"])
def test_layers_refuse_wrong_and_mixed_dtypes(label, dtype):
    lay, x = layer(label, dtype)
    other = np.float64 if dtype == np.float32 else np.float32
    for bad in (np.int64, np.float16, object, np.complex64, np.bool_):
        with pytest.raises(TypeError, match=np.dtype(bad).name):
            lay(x.astype(bad))
    if lay.parameters():                                      # parameter-free layers take both
        with pytest.raises(TypeError, match="does not mix float32 and float64"):
            lay(x.astype(other))


@pytest.mark.parametrize("label", LAYERS)
def test_layers_refuse_bad_dout_and_keep_their_state(label):
    lay, x = layer(label)
    out = lay(x)
    keep = state(lay)
    B, D = out.shape
    for bad, exc, match in [
            (np.ones((B + 1, D), np.float32), ValueError, rf"got \({B + 1}, {D}\)"),
            (np.ones((B, D + 2), np.float32), ValueError, rf"got \({B}, {D + 2}\)"),
            (np.ones(B * D, np.float32), ValueError, rf"got \({B * D},\)"),
            (np.ones((B, D), np.float64), TypeError, "dout has dtype float64"),
            (np.ones((B, D), np.int32), TypeError, "int32")]:
        with pytest.raises(exc, match=match):
            lay.backward(bad)
        for a, k in zip(state(lay), keep):                   # nothing half-written
            np.testing.assert_array_equal(a, k)


@pytest.mark.parametrize("label", LAYERS)
def test_layers_give_the_same_result_for_any_memory_layout(label):
    results = []
    for view in ["contiguous", "reversed_rows", "fortran", "strided"]:
        lay, x = layer(label)
        xv = x if view == "contiguous" else dict(layouts(x))[view]
        out = lay(xv)
        d = np.random.default_rng(3).standard_normal(out.shape).astype(out.dtype)
        dv = d if view == "contiguous" else dict(layouts(d))[view]
        dx = lay.backward(dv)
        results.append([out] + ([] if dx is None else [dx]) + state(lay))
    for other in results[1:]:
        for a, b in zip(other, results[0]):
            np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("B", [0, 1])
def test_batchnorm1d_training_refuses_one_row_and_keeps_running_stats(B):
    bn = nn.BatchNorm1d(5)
    bn.running_mean[:] = 3.0
    with pytest.raises(ValueError, match="Expected more than 1 value per channel when training"):
        bn(np.ones((B, 5), np.float32))
    np.testing.assert_array_equal(bn.running_mean, 3.0)
    np.testing.assert_array_equal(bn.running_var, 1.0)
    seq = nn.Sequential(nn.Linear(4, 5, bias=False), bn, nn.Tanh())
    with pytest.raises(ValueError, match="Expected more than 1 value per channel"):
        seq(np.ones((1, 4), np.float32))
    bn.eval()                                                 # eval mode takes one row
    assert bn(np.ones((1, 5), np.float32)).shape == (1, 5)


@pytest.mark.parametrize("dtype", DTYPES)
def test_layers_with_an_empty_batch(dtype):
    lin = nn.Linear(5, 3, dtype=dtype, generator=0)
    lin.dweight[:] = 7
    out = lin(np.ones((0, 5), dtype))
    assert out.shape == (0, 3)
    assert lin.backward(np.ones((0, 3), dtype)).shape == (0, 5)
    np.testing.assert_array_equal(lin.dweight, 0)             # overwritten with the empty sum
    np.testing.assert_array_equal(lin.dbias, 0)
    emb = nn.Embedding(7, 4, dtype=dtype, generator=0)
    assert emb(np.zeros((0, 3), np.int64)).shape == (0, 12)
    emb.backward(np.ones((0, 12), dtype))
    np.testing.assert_array_equal(emb.dweight, 0)
    bn = nn.BatchNorm1d(5, dtype=dtype).eval()
    assert bn(np.ones((0, 5), dtype)).shape == (0, 5)


def test_layers_refuse_wrong_input_shapes():
    cases = [
        (nn.Linear(5, 3), np.ones((6, 4), np.float32), r"\(6, 4\).*\(5, 3\)"),
        (nn.Linear(5, 3), np.ones(5, np.float32), r"x must be 2-D, got shape \(5,\)"),
        (nn.BatchNorm1d(5), np.ones((6, 4), np.float32), r"gamma must have shape \(4,\)"),
        (nn.BatchNorm1d(5).eval(), np.ones((6, 4), np.float32), r"gamma must have shape \(4,\)"),
        (nn.BatchNorm1d(5), np.ones((6, 5, 1), np.float32), r"x must be 2-D"),
        (nn.Embedding(7, 4), np.zeros((2, 3, 4), np.int64), r"got shape \(2, 3, 4\)"),
    ]
    for lay, x, match in cases:
        with pytest.raises(ValueError, match=match):
            lay(x)
