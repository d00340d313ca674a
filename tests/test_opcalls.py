"""The common case of each op in one compiled call (``fastbn._kernels.<op>_<dir>_fast``, issue 14).

``fastbn.ops`` hands every call to its compiled counterpart first; that takes arguments already
in the kernels' form and returns None for anything else, which the general path then converts or
refuses. Here every op, forward and backward, runs twice on the same arguments: as it is, and with
every ``_fast`` function declining (``Declining``), so that the general path does all of it. The
two must agree on everything: the arrays returned (bit for bit), the caches (the same attributes,
equal), the exceptions (type and message), for the common case and for arguments of every other
form (layouts, dtypes, shapes, options, indices, replaced cache attributes). And the common case
must really take the compiled path (``Counting``), or the comparison would prove nothing.

Also here: ``out=`` of the backwards, the ``Cache`` type, and the per-layer step's two bulk
helpers (``sgd_update``, ``copy_arrays``).
"""
import copy
import pickle

import numpy as np
import pytest

from fastbn import _kernels as K
from fastbn import ops
from fastbn._opinfo import OPS as REGISTRY

DTYPES = [np.float32, np.float64]
OPS = list(REGISTRY)
DIMS = {"B": 6, "T": 3, "V": 7, "D": 5, "I": 5, "O": 3, "C": 5}


class Declining:
    """Stands in for ``fastbn._kernels``: every ``_fast`` function returns None (declines)."""

    def __getattr__(self, name):
        if name.endswith("_fast"):
            return lambda *args: None
        return getattr(K, name)


class Counting:
    """Stands in for ``fastbn._kernels``, counting the ``_fast`` calls that did the op."""

    def __init__(self):
        self.done = []

    def __getattr__(self, name):
        fn = getattr(K, name)
        if not name.endswith("_fast"):
            return fn

        def call(*args):
            res = fn(*args)
            if res is not None:
                self.done.append(name)
            return res
        return call


def outcome(fn, *args, **kwargs):
    """("ok", result) or ("raised", exception type, message)."""
    try:
        return ("ok", fn(*args, **kwargs))
    except Exception as e:           # noqa: BLE001 - every exception is compared
        return ("raised", type(e), str(e))


def same(a, b, where="result"):
    """Assert ``a`` and ``b`` are the same: arrays of one dtype, shape and bits (NaN payloads and
    signed zeros included) and writeability; caches with the same attributes in the same order;
    tuples element by element; anything else equal and of one type."""
    assert type(a) is type(b), (where, type(a), type(b))
    if isinstance(a, np.ndarray):
        assert a.dtype == b.dtype and a.shape == b.shape, (where, a.dtype, a.shape, b.shape)
        assert a.tobytes() == b.tobytes(), (where, a, b)
        assert a.flags.writeable == b.flags.writeable, (where, "writeable")
    elif isinstance(a, ops.Cache):
        assert list(vars(a)) == list(vars(b)), (where, list(vars(a)), list(vars(b)))
        for k in vars(a):
            same(getattr(a, k), getattr(b, k), f"{where}.{k}")
    elif isinstance(a, tuple):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            same(x, y, f"{where}[{i}]")
    elif isinstance(a, np.generic):
        assert a.dtype == b.dtype and a.tobytes() == b.tobytes(), (where, a, b)
    elif isinstance(a, float) and a != a:
        assert b != b, (where, a, b)                      # NaN
    else:
        assert a == b, (where, a, b)


def both_ways(monkeypatch, fn, *args, **kwargs):
    """``fn(*args, **kwargs)`` as it is and with the compiled path declining: the two outcomes,
    asserted the same; returns the first."""
    fast = outcome(fn, *args, **kwargs)
    with monkeypatch.context() as m:
        m.setattr(ops, "K", Declining())
        slow = outcome(fn, *args, **kwargs)
    assert fast[0] == slow[0], (fast, slow)
    if fast[0] == "ok":
        same(fast[1], slow[1])
    else:
        assert fast[1:] == slow[1:], (fast, slow)
    return fast


# ------------------------------------------------------------------ arguments in every form

class Sub(np.ndarray):
    """An ndarray subclass (the compiled path takes plain ndarrays only)."""


def unaligned(a):
    buf = np.zeros(a.nbytes + 1, np.uint8)
    out = buf[1:].view(a.dtype).reshape(a.shape)
    out[...] = a
    return out


def readonly(a):
    a = a.copy()
    a.flags.writeable = False
    return a


def float_forms(a):
    """``a`` (a float array) in other forms: the same values in other layouts and containers,
    and things that are not the same (another dtype or shape)."""
    other = np.float64 if a.dtype == np.float32 else np.float32
    forms = {"list": a.tolist(), "strided": np.repeat(a, 2, axis=-1)[..., ::2],
             "reversed": a[::-1], "readonly": readonly(a), "unaligned": unaligned(a),
             "big-endian": a.astype(a.dtype.newbyteorder(">")), "subclass": a.view(Sub),
             "other float": a.astype(other), "float16": a.astype(np.float16),
             "int": a.astype(np.int64), "short": a[..., :-1].copy(), "0-d": np.asarray(a.flat[0]),
             "extra axis": a[None].copy()}
    if a.ndim == 2:
        forms["fortran"] = np.asfortranarray(a)
        forms["transposed"] = a.T.copy()
    return forms


def index_forms(a, bound):
    """An index array ``a`` (int64, values in [0, bound)) in other forms, in range and not."""
    bad = a.copy()
    bad.flat[-1] = bound
    neg = a.copy()
    neg.flat[0] = -1
    return {"list": a.tolist(), "int32": a.astype(np.int32), "uint8": a.astype(np.uint8),
            "strided": np.repeat(a, 2, axis=-1)[..., ::2], "readonly": readonly(a),
            "big-endian": a.astype(">i8"), "longlong": a.astype(np.longlong),
            "out of range": bad, "negative": neg, "float": a.astype(np.float64),
            "1-D": a.reshape(-1).copy(), "short": a[:-1].copy()}


OPTION_FORMS = {"int": 1, "numpy float64": np.float64(0.5), "numpy float32": np.float32(0.5),
                "negative": -0.5, "nan": float("nan"), "inf": float("inf"), "bool": True,
                "str": "0.5", "zero": 0.0, "none": None}


def forward_cases(name, dtype):
    """[(label, args)] for ``<name>_forward``: the sample arguments, then each argument in each
    other form (one at a time)."""
    op = REGISTRY[name]
    args = op.args(dtype, 0, **DIMS)
    cases = [("sample", args)]
    for pos, arg_name in enumerate(op.arg_names):
        a = args[pos]
        if isinstance(a, np.ndarray) and a.dtype.kind == "f":
            forms = float_forms(a)
        elif isinstance(a, np.ndarray):
            forms = index_forms(a, DIMS["V"] if name == "embedding" else DIMS["C"])
        else:
            forms = OPTION_FORMS
        for label, v in forms.items():
            changed = list(args)
            changed[pos] = v
            cases.append((f"{arg_name} {label}", changed))
    if name != "cross_entropy":
        empty = op.args(dtype, 0, **{**DIMS, "B": 0})
        cases.append(("empty batch", empty))
    if name == "batchnorm":                  # the lecture's variant, and what is not a bool
        for v in (True, False, np.bool_(True), 1, 0, "True", None):
            cases.append((f"unbiased={v!r}", args + [v]))
    return cases


# ------------------------------------------------------------------ the two paths agree

@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", OPS)
def test_forward_gives_the_same_either_way(name, dtype, monkeypatch):
    fwd = getattr(ops, name + "_forward")
    for label, args in forward_cases(name, dtype):
        try:
            both_ways(monkeypatch, fwd, *args)
        except AssertionError as e:
            raise AssertionError(f"{name} forward, {label}: {e}") from None


def backward_cases(name, dtype):
    """[(label, dout, cache)] for ``<name>_backward``: the sample forward's cache and an upstream
    gradient, then the gradient in each other form, then each cache attribute replaced by other
    things (other layouts of its array, other values of its option)."""
    fwd = getattr(ops, name + "_forward")
    out, cache = fwd(*REGISTRY[name].args(dtype, 0, **DIMS))
    if np.ndim(out) == 0:
        dout = 0.7
        douts = {"int": 2, "numpy float32": np.float32(0.7), "0-d array": np.array(0.7),
                 "1-element": np.array([0.7]), "two": np.ones(2), "str": "x", "bool": True}
    else:
        dout = np.random.default_rng(1).standard_normal(out.shape).astype(dtype)
        douts = float_forms(dout)
    cases = [("sample", dout, cache)]
    cases += [(f"dout {label}", d, cache) for label, d in douts.items()]
    for attr, value in vars(cache).items():
        if isinstance(value, np.ndarray) and value.dtype.kind == "f":
            forms = float_forms(value)
        elif isinstance(value, np.ndarray):
            forms = index_forms(value, DIMS["V"] if name == "embedding" else DIMS["C"])
        elif attr == "op":
            forms = {"other op": "tanh" if name != "tanh" else "relu", "none": None, "int": 3}
        elif attr == "dtype":
            forms = {"str": np.dtype(dtype).name, "other": np.dtype(np.float16),
                     "big-endian": np.dtype(dtype).newbyteorder(">"), "none": None}
        elif isinstance(value, tuple):
            forms = {"list": list(value), "bigger": tuple(v + 1 for v in value),
                     "numpy ints": tuple(np.int64(v) for v in value), "short": value[:1]}
        else:
            forms = {**OPTION_FORMS, "false": False, "numpy bool": np.bool_(True)}
        for label, v in forms.items():
            changed = copy.copy(cache)
            setattr(changed, attr, v)
            cases.append((f"cache.{attr} {label}", dout, changed))
    return cases


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", OPS)
def test_backward_gives_the_same_either_way(name, dtype, monkeypatch):
    bwd = getattr(ops, name + "_backward")
    for label, dout, cache in backward_cases(name, dtype):
        try:
            both_ways(monkeypatch, bwd, dout, cache)
        except AssertionError as e:
            raise AssertionError(f"{name} backward, {label}: {e}") from None


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", OPS)
def test_the_common_case_takes_the_compiled_path(name, dtype, monkeypatch):
    """Without this the comparisons above could pass with a compiled path that never runs."""
    spy = Counting()
    monkeypatch.setattr(ops, "K", spy)
    args = REGISTRY[name].args(dtype, 0, **DIMS)
    out, cache = getattr(ops, name + "_forward")(*args)
    dout = 0.7 if np.ndim(out) == 0 else np.ones_like(out)
    getattr(ops, name + "_backward")(dout, cache)
    kernel = "leaky_relu" if name == "relu" else name
    assert spy.done == [f"{kernel}_forward_fast", f"{kernel}_backward_fast"]


@pytest.mark.parametrize("unbiased", [False, True])
def test_the_lectures_batch_norm_takes_the_compiled_path(unbiased, monkeypatch):
    spy = Counting()
    monkeypatch.setattr(ops, "K", spy)
    x, gamma, beta, eps = REGISTRY["batchnorm"].args(np.float32, 0, **DIMS)
    out, cache = ops.batchnorm_forward(x, gamma, beta, eps, unbiased)
    assert cache.unbiased is unbiased
    ops.batchnorm_backward(np.ones_like(out), cache)
    assert spy.done == ["batchnorm_forward_fast", "batchnorm_backward_fast"]


@pytest.mark.parametrize("name", ["embedding", "cross_entropy"])
def test_the_compiled_path_keeps_private_read_only_index_arrays(name):
    args = REGISTRY[name].args(np.float32, 0, **DIMS)
    given = args[1]
    _, cache = K.embedding_forward_fast(*args) if name == "embedding" else \
        K.cross_entropy_forward_fast(*args)
    kept = cache.idx if name == "embedding" else cache.target
    assert not kept.flags.writeable and not np.shares_memory(kept, given)
    np.testing.assert_array_equal(kept.reshape(given.shape), given)
    given[...] = 0                           # the caller's array rewritten: the cache keeps its own
    assert kept.any()


# ------------------------------------------------------------------ out=

GRAD_OPS = {"embedding": 1, "linear": 3, "batchnorm": 3, "batchnorm_eval": 3}


def backward_with_out(name, dtype, make_out, monkeypatch=None):
    """The sample forward, then its backward with ``out=make_out(grads)`` (grads: what the
    backward returns without out=); returns (grads, result, out)."""
    op = REGISTRY[name]
    out_, cache = op.forward(*op.args(dtype, 0, **DIMS))
    dout = np.random.default_rng(1).standard_normal(out_.shape).astype(dtype)
    want = op.backward(dout, cache)
    out = make_out(want, cache)
    got = op.backward(dout, cache, out=out)
    return want, got, out


def as_tuple(g):
    return g if isinstance(g, tuple) else (g,)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", list(GRAD_OPS))
def test_out_arrays_are_written_and_returned(name, dtype):
    def fresh(want, cache):
        arrays = tuple(None if g is None else np.full_like(g, np.nan) for g in as_tuple(want))
        return arrays[0] if name == "embedding" else arrays
    want, got, out = backward_with_out(name, dtype, fresh)
    for w, g, o in zip(as_tuple(want), as_tuple(got), as_tuple(out)):
        if w is None:
            assert g is None
            continue
        assert g is o
        np.testing.assert_array_equal(g, w)


@pytest.mark.parametrize("name", ["linear", "batchnorm", "batchnorm_eval"])
def test_out_may_be_partly_given(name):
    want, got, out = backward_with_out(name, np.float64,
                                       lambda w, c: (None, np.empty_like(w[1]), None))
    assert got[1] is out[1] and got[0] is not None
    for w, g in zip(want, got):
        np.testing.assert_array_equal(g, w)


@pytest.mark.parametrize("name", ["linear", "batchnorm", "batchnorm_eval"])
def test_out_sharing_memory_with_an_input_gets_the_gradient_computed_first(name, monkeypatch):
    """dgamma written into cache.gamma (which the backward reads), dw into cache.w: the compiled
    path declines, the general path computes, then writes; the gradient is the one computed from
    the inputs as they were."""
    attr = "w" if name == "linear" else "gamma"

    def into_input(want, cache):
        target = getattr(cache, attr)
        slot = 1 if name == "linear" else 1
        return tuple(target if i == slot else None for i in range(3))
    spy = Counting()
    monkeypatch.setattr(ops, "K", spy)
    want, got, out = backward_with_out(name, np.float64, into_input)
    assert got[1] is out[1]
    np.testing.assert_array_equal(got[1], want[1])
    np.testing.assert_array_equal(got[0], want[0])
    assert spy.done.count(f"{name}_backward_fast") == 1     # the one without out=


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", list(GRAD_OPS))
def test_bad_out_is_refused_the_same_either_way(name, dtype, monkeypatch):
    op = REGISTRY[name]
    out_, cache = op.forward(*op.args(dtype, 0, **DIMS))
    dout = np.ones(out_.shape, dtype)
    grads = as_tuple(op.backward(dout, cache))
    g = next(x for x in grads if x is not None)
    slot = grads.index(g)
    other = np.float64 if dtype == np.float32 else np.float32
    bads = {"wrong shape": np.empty(g.shape + (1,), dtype), "wrong dtype": np.empty(g.shape, other),
            "readonly": readonly(np.empty_like(g)), "list": g.tolist(), "strided":
            np.repeat(np.empty_like(g), 2, axis=-1)[..., ::2], "unaligned": unaligned(g)}
    for label, bad in bads.items():
        out = bad if name == "embedding" else tuple(bad if i == slot else None
                                                    for i in range(len(grads)))
        res = both_ways(monkeypatch, op.backward, dout, cache, out=out)
        if label in ("strided", "unaligned"):               # taken: written where it is
            assert res[0] == "ok" and as_tuple(res[1])[slot] is bad, label
            np.testing.assert_array_equal(bad, g)
        else:
            assert res[0] == "raised", label
    if name != "embedding":
        for bad in ([None] * len(grads), (None,) * (len(grads) + 1), "out", grads[:1]):
            assert both_ways(monkeypatch, op.backward, dout, cache, out=bad)[0] == "raised"


def test_out_for_a_missing_bias_must_be_none(monkeypatch):
    x, w = np.ones((4, 3)), np.ones((3, 2))
    _, cache = ops.linear_forward(x, w)
    res = both_ways(monkeypatch, ops.linear_backward, np.ones((4, 2)), cache,
                    out=(None, None, np.empty(2)))
    assert res[0] == "raised" and "no bias" in res[2]


# ------------------------------------------------------------------ the Cache type

def test_cache_is_an_open_namespace():
    c = ops.Cache(op="mine", dtype=np.dtype(np.float32), xhat=np.zeros((2, 3), np.float32))
    c.extra = 3
    assert vars(c) == {"op": "mine", "dtype": np.dtype(np.float32), "xhat": c.xhat, "extra": 3}
    assert repr(c) == "Cache(mine: dtype=float32, xhat=float32[2, 3], extra=3)"
    assert isinstance(ops.tanh_forward(np.zeros(3))[1], ops.Cache)
    assert not hasattr(c, "missing")


@pytest.mark.parametrize("clone", [copy.deepcopy, copy.copy,
                                   lambda c: pickle.loads(pickle.dumps(c))])
def test_caches_copy_and_pickle_with_their_attributes(clone):
    _, cache = ops.batchnorm_forward(np.arange(12.0).reshape(4, 3), np.ones(3), np.zeros(3))
    c = clone(cache)
    assert type(c) is ops.Cache and list(vars(c)) == list(vars(cache))
    for k, v in vars(cache).items():
        same(getattr(c, k), v, k)
    np.testing.assert_array_equal(ops.batchnorm_backward(np.ones((4, 3)), c)[0],
                                  ops.batchnorm_backward(np.ones((4, 3)), cache)[0])


# ------------------------------------------------------------------ sgd_update, copy_arrays

def params_and_grads(dtype, seed=0):
    g = np.random.default_rng(seed)
    shapes = [(27, 10), (30, 200), (200,), (200,), (200, 27), (27,), ()]
    return ([g.standard_normal(s).astype(dtype) for s in shapes],
            [g.standard_normal(s).astype(dtype) for s in shapes])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("lr", [0.1, 0.01, 1e-7, 3.0, -0.5, 0.0])
def test_sgd_update_is_numpys_update_bit_for_bit(dtype, lr):
    params, grads = params_and_grads(dtype)
    want = [p.copy() for p in params]
    for p, g in zip(want, grads):
        p -= lr * g
    assert K.sgd_update(params, grads, lr) is True
    for p, w in zip(params, want):
        assert p.tobytes() == w.tobytes()


def test_sgd_update_declines_what_is_not_the_common_case():
    """Nothing is updated when any pair is not the common case (NumPy then does them all)."""
    def param(i, form):
        def edit(params, grads):
            params[i] = form(params[i])
        return edit

    def grad(i, form):
        def edit(params, grads):
            grads[i] = form(grads[i])
        return edit
    edits = {
        "numpy lr": lambda p, g: np.float64(0.1), "int lr": lambda p, g: 1,
        "str lr": lambda p, g: "0.1", "fortran param": param(1, np.asfortranarray),
        "readonly param": param(2, readonly), "list param": param(2, lambda a: a.tolist()),
        "subclass param": param(0, lambda a: a.view(Sub)),
        "float64 grad": grad(3, lambda a: a.astype(np.float64)),
        "grad shape": grad(4, lambda a: a.reshape(-1)), "unaligned grad": grad(5, unaligned),
        "param is its grad": lambda p, g: g.__setitem__(2, p[2]),
        "param is another param": lambda p, g: p.__setitem__(3, p[2]),
        "grad inside another param": lambda p, g: g.__setitem__(5, p[4][0]),
        "fewer grads": lambda p, g: g.pop(),
    }
    for label, edit in edits.items():
        params, grads = params_and_grads(np.float32)
        lr = edit(params, grads)
        before = [np.array(p, copy=True) for p in params]
        assert K.sgd_update(params, grads, 0.1 if lr is None else lr) is False, label
        assert all(np.array_equal(p, b) for p, b in zip(params, before)), label


def test_copy_arrays():
    src = [np.arange(5.0), np.arange(6, dtype=np.float32).reshape(2, 3)]
    dst = [np.zeros(5), np.zeros((2, 3), np.float32)]
    assert K.copy_arrays(src, dst) is True
    for s, d in zip(src, dst):
        assert d.tobytes() == s.tobytes()


def test_copy_arrays_declines_what_is_not_the_common_case():
    """Nothing is copied unless every pair is two float arrays of one dtype and shape, the
    destination writeable and apart from every other array."""
    def cases():
        src = [np.arange(5.0), np.arange(6, dtype=np.float32).reshape(2, 3)]
        dst = [np.zeros(5), np.zeros((2, 3), np.float32)]
        yield "shape", src, [np.zeros(4), dst[1]]
        yield "length", src, dst[:1]
        yield "dtype", src, [np.zeros(5, np.float32), dst[1]]
        yield "readonly", src, [readonly(dst[0]), dst[1]]
        yield "list", src, [[0.0] * 5, dst[1]]
        yield "itself", src, [src[0], dst[1]]
        yield "into another source", src, [dst[0], src[0].view(np.float32)[:6].reshape(2, 3)]
        yield "two into one", [src[0], src[0]], [dst[0], dst[0]]
        yield "int source", [np.arange(5), src[1]], dst
    for label, src, dst in cases():
        before = [np.array(a, copy=True) for a in src + dst]
        assert K.copy_arrays(src, dst) is False, label
        assert all(np.array_equal(a, b) for a, b in zip(src + dst, before)), label


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("momentum", [0.1, 0.001, 1.0, 0.0, 0.3333])
def test_batchnorm_running_update_is_numpys_bit_for_bit(dtype, momentum):
    g = np.random.default_rng(0)
    rm, rv, mean, var = (g.standard_normal(200).astype(dtype) for _ in range(4))
    want_m, want_v = rm.copy(), rv.copy()
    want_m *= 1 - momentum
    want_m += momentum * mean
    want_v *= 1 - momentum
    want_v += momentum * var
    assert K.batchnorm_running_update(rm, rv, mean, var, momentum) is True
    assert rm.tobytes() == want_m.tobytes() and rv.tobytes() == want_v.tobytes()


def test_batchnorm_running_update_declines_what_is_not_the_common_case():
    def arrays():
        g = np.random.default_rng(0)
        return [g.standard_normal(6).astype(np.float32) for _ in range(4)]
    edits = {"numpy momentum": lambda a: (*a, np.float64(0.1)), "int momentum": lambda a: (*a, 0),
             "readonly running": lambda a: (readonly(a[0]), *a[1:], 0.1),
             "strided var": lambda a: (*a[:3], np.repeat(a[3], 2)[::2], 0.1),
             "float64 mean": lambda a: (a[0], a[1], a[2].astype(np.float64), a[3], 0.1),
             "shorter var": lambda a: (*a[:3], a[3][:5].copy(), 0.1),
             "one running array": lambda a: (a[0], a[0], a[2], a[3], 0.1),
             "running is the batch": lambda a: (a[0], a[1], a[0], a[3], 0.1),
             "2-D": lambda a: (a[0].reshape(2, 3), *a[1:], 0.1)}
    for label, edit in edits.items():
        args = edit(arrays())
        before = [np.array(a, copy=True) for a in args[:4]]
        assert K.batchnorm_running_update(*args) is False, label
        assert all(np.array_equal(a, b) for a, b in zip(args[:4], before)), label
