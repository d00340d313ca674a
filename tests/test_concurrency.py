"""The public entry points that write or read files, called from several threads at once:
checkpoint save/load and the names.txt download to one cache path. Results are compared with
serial calls; nothing is left behind (no temporary files), every file read is complete.

(Overlapping ``train()`` calls are in tests/test_process_state.py, in a subprocess, since the
process's BLAS settings are part of what they check.)
"""
import functools
import hashlib
import http.server
import stat
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from fastbn import CharMLP, checkpoint, data
from fastbn.training import TrainState

VOCAB = data.Vocab.from_chars(".abcdefghijklmnopqrstuvwxyz")


def run_threads(fns):
    """Run each fn in its own thread, released together; returns (results, errors)."""
    start = threading.Barrier(len(fns))
    results, errors = [None] * len(fns), []

    def run(i, fn):
        try:
            start.wait()
            results[i] = fn()
        except BaseException as e:          # noqa: B036 - reported to the test
            errors.append(e)
    threads = [threading.Thread(target=run, args=(i, fn)) for i, fn in enumerate(fns)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not any(t.is_alive() for t in threads)
    return results, errors


def new_file_mode(folder):
    """The permissions open() gives a new file in ``folder`` (the umask, without reading it)."""
    probe = Path(folder) / "probe-by-open"
    probe.write_bytes(b"")
    mode = stat.S_IMODE(probe.stat().st_mode)
    probe.unlink()
    return mode


# ----------------------------------------------------------------------------------------------
# checkpoints

def _model(seed):
    m = CharMLP(VOCAB, n_embd=6, n_hidden=48, seed=seed)
    g = np.random.default_rng(seed)
    for _, b in m.named_buffers():             # distinct running statistics too
        b[...] = g.random(b.shape) + 0.5
    return m


def _arrays(m):
    return [p for _, p in m.named_parameters()] + [b for _, b in m.named_buffers()]


def _same(a, b):
    return all(np.array_equal(x, y) for x, y in zip(_arrays(a), _arrays(b), strict=True))


def test_threads_saving_and_loading_checkpoints(tmp_path):
    n, rounds = 6, 4
    models = [_model(i) for i in range(n)]
    states = [TrainState(10 + i, np.array([i, 2 * i + 1], np.uint64), np.full(10 + i, i / 10))
              for i in range(n)]
    serial = [checkpoint.load(checkpoint.save(m, tmp_path / "serial" / f"{i}.npz",
                                              meta={"i": i}, state=s))
              for i, (m, s) in enumerate(zip(models, states))]
    shared = tmp_path / "run" / "model.npz"

    def work(i):
        loaded = []
        for _ in range(rounds):
            checkpoint.save(models[i], tmp_path / "run" / f"{i}.npz", meta={"i": i},
                            state=states[i])
            checkpoint.save(models[i], shared, meta={"i": i}, state=states[i])
            loaded.append(checkpoint.load(shared))        # whoever wrote it last: complete
        return checkpoint.load(tmp_path / "run" / f"{i}.npz"), loaded

    results, errors = run_threads([functools.partial(work, i) for i in range(n)])
    assert errors == []
    for i, (own, loaded) in enumerate(results):
        assert own.meta == {"i": i} and _same(own, serial[i])
        np.testing.assert_array_equal(own.train_state.history, serial[i].train_state.history)
        for m in loaded:
            j = m.meta["i"]
            assert _same(m, serial[j]) and m.train_state.step == 10 + j
    final = checkpoint.load(shared)
    assert _same(final, serial[final.meta["i"]])
    names = sorted(p.name for p in (tmp_path / "run").iterdir())
    assert names == sorted([*(f"{i}.npz" for i in range(n)), "model.npz"])   # no temp files
    assert stat.S_IMODE(shared.stat().st_mode) == new_file_mode(tmp_path)


# ----------------------------------------------------------------------------------------------
# the names.txt download, to one cache path from two threads

class _SlowHandler(http.server.SimpleHTTPRequestHandler):
    """Serves files in 8 pieces, 20 ms apart, so that two downloads overlap."""

    def do_GET(self):
        self.server.requests.append(self.path)
        path = Path(self.translate_path(self.path))
        if not path.is_file():
            self.send_error(404)
            return
        body = path.read_bytes()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        step = -(-len(body) // 8)
        for i in range(0, len(body), step):
            self.wfile.write(body[i:i + step])
            self.wfile.flush()
            time.sleep(0.02)

    def log_message(self, *args):
        pass


@pytest.fixture
def slow_server(tmp_path):
    root = tmp_path / "srv"
    root.mkdir()
    httpd = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(_SlowHandler, directory=str(root)))
    httpd.requests = []
    thread = threading.Thread(target=httpd.serve_forever, args=(0.02,), daemon=True)
    thread.start()
    httpd.root = root
    httpd.url = f"http://127.0.0.1:{httpd.server_address[1]}"
    yield httpd
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture
def isolated(tmp_path, monkeypatch):
    """No FASTBN_DATA, an empty cache under tmp_path, no proxies; returns the cache file path."""
    monkeypatch.delenv("FASTBN_DATA", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setenv("no_proxy", "*")
    monkeypatch.setenv("NO_PROXY", "*")
    return data.cache_path()


def test_two_threads_download_to_one_path(tmp_path, slow_server):
    body = b"".join(f"name{i}\n".encode() for i in range(20000))
    digest = hashlib.sha256(body).hexdigest()
    (slow_server.root / "names.txt").write_bytes(body)
    url = f"{slow_server.url}/names.txt"
    dest = tmp_path / "cache" / "fastbn" / "names.txt"
    serial = data.download(url, tmp_path / "serial.txt", sha256=digest)
    slow_server.requests.clear()

    results, errors = run_threads([lambda: data.download(url, dest, sha256=digest)] * 2)
    assert errors == []
    assert results == [dest, dest] and len(slow_server.requests) == 2
    assert dest.read_bytes() == serial.read_bytes() == body
    assert [p.name for p in dest.parent.iterdir()] == ["names.txt"]      # no temp files
    assert stat.S_IMODE(dest.stat().st_mode) == new_file_mode(tmp_path)


def test_two_threads_locate_names_into_one_cache(isolated, slow_server, names_path):
    """Two first calls of ``locate_names`` at once: both download into the cache (neither sees
    a cached file yet), both get the verified file, one complete file remains."""
    (slow_server.root / "names.txt").write_bytes(Path(names_path).read_bytes())
    url = f"{slow_server.url}/names.txt"
    results, errors = run_threads([lambda: data.locate_names(url=url)] * 2)
    assert errors == []
    assert results == [isolated, isolated] and len(slow_server.requests) == 2
    assert data.sha256_file(isolated) == data.NAMES_SHA256
    assert isolated.read_bytes() == Path(names_path).read_bytes()
    assert [p.name for p in isolated.parent.iterdir()] == ["names.txt"]
    assert data.locate_names(url=url) == isolated and len(slow_server.requests) == 2  # cached


def test_a_failed_download_beside_a_good_one(tmp_path, slow_server):
    """One thread's download fails its checksum while another's succeeds: the good file is
    kept, the failed one leaves nothing."""
    body = b"abc\n" * 5000
    (slow_server.root / "names.txt").write_bytes(body)
    url = f"{slow_server.url}/names.txt"
    dest = tmp_path / "d" / "names.txt"
    good = hashlib.sha256(body).hexdigest()
    results, errors = run_threads([lambda: data.download(url, dest, sha256=good),
                                   lambda: data.download(url, dest, sha256="0" * 64)])
    assert [type(e) for e in errors] == [data.ChecksumError]
    assert results[0] == dest and dest.read_bytes() == body
    assert [p.name for p in dest.parent.iterdir()] == ["names.txt"]


# ----------------------------------------------------------------------------------------------
# one model, trained from two threads at once: the second call is refused, never mixed in

def _tiny_data():
    g = np.random.default_rng(3)
    X = g.integers(0, 27, size=(500, 3))
    return X, (X[:, 2] + 1) % 27


@pytest.mark.parametrize("second", ["train", "train_step", "FusedTrainer.run",
                                    "FusedTrainer.step"])
@pytest.mark.parametrize("fused", [True, False])
def test_a_model_trained_from_two_threads_at_once_refuses_the_second(fused, second):
    """Thread A trains; its callback holds the run open until thread B has made its call on the
    same model, so the two certainly overlap. B gets RuntimeError; A's run ends exactly as if it
    had been alone (nothing of B's was applied)."""
    from fastbn import train
    from fastbn.fused import BatchSampler, FusedTrainer
    X, Y = _tiny_data()
    kw = dict(steps=600, batch_size=16, seed=1, quiet=True, evaluate=False, fused=fused,
              every=100)
    alone = CharMLP(VOCAB, n_embd=4, n_hidden=16, seed=0)
    train(alone, (X, Y), **kw)

    model = CharMLP(VOCAB, n_embd=4, n_hidden=16, seed=0)
    a_in, b_done = threading.Event(), threading.Event()

    def hold(step, loss, lr):
        if step == 0:
            a_in.set()
            assert b_done.wait(60)

    def call_b():
        assert a_in.wait(60)
        try:
            if second == "train":
                train(model, (X, Y), **kw)
            elif second == "train_step":
                model.train_step(X[:16], Y[:16], 0.1)
            elif second == "FusedTrainer.run":
                FusedTrainer(model, 16).run(X, Y, 50, 0.1, BatchSampler(0))
            else:
                FusedTrainer(model, 16).step(X[:16], Y[:16], 0.1)
        finally:
            b_done.set()

    results, errors = run_threads([lambda: train(model, (X, Y), callback=hold, **kw), call_b])
    assert len(errors) == 1 and isinstance(errors[0], RuntimeError), errors
    assert "being trained by another thread" in str(errors[0])
    assert results[0] is not None and results[0].state.step == 600
    assert _same(model, alone), "the refused call changed the model"


def test_sequential_training_calls_of_one_model_from_two_threads_still_work():
    from fastbn import train
    X, Y = _tiny_data()
    kw = dict(steps=200, batch_size=16, seed=1, quiet=True, evaluate=False)
    serial = CharMLP(VOCAB, n_embd=4, n_hidden=16, seed=0)
    for seed in (1, 2):
        train(serial, (X, Y), **{**kw, "seed": seed})
    model = CharMLP(VOCAB, n_embd=4, n_hidden=16, seed=0)
    for seed in (1, 2):         # one thread after the other: each finds the model free
        t = threading.Thread(target=train, args=(model, (X, Y)), kwargs={**kw, "seed": seed})
        t.start()
        t.join()
    model.train_step(X[:16], Y[:16], 0.1)
    serial.train_step(X[:16], Y[:16], 0.1)
    assert _same(model, serial)
