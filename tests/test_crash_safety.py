"""Crash safety: hostile calls, each in its own interpreter, must raise or return, never kill it.

The kernels run without bounds checks and without the GIL, so a missed check is an out-of-bounds
read or write: a segfault, a hang, or silent corruption, which a test in this process could not
survive or see. Every case below runs in a fresh ``python -c`` (cwd a temporary folder, fastbn
imported from where this test imports it) and must exit normally (returncode 0: no signal, no
hang) after printing the exception type it expects, or RETURNED when the call must succeed (those
snippets assert their results themselves).
"""
import os
import subprocess
import sys
import textwrap
from concurrent.futures import ThreadPoolExecutor

import pytest

import fastbn
from fastbn._opinfo import OPS as ENTRIES

TIMEOUT = 120

PRELUDE = '''
import resource


def peak_rss_kb():
    """This process's peak resident memory, KB. On Linux VmHWM of its own address space: ru_maxrss
    also counts the memory of the (pytest) process it was forked from, kept across exec."""
    try:
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) for line in f if line.startswith("VmHWM:"))
    except (OSError, StopIteration):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
import numpy as np
import fastbn
from fastbn import ops, nn
from fastbn.fused import BatchSampler, FusedTrainer
from fastbn.model import CharMLP

print("FASTBN", fastbn.__file__)
VOCAB = ".abcdefghijklmnopqrstuvwxyz"
g = np.random.default_rng(0)
X = g.integers(0, 27, (300, 3))
Y = g.integers(0, 27, 300)
ROWS = np.arange(8)

def model(dtype=np.float32, **kw):
    return CharMLP(VOCAB, n_hidden=16, seed=0, dtype=dtype, **kw)

def trainer(dtype=np.float32, **kw):
    m = model(dtype, **kw)
    return m, FusedTrainer(m, 8)

def misaligned(a):
    """a's values in a C-contiguous array whose data pointer is not aligned to its itemsize"""
    buf = bytearray(a.nbytes + 1)
    out = np.frombuffer(buf, dtype=a.dtype, offset=1, count=a.size).reshape(a.shape)
    out[...] = a
    assert not out.flags.aligned and out.flags.c_contiguous
    return out

def readonly(a):
    a = np.array(a)
    a.flags.writeable = False
    return a

def same(f, args, transform):
    """f on transformed array arguments equals f on the originals"""
    want = f(*args)
    got = f(*[transform(a) if isinstance(a, np.ndarray) else a for a in args])
    want = want if isinstance(want, tuple) else (want,)
    got = got if isinstance(got, tuple) else (got,)
    for a, b in zip(got, want):
        if isinstance(a, np.ndarray):
            np.testing.assert_array_equal(a, b)

def fwd_bwd(name, *args):
    out, c = getattr(ops, name + "_forward")(*args)
    d = 1.0 if np.ndim(out) == 0 else np.ones_like(out)
    grads = getattr(ops, name + "_backward")(d, c)
    grads = grads if isinstance(grads, tuple) else (grads,)
    return (np.asarray(out),) + tuple(g for g in grads if g is not None)

from fastbn._opinfo import OPS as REGISTRY
OPS = list(REGISTRY)                     # every op of fastbn.ops

def op_args(name, dtype=np.float64):
    """the registry's sample arguments: a batch of 6, 5 features, 7 rows, 3 characters"""
    return tuple(REGISTRY[name].args(dtype, seed=1, B=6, T=3, V=7, D=5, I=5, O=3, C=5))
'''

HARNESS = '''
try:
{body}
except Exception as e:
    print("RAISED", type(e).__name__, "|", str(e)[:400].replace("\\n", " "))
else:
    print("RETURNED")
'''

# (id, expected: an exception type name or "RETURNED", snippet)
CASES = [
    # ---------------------------------------------------------------- indices
    ("embedding_index_past_the_table", "IndexError",
     "ops.embedding_forward(np.ones((7, 4)), np.array([[0, 7]]))"),
    ("embedding_index_huge", "IndexError",
     "ops.embedding_forward(np.ones((7, 4)), np.array([[2**62, 0]]))"),
    ("embedding_index_uint64_max", "IndexError",
     "ops.embedding_forward(np.ones((7, 4)), np.array([[2**64 - 1]], dtype=np.uint64))"),
    ("embedding_index_negative", "IndexError",
     "nn.Embedding(7, 4)(np.array([[-1, 0]]))"),
    ("embedding_index_int64_min", "IndexError",
     "ops.embedding_forward(np.ones((7, 4)), np.array([[-2**63]]))"),
    ("embedding_index_float", "TypeError",
     "ops.embedding_forward(np.ones((7, 4)), np.array([[0.0, 1.0]]))"),
    ("embedding_index_bool", "TypeError",
     "ops.embedding_forward(np.ones((7, 4)), np.array([[True, False]]))"),
    ("cross_entropy_target_past_the_classes", "IndexError",
     "ops.cross_entropy_forward(np.ones((3, 5)), np.array([0, 5, 1]))"),
    ("cross_entropy_target_negative", "IndexError",
     "ops.cross_entropy_forward(np.ones((3, 5)), np.array([0, -1, 1]))"),
    ("cross_entropy_target_float", "TypeError",
     "ops.cross_entropy_forward(np.ones((3, 5)), np.array([0.0, 1.0, 1.0]))"),
    ("model_forward_target_out_of_range", "IndexError",
     "model().forward(X[:8], np.full(8, 27))"),
    ("model_forward_context_out_of_range", "IndexError",
     "model().forward(np.full((8, 3), 99), Y[:8])"),
    ("index_buffer_refilled_between_forward_and_backward", "RETURNED", """
idx = np.array([[1, 2], [3, 1]])
_, c = ops.embedding_forward(np.ones((7, 2)), idx)
idx[:] = 10**12
dw = ops.embedding_backward(np.ones((2, 4)), c)
assert dw[:, 0].tolist() == [0, 2, 1, 1, 0, 0, 0]
t = np.array([0, 2])
_, c = ops.cross_entropy_forward(np.zeros((2, 3)), t)
t[:] = -10**12
assert np.isfinite(ops.cross_entropy_backward(1.0, c)).all()
"""),
    ("cache_index_replaced", "IndexError", """
_, c = ops.embedding_forward(np.ones((7, 2)), np.array([[1, 2]]))
c.idx = np.array([[1, 10**9]])
ops.embedding_backward(np.ones((1, 4)), c)
"""),
    ("cache_target_replaced", "IndexError", """
_, c = ops.cross_entropy_forward(np.zeros((2, 3)), np.array([0, 2]))
c.target = np.array([0, 10**9])
ops.cross_entropy_backward(1.0, c)
"""),
    ("cache_gamma_replaced", "ValueError", """
_, c = ops.batchnorm_forward(np.ones((4, 300)), np.ones(300), np.zeros(300))
c.gamma = np.ones(3)
ops.batchnorm_backward(np.ones((4, 300)), c)
"""),
    ("cache_of_another_op", "TypeError", """
_, c = ops.tanh_forward(np.ones((4, 3)))
ops.batchnorm_backward(np.ones((4, 3)), c)
"""),
    ("callers_array_reshaped_in_place_after_linear", "ValueError", """
x, w = np.ones((64, 4)), np.ones((4, 3))
_, c = ops.linear_forward(x, w)
w.shape = (2, 6)
ops.linear_backward(np.ones((64, 3)), c)
"""),
    ("kernels_refuse_arguments_of_inconsistent_shapes", "RETURNED", """
from fastbn import _kernels as K
f = lambda *s: np.zeros(s)
i = lambda *s: np.zeros(s, np.int64)
u = lambda n: np.zeros(n, np.uint64)
m, t = trainer()
net = t._net
bad = [
    (K.embedding_forward, (f(7, 4), i(6, 3), f(6, 8))),
    (K.embedding_backward, (f(6, 8), i(6, 3), f(7, 4))),
    (K.linear_forward, (f(6, 5), f(5, 3), f(3), f(6, 300))),
    (K.linear_forward, (f(6, 5), f(4, 3), None, f(6, 3))),
    (K.linear_forward, (f(6, 5), f(5, 3), f(300), f(6, 3))),
    (K.linear_backward, (f(6, 3), f(6, 5), f(5, 3), f(6, 5), f(5, 3), f(300))),
    (K.linear_backward, (f(600, 3), f(6, 5), f(5, 3), f(6, 5), f(5, 3), None)),
    (K.tanh_forward, (f(10), f(3))),
    (K.tanh_backward, (f(10), f(10), f(3))),
    (K.leaky_relu_forward, (f(10), 0.1, f(3))),
    (K.leaky_relu_backward, (f(3), f(10), 0.1, f(10))),
    (K.elu_forward, (f(10), 1.0, f(3))),
    (K.elu_backward, (f(10), f(3), 1.0, f(10))),
    (K.elu_backward, (f(10), f(10), 1.0, f(3))),
    (K.batchnorm_forward, (f(6, 5), f(5), f(5), 1e-5, f(6, 5), f(6, 5), f(5), f(5), f(2))),
    (K.batchnorm_backward, (f(6, 5), f(6, 5), f(500), f(5), f(6, 5), f(5), f(5))),
    (K.batchnorm_eval_forward, (f(6, 5), f(5), f(5), f(5), f(1), f(6, 5), f(6, 5))),
    (K.batchnorm_eval_forward, (f(6, 5), f(5), f(5), f(5), f(5), f(6, 5), f(6, 4))),
    (K.batchnorm_eval_forward, (f(6, 5), f(5), f(5), f(5), f(1), f(6, 5), None)),
    (K.batchnorm_eval_forward, (f(6, 5), f(5), f(5), f(5), f(5), f(3, 5), None)),
    (K.batchnorm_eval_backward, (f(600, 5), f(6, 5), f(5), f(5), f(6, 5), f(5), f(5))),
    (K.cross_entropy_forward, (f(6, 5), i(3), f(6, 5))),
    (K.cross_entropy_forward, (f(6, 0), i(6), f(6, 0))),
    (K.cross_entropy_forward, (f(6, 5), i(3), None)),
    (K.cross_entropy_forward, (f(6, 0), i(6), None)),
    (K.cross_entropy_forward, (f(0, 5), i(0), None)),
    (K.cross_entropy_backward, (1.0, f(6, 5), i(6), f(3, 5))),
    (K.table_forward, (f(3, 7, 4), i(6, 3), f(6, 5))),
    (K.table_forward, (f(2, 7, 4), i(6, 3), f(6, 4))),
    (K.table_forward, (f(3, 7, 4), i(6, 3), f(5, 4))),
    (K.pcg32_seed, (u(1), 0)),
    (K.draw_rows, (u(1), 10, i(4))),
    (K.draw_rows, (u(2), 0, i(4))),
    (K.fast_exp_f32, (np.zeros(10, np.float32), np.zeros(3, np.float32))),
    (K.fast_tanh_f64, (f(10), f(3))),
    (net.step, (i(300, 2), i(300), i(8), 0.1)),
    (net.step, (i(300, 3), i(10), i(8), 0.1)),
    (net.step, (i(300, 3), i(300), i(9), 0.1)),
    (net.loss, (i(0, 3), i(0), i(8), False)),
    (net.train, (i(300, 3), i(300), 10, 0.1, u(2), f(5))),
    (net.train, (i(300, 3), i(300), 10, 0.1, u(1), f(10))),
]
for fn, args in bad:
    try:
        fn(*args)
    except ValueError as e:
        assert "shapes disagree" in str(e), (fn.__name__, e)
    else:
        raise AssertionError(fn.__name__ + ": no error")
# every op kernel is in the list (a new op's kernels too)
missing = {n for n in dir(K) if n.endswith(("_forward", "_backward"))} - {
    fn.__name__ for fn, _ in bad}
assert not missing, missing
"""),
    # ---------------------------------------------------------------- shapes
    ("linear_shapes_do_not_chain", "ValueError",
     "ops.linear_forward(np.ones((4, 3)), np.ones((300, 2)))"),
    ("batchnorm_gamma_too_short", "ValueError",
     "ops.batchnorm_forward(np.ones((4, 300)), np.ones(3), np.zeros(300))"),
    ("batchnorm_one_row", "ValueError",
     "nn.BatchNorm1d(3)(np.ones((1, 3), np.float32))"),
    ("every_backward_with_a_too_small_dout", "RETURNED", """
for name in OPS:
    out, c = getattr(ops, name + "_forward")(*op_args(name))
    if np.ndim(out) == 0:
        continue
    try:
        getattr(ops, name + "_backward")(np.ones((1, 1)), c)
    except ValueError as e:
        assert "dout must have shape" in str(e), e
    else:
        raise AssertionError(name + ": no error")
"""),
    ("every_backward_with_a_too_large_dout", "RETURNED", """
for name in OPS:
    out, c = getattr(ops, name + "_forward")(*op_args(name))
    if np.ndim(out) == 0:
        continue
    try:
        getattr(ops, name + "_backward")(np.ones((600, 500)), c)
    except ValueError as e:
        assert "dout must have shape" in str(e), e
    else:
        raise AssertionError(name + ": no error")
"""),
    ("layer_backward_with_a_mismatched_dout", "ValueError", """
m = model()
m.forward(X[:8], Y[:8])
m.layers[1].backward(np.ones((8, 3), np.float32))
"""),
    ("linear_past_32_bit_blas_without_allocating", "RETURNED", """
for xs, ws in [((1, 2**31), (2**31, 1)), ((2**31, 1), (1, 1)), ((1, 1), (1, 2**31))]:
    x = np.broadcast_to(np.float32(1), xs)
    w = np.broadcast_to(np.float32(1), ws)
    try:
        ops.linear_forward(x, w)
    except ValueError as e:
        assert "32-bit" in str(e)
    else:
        raise AssertionError("no error")
assert peak_rss_kb() < 1024 * 1024     # KB: under 1 GB
"""),
    # ---------------------------------------------------------------- layouts and values
    ("readonly_inputs_everywhere", "RETURNED", """
for name in OPS:
    same(lambda *a: fwd_bwd(name, *a), op_args(name), readonly)
m, t = trainer()
t.step(readonly(X), readonly(Y), 0.1, readonly(ROWS))
t.run(readonly(X), readonly(Y), 5, 0.1, BatchSampler(0))
"""),
    ("negative_strides_everywhere", "RETURNED", """
for name in OPS:
    same(lambda *a: fwd_bwd(name, *a), op_args(name), lambda a: np.flip(np.flip(a).copy()))
    same(lambda *a: fwd_bwd(name, *a), op_args(name, np.float32),
         lambda a: np.asfortranarray(a))
a, ta = trainer()
b, tb = trainer()
assert ta.step(X, Y, 0.1, ROWS) == tb.step(np.flip(np.flip(X).copy()), Y[::-1].copy()[::-1],
                                           0.1, ROWS[::-1].copy()[::-1])
"""),
    ("misaligned_buffers", "RETURNED", """
for name in OPS:
    for dt in (np.float32, np.float64):
        same(lambda *a: fwd_bwd(name, *a), op_args(name, dt), misaligned)
a, ta = trainer()
b, tb = trainer()
assert ta.step(X, Y, 0.1, ROWS) == tb.step(misaligned(X), misaligned(Y), 0.1, misaligned(ROWS))
"""),
    ("nan_and_inf_inputs_to_every_op", "RETURNED", """
for name in OPS:
    for bad in (np.nan, np.inf, -np.inf):
        args = list(op_args(name))
        args[0] = args[0].copy()
        args[0].flat[3] = bad
        fwd_bwd(name, *args)
out, c = ops.cross_entropy_forward(np.array([[0.0, np.nan]]), np.array([0]))
assert np.isnan(out)
assert ops.tanh_forward(np.array([np.inf]))[0][0] == 1
assert np.isnan(ops.relu_forward(np.array([np.nan]))[0][0])
"""),
    ("fused_step_with_nan_parameters", "RETURNED", """
m, t = trainer()
m.layers[0].weight[:, 1] = np.nan
before = [p.copy() for p in m.parameters()]
assert np.isnan(t.step(X, Y, 0.1, ROWS))
done, losses = t.run(X, Y, 10, 0.1, BatchSampler(0))
assert done == 0 and np.isnan(losses[0])
for p, q in zip(m.parameters(), before):       # a non-finite loss applies no update
    np.testing.assert_array_equal(p, q)
"""),
    ("fused_run_with_a_huge_lr_stops", "RETURNED", """
m, t = trainer()
done, losses = t.run(X, Y, 300, 1e38, BatchSampler(0))
assert done < 300 and t.divergence is not None
# a divergence found in the forward applies nothing; one found after the update applies it
assert t.divergence.applied or all(np.isfinite(p).all() for p in m.parameters())
"""),
    ("fused_step_with_nan_lr", "ValueError",
     "trainer()[1].step(X, Y, float('nan'), ROWS)"),
    ("fused_run_with_inf_lr", "ValueError",
     "trainer()[1].run(X, Y, 3, float('inf'), BatchSampler(0))"),
    # ---------------------------------------------------------------- the fused trainer's data
    ("fused_rows_past_the_data", "IndexError",
     "trainer()[1].step(X, Y, 0.1, np.array([0, 1, 2, 3, 4, 5, 6, 300]))"),
    ("fused_rows_negative", "IndexError",
     "trainer()[1].step(X, Y, 0.1, np.array([0, 1, 2, 3, 4, 5, 6, -1]))"),
    ("fused_rows_float", "TypeError",
     "trainer()[1].step(X, Y, 0.1, np.arange(8.0))"),
    ("fused_rows_bool", "TypeError",
     "trainer()[1].step(X, Y, 0.1, np.ones(8, bool))"),
    ("fused_rows_wrong_length", "ValueError",
     "trainer()[1].step(X, Y, 0.1, np.arange(9))"),
    ("fused_loss_rows_past_the_data", "IndexError",
     "trainer()[1].loss(X, Y, np.array([0, 1, 2, 3, 4, 5, 6, 10**9]))"),
    ("fused_context_id_past_the_vocab", "IndexError",
     "trainer()[1].run(np.where(X == 5, 27, X), Y, 5, 0.1, BatchSampler(0))"),
    ("fused_target_negative", "IndexError",
     "trainer()[1].step(X, np.where(Y == 5, -1, Y), 0.1, ROWS)"),
    ("fused_context_width_wrong", "ValueError",
     "trainer()[1].run(X[:, :2], Y, 5, 0.1, BatchSampler(0))"),
    ("fused_targets_wrong_length", "ValueError",
     "trainer()[1].run(X, Y[:-1], 5, 0.1, BatchSampler(0))"),
    ("fused_no_data", "ValueError",
     "trainer()[1].run(X[:0], Y[:0], 5, 0.1, BatchSampler(0))"),
    ("fused_float_data", "TypeError",
     "trainer()[1].run(X.astype(float), Y, 5, 0.1, BatchSampler(0))"),
    ("fused_losses_buffer_too_short", "ValueError",
     "trainer()[1].run(X, Y, 5, 0.1, BatchSampler(0), losses=np.empty(4))"),
    ("fused_sampler_state_too_short", "ValueError", """
s = BatchSampler(0)
s.state = np.zeros(1, np.uint64)
trainer()[1].run(X, Y, 5, 0.1, s)
"""),
    ("fused_sampler_state_wrong_dtype", "ValueError", """
s = BatchSampler(0)
s.state = np.zeros(2, np.int64)
s.draw(10, 4)
"""),
    ("fused_not_a_sampler", "TypeError",
     "trainer()[1].run(X, Y, 5, 0.1, None)"),
    ("fused_batch_of_one", "ValueError",
     "FusedTrainer(model(), 1)"),
    # ---------------------------------------------------------------- the fused trainer's model
    ("fused_momentum_set_out_of_range_after_binding", "ValueError", """
m, t = trainer()
m.layers[2].momentum = 5.0
t.step(X, Y, 0.1, ROWS)
"""),
    ("fused_weight_reshaped_in_place", "ValueError", """
m, t = trainer()
m.layers[1].weight.shape = (15, 32)          # same memory, another shape: same id()
t.step(X, Y, 0.1, ROWS)
"""),
    ("fused_weight_made_readonly_in_place", "ValueError", """
m, t = trainer()
m.layers[1].weight.flags.writeable = False
t.step(X, Y, 0.1, ROWS)
"""),
    ("fused_weight_replaced_by_a_fortran_array", "ValueError", """
m, t = trainer()
m.layers[1].weight = np.asfortranarray(m.layers[1].weight)
t.step(X, Y, 0.1, ROWS)
"""),
    ("fused_weight_replaced_by_float64", "ValueError", """
m, t = trainer()
m.layers[1].weight = m.layers[1].weight.astype(np.float64)
t.step(X, Y, 0.1, ROWS)
"""),
    ("fused_layer_replaced_by_another_type", "ValueError", """
m, t = trainer()
m.layers[2] = nn.ReLU()
t.run(X, Y, 3, 0.1, BatchSampler(0))
"""),
]

# every model array replaced by one of the wrong shape before a fused step (and the per-layer
# step on the same model refuses too)
for layer, attr, shape in [
        (0, "weight", (27, 5)), (0, "weight", (28, 10)), (0, "dweight", (27, 5)),
        (1, "weight", (30, 17)), (1, "weight", (31, 16)), (1, "dweight", (30, 15)),
        (1, "weight", (480,)),
        (2, "gamma", (3,)), (2, "dgamma", (15,)), (2, "beta", (17,)), (2, "dbeta", (1,)),
        (2, "running_mean", (3,)), (2, "running_var", (500,)),
        (4, "weight", (16, 26)), (4, "weight", (15, 27)), (4, "dweight", (16, 20)),
        (4, "bias", (26,)), (4, "dbias", (3,))]:
    name = f"fused_{layer}_{attr}_{'x'.join(map(str, shape))}"
    CASES.append((name, "ValueError", f"""
m, t = trainer()
m.layers[{layer}].{attr} = np.zeros({shape}, np.float32)
t.run(X, Y, 3, 0.1, BatchSampler(0))
"""))
    if attr in ("weight", "gamma", "beta", "bias"):        # parameters: the per-layer path too
        CASES.append((name + "_per_layer", "ValueError", f"""
m = model()
m.layers[{layer}].{attr} = np.zeros({shape}, np.float32)
m.train_step(X[:8], Y[:8], 0.1)
"""))

# every error input of every op's entry, in a fresh interpreter: each raises its exception
for name in ENTRIES:
    CASES.append((f"error_inputs-{name}", "RETURNED", f"""
import re
from fastbn._opinfo import OPS as ENTRIES
for label, args, options, exc, match in ENTRIES["{name}"].error_cases(B=6, T=3, V=7, D=5, I=5,
                                                                     O=3, C=5):
    try:
        ops.{name}_forward(*args, **options)
    except exc as e:
        assert re.search(match, str(e)), (label, str(e))
    else:
        raise AssertionError(label + " returned")
"""))


def run_case(body, cwd):
    code = PRELUDE + HARNESS.format(body=textwrap.indent(textwrap.dedent(body).strip(), "    "))
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        [os.path.dirname(os.path.dirname(fastbn.__file__))]
        + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
    env["PYTHONFAULTHANDLER"] = "1"            # a crash prints where it happened
    env["OPENBLAS_NUM_THREADS"] = env["OMP_NUM_THREADS"] = "1"
    try:
        p = subprocess.run([sys.executable, "-c", code], check=False, cwd=cwd, env=env,
                           capture_output=True, text=True, timeout=TIMEOUT)
    except subprocess.TimeoutExpired as e:
        return None, e.stdout or "", f"hung: no exit after {TIMEOUT} s"
    return p.returncode, p.stdout, p.stderr


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    """Every case, run in parallel subprocesses: {id: (returncode, stdout, stderr)}."""
    cwd = tmp_path_factory.mktemp("crash")
    with ThreadPoolExecutor(max_workers=max(2, min(4, os.cpu_count() or 2))) as pool:
        futures = {cid: pool.submit(run_case, body, cwd) for cid, _, body in CASES}
        return {cid: f.result() for cid, f in futures.items()}


def test_case_ids_are_unique():
    ids = [c[0] for c in CASES]
    assert len(ids) == len(set(ids))


@pytest.mark.parametrize("cid,expected", [(c[0], c[1]) for c in CASES], ids=[c[0] for c in CASES])
def test_hostile_call_raises_and_never_crashes(results, cid, expected):
    rc, out, err = results[cid]
    assert rc is not None, f"{cid}: {err}"
    assert rc >= 0, f"{cid}: killed by signal {-rc}\n{err[-3000:]}"
    assert rc == 0, f"{cid}: exit status {rc}\n{err[-3000:]}"
    where = os.path.dirname(fastbn.__file__)
    assert f"FASTBN {where}" in out, f"{cid}: imported another fastbn:\n{out}"
    last = out.strip().splitlines()[-1]
    want = "RETURNED" if expected == "RETURNED" else f"RAISED {expected} |"
    assert last.startswith(want), f"{cid}: expected {want!r}, got {last!r}\n{err[-2000:]}"
