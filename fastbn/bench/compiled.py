"""The compiled peers: JAX ``jit`` (one step, and a loop of many steps) and ``torch.compile``.

They train the same model as every peer (see :mod:`fastbn.bench.peers`) and are verified the same
way before they are timed. Their compile time is measured apart from their step time.

=============== ================================================================================
jax_jit         ``jax.jit`` of one training step (forward, ``jax.value_and_grad``, SGD, running
                statistics), called once per step from Python on a NumPy minibatch, as a user
                would write a JAX training loop; ``float(loss)`` each step.
jax_loop        ``jax.jit`` of a ``jax.lax.fori_loop`` over the steps of a block, minibatches
                drawn inside by ``jax.random``: the whole loop compiled, as fastbn's fused loop.
torch_compile   ``torch.compile`` (inductor) of the eager peer's forward and loss;
                ``loss.backward()`` runs the compiled backward; SGD eager under ``no_grad``.
=============== ================================================================================

JAX runs in a process of its own, one per dtype, started with XLA on one thread
(``XLA_FLAGS``) and, for float64, ``JAX_ENABLE_X64``: both are process-wide settings that a
benchmark must not impose on its caller. That process times its own blocks (wall and CPU time),
so the harness's preemption check sees the CPU time that did the work.
"""
from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import time
from multiprocessing.connection import Connection
from typing import Any

import numpy as np

from .peers import ARRAY_NAMES, TorchEager, model_state

__all__ = ["PEERS", "available", "close_servers", "restore_environment"]

_XLA_ONE_THREAD = "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"
LOSS_BUFFER = 1024          # the loop keeps the last LOSS_BUFFER losses (every step writes one)


def available(torch_mod: Any) -> tuple[list[str], list[str]]:
    """(the compiled peers that can run, notes on those that cannot)."""
    names, notes = [], []
    if importlib.util.find_spec("jax") is not None:
        names += ["jax_jit", "jax_loop"]
    else:
        notes.append("JAX skipped: not installed (pip install jax)")
    if torch_mod is not None:
        names.append("torch_compile")
    return names, notes


# ----------------------------------------------------------------------------------------------
# the JAX process: a small server of step functions, one per (peer, batch size)

def _jax_functions(jax, jnp, momentum, eps):
    """(step, loop) of the benchmarked model in JAX."""

    def loss_fn(p, Xb, Yb):
        B = Xb.shape[0]
        emb = p["C"][Xb].reshape(B, -1)                               # (B, T*D)
        hpre = emb @ p["W1"]                                          # (B, H)
        mean = hpre.mean(0)
        var = ((hpre - mean) ** 2).mean(0)                            # biased, as BatchNorm1d
        hbn = p["gamma"] * (hpre - mean) / jnp.sqrt(var + eps) + p["beta"]
        logits = jnp.tanh(hbn) @ p["W2"] + p["b2"]                    # (B, V)
        logp = jax.nn.log_softmax(logits)
        loss = -jnp.take_along_axis(logp, Yb[:, None], 1).mean()
        return loss, (mean, var * (B / (B - 1)))                      # running var: unbiased

    grad = jax.value_and_grad(loss_fn, has_aux=True)

    def step(p, rmean, rvar, Xb, Yb, lr):
        (loss, (mean, var_u)), g = grad(p, Xb, Yb)
        p = {k: v - lr * g[k] for k, v in p.items()}
        rmean = (1 - momentum) * rmean + momentum * mean
        rvar = (1 - momentum) * rvar + momentum * var_u
        return p, rmean, rvar, loss

    def loop(p, rmean, rvar, key, X, Y, n, lr, B):
        def body(i, carry):
            p, rmean, rvar, key, losses = carry
            key, sub = jax.random.split(key)
            rows = jax.random.randint(sub, (B,), 0, X.shape[0])
            p, rmean, rvar, loss = step(p, rmean, rvar, X[rows], Y[rows], lr)
            return p, rmean, rvar, key, losses.at[i % LOSS_BUFFER].set(loss)
        losses = jnp.zeros(LOSS_BUFFER, rmean.dtype)
        return jax.lax.fori_loop(0, n, body, (p, rmean, rvar, key, losses))

    return step, loop


def _serve(conn, dtype):
    """The JAX process's main loop: commands in, results out, until "close"."""
    import jax
    import jax.numpy as jnp
    X = Y = Xn = Yn = None
    peers: dict[int, dict[str, Any]] = {}
    while True:
        cmd, *args = conn.recv()
        try:
            if cmd == "close":
                conn.send(("ok", None))
                return
            if cmd == "data":
                X, Y = (jnp.asarray(a) for a in args)
                Xn, Yn = np.asarray(X), np.asarray(Y)      # the indices as JAX takes them
                conn.send(("ok", None))
            elif cmd == "new":
                pid, kind, params, buffers, B, momentum, eps, seed = args
                step, loop = _jax_functions(jax, jnp, momentum, eps)
                st = {"kind": kind, "B": B, "p": {k: jnp.asarray(v) for k, v in params.items()},
                      "rmean": jnp.asarray(buffers[0]), "rvar": jnp.asarray(buffers[1]),
                      "rng": np.random.default_rng(seed),
                      "key": jax.random.PRNGKey(seed & 0x7FFFFFFF)}
                lr0 = np.asarray(0.1, dtype)
                t0 = time.perf_counter()
                xb, yb = Xn[:B], Yn[:B]
                st["step"] = jax.jit(step).lower(st["p"], st["rmean"], st["rvar"], xb, yb,
                                                  lr0).compile()
                if kind == "jax_loop":
                    st["loop"] = jax.jit(loop, static_argnums=(8,)).lower(
                        st["p"], st["rmean"], st["rvar"], st["key"], X, Y, 1, lr0, B).compile()
                compile_s = time.perf_counter() - t0
                peers[pid] = st
                conn.send(("ok", compile_s))
            elif cmd == "step":                              # one step on the given rows
                pid, rows, lr = args
                st = peers[pid]
                rows = np.asarray(rows)
                st["p"], st["rmean"], st["rvar"], loss = st["step"](
                    st["p"], st["rmean"], st["rvar"], Xn[rows], Yn[rows], np.asarray(lr, dtype))
                conn.send(("ok", float(loss)))
            elif cmd == "run":                               # n steps, timed here
                pid, n, lr = args
                st = peers[pid]
                lr = np.asarray(lr, dtype)
                t0, c0 = time.perf_counter(), time.process_time()
                if st["kind"] == "jax_loop":
                    st["p"], st["rmean"], st["rvar"], st["key"], losses = st["loop"](
                        st["p"], st["rmean"], st["rvar"], st["key"], X, Y, n, lr)
                    last = float(losses[(n - 1) % LOSS_BUFFER])
                else:
                    rng, N, B = st["rng"], Xn.shape[0], st["B"]
                    last = 0.0
                    for _ in range(n):
                        ix = rng.integers(0, N, B)
                        st["p"], st["rmean"], st["rvar"], loss = st["step"](
                            st["p"], st["rmean"], st["rvar"], Xn[ix], Yn[ix], lr)
                        last = float(loss)
                wall, cpu = time.perf_counter() - t0, time.process_time() - c0
                conn.send(("ok", (wall, cpu, last)))
            elif cmd == "state":
                st = peers[args[0]]
                conn.send(("ok", ({k: np.array(v) for k, v in st["p"].items()},
                                  np.array(st["rmean"]), np.array(st["rvar"]))))
            elif cmd == "drop":
                peers.pop(args[0], None)
                conn.send(("ok", None))
            else:
                conn.send(("error", f"unknown command {cmd!r}"))
        except Exception as e:                               # reported in the benchmark's process
            conn.send(("error", f"{type(e).__name__}: {e}"))


class _Pipes:
    """A Connection's send and recv over two pipes (a process's stdin and stdout); it owns the
    two file descriptors."""

    def __init__(self, read_fd, write_fd):
        self.r = Connection(read_fd, writable=False)
        self.w = Connection(write_fd, readable=False)

    def send(self, obj):
        self.w.send(obj)

    def recv(self):
        return self.r.recv()

    def close(self):
        self.w.close()
        self.r.close()


def serve_stdio(dtype: str) -> None:
    """The JAX process's entry: the protocol on the stdin and stdout it was started with."""
    out = os.dup(1)
    os.dup2(2, 1)                  # anything printed goes to stderr, not into the protocol
    _serve(_Pipes(0, out), dtype)


_ENTRY = "import sys; from fastbn.bench.compiled import serve_stdio; serve_stdio(sys.argv[1])"


class _Server:
    """One JAX process for one dtype (:func:`serve_stdio`), with XLA's settings in its
    environment (the caller's environment is not changed)."""

    def __init__(self, dtype, X, Y):
        env = {**os.environ, "XLA_FLAGS": _XLA_ONE_THREAD, "JAX_PLATFORMS": "cpu",
               "JAX_ENABLE_X64": "1" if dtype == "float64" else "0"}
        self.proc = subprocess.Popen([sys.executable, "-c", _ENTRY, dtype],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env)
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.conn = _Pipes(os.dup(self.proc.stdout.fileno()), os.dup(self.proc.stdin.fileno()))
        self.proc.stdin.close()
        self.proc.stdout.close()
        self.call("data", X, Y)

    def call(self, *msg):
        try:
            self.conn.send(msg)
            status, value = self.conn.recv()
        except (OSError, EOFError) as e:
            raise RuntimeError(f"the JAX process ended (exit code {self.proc.poll()}): "
                               f"{type(e).__name__}") from None
        if status != "ok":
            raise RuntimeError(f"JAX peer: {value}")
        return value

    def close(self):
        try:
            self.call("close")
        except RuntimeError:
            pass
        self.conn.close()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


_SERVERS: dict[tuple[str, int], _Server] = {}


def close_servers() -> None:
    """End the JAX processes this run started."""
    while _SERVERS:
        _SERVERS.popitem()[1].close()


def restore_environment(before: dict[str, str]) -> None:
    """Make ``os.environ`` ``before`` again: ``torch.compile`` sets variables of its own (its
    cache folder, ``KMP_DUPLICATE_LIB_OK``) while it compiles, and a run leaves none behind."""
    for k in set(os.environ) - set(before):
        del os.environ[k]
    for k, v in before.items():
        if os.environ.get(k) != v:
            os.environ[k] = v


class _Jax:
    """A JAX peer, run in the dtype's JAX process."""

    key = "jax_jit"

    def __init__(self, model, B, X, Y, seeds):
        dt = np.dtype(model.dtype).name
        server = _SERVERS.get((dt, id(X)))
        if server is None:
            server = _SERVERS[dt, id(X)] = _Server(dt, X, Y)
        self.server, self.id = server, id(self)
        st = model_state(model)
        params = {k: st[ARRAY_NAMES[k]] for k in ("C", "W1", "gamma", "beta", "W2", "b2")}
        buffers = (st[ARRAY_NAMES["rmean"]], st[ARRAY_NAMES["rvar"]])
        self.compile_seconds = server.call(
            "new", self.id, self.key, params, buffers, B, model.config["bn_momentum"],
            model.config["bn_eps"], int(seeds["numpy"]) & 0xFFFFFFFF)

    def step(self, rows, lr):
        return self.server.call("step", self.id, np.asarray(rows, np.int64), float(lr))

    def timed_run(self, n, lr):
        """(wall, CPU) seconds of ``n`` steps, measured in the JAX process."""
        wall, cpu, last = self.server.call("run", self.id, int(n), float(lr))
        if not np.isfinite(last):
            raise FloatingPointError(f"{self.key}: non-finite loss")
        return wall, cpu

    def run(self, n, lr):
        self.timed_run(n, lr)

    def state(self):
        params, rmean, rvar = self.server.call("state", self.id)
        out = {ARRAY_NAMES[k]: v for k, v in params.items()}
        out[ARRAY_NAMES["rmean"]], out[ARRAY_NAMES["rvar"]] = rmean, rvar
        return out


class _JaxLoop(_Jax):
    key = "jax_loop"


class _TorchCompile:
    """``torch.compile`` of the eager peer's forward (see ``fastbn.bench.peers``)."""

    key = "torch_compile"

    def __init__(self, model, B, X, Y, seeds):
        self.eager = eager = TorchEager(model, B, X, Y, seeds)
        torch, F = eager.torch, eager.F
        m, eps = eager.momentum, eager.eps

        def loss_fn(C, W1, gamma, beta, W2, b2, rmean, rvar, Xb, Yb):
            emb = C[Xb].view(Xb.shape[0], -1)
            hbn = F.batch_norm(emb @ W1, rmean, rvar, gamma, beta, training=True, momentum=m,
                               eps=eps)
            return F.cross_entropy(torch.tanh(hbn) @ W2 + b2, Yb)

        self.loss_fn = torch.compile(loss_fn, dynamic=False)
        # compile now, on copies (the first call compiles; the model's arrays stay untouched)
        copies = [p.detach().clone().requires_grad_() for p in eager.params]
        bufs = [eager.rmean.clone(), eager.rvar.clone()]
        rows = torch.arange(B) % eager.X.shape[0]
        t0 = time.perf_counter()
        self.loss_fn(*copies, *bufs, eager.X[rows], eager.Y[rows]).backward()
        self.compile_seconds = time.perf_counter() - t0

    def train_step(self, Xb, Yb, lr):
        e = self.eager
        loss = self.loss_fn(*e.params, e.rmean, e.rvar, Xb, Yb)
        for p in e.params:
            p.grad = None
        loss.backward()
        with e.torch.no_grad():
            for p in e.params:
                p.add_(p.grad, alpha=-lr)
        return loss.item()

    def step(self, rows, lr):
        rows = self.eager.torch.from_numpy(np.ascontiguousarray(rows, np.int64))
        return self.train_step(self.eager.X[rows], self.eager.Y[rows], lr)

    def run(self, n, lr):
        e = self.eager
        torch, X, Y, B, N, gen = e.torch, e.X, e.Y, e.B, e.X.shape[0], e.gen
        step = self.train_step
        last = 0.0
        for _ in range(n):
            ix = torch.randint(0, N, (B,), generator=gen)
            last = step(X[ix], Y[ix], lr)
        if not np.isfinite(last):
            raise FloatingPointError("torch_compile: non-finite loss")

    def state(self):
        return self.eager.state()


PEERS: dict[str, Any] = {"jax_jit": _Jax, "jax_loop": _JaxLoop, "torch_compile": _TorchCompile}
