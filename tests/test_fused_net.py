"""The fused net's description (FB_NET_ARRAYS in csrc/fused.h, read through fused_layout and
checked where a net is filled) and the per-phase timing of the fused step."""
import time

import numpy as np
import pytest

from fastbn import _kernels as K
from fastbn.data import Vocab
from fastbn.fused import PHASES, BatchSampler, FusedTrainer, _model_arrays
from fastbn.model import CharMLP

VOCAB = Vocab.from_chars(".abcdefghijklmnopqrstuvwxyz")


@pytest.fixture(scope="module")
def data():
    g = np.random.default_rng(5)
    X = g.integers(0, 27, size=(3000, 3))
    Y = np.where(g.random(3000) < 0.9, X[:, 2], g.integers(0, 27, 3000))
    return X, Y


def test_the_layout_gives_each_array_its_shape_from_the_sizes():
    B, T, D, V, H = 6, 3, 2, 11, [5, 9, 4]
    lay = K.fused_layout(B, T, D, V, H, False)
    # the model's arrays, in the shapes of fastbn.nn (Linear weights (fan_in, fan_out))
    assert lay["C"] == ("float32", "model", (V, D))
    assert lay["W"] == ("float32", "model", [(T * D, 5), (5, 9), (9, 4)])
    assert lay["dW"][2] == [(T * D, 5), (5, 9), (9, 4)]
    assert lay["rvar"] == ("float32", "model", [(5,), (9,), (4,)])
    assert lay["Wout"] == ("float32", "model", (4, V))
    assert lay["dbout"] == ("float32", "model", (V,))
    # workspaces, with the dtypes C reads them as
    assert lay["WoutT"] == ("float32", "work", (V, 4))
    assert lay["x0"] == ("float32", "work", (B, T * D))
    assert lay["hpre"] == ("float32", "work", [(B, 5), (B, 9), (B, 4)])
    assert lay["logits"] == ("float32", "work", (V, B))
    assert lay["dh"] == ("float32", "work", (B, 9))             # max(T*D, max H)
    assert lay["acc1"] == ("float64", "work", (9,))
    assert lay["kfac"] == ("float32", "work", (9,))
    assert lay["rows"] == ("int64", "work", (2, B))
    assert lay["ctx"] == ("int64", "work", (B, T))
    assert lay["tab"] == ("float32", "work", (T, V, 5))
    assert K.fused_layout(B, 7, 4, V, [3], True)["dh"] == ("float64", "work", (B, 28))


def test_the_layout_names_the_arrays_fused_py_takes_from_the_model():
    m = CharMLP(VOCAB, n_hidden=16, n_layers=2, seed=0)
    lay = K.fused_layout(8, 3, 10, 27, [16, 16], False)
    assert {k for k, (_, owner, _) in lay.items() if owner == "model"} == set(_model_arrays(m)[0])


@pytest.mark.parametrize("sizes", [dict(B=2, T=3, D=10, V=27, H=[]),
                                   dict(B=1, T=3, D=10, V=27, H=[4]),
                                   dict(B=2, T=0, D=10, V=27, H=[4]),
                                   dict(B=2, T=3, D=10, V=27, H=[4, 0]),
                                   dict(B=2, T=3, D=10, V=2**30 + 1, H=[4]),
                                   dict(B=2, T=2**16, D=2**16, V=27, H=[4]),
                                   dict(B=2, T=3, D=10, V=27, H=[4] * (K.MAX_LAYERS + 1))])
def test_the_layout_refuses_sizes_out_of_range(sizes):
    with pytest.raises(ValueError, match="out of range"):
        K.fused_layout(*sizes.values(), False)


def _bound(dtype=np.float32, n_layers=2):
    t = FusedTrainer(CharMLP(VOCAB, n_hidden=16, n_layers=n_layers, dtype=dtype, seed=0), 8)
    return t, dict(t._arrays)


def _net(arrays, dtype=np.float32, n_layers=2, table=False):
    return K.FusedNet(arrays, 8, 3, 10, 27, [16] * n_layers, 0.001, 1e-5,
                      dtype == np.float64, table)


def _wrong_versions(a):
    """Arrays C must not be pointed at in place of a: each a different way wrong."""
    other = np.float64 if a.dtype != np.float64 else np.float32
    ro = a.copy()
    ro.flags.writeable = False
    return {"shape": np.zeros(a.shape[:-1] + (a.shape[-1] + 1,), a.dtype),
            "smaller": np.zeros(a.size - 1, a.dtype),
            "dtype": np.zeros(a.shape, other),
            "strided": np.zeros(a.shape[:-1] + (2 * a.shape[-1],), a.dtype)[..., ::2],
            "read-only": ro,
            "list": [a], "none": None}


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_the_net_is_filled_only_with_arrays_of_the_layout(dtype):
    t, arrays = _bound(dtype)
    _net(arrays, dtype)                                   # the trainer's own arrays: accepted
    lay = K.fused_layout(8, 3, 10, 27, [16, 16], dtype == np.float64)
    assert set(arrays) == set(lay)
    for name, value in arrays.items():
        for l, a in enumerate(value if isinstance(value, list) else [value]):
            where = f"{name}[{l}]" if isinstance(value, list) else name
            for how, bad in _wrong_versions(a).items():
                broken = dict(arrays)
                if isinstance(value, list):
                    broken[name] = list(value)
                    broken[name][l] = bad
                else:
                    broken[name] = bad
                with pytest.raises(ValueError, match="FusedNet"):
                    _net(broken, dtype)
                    pytest.fail(f"{where} {how} accepted")
        if isinstance(value, list):                       # one array short of the layers
            with pytest.raises(ValueError, match="one per hidden layer"):
                _net(dict(arrays, **{name: value[:-1]}), dtype)
        with pytest.raises(ValueError, match="missing"):
            _net({k: v for k, v in arrays.items() if k != name}, dtype)
    with pytest.raises(ValueError, match="no array of the net is called 'extra'"):
        _net(dict(arrays, extra=np.zeros(3)), dtype)


# ----------------------------------------------------------------------------------------------
# per-phase timing

def _pair(**kw):
    return (CharMLP(VOCAB, seed=3, **kw) for _ in range(2))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("table", [False, True])
@pytest.mark.parametrize("n_layers", [1, 3])
def test_timing_the_phases_changes_no_result(data, dtype, table, n_layers):
    X, Y = data
    a, b = _pair(dtype=dtype, n_layers=n_layers, n_hidden=24)
    ta, tb = FusedTrainer(a, 40, table=table), FusedTrainer(b, 40, table=table)
    sa, sb = BatchSampler(4), BatchSampler(4)
    done, la = ta.run(X, Y, 50, 0.1, sa)
    done_b, lb, seconds = tb.time_phases(X, Y, 50, 0.1, sb)
    assert done == done_b == 50 and set(seconds) == set(PHASES)
    assert la.tobytes() == lb.tobytes()
    for p, q in zip(a.parameters() + a.grads() + [x for _, x in a.named_buffers()],
                    b.parameters() + b.grads() + [x for _, x in b.named_buffers()]):
        assert p.tobytes() == q.tobytes()
    assert sa.state.tobytes() == sb.state.tobytes()


@pytest.mark.parametrize("n_layers,table", [(1, False), (1, True), (2, False), (3, True)])
def test_every_phase_that_runs_is_timed_and_only_those(data, n_layers, table):
    X, Y = data
    t = FusedTrainer(CharMLP(VOCAB, n_layers=n_layers, n_hidden=64, seed=0), 32, table=table)
    t0 = time.perf_counter()
    done, _, seconds = t.time_phases(X, Y, 100, 0.1, BatchSampler(0))
    wall = time.perf_counter() - t0
    assert done == 100 and list(seconds) == list(PHASES)
    idle = {"linear_forward", "linear_backward"} if n_layers == 1 else set()
    for p in idle:
        assert seconds[p] == 0, p
    if time.clock_getres(time.CLOCK_MONOTONIC) <= 1e-6:   # a clock fine enough to see them
        for p in set(PHASES) - idle:
            assert seconds[p] > 0, p
    assert sum(seconds.values()) <= wall                  # disjoint parts of the call
    # the timing is off again after the call, and steps outside it add nothing
    assert not t._net.profile
    t.run(X, Y, 20, 0.1, BatchSampler(1))
    assert t._net.phase_times() == seconds
