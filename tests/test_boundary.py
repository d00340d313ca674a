"""The C boundary under threads (issue 12): what a kernel reads without the GIL stays valid.

The kernels run with the GIL released, so another Python thread runs while they do. Whatever C
indexes with (an index array, a shape, a size) must be private to the call: a copy made and checked
in the call, or checked where C reads it with the GIL held. Float arrays may be written by another
thread while C reads them: that gives wrong numbers, as any racy NumPy code does, never a crash.

Each case runs in its own interpreter (a crash would kill pytest) and must exit normally, having
printed RETURNED: the snippets assert their results themselves. ``Hammer`` is a thread that writes
out-of-range values into an array and restores them, again and again, while the main thread calls
fastbn on it; the switch interval is shortened so that the threads interleave finely.

Also here, in-process: the arrays handed to the kernels are private (white-box, through a proxy of
the compiled module), the sampler keeps working across pickling, and a failed workspace allocation
leaks nothing.
"""
import os
import pickle
import subprocess
import sys
import textwrap
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

import fastbn
from fastbn import _kernels, ops
from fastbn._opinfo import OPS as REGISTRY
from fastbn.fused import BatchSampler, FusedTrainer
from fastbn.model import CharMLP

TIMEOUT = 300

PRELUDE = '''
import sys
import threading
import time
import numpy as np
import fastbn
from fastbn import ops
from fastbn.fused import BatchSampler, FusedTrainer
from fastbn.model import CharMLP

print("FASTBN", fastbn.__file__)
sys.setswitchinterval(1e-6)
VOCAB = ".abcdefghijklmnopqrstuvwxyz"
g = np.random.default_rng(0)
X = g.integers(0, 27, (300, 3))
Y = g.integers(0, 27, 300)


def model(dtype=np.float32, seed=0):
    return CharMLP(VOCAB, n_hidden=16, seed=seed, dtype=dtype)


def state(m):
    return [a.copy() for a in m.parameters() + [b for _, b in m.named_buffers()]]


def equal(a, b):
    return len(a) == len(b) and all(np.array_equal(p, q) for p, q in zip(a, b))


class Hammer:
    """A thread writing ``bad`` over all of ``arr`` and restoring it, until the block ends. The
    array holds the bad values a short part of the time, so that most checks pass and calls go on
    to the kernels while the writes continue: between writes the thread idles ``rest`` loops
    (holding the GIL: fine interleaving with Python code), or sleeps ``pause`` seconds (letting
    a thread in Python code run on; calls that spend their time in C see the writes anyway).
    With ``hold``, it idles that many loops while the bad values are in: a loop lets the
    interpreter switch threads there, so Python code of the other thread can see them too
    (between two plain stores it never switches)."""

    def __init__(self, arr, bad, rest=30, pause=None, hold=0):
        self.arr, self.bad, self.good = arr, bad, arr.copy()
        self.rest, self.pause, self.hold = rest, pause, hold
        self.stop = threading.Event()
        self.writes = 0
        self.thread = threading.Thread(target=self.run, daemon=True)

    def run(self):
        while not self.stop.is_set():
            self.arr[...] = self.bad
            for _ in range(self.hold):
                pass
            self.arr[...] = self.good
            self.writes += 1
            if self.pause:
                time.sleep(self.pause)
            else:
                for _ in range(self.rest):
                    pass

    def __enter__(self):
        self.thread.start()
        while self.writes < 10:          # the writer is running before the calls start
            pass
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join()


def calls(fn, n, allowed=(IndexError,)):
    """fn() n times; an allowed exception (bad values caught by the checks) is counted, not
    raised. Returns (results of the calls that returned, number refused)."""
    done, refused = [], 0
    for _ in range(n):
        try:
            done.append(fn())
        except allowed:
            refused += 1
    return done, refused


def threads(*fns):
    """Run the functions in threads released together; their results, in order."""
    results, errors = [None] * len(fns), []
    start = threading.Barrier(len(fns))

    def go(i, f):
        start.wait()
        try:
            results[i] = f()
        except BaseException as e:        # re-raised in the main thread
            errors.append(e)

    ts = [threading.Thread(target=go, args=(i, f)) for i, f in enumerate(fns)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    if errors:
        raise errors[0]
    return results
'''

HARNESS = '''
try:
{body}
except Exception as e:
    import traceback
    traceback.print_exc()
    print("RAISED", type(e).__name__, "|", str(e)[:400].replace("\\n", " "))
else:
    print("RETURNED")
'''

OPS_ARGS = '''
from fastbn._opinfo import OPS as REGISTRY
ARGS = {name: op.args(seed=1, B=6, T=3, V=7, D=5, I=5, O=3, C=5)      # every op of fastbn.ops
        for name, op in REGISTRY.items()}

def fwd_bwd(name):
    out, c = getattr(ops, name + "_forward")(*ARGS[name])
    grads = getattr(ops, name + "_backward")(1.0 if np.ndim(out) == 0 else np.ones_like(out), c)
    grads = grads if isinstance(grads, tuple) else (grads,)
    return [np.asarray(out)] + [g for g in grads if g is not None]
'''

CASES = [
    # ------------------------------------------------------- finding 1: the fused trainer's data
    ("fused_run_while_X_is_written", """
m = model()
t = FusedTrainer(m, 32)
with Hammer(X, 10**9, pause=2e-5) as h:
    done, refused = calls(lambda: t.run(X, Y, 500, 0.01, BatchSampler(0))[0], 100)
assert h.writes > 0 and done and all(d == 500 for d in done), (h.writes, done, refused)
"""),
    ("fused_run_while_Y_is_written", """
m = model()
t = FusedTrainer(m, 32)
with Hammer(Y, -10**9, pause=2e-5) as h:
    done, refused = calls(lambda: t.run(X, Y, 500, 0.01, BatchSampler(0))[0], 100)
assert h.writes > 0 and done and all(d == 500 for d in done), (h.writes, done, refused)
"""),
    ("fused_step_and_loss_while_X_Y_and_rows_are_written", """
m = model()
t = FusedTrainer(m, 32)
rows = np.arange(32) * 9
for arr, bad in ((X, 10**9), (Y, 10**9), (rows, 10**9), (rows, -10**9)):
    with Hammer(arr, bad) as h:
        a, ra = calls(lambda: t.step(X, Y, 0.01, rows), 300)
        b, rb = calls(lambda: t.loss(X, Y, rows), 300)
    # the point is that no call crashes; how many calls the writer lets through (none, under a
    # sanitizer on a busy machine) is timing, so only what returned is checked
    assert h.writes > 0 and len(a) + ra == 300 and len(b) + rb == 300, (h.writes, ra, rb)
    assert all(np.isfinite(a)) and all(np.isfinite(b)), (a, b)
"""),
    # ------------------------------------------------------- the ops' index arrays
    ("ops_forward_while_the_index_array_is_written", """
w = np.ones((7, 4))
idx = np.random.default_rng(0).integers(0, 7, (64, 3))
logits = np.zeros((64, 5))
t = np.random.default_rng(1).integers(0, 5, 64)
loss = ops.cross_entropy_forward(logits, t)[0]           # log 5, whatever the targets
for arr, bad in ((idx, 10**12), (idx, -10**12), (t, 10**12), (t, -10**12)):
    with Hammer(arr, bad, hold=3) as h:
        a, _ = calls(lambda: ops.embedding_forward(w, idx)[0], 3000)
        b, _ = calls(lambda: ops.cross_entropy_forward(logits, t)[0], 3000)
    assert h.writes > 0 and a and b
    assert all((o == 1).all() for o in a) and all(v == loss for v in b)
"""),
    ("ops_backward_while_a_cache_index_array_is_written", """
w = np.ones((7, 4))
_, c = ops.embedding_forward(w, np.zeros((64, 3), np.int64))
c.idx = idx = np.zeros((64, 3), np.int64)       # the caller's own, writeable array
_, cc = ops.cross_entropy_forward(np.zeros((64, 5)), np.zeros(64, np.int64))
cc.target = t = np.zeros(64, np.int64)
for arr, bad in ((idx, 10**12), (idx, -10**12), (t, 10**12), (t, -10**12)):
    a, b = [], []
    with Hammer(arr, bad, hold=3) as h:
        # until calls of both got through while the writes went on (how many are refused
        # depends on how the threads interleave: on a loaded machine a round of 3000 can be
        # refused whole); every call that returns is checked below
        for _ in range(20):
            a += calls(lambda: ops.embedding_backward(np.ones((64, 12)), c), 3000)[0]
            b += calls(lambda: ops.cross_entropy_backward(1.0, cc), 3000)[0]
            if a and b:
                break
    assert h.writes > 0 and a and b
    assert all(d[0].sum() == 64 * 3 * 4 and d.sum() == d[0].sum() for d in a)
    assert all(np.isfinite(d).all() for d in b)
"""),
    # ------------------------------------------------------- shapes changed in place meanwhile
    ("ops_while_the_callers_array_is_reshaped_in_place", """
x, w, b = np.ones((6, 5)), np.arange(15.0).reshape(5, 3), np.ones(3)
want = x @ w + b

def reshaper():                          # same memory, other shapes (allowed with exports)
    while not stop.is_set():
        for shape in ((3, 5), (5, 3), (15, 1), (5, 3)):
            w.shape = shape

stop = threading.Event()
th = threading.Thread(target=reshaper)
th.start()
got, refused = calls(lambda: ops.linear_forward(x, w, b)[0], 20000, (ValueError,))
stop.set()
th.join()
assert got and all(np.array_equal(o, want) for o in got), (len(got), refused)
"""),
    # ------------------------------------------------------- overlapping calls, finding 4
    ("ops_from_threads_equal_serial_results", OPS_ARGS + """
names = list(ARGS)
want = {n: fwd_bwd(n) for n in names}
def worker():
    for _ in range(200):
        for n in names:
            got = fwd_bwd(n)
            assert all(np.array_equal(a, b) for a, b in zip(got, want[n])), n
threads(worker, worker, worker)
"""),
    ("fused_run_on_separate_trainers_from_threads_equals_serial", """
for dtype in (np.float32, np.float64):
    ref = [model(dtype, seed) for seed in (1, 2)]
    serial = [FusedTrainer(m, 32).run(X, Y, 400, 0.1, BatchSampler(s))[1]
              for m, s in zip(ref, (5, 6))]
    ms = [model(dtype, seed) for seed in (1, 2)]
    ts = [FusedTrainer(m, 32) for m in ms]
    got = threads(*[lambda t=t, s=s: t.run(X, Y, 400, 0.1, BatchSampler(s))[1]
                    for t, s in zip(ts, (5, 6))])
    for a, b, m, r in zip(got, serial, ms, ref):
        assert np.array_equal(a, b) and equal(state(m), state(r))
"""),
    ("fused_calls_on_one_trainer_from_threads_are_serialized", """
def serial(order):
    m = model()
    t = FusedTrainer(m, 32)
    losses = {k: t.run(X, Y, 300, 0.1, BatchSampler(k))[1] for k in order}
    return state(m), losses

orders = [serial((5, 6)), serial((6, 5))]
for _ in range(3):
    m = model()
    t = FusedTrainer(m, 32)
    la, lb = threads(lambda: t.run(X, Y, 300, 0.1, BatchSampler(5))[1],
                     lambda: t.run(X, Y, 300, 0.1, BatchSampler(6))[1])
    assert any(equal(state(m), s) and np.array_equal(la, l[5]) and np.array_equal(lb, l[6])
               for s, l in orders)
# step takes the same lock: the 20 steps of one thread fall before or after the run of the
# other, never inside it (k steps, the run, 20 - k steps, for some k)
def steps_run_steps(k):
    m = model()
    t = FusedTrainer(m, 32)
    for i in range(20):
        if i == k:
            t.run(X, Y, 300, 0.1, BatchSampler(5))
        t.step(X, Y, 0.1, np.arange(32))
    if k == 20:
        t.run(X, Y, 300, 0.1, BatchSampler(5))
    return state(m)

m = model()
t = FusedTrainer(m, 32)
threads(lambda: t.run(X, Y, 300, 0.1, BatchSampler(5)),
        lambda: [t.step(X, Y, 0.1, np.arange(32)) for _ in range(20)])
assert any(equal(state(m), steps_run_steps(k)) for k in range(21))
"""),
    ("one_sampler_shared_by_threads_loses_no_draw", """
n, B, N = 182_625, 5_000, 200
s = BatchSampler(3)
blocks = threads(*[lambda: [s.draw(n, B).tobytes() for _ in range(N)]] * 2)
ref = BatchSampler(3)
serial = [ref.draw(n, B).tobytes() for _ in range(2 * N)]
assert np.array_equal(s.state, ref.state), "lost updates"
assert sorted(blocks[0] + blocks[1]) == sorted(serial)   # each draw one block of the sequence
"""),
    ("a_run_and_draws_sharing_a_sampler_do_not_interleave", """
# the state after R rows drawn from [0, n) does not depend on how the rows were split into
# draws: a run's 2000 x 32 rows and 100 draws of 5000 rows leave the state of 564,000 rows
m = model()
t = FusedTrainer(m, 32)
s = BatchSampler(4)
threads(lambda: t.run(X, Y, 2000, 0.1, s),
        lambda: [s.draw(len(X), 5000) for _ in range(100)])
ref = BatchSampler(4)
ref.draw(len(X), 2000 * 32 + 100 * 5000)
assert np.array_equal(s.state, ref.state)
"""),
]


def run_case(body, cwd):
    """A case's snippet, with the prelude and the harness, in a fresh interpreter."""
    code = PRELUDE + HARNESS.format(body=textwrap.indent(textwrap.dedent(body).strip(), "    "))
    return run_python(code, cwd)


def run_python(code, cwd):
    """(returncode, stdout, stderr) of ``python -c code`` importing this fastbn."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        [os.path.dirname(os.path.dirname(fastbn.__file__))]
        + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
    env["PYTHONFAULTHANDLER"] = "1"
    env["OPENBLAS_NUM_THREADS"] = env["OMP_NUM_THREADS"] = "1"   # deterministic BLAS
    try:
        p = subprocess.run([sys.executable, "-c", code], check=False, cwd=cwd, env=env,
                           capture_output=True, text=True, timeout=TIMEOUT)
    except subprocess.TimeoutExpired as e:
        return None, e.stdout or "", f"hung: no exit after {TIMEOUT} s"
    return p.returncode, p.stdout, p.stderr


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    cwd = tmp_path_factory.mktemp("boundary")
    with ThreadPoolExecutor(max_workers=2) as pool:
        futures = {cid: pool.submit(run_case, body, cwd) for cid, body in CASES}
        return {cid: f.result() for cid, f in futures.items()}


def test_case_ids_are_unique():
    ids = [c[0] for c in CASES]
    assert len(ids) == len(set(ids))


@pytest.mark.parametrize("cid", [c[0] for c in CASES])
def test_threads_never_crash_and_results_hold(results, cid):
    rc, out, err = results[cid]
    assert rc is not None, f"{cid}: {err}"
    assert rc >= 0, f"{cid}: killed by signal {-rc}\n{err[-3000:]}"
    assert rc == 0, f"{cid}: exit status {rc}\n{err[-3000:]}"
    assert f"FASTBN {os.path.dirname(fastbn.__file__)}" in out, f"{cid}: another fastbn:\n{out}"
    last = out.strip().splitlines()[-1]
    assert last == "RETURNED", f"{cid}: {last}\n{err[-3000:]}"


# ------------------------------------------------------------------ what reaches the kernels

class Recorder:
    """Stands in for a compiled object: forwards every call, keeping its array arguments. With
    ``decline_fast``, the ``_fast`` functions (fastbn.ops's compiled common case) return None
    instead, so that ops takes its general path and hands the kernels what it prepared."""

    def __init__(self, target, decline_fast=False):
        self._target, self.calls, self._decline = target, [], decline_fast

    def __getattr__(self, name):
        fn = getattr(self._target, name)
        if not callable(fn):
            return fn
        if self._decline and name.endswith("_fast"):
            return lambda *args: None

        def call(*args):
            self.calls.append((name, [a for a in args if isinstance(a, np.ndarray)]))
            return fn(*args)
        return call


def caller_arrays(args):
    return [a for a in args if isinstance(a, np.ndarray)]


def check_handed_over(calls, given):
    """Index arrays handed to C are private (no memory shared with what the caller gave) and
    read-only; float arrays are C-contiguous and aligned. (``copy_ids`` makes the private copies:
    it reads the caller's arrays.)"""
    calls = [c for c in calls if c[0] != "copy_ids"]
    assert calls
    for name, arrays in calls:
        for a in arrays:
            assert a.flags.c_contiguous and a.flags.aligned, name
            if a.dtype.kind == "i":
                assert not a.flags.writeable, name
                assert not any(np.shares_memory(a, g) for g in given), name


OPS = list(REGISTRY)


def op_args(name):
    return REGISTRY[name].args(seed=1, B=6, T=3, V=7, D=5, I=5, O=3, C=5)


@pytest.mark.parametrize("name", OPS)
def test_ops_hand_the_kernels_private_index_arrays(name, monkeypatch):
    """ops's general path (the compiled common case makes its private copies itself, in C:
    tests/test_opcalls.py checks what it keeps)."""
    rec = Recorder(_kernels, decline_fast=True)
    monkeypatch.setattr(ops, "K", rec)
    args = op_args(name)
    out, cache = getattr(ops, name + "_forward")(*args)
    check_handed_over(rec.calls, caller_arrays(args))
    # the backward copies the cache's index array too: the cache is public, anyone may
    # rewrite it (and replace its attributes)
    rec.calls.clear()
    getattr(ops, name + "_backward")(1.0 if np.ndim(out) == 0 else np.ones_like(out), cache)
    check_handed_over(rec.calls, caller_arrays(args) + caller_arrays(vars(cache).values()))


VOCAB = ".abcdefghijklmnopqrstuvwxyz"


@pytest.mark.parametrize("call", ["step", "loss", "run"])
def test_the_fused_trainer_hands_c_private_data(call):
    g = np.random.default_rng(0)
    X, Y, rows = g.integers(0, 27, (300, 3)), g.integers(0, 27, 300), np.arange(8) * 3
    t = FusedTrainer(CharMLP(VOCAB, n_hidden=16, seed=0), 8)
    rec = t._net = Recorder(t._net)
    t._check_bound = lambda: None             # keep the recorder bound
    if call == "run":
        t.run(X, Y, 5, 0.1, BatchSampler(0))
    else:
        getattr(t, call)(X, Y, *([0.1] if call == "step" else []), rows)
    check_handed_over([c for c in rec.calls if c[0] == {"run": "train"}.get(call, call)],
                      [X, Y, rows])


def test_run_refuses_what_is_not_a_sampler():
    t = FusedTrainer(CharMLP(VOCAB, n_hidden=16, seed=0), 8)
    X, Y = np.zeros((10, 3), np.int64), np.zeros(10, np.int64)

    class Duck:
        state = np.zeros(2, np.uint64)
        lock = None
    for bad in (None, Duck(), np.zeros(2, np.uint64)):
        with pytest.raises(TypeError, match="BatchSampler"):
            t.run(X, Y, 3, 0.1, bad)


def test_a_trainer_keeps_its_vocabulary():
    """The ids of a call are checked against V: a model rebound with another V is refused."""
    m = CharMLP(VOCAB, n_hidden=16, seed=0)
    t = FusedTrainer(m, 8)
    small = CharMLP(VOCAB[:10], n_hidden=16, seed=0)
    m.layers[0].weight, m.layers[-1].weight = small.layers[0].weight, small.layers[-1].weight
    m.layers[-1].bias = small.layers[-1].bias
    m.layers[0].dweight, m.layers[-1].dweight = small.layers[0].dweight, small.layers[-1].dweight
    m.layers[-1].dbias = small.layers[-1].dbias
    with pytest.raises(ValueError, match="new FusedTrainer"):
        t.step(np.full((8, 3), 20), np.full(8, 20), 0.1)


# ------------------------------------------------------------------ the sampler

def test_sampler_state_assigned_is_copied_and_checked():
    a, b = BatchSampler(1), BatchSampler(2)
    b.state = a.state                          # a copy: the two do not share a state
    assert not np.shares_memory(a.state, b.state)
    np.testing.assert_array_equal(a.draw(100, 10), b.draw(100, 10))
    for bad in (np.zeros(3, np.uint64), np.zeros(2, np.int64), [1, 2]):
        with pytest.raises(ValueError, match="uint64 array of shape"):
            a.state = bad
    with pytest.raises(ValueError, match="out must be"):
        a.draw(10, 4, out=np.empty(4, np.int32))


def test_sampler_pickles_and_copies_with_a_lock_of_its_own():
    import copy
    s = BatchSampler(5)
    s.draw(100, 7)
    for c in (pickle.loads(pickle.dumps(s)), copy.deepcopy(s), copy.copy(s)):
        assert c.lock is not s.lock and not np.shares_memory(c.state, s.state)
        np.testing.assert_array_equal(c.state, s.state)
        np.testing.assert_array_equal(c.draw(100, 7), BatchSampler(5).draw(100, 14)[7:])


def test_draw_holds_the_lock():
    s = BatchSampler(0)
    assert s.lock.acquire(blocking=False)
    try:
        with ThreadPoolExecutor(1) as pool:
            f = pool.submit(s.draw, 10, 4)
            with pytest.raises(TimeoutError):
                f.result(timeout=0.2)         # waits for the lock
            s.lock.release()
            assert f.result(timeout=10).shape == (4,)
    finally:
        if s.lock.locked():
            s.lock.release()


# ------------------------------------------------------------------ workspaces (finding 5)

LEAK = '''
import ctypes
import resource

import numpy as np

from fastbn import _kernels as K


class Mallinfo2(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in ("arena ordblks smblks hblks hblkhd usmblks "
                                               "fsmblks uordblks fordblks keepcost").split()]


libc = ctypes.CDLL("libc.so.6")
libc.mallinfo2.restype = Mallinfo2


def in_use():
    """Bytes malloc has handed out and not had back (glibc's mallinfo2: in its heaps, and in
    mmap-ed chunks), whatever address space it keeps reserved."""
    m = libc.mallinfo2()
    return m.uordblks + m.hblkhd

D = 2**23                   # one double workspace of D entries is 64 MB (mmap-ed by malloc)
z = lambda *s: np.zeros(s, np.float32)
ARGS = {                    # (kernel, its arguments): workspaces of 1, 2, 3 and 2 x D doubles
    "linear_backward": lambda: (z(1, D), z(1, 1), z(1, D), z(1, 1), z(1, D), z(D)),
    "batchnorm_forward": lambda: (z(0, D), z(D), z(D), 1e-5, z(0, D), z(0, D), z(D), z(D), z(D)),
    "batchnorm_backward": lambda: (z(0, D), z(0, D), z(D), z(D), z(0, D), z(D), z(D)),
    "batchnorm_eval_backward": lambda: (z(0, D), z(0, D), z(D), z(D), z(0, D), z(D), z(D)),
}
for name, make in ARGS.items():
    kernel, args = getattr(K, name), make()
    kernel(*args)                           # warm up: BLAS buffers, first allocations
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    for room in (1.5, 2.5):                 # room for 1 (then 2) workspaces of 8 D bytes only
        base = in_use()
        with open("/proc/self/status") as status:
            vm = next(int(line.split()[1]) * 1024 for line in status if line.startswith("VmSize"))
        resource.setrlimit(resource.RLIMIT_AS, (vm + int(room * 8 * D), hard))
        failed = 0
        for _ in range(5):
            try:
                kernel(*args)
            except MemoryError:
                failed += 1
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))
        grown = in_use() - base
        assert grown < 8 * D // 4, (name, room, failed, grown)   # a leaked workspace: 8 D
        if room == 1.5 and name != "linear_backward":            # the error path was taken
            assert failed == 5, (name, failed)
    kernel(*args)                           # and the successful path still runs
    del args
print("RETURNED")
'''


@pytest.mark.skipif(_kernels.SANITIZED, reason="ASan reserves the address space RLIMIT_AS caps")
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/proc/self/status")
def test_a_failed_workspace_allocation_leaks_nothing(tmp_path):
    rc, out, err = run_python(LEAK, tmp_path)
    assert rc == 0, err[-3000:]
    assert out.strip().splitlines()[-1] == "RETURNED", out + err[-3000:]
