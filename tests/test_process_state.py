"""A library call leaves the process as it found it: BLAS threads, the SIGINT and SIGTERM
handlers.

``fastbn.train`` must not change the number of BLAS threads (process-wide: it would change the
speed of every other thread, and overlapping runs left the process pinned to one thread), and
its graceful Ctrl-C must work in the main thread, in a Jupyter kernel, and stay out of the way in
other threads and under other handlers, restoring the previous handler exactly. The CLI, which
owns its process, pins BLAS to one thread.

Everything that could change the state of a process runs in a subprocess.
"""
import functools
import importlib
import json
import os
import queue
import subprocess
import sys
import time
from pathlib import Path

import pytest
from threadpoolctl import threadpool_info

import fastbn
from fastbn import CharMLP, train
from fastbn.cli import main
from fastbn.data import Vocab, build_dataset

ROOT = str(Path(fastbn.__file__).resolve().parents[1])
ENV = dict(os.environ, PYTHONPATH=ROOT)

# the start of every subprocess: a small model and data (no names.txt needed)
PRELUDE = r"""
import json, os, signal, sys, threading, time, warnings
import numpy as np
from fastbn import CharMLP, train
from fastbn.data import Vocab, build_dataset

WORDS = ["ab", "abc", "bca", "cab", "bb", "acca", "cc", "ba"] * 50
VOCAB = Vocab.from_words(WORDS)
X, Y = build_dataset(WORDS, VOCAB, 3)


def model(seed=0):
    return CharMLP(VOCAB, n_embd=4, n_hidden=32, seed=seed)


def arrays(m):
    return [a.copy() for a in m.parameters()] + [b.copy() for _, b in m.named_buffers()]


def same(a, b):
    return len(a) == len(b) and all(np.array_equal(x, y) for x, y in zip(a, b))


def report(**kw):
    print("RESULT " + json.dumps(kw), flush=True)
"""


def run_script(body, timeout=180, **consts):
    """Run PRELUDE, ``NAME = value`` for each of ``consts``, then ``body`` in a fresh
    interpreter; returns the dict it reported."""
    code = PRELUDE + "".join(f"{k} = {v!r}\n" for k, v in consts.items()) + body
    p = subprocess.run([sys.executable, "-c", code], env=ENV, cwd=ROOT, capture_output=True,
                       text=True, timeout=timeout, check=False)
    assert p.returncode == 0, f"exit {p.returncode}\n{p.stdout[-2000:]}\n{p.stderr[-4000:]}"
    lines = [ln for ln in p.stdout.splitlines() if ln.startswith("RESULT ")]
    assert len(lines) == 1, p.stdout + p.stderr
    return json.loads(lines[0][len("RESULT "):])


# ----------------------------------------------------------------------------------------------
# BLAS threads

_OVERLAP = r"""
from threadpoolctl import ThreadpoolController, threadpool_info

# a baseline no fastbn code would choose, so that any change shows
ThreadpoolController().limit(limits=3, user_api="blas")


def blas():
    return sorted((p["filepath"], p["num_threads"]) for p in threadpool_info()
                  if p["user_api"] == "blas")


before = blas()
assert before and {n for _, n in before} == {3}, before


def run(seed, hook=None):
    m, seen = model(seed), []

    def cb(step, loss, lr):
        seen.append(blas())
        if hook:
            hook(step)
    r = train(m, (X, Y), steps=3000, batch_size=16, seed=seed, quiet=True, evaluate=False,
              callback=cb, every=200)
    return r.history, arrays(m), seen


serial = {s: run(s) for s in (1, 2)}

# A starts; B starts while A runs; A ends while B runs; B ends. (The order that left the old
# train(), with its threadpool_limits, pinning the process to 1 thread.)
a_in, b_in, a_done = threading.Event(), threading.Event(), threading.Event()


def hook_a(step):
    if step == 0:
        a_in.set()
    else:
        assert b_in.wait(60)


def hook_b(step):
    if step == 0:
        b_in.set()
    else:
        assert a_done.wait(60)


threaded, errors = {}, []


def worker(seed, hook, done=None):
    try:
        threaded[seed] = run(seed, hook)
    except BaseException as e:
        errors.append(repr(e))
    finally:
        if done:
            done.set()


ta = threading.Thread(target=worker, args=(1, hook_a, a_done))
ta.start()
assert a_in.wait(60)
tb = threading.Thread(target=worker, args=(2, hook_b))
tb.start()
ta.join()
tb.join()
after = blas()
report(errors=errors, before=before, after=after,
       seen_serial=all(s == before for r in serial.values() for s in r[2]),
       seen_threaded=[all(s == before for s in threaded[k][2]) for k in (1, 2)],
       n_seen=[len(threaded[k][2]) for k in (1, 2)],
       history_equal=[np.array_equal(serial[k][0], threaded[k][0]) for k in (1, 2)],
       arrays_equal=[same(serial[k][1], threaded[k][1]) for k in (1, 2)])
"""


def test_overlapping_train_calls_leave_blas_threads_alone():
    res = run_script(_OVERLAP)
    assert res["errors"] == []
    assert res["after"] == res["before"], "train() left the BLAS thread count changed"
    assert res["seen_serial"], "train() changed the BLAS threads during its own run"
    assert res["seen_threaded"] == [True, True], \
        "a run in one thread changed the BLAS threads of the other"
    assert min(res["n_seen"]) >= 10
    assert res["history_equal"] == [True, True]      # bit for bit, as the serial runs
    assert res["arrays_equal"] == [True, True]


@pytest.mark.parametrize("threads", [1, 4, 0, "2"])
def test_threads_argument_is_refused_with_advice(threads):
    words = ["ab", "ba"] * 20
    v = Vocab.from_words(words)
    with pytest.raises(ValueError, match="threadpool_limits"):
        train(CharMLP(v, n_hidden=4, seed=0), build_dataset(words, v, 3), steps=1,
              quiet=True, threads=threads)


def _blas():
    return sorted((p["filepath"], p["num_threads"]) for p in threadpool_info()
                  if p["user_api"] == "blas")


def test_cli_train_pins_blas_to_one_thread_and_restores_it(tmp_path, monkeypatch):
    """`fastbn train` owns its process and runs BLAS on one thread; main() called from Python
    gives the setting back."""
    ftrain = importlib.import_module("fastbn.training")     # the module (fastbn.train is train())
    real, during = ftrain.train, []

    @functools.wraps(real)             # train's signature (fastbn.sweep reads its defaults)
    def spy(*a, **kw):
        during.append(_blas())
        return real(*a, **kw)
    monkeypatch.setattr(ftrain, "train", spy)
    words = tmp_path / "w.txt"
    words.write_text("\n".join(["ab", "abc", "bca", "cab", "bb", "acca"] * 20) + "\n")
    before = _blas()
    assert main(["train", "--data", str(words), "--steps", "20", "--n-hidden", "8",
                 "--out", str(tmp_path / "run"), "--quiet", "--no-plot"]) == 0
    assert _blas() == before
    assert len(during) == 1 and during[0] and {n for _, n in during[0]} == {1}


def test_cli_lab_pins_blas_to_one_thread(tmp_path, monkeypatch):
    flab = importlib.import_module("fastbn.lab")
    during = []

    class Stop(Exception):
        pass

    def spy(*a, **kw):
        during.append(_blas())
        raise Stop
    monkeypatch.setattr(flab, "run_lab", spy)
    words = tmp_path / "w.txt"
    words.write_text("\n".join(["ab", "abc", "bca", "cab"] * 20) + "\n")
    before = _blas()
    with pytest.raises(Stop):
        main(["lab", "--data", str(words), "--steps", "0", "--out", str(tmp_path / "lab")])
    assert _blas() == before
    assert during and {n for _, n in during[0]} == {1}


# ----------------------------------------------------------------------------------------------
# SIGINT: main thread, other threads, other handlers, exceptions

def test_ctrl_c_in_the_main_thread_stops_between_steps_and_restores_the_handler():
    res = run_script(r"""
assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
ours, started = [], threading.Event()


def cb(step, loss, lr):
    ours.append(signal.getsignal(signal.SIGINT) is not signal.default_int_handler)
    started.set()


def press_ctrl_c():
    assert started.wait(60)
    os.kill(os.getpid(), signal.SIGINT)


threading.Thread(target=press_ctrl_c, daemon=True).start()
m = model()
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    r = train(m, (X, Y), steps=2_000_000, batch_size=16, quiet=True, callback=cb, every=100)
warned = [str(w.message) for w in caught if w.category.__name__ == "TrainingInterrupted"]
restored = signal.getsignal(signal.SIGINT) is signal.default_int_handler
try:                                 # and it works: Ctrl-C raises KeyboardInterrupt again
    os.kill(os.getpid(), signal.SIGINT)
    time.sleep(10)
    raised = False
except KeyboardInterrupt:
    raised = True
finite = all(np.isfinite(a).all() for a in arrays(m))
report(interrupted=r.interrupted, step=r.state.step, ours=all(ours), restored=restored,
       raised=raised, finite=finite, losses=r.losses, warned=warned,
       evaluated=m.evaluate(X, Y))
""")
    assert res["interrupted"] and 0 < res["step"] < 2_000_000
    assert res["ours"], "train() did not catch SIGINT during its loop"
    assert res["restored"] and res["raised"]
    # it says so, and reports the losses of the model as it stands
    assert len(res["warned"]) == 1 and f"after step {res['step']:,}" in res["warned"][0]
    assert res["finite"] and res["losses"] == {"train": res["evaluated"]}


def test_train_in_another_thread_leaves_signals_alone():
    res = run_script(r"""
before = signal.getsignal(signal.SIGINT)
during, errors, results = [], [], []


def cb(step, loss, lr):
    during.append(signal.getsignal(signal.SIGINT) is before)


def worker():
    try:
        results.append(train(model(), (X, Y), steps=2000, batch_size=16, quiet=True,
                             callback=cb, every=100).interrupted)
    except BaseException as e:
        errors.append(repr(e))


t = threading.Thread(target=worker)
t.start()
t.join()
report(errors=errors, results=results, during=len(during) > 0 and all(during),
       after=signal.getsignal(signal.SIGINT) is before)
""")
    assert res["errors"] == []              # no "signal only works in main thread"
    assert res["results"] == [False] and res["during"] and res["after"]


@pytest.mark.parametrize("order", ["worker ends first", "main ends first"])
def test_overlapping_runs_in_main_and_worker_threads_restore_the_handler(order):
    res = run_script(r"""
main_in, worker_in, main_done, worker_done = (threading.Event() for _ in range(4))
seen_after_main = []


def main_hook(step):
    if step == 0:
        main_in.set()
        assert worker_in.wait(60)
    elif ORDER == "main ends first":
        pass
    else:
        assert worker_done.wait(60)


def worker_hook(step):
    if step == 0:
        worker_in.set()
    elif ORDER == "main ends first":
        assert main_done.wait(60)
        seen_after_main.append(signal.getsignal(signal.SIGINT) is signal.default_int_handler)


def run(hook):
    return train(model(), (X, Y), steps=2000, batch_size=16, quiet=True,
                 callback=lambda s, l, lr: hook(s), every=100)


errors = []


def worker():
    try:
        assert main_in.wait(60)
        run(worker_hook)
    except BaseException as e:
        errors.append(repr(e))
    finally:
        worker_done.set()


t = threading.Thread(target=worker)
t.start()
run(main_hook)
main_done.set()
t.join()
report(errors=errors, after=signal.getsignal(signal.SIGINT) is signal.default_int_handler,
       seen_after_main=seen_after_main)
""", ORDER=order)
    assert res["errors"] == []
    assert res["after"], "a fastbn SIGINT handler was left installed"
    if order == "main ends first":
        assert res["seen_after_main"] and all(res["seen_after_main"])


@pytest.mark.parametrize("how", ["callback raises", "KeyboardInterrupt in callback",
                                 "loss diverges"])
def test_the_handler_is_restored_when_the_loop_raises(how):
    res = run_script(r"""
ours = []


def cb(step, loss, lr):
    ours.append(signal.getsignal(signal.SIGINT) is not signal.default_int_handler)
    if step >= 300 and HOW == "callback raises":
        raise RuntimeError("from the callback")
    if step >= 300 and HOW == "KeyboardInterrupt in callback":
        raise KeyboardInterrupt


m = CharMLP(VOCAB, n_embd=4, n_hidden=32, seed=0, batchnorm=HOW != "loss diverges")
# lr 1e39 is +inf in float32: step 1000's update leaves every parameter non-finite on every CPU
lr = "0:0.1,1000:1e39" if HOW == "loss diverges" else 0.1
try:
    train(m, (X, Y), steps=5000, batch_size=16, lr_schedule=lr, quiet=True, callback=cb,
          every=100)
    raised = None
except BaseException as e:
    raised = type(e).__name__
report(raised=raised, ours=len(ours) > 0 and all(ours),
       restored=signal.getsignal(signal.SIGINT) is signal.default_int_handler)
""", HOW=how)
    expected = {"callback raises": "RuntimeError", "KeyboardInterrupt in callback":
                "KeyboardInterrupt", "loss diverges": "TrainingDiverged"}[how]
    assert res["raised"] == expected
    assert res["ours"] and res["restored"]


@pytest.mark.parametrize("handler", ["mine", "SIG_IGN", "SIG_DFL"])
def test_another_sigint_handler_is_left_in_place(handler):
    """A handler of the caller's, SIGINT ignored (e.g. `nohup`, a background job) or the OS
    default: train() does not replace it; SIGINT does what the caller chose."""
    res = run_script(r"""
calls = []


def mine(signum, frame):
    calls.append(signum)


chosen = {"mine": mine, "SIG_IGN": signal.SIG_IGN, "SIG_DFL": signal.SIG_DFL}[HANDLER]
signal.signal(signal.SIGINT, chosen)
during, started = [], threading.Event()


def cb(step, loss, lr):
    during.append(signal.getsignal(signal.SIGINT) is chosen)
    started.set()


def press_ctrl_c():
    assert started.wait(60)
    os.kill(os.getpid(), signal.SIGINT)


if HANDLER != "SIG_DFL":        # SIG_DFL would end this process: only check the handler
    threading.Thread(target=press_ctrl_c, daemon=True).start()
r = train(model(), (X, Y), steps=20_000, batch_size=16, quiet=True, callback=cb, every=100)
report(interrupted=r.interrupted, during=all(during), calls=len(calls),
       after=signal.getsignal(signal.SIGINT) is chosen)
""", HANDLER=handler)
    assert not res["interrupted"] and res["during"] and res["after"]
    assert res["calls"] == (1 if handler == "mine" else 0)


# ----------------------------------------------------------------------------------------------
# SIGTERM: what a scheduler sends before preempting a job; handled like Ctrl-C, in the same places

def test_sigterm_in_the_main_thread_stops_between_steps_and_restores_the_default():
    res = run_script(r"""
assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL
ours, started, saved = [], threading.Event(), []


def cb(step, loss, lr):
    ours.append(signal.getsignal(signal.SIGTERM) != signal.SIG_DFL)
    started.set()


def terminate():
    assert started.wait(60)
    os.kill(os.getpid(), signal.SIGTERM)


threading.Thread(target=terminate, daemon=True).start()
m = model()
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    r = train(m, (X, Y), steps=2_000_000, batch_size=16, quiet=True, callback=cb, every=100,
              checkpoint=lambda st: saved.append(st.step))
warned = [str(w.message) for w in caught if w.category.__name__ == "TrainingInterrupted"]
report(interrupted=r.interrupted, step=r.state.step, ours=all(ours), saved=saved,
       signal=int(r.interrupt_signal), warned=warned,
       sigint_restored=signal.getsignal(signal.SIGINT) is signal.default_int_handler,
       restored=signal.getsignal(signal.SIGTERM) == signal.SIG_DFL)
""")
    assert res["interrupted"] and 0 < res["step"] < 2_000_000
    assert res["ours"], "train() did not catch SIGTERM during its loop"
    assert res["saved"] == [res["step"]], "the stop did not write its checkpoint"
    assert res["signal"] == 15 and res["restored"] and res["sigint_restored"]
    assert len(res["warned"]) == 1 and "by SIGTERM after step" in res["warned"][0]


@pytest.mark.parametrize("handler", ["mine", "SIG_IGN"])
def test_another_sigterm_handler_is_left_in_place(handler):
    """A SIGTERM handler of the caller's, or SIGTERM ignored: train() does not replace it and
    runs to the end; SIGTERM does what the caller chose."""
    res = run_script(r"""
calls = []


def mine(signum, frame):
    calls.append(signum)


chosen = {"mine": mine, "SIG_IGN": signal.SIG_IGN}[HANDLER]
signal.signal(signal.SIGTERM, chosen)
during, started = [], threading.Event()


def cb(step, loss, lr):
    during.append(signal.getsignal(signal.SIGTERM) is chosen)
    if step == 0:
        os.kill(os.getpid(), signal.SIGTERM)


r = train(model(), (X, Y), steps=3000, batch_size=16, quiet=True, callback=cb, every=100)
report(interrupted=r.interrupted, during=len(during) > 1 and all(during), calls=len(calls),
       after=signal.getsignal(signal.SIGTERM) is chosen)
""", HANDLER=handler)
    assert not res["interrupted"] and res["during"] and res["after"]
    assert res["calls"] == (1 if handler == "mine" else 0)


@pytest.mark.parametrize("how", ["returns", "callback raises", "KeyboardInterrupt in callback"])
def test_the_sigterm_default_is_restored_after_train(how):
    res = run_script(r"""
ours = []


def cb(step, loss, lr):
    ours.append(signal.getsignal(signal.SIGTERM) != signal.SIG_DFL)
    if step >= 300 and HOW == "callback raises":
        raise RuntimeError("from the callback")
    if step >= 300 and HOW == "KeyboardInterrupt in callback":
        raise KeyboardInterrupt


try:
    train(model(), (X, Y), steps=1000, batch_size=16, quiet=True, callback=cb, every=100)
    raised = None
except BaseException as e:
    raised = type(e).__name__
report(raised=raised, ours=len(ours) > 0 and all(ours),
       restored=signal.getsignal(signal.SIGTERM) == signal.SIG_DFL)
""", HOW=how)
    assert res["raised"] == {"returns": None, "callback raises": "RuntimeError",
                             "KeyboardInterrupt in callback": "KeyboardInterrupt"}[how]
    assert res["ours"] and res["restored"]


def test_train_in_another_thread_leaves_sigterm_alone():
    res = run_script(r"""
during = []
t = threading.Thread(target=lambda: train(
    model(), (X, Y), steps=500, batch_size=16, quiet=True, every=100,
    callback=lambda s, l, lr: during.append(signal.getsignal(signal.SIGTERM) == signal.SIG_DFL)))
t.start()
t.join()
report(during=len(during) > 0 and all(during))
""")
    assert res["during"]


# ----------------------------------------------------------------------------------------------
# a real Jupyter kernel

_CELL = r"""
import signal, sys
sys.path.insert(0, ROOT_PATH)
import numpy as np
from fastbn import CharMLP, train
from fastbn.data import Vocab, build_dataset
W = ["ab", "abc", "bca", "cab", "bb", "acca", "cc", "ba"] * 50
V = Vocab.from_words(W)
X, Y = build_dataset(W, V, 3)
before = signal.getsignal(signal.SIGINT)


def cb(step, loss, lr):
    if step == 0:
        print("STARTED", flush=True)


r = train(CharMLP(V, n_embd=4, n_hidden=32, seed=0), (X, Y), steps=2_000_000, batch_size=16,
          quiet=True, callback=cb, every=1000)
print("RESULT", r.interrupted, r.state.step, signal.getsignal(signal.SIGINT) is before)
""".replace("ROOT_PATH", repr(ROOT))


def test_jupyter_interrupt_stops_train_gracefully(tmp_path):
    """The kernel's interrupt (SIGINT to the kernel process) ends a train() cell with the
    interrupted result, the cell's handler restored, and the kernel keeps working."""
    pytest.importorskip("ipykernel", reason="the Jupyter test needs ipykernel")
    manager = pytest.importorskip("jupyter_client.manager",
                                  reason="the Jupyter test needs jupyter_client")
    km, kc = manager.start_new_kernel(kernel_name="python3", startup_timeout=120,
                                      cwd=str(tmp_path), env=ENV)
    try:
        assert km.kernel_spec.interrupt_mode == "signal"
        msg_id = kc.execute(_CELL)
        out, errors, sent, t0 = [], [], None, time.monotonic()
        while time.monotonic() - t0 < 120:
            try:
                msg = kc.get_iopub_msg(timeout=5)
            except queue.Empty:
                continue
            if msg["parent_header"].get("msg_id") != msg_id:
                continue
            kind, content = msg["msg_type"], msg["content"]
            if kind == "stream":
                out.append(content["text"])
                if "STARTED" in content["text"] and sent is None:
                    km.interrupt_kernel()
                    sent = time.monotonic()
            elif kind == "error":
                errors.append(f"{content['ename']}: {content['evalue']}")
            elif kind == "status" and content["execution_state"] == "idle":
                break
        reply = kc.get_shell_msg(timeout=30)
        assert sent is not None, "".join(out) + "\n".join(errors)
        assert errors == [] and reply["content"]["status"] == "ok", errors
        result = [ln.split() for ln in "".join(out).splitlines() if ln.startswith("RESULT")]
        assert len(result) == 1, out
        _, interrupted, step, restored = result[0]
        assert interrupted == "True" and 0 < int(step) < 2_000_000 and restored == "True"
        assert time.monotonic() - sent < 60          # it stopped, rather than ran to the end

        texts = []
        reply = kc.execute_interactive(
            "print(6 * 7, signal.getsignal(signal.SIGINT) is before)", timeout=60,
            output_hook=lambda m: texts.append(m["content"].get("text", "")))
        assert reply["content"]["status"] == "ok" and "".join(texts).split() == ["42", "True"]
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)


def test_library_import_and_train_leave_numpy_state_alone():
    """Training, and importing the other modules, change no NumPy print options, error states
    or warning filters."""
    res = run_script(r"""
import warnings
opts, err, filters = np.get_printoptions(), np.geterr(), list(warnings.filters)
train(model(), (X, Y), steps=50, batch_size=16, quiet=True)
from fastbn import checkpoint, gradcheck, lab  # noqa: F401
report(opts=np.get_printoptions() == opts, err=np.geterr() == err,
       filters=list(warnings.filters) == filters)
""")
    assert res == {"opts": True, "err": True, "filters": True}
