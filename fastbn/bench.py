"""The speed benchmark: one training step of the default BN-MLP, timed side by side.

One training step = draw a random minibatch of the names training set, forward, backward, SGD
update (``p -= lr * grad``) and the BatchNorm running-statistics update, of the lecture's model
(vocabulary 27, block 3, n_embd 10, n_hidden 200, one hidden layer, BN momentum 0.001, Kaiming
init). Implementations ("peers"):

========== ======================================================================================
fused      ``FusedTrainer(model, B).run(Xtr, Ytr, steps, lr, BatchSampler(seed))``: the compiled
           loop; rows drawn by PCG32 in C. µs/step = wall / steps.
per_layer  ``model.train_step(Xtr[ix], Ytr[ix], lr)`` in a Python loop (the teaching path),
           ``ix = rng.integers(0, N, B)`` per step.
numpy      the same step written with ``fastbn.reference`` (plain NumPy, manual backprop), in a
           Python loop; rows as for per_layer.
torch      PyTorch eager + autograd (when torch is importable): ``C[Xb]``, ``@ W1``,
           ``F.batch_norm(training=True)`` with running buffers, ``tanh``, ``@ W2 + b2``,
           ``F.cross_entropy``, ``loss.backward()``, SGD under ``no_grad``; rows by
           ``torch.randint`` per step, as in the lecture.
========== ======================================================================================

Every peer records each step's loss as the fused loop does (``loss.item()``, ``float(loss)``).

Verify first, then time. Before anything is timed, every peer, started from a copy of the fused
model's initial parameters, takes the same ``VERIFY_STEPS`` minibatches; its loss at each step
(the first is the loss at the initial parameters; the later ones see the updates, so a wrong
backward or update shows up) and its parameters and running statistics afterwards must agree with
the fused step's, ``|a - b| <= atol + rtol |b|`` with the tolerances of ``LOSS_TOL`` /
``STATE_TOL``; the compiled loop, drawing the same rows from the same seed, must agree with the
fused step too. Any disagreement raises :class:`VerificationError` and nothing is timed.

Timing: BLAS pinned to one thread (``threadpoolctl.threadpool_limits(1)``; torch
``set_num_threads(1)``); garbage collection off inside timed blocks (as ``timeit`` does). For each
dtype and batch size, each peer is warmed up (calibration runs that size a block of steps to take
about ``block_seconds``, then one untimed block), then ``repeats`` blocks are timed, the peers
taking turns block by block so that drift of the machine hits them alike. Reported: the median
µs/step, and per peer ``speedup = peer µs / fused µs`` (how many times faster the fused loop is).

FLOPs of one step: the six GEMMs (forward, weight gradient, input gradient of the two Linears),
``2 M N K`` each, ``flops = 6 B H (T D + V)`` (``step_flops``); elementwise work, the softmax and
the embedding are left out. At B = 32 that is 2.19 MFLOP. From B = 48 the fused step computes
the embedding and first Linear through the table ``E_t = C @ W1[t]`` (``fastbn.fused``), which
needs fewer: ``6 T V D H + 6 B H V`` (``fused_flops``). The fused loop's GFLOP/s, share of peak
and floor (its FLOPs at GEMM peak) use the FLOPs it performs; results.json also has the
"effective" GFLOP/s of the 6-GEMM count. The machine's single-core GEMM peak is the best of
several ``sgemm`` / ``dgemm`` calls on 2048 x 2048 matrices through ``scipy.linalg.blas`` (the
OpenBLAS the fused step calls) and through ``numpy.matmul``.

With ``full``, also the 200,000-step training of the default model as ``fastbn train`` runs it
(``fastbn.train.train`` on the compiled loop: float32, batch 32, lr 0.1 then 0.01 from step
100,000, the CLI's seeds, back in Python every 1,000 steps).

Outputs (``out``, default ``bench/results``): ``results.md`` (also printed), ``results.json``,
``us_per_step.png``.
"""
import argparse
import gc
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

__all__ = ["IMPLS", "VerificationError", "add_arguments", "fused_flops", "gemm_peak", "main", "run",
           "run_from_args", "step_flops"]

IMPLS = {
    "fused": "fastbn fused loop",
    "per_layer": "fastbn per-layer API",
    "numpy": "NumPy (manual backprop)",
    "torch": "PyTorch eager + autograd",
}
DEFAULT_BATCH_SIZES = (32, 256, 1024, 4096)
DEFAULT_DTYPES = ("float32", "float64")
DEFAULT_OUT = "bench/results"
MODEL = {"block_size": 3, "n_embd": 10, "n_hidden": 200, "n_layers": 1, "bn_momentum": 0.001,
         "bn_eps": 1e-5, "init": "kaiming"}
LR = 0.1
VERIFY_STEPS = 3
# |a - b| <= atol + rtol * |b|, b the fused step's value
LOSS_TOL = {"float32": {"atol": 1e-5, "rtol": 0.0}, "float64": {"atol": 1e-10, "rtol": 0.0}}
STATE_TOL = {"float32": {"atol": 2e-6, "rtol": 1e-5}, "float64": {"atol": 1e-10, "rtol": 1e-10}}
FULL_STEPS = 200_000
# a timed block in which this process ran for less than this share of the wall time was
# preempted by another process: it is timed again (see _time_cell)
MIN_CPU_SHARE = 0.95
CHART = "us_per_step.png"
# the targets (issue 5)
TARGETS = {"b32_us": 50.0, "b32_vs_torch": 10.0, "b32_vs_numpy": 4.0, "b1024_vs_torch": 3.0,
           "full_seconds": 12.0, "full_val": 2.11}


_STD = object()     # "sys.stdout / sys.stderr as they are at call time"


class VerificationError(RuntimeError):
    """A peer does not compute what the fused step computes; the message says where."""


def step_flops(B, T=3, D=10, H=200, V=27):
    """FLOPs of the six GEMMs of one step, ``2 M N K`` each: ``6 B H (T D + V)``.

    Forward ``x0 @ W1`` (B, TD)x(TD, H) and ``h @ W2`` (B, H)x(H, V); backward per Linear the
    weight gradient (in^T @ dout) and the input gradient (dout @ W^T), the same M N K.
    """
    return 6 * B * H * (T * D + V)


def fused_flops(B, table, T=3, D=10, H=200, V=27):
    """GEMM FLOPs of one fused step: ``step_flops`` unless ``table``.

    With the table (``fastbn.fused``, large batches) the first Linear's three GEMMs become 3 T
    GEMMs over the vocabulary instead of the batch: ``E_t = C @ W1[t]`` (V, D)x(D, H),
    ``dW1[t] = C^T @ S_t`` (D, V)x(V, H) and ``dC += S_t @ W1[t]^T`` (V, H)x(H, D), S_t the
    gradient rows summed per context id: ``6 T V D H``, whatever B; the output layer's stay,
    ``6 B H V``. (The gather and scatter of B T rows of H are elementwise work, not counted.)
    """
    if not table:
        return step_flops(B, T, D, H, V)
    return 6 * T * V * D * H + 6 * B * H * V


# ----------------------------------------------------------------------------------------------
# the model and its copies

def _make_model(vocab, dtype, rng):
    from .model import CharMLP
    return CharMLP(vocab, dtype=dtype, seed=rng, **MODEL)


def _clone(model):
    """A new CharMLP with a copy of ``model``'s parameters and running statistics."""
    from .model import CharMLP
    new = CharMLP(model.vocab, dtype=model.dtype, seed=0, **model.config)
    for p, q in zip(new.parameters(), model.parameters()):
        p[...] = q
    for (_, p), (_, q) in zip(new.named_buffers(), model.named_buffers()):
        p[...] = q
    return new


def _model_state(model):
    """{name: copy} of the parameters and running statistics, in the net's names."""
    return {n: np.array(a) for n, a in model.named_parameters() + model.named_buffers()}


# names of the default model's arrays (nn.Sequential positions)
_NAMES = {"C": "0.weight", "W1": "1.weight", "gamma": "2.gamma", "beta": "2.beta",
          "W2": "4.weight", "b2": "4.bias", "rmean": "2.running_mean", "rvar": "2.running_var"}


# ----------------------------------------------------------------------------------------------
# the peers: step(rows) for verification, run(n) for timing, state() for comparison

class _Fused:
    key = "fused"

    def __init__(self, model, B, X, Y, seeds):
        from .fused import BatchSampler, FusedTrainer
        self.model = _clone(model)
        self.trainer = FusedTrainer(self.model, B)
        self.sampler = BatchSampler(seeds["fused"])
        self.X, self.Y = X, Y
        self.losses = None      # allocated by the first run (its dtype is FusedTrainer's choice)

    def step(self, rows, lr):
        return self.trainer.step(self.X, self.Y, lr, rows)

    def run(self, n, lr):
        if self.losses is not None and self.losses.shape != (n,):
            self.losses = None
        done, self.losses = self.trainer.run(self.X, self.Y, n, lr, self.sampler, self.losses)
        if done != n:
            raise FloatingPointError(f"fused loop: non-finite loss at step {done}")

    def state(self):
        return _model_state(self.model)

    @property
    def uses_table(self):
        # the trainer's own choice, as bound (FusedTrainer(table=None) picks by batch size)
        return self.trainer.uses_table


class _PerLayer:
    key = "per_layer"

    def __init__(self, model, B, X, Y, seeds):
        self.model = _clone(model)
        self.train_step = self.model.train_step
        self.B, self.X, self.Y = B, X, Y
        self.rng = np.random.default_rng(seeds["numpy"])

    def step(self, rows, lr):
        return self.train_step(self.X[rows], self.Y[rows], lr)

    def run(self, n, lr):
        X, Y, B, N, rng = self.X, self.Y, self.B, self.X.shape[0], self.rng
        step = self.train_step
        losses = [0.0] * n
        for i in range(n):
            ix = rng.integers(0, N, B)
            losses[i] = step(X[ix], Y[ix], lr)
        if not np.isfinite(losses[-1]):
            raise FloatingPointError(f"{self.key}: non-finite loss")

    def state(self):
        return _model_state(self.model)


class _NumPy(_PerLayer):
    """The manual-backprop step of the lecture (part 4) with ``fastbn.reference`` ops."""

    key = "numpy"

    def __init__(self, model, B, X, Y, seeds):
        st = _model_state(model)
        self.p = {k: st[n].copy() for k, n in _NAMES.items()}
        self.momentum, self.eps = model.config["bn_momentum"], model.config["bn_eps"]
        self.B, self.X, self.Y = B, X, Y
        self.rng = np.random.default_rng(seeds["numpy"])

    def train_step(self, Xb, Yb, lr):
        from . import reference as R
        p, m = self.p, self.momentum
        # forward
        emb, c_emb = R.embedding_forward(p["C"], Xb)                  # (B, T*D)
        hpre, c_l1 = R.linear_forward(emb, p["W1"])                   # (B, H)
        hbn, c_bn = R.batchnorm_forward(hpre, p["gamma"], p["beta"], self.eps)
        mean, var_unbiased = c_bn[3], c_bn[4]
        p["rmean"] *= 1 - m
        p["rmean"] += m * mean
        p["rvar"] *= 1 - m
        p["rvar"] += m * var_unbiased
        h, c_t = R.tanh_forward(hbn)                                  # (B, H)
        logits, c_l2 = R.linear_forward(h, p["W2"], p["b2"])          # (B, V)
        loss, c_ce = R.cross_entropy_forward(logits, Yb)
        # backward
        dlogits = R.cross_entropy_backward(1.0, c_ce)
        dh, dW2, db2 = R.linear_backward(dlogits, c_l2)
        dhbn = R.tanh_backward(dh, c_t)
        dhpre, dgamma, dbeta = R.batchnorm_backward(dhbn, c_bn)
        demb, dW1, _ = R.linear_backward(dhpre, c_l1)
        dC = R.embedding_backward(demb, c_emb)
        # update
        for k, g in (("C", dC), ("W1", dW1), ("gamma", dgamma), ("beta", dbeta), ("W2", dW2),
                     ("b2", db2)):
            p[k] -= lr * g
        return float(loss)

    def state(self):
        return {_NAMES[k]: v.copy() for k, v in self.p.items()}


class _Torch:
    """PyTorch eager with autograd: the lecture's training step (part 3)."""

    key = "torch"

    def __init__(self, model, B, X, Y, seeds):
        import torch
        import torch.nn.functional as F
        self.torch, self.F = torch, F
        st = _model_state(model)
        t = {k: torch.tensor(st[n]) for k, n in _NAMES.items()}
        self.C, self.W1, self.gamma, self.beta, self.W2, self.b2 = (
            t[k].requires_grad_() for k in ("C", "W1", "gamma", "beta", "W2", "b2"))
        self.rmean, self.rvar = t["rmean"], t["rvar"]
        self.params = [self.C, self.W1, self.gamma, self.beta, self.W2, self.b2]
        self.momentum, self.eps = model.config["bn_momentum"], model.config["bn_eps"]
        self.B = B
        self.X, self.Y = torch.from_numpy(X), torch.from_numpy(Y)
        self.gen = torch.Generator().manual_seed(seeds["torch"])

    def train_step(self, Xb, Yb, lr):
        torch, F = self.torch, self.F
        emb = self.C[Xb].view(Xb.shape[0], -1)                        # (B, T*D)
        hpre = emb @ self.W1                                          # (B, H)
        hbn = F.batch_norm(hpre, self.rmean, self.rvar, self.gamma, self.beta, training=True,
                           momentum=self.momentum, eps=self.eps)
        h = torch.tanh(hbn)
        logits = h @ self.W2 + self.b2                                # (B, V)
        loss = F.cross_entropy(logits, Yb)
        for p in self.params:
            p.grad = None
        loss.backward()
        with torch.no_grad():
            for p in self.params:
                p.add_(p.grad, alpha=-lr)
        return loss.item()

    def step(self, rows, lr):
        rows = self.torch.from_numpy(np.ascontiguousarray(rows, np.int64))
        return self.train_step(self.X[rows], self.Y[rows], lr)

    def run(self, n, lr):
        torch, X, Y, B, N, gen = self.torch, self.X, self.Y, self.B, self.X.shape[0], self.gen
        step = self.train_step
        losses = [0.0] * n
        for i in range(n):
            ix = torch.randint(0, N, (B,), generator=gen)
            losses[i] = step(X[ix], Y[ix], lr)
        if not np.isfinite(losses[-1]):
            raise FloatingPointError("torch: non-finite loss")

    def state(self):
        arrays = dict(zip(("C", "W1", "gamma", "beta", "W2", "b2"), self.params))
        arrays.update(rmean=self.rmean, rvar=self.rvar)
        return {_NAMES[k]: v.detach().numpy().copy() for k, v in arrays.items()}


_PEERS = {"fused": _Fused, "per_layer": _PerLayer, "numpy": _NumPy, "torch": _Torch}


# ----------------------------------------------------------------------------------------------
# verification

def _close(a, b, atol, rtol):
    """max |a - b| and whether every element is within atol + rtol |b| (NaN fails)."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    diff = np.abs(a - b)
    ok = bool(np.all(diff <= atol + rtol * np.abs(b)))
    return float(np.max(diff)) if diff.size else 0.0, ok


def _verify_cell(peers, base, B, X, Y, dtype, seeds, lr=LR, steps=VERIFY_STEPS):
    """Check every peer against the fused step on the same ``steps`` minibatches; raise if not.

    Returns {peer: {"losses": [...], "max_loss_diff": float, "max_state_diff": float}}.
    """
    from .fused import BatchSampler, FusedTrainer
    sampler = BatchSampler(seeds["verify"])
    rows = [sampler.draw(X.shape[0], B) for _ in range(steps)]
    ref = peers["fused"]
    ref_losses = [ref.step(r, lr) for r in rows]
    ref_state = ref.state()
    where = f"{dtype}, B={B}"
    if not all(np.isfinite(ref_losses)):
        raise VerificationError(f"{where}: the fused step's losses are not finite: {ref_losses}")
    out = {"fused": {"losses": ref_losses, "max_loss_diff": 0.0, "max_state_diff": 0.0}}

    def check(name, losses, state, loss_tol):
        worst = 0.0
        for s, (a, b) in enumerate(zip(losses, ref_losses)):
            d, ok = _close(a, b, **loss_tol)
            worst = max(worst, d)
            if not ok:
                raise VerificationError(
                    f"{where}: {_label(name)} disagrees with the fused step at verification step "
                    f"{s}: loss {a!r} vs {b!r} (|diff| {d:.3g} > atol {loss_tol['atol']:g} + "
                    f"rtol {loss_tol['rtol']:g} |loss|)")
        worst_state = 0.0
        for k, b in ref_state.items():
            d, ok = _close(state[k], b, **STATE_TOL[dtype])
            worst_state = max(worst_state, d)
            if not ok:
                raise VerificationError(
                    f"{where}: after {steps} steps, {k} of {_label(name)} differs from the fused "
                    f"step's by up to {d:.3g} (atol {STATE_TOL[dtype]['atol']:g}, rtol "
                    f"{STATE_TOL[dtype]['rtol']:g})")
        out[name] = {"losses": [float(v) for v in losses], "max_loss_diff": worst,
                     "max_state_diff": worst_state}

    # the compiled loop draws the same rows from the same seed (its losses may be stored as
    # float32: then they are compared to float32 tolerance)
    loop_model = _clone(base)
    _, loop_losses = FusedTrainer(loop_model, B).run(X, Y, steps, lr,
                                                     BatchSampler(seeds["verify"]))
    check("fused_loop", loop_losses, _model_state(loop_model),
          LOSS_TOL["float32" if loop_losses.dtype == np.float32 else dtype])
    for name, peer in peers.items():
        if name != "fused":
            check(name, [peer.step(r, lr) for r in rows], peer.state(), LOSS_TOL[dtype])
    return out


def _label(name):
    return IMPLS.get(name, "fastbn fused loop (compiled, PCG32 rows)")


# ----------------------------------------------------------------------------------------------
# timing

def _timed(fn, *args):
    """(wall seconds, CPU seconds of this process) of ``fn(*args)``, garbage collection off."""
    was = gc.isenabled()
    gc.disable()
    try:
        t0, c0 = time.perf_counter(), time.process_time()
        fn(*args)
        return time.perf_counter() - t0, time.process_time() - c0
    finally:
        if was:
            gc.enable()


def _block_size(peer, lr, block_seconds):
    """Steps per block so a block takes about block_seconds; the calibration runs warm up."""
    n = 1
    while True:
        t, _ = _timed(peer.run, n, lr)
        if t >= block_seconds / 4 or n >= 1 << 20:
            return max(1, round(block_seconds * n / max(t, 1e-9)))
        n *= 4 if t < block_seconds / 40 else 2


def _time_cell(peers, repeats, block_seconds, lr=LR, log=None):
    """{peer: {"us_per_step": median, "us_all", "steps_per_block", "cpu_share", "discarded"}}.

    Every peer runs on one thread, so a block's CPU time should equal its wall time. A block in
    which this process got less than ``MIN_CPU_SHARE`` of a CPU was preempted by other processes
    (its wall time is inflated): it is discarded and timed again after a short pause, at most
    ``repeats`` times per peer; the shares of the kept blocks are reported ("cpu_share").
    """
    blocks = {}
    for name, peer in peers.items():
        n = _block_size(peer, lr, block_seconds)
        _timed(peer.run, n, lr)                                  # the warm-up block
        blocks[name] = n
    times = {name: [] for name in peers}
    shares = {name: [] for name in peers}
    discarded = dict.fromkeys(peers, 0)
    for _ in range(repeats):
        for name, peer in peers.items():                         # peers take turns
            n = blocks[name]
            while True:
                wall, cpu = _timed(peer.run, n, lr)
                if cpu >= MIN_CPU_SHARE * wall or discarded[name] >= repeats:
                    break
                discarded[name] += 1
                time.sleep(min(0.2, block_seconds))
            times[name].append(1e6 * wall / n)
            shares[name].append(cpu / wall)
    out = {}
    for name in peers:
        out[name] = {"us_per_step": statistics.median(times[name]), "us_all": times[name],
                     "steps_per_block": blocks[name], "cpu_share": shares[name],
                     "discarded": discarded[name]}
        if log:
            log(f"  {IMPLS[name]:<28} {out[name]['us_per_step']:10.1f} us/step "
                f"({repeats} x {blocks[name]} steps; CPU share >= {min(shares[name]):.2f}, "
                f"{discarded[name]} blocks discarded)")
    return out


def gemm_peak(n=2048, repeats=5, dtype="float32"):
    """Best GFLOP/s of an n x n x n GEMM (``2 n^3`` FLOPs) on the current thread settings.

    Returns {"n", "dtype", "scipy": {"gflops", "gflops_median"}, "numpy": {...}, "gflops"} where
    scipy is ``scipy.linalg.blas.[sd]gemm`` (the OpenBLAS the fused step calls) and numpy is
    ``numpy.matmul`` (NumPy's own OpenBLAS); "gflops" is the better of the two.
    """
    from scipy.linalg import blas
    dt = np.dtype(dtype)
    g = np.random.default_rng(0)
    a = np.asfortranarray(g.standard_normal((n, n)).astype(dt))
    b = np.asfortranarray(g.standard_normal((n, n)).astype(dt))
    c = np.zeros((n, n), dt, order="F")
    gemm = blas.sgemm if dt == np.float32 else blas.dgemm
    ac, bc, cc = np.ascontiguousarray(a), np.ascontiguousarray(b), np.zeros((n, n), dt)
    flops = 2.0 * n ** 3
    res = {"n": n, "dtype": dt.name}
    for lib, fn in (("scipy", lambda: gemm(1.0, a, b, 0.0, c, overwrite_c=1)),
                    ("numpy", lambda: np.matmul(ac, bc, out=cc))):
        fn()                                                     # warm-up
        ts = [_timed(fn)[0] for _ in range(repeats)]
        res[lib] = {"gflops": flops / min(ts) / 1e9,
                    "gflops_median": flops / statistics.median(ts) / 1e9}
    res["gflops"] = max(res["scipy"]["gflops"], res["numpy"]["gflops"])
    return res


# ----------------------------------------------------------------------------------------------
# the full training run

def full_training(ds, seed, steps=FULL_STEPS, log=None):
    """``fastbn train``'s default run, timed: the 200,000 steps of the lecture on the fused loop.

    As ``fastbn train --seed SEED`` does it: ``fastbn.train.seed_streams(seed)`` gives the
    parameter stream and the minibatch stream; ``fastbn.train.train`` runs the compiled loop
    (it must: the result records ``path == "fused"``), float32, batch 32, lr 0.1 then 0.01 from
    step 100,000, coming back to Python every 1,000 steps. Returns the loop's wall seconds (the time
    ``fastbn train`` prints), µs/step and the eval-mode losses afterwards (running statistics).
    """
    from .train import DEFAULT_LR_SCHEDULE, seed_streams, train
    attempts = []
    for _ in range(3):            # timed again (at most twice) when other processes preempt it
        init_ss, batch_ss = seed_streams(seed)
        model = _make_model(ds.vocab, np.float32, np.random.default_rng(init_ss))
        t0, c0 = time.perf_counter(), time.process_time()
        res = train(model, ds, steps=steps, batch_size=32, lr_schedule=DEFAULT_LR_SCHEDULE,
                    seed=batch_ss, quiet=True)
        total, cpu = time.perf_counter() - t0, time.process_time() - c0
        attempts.append(res.wall_time)
        if cpu >= MIN_CPU_SHARE * total:
            break
    path = getattr(res, "path", None)
    if path != "fused":
        raise RuntimeError(f"fastbn.train did not run the fused loop (path {path!r})")
    if log:
        log(f"full training: {steps:,} steps in {res.wall_time:.2f} s "
            f"({res.us_per_step:.1f} us/step); train {res.losses['train']:.4f} "
            f"val {res.losses['val']:.4f}")
    return {"steps": steps, "batch_size": 32, "dtype": "float32", "seed": seed,
            "lr_schedule": [list(p) for p in DEFAULT_LR_SCHEDULE], "path": path,
            "wall_seconds": res.wall_time, "us_per_step": res.us_per_step,
            "seconds_with_evaluation": total, "cpu_share": cpu / total,
            "discarded_attempts": attempts[:-1], "losses": res.losses}


# ----------------------------------------------------------------------------------------------
# the machine

def _cpu():
    info = {"model": platform.processor() or platform.machine(), "flags": []}
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        text = ""
    m = re.search(r"^model name\s*:\s*(.+)$", text, re.MULTILINE)
    if m:
        info["model"] = m.group(1).strip()
    m = re.search(r"^flags\s*:\s*(.+)$", text, re.MULTILINE)
    if m:
        have = set(m.group(1).split())
        info["flags"] = [f for f in ("sse4_2", "avx", "avx2", "fma", "avx512f") if f in have]
    info["logical_cpus"] = os.cpu_count()
    if hasattr(os, "sched_getaffinity"):
        info["usable_cpus"] = len(os.sched_getaffinity(0))
    return info


def _loadavg():
    try:
        return list(os.getloadavg())
    except (AttributeError, OSError):
        return None


def _git_describe():
    here = Path(__file__).resolve().parent
    try:
        r = subprocess.run(["git", "describe", "--always", "--dirty"], cwd=here, check=False,
                           capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return (r.stdout.strip() or None) if r.returncode == 0 else None


def _machine(torch_mod):
    import scipy
    import threadpoolctl

    from . import __version__
    blas = threadpoolctl.threadpool_info()
    m = {"cpu": _cpu(), "loadavg_at_start": _loadavg(), "python": platform.python_version(),
         "platform": platform.platform(),
         "numpy": np.__version__, "scipy": scipy.__version__,
         "threadpoolctl": threadpoolctl.__version__,
         "fastbn": __version__, "fastbn_file": str(Path(__file__).resolve().parent),
         "fastbn_git": _git_describe(), "threadpools": blas,
         "blas_threads": sorted({p["num_threads"] for p in blas}),
         "blas_architecture": {p["filepath"].rsplit("/", 1)[-1]: p.get("architecture")
                               for p in blas if p["user_api"] == "blas"},
         "env": {k: os.environ.get(k) for k in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE",
                                                 "OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS",
                                                 "MKL_NUM_THREADS")}}
    if torch_mod is not None:
        cfg = torch_mod.__config__.show()
        blas_info = re.search(r"BLAS_INFO=(\w+)", cfg)
        cap = re.search(r"CPU capability usage: (\w+)", cfg)
        m["torch"] = torch_mod.__version__
        m["torch_threads"] = torch_mod.get_num_threads()
        m["torch_blas"] = blas_info.group(1) if blas_info else None
        m["torch_cpu_capability"] = cap.group(1) if cap else None
    else:
        m["torch"] = None
    return m


# ----------------------------------------------------------------------------------------------
# the run

def _seeds(seed):
    ss = np.random.SeedSequence(seed).spawn(5)
    words = [int(s.generate_state(1, np.uint64)[0]) for s in ss[1:]]
    return ss[0], {"fused": words[0], "numpy": words[1], "torch": words[2] & (2**63 - 1),
                   "verify": words[3]}


def _log_to(stream):
    def log(msg):
        if stream is not None:
            print(msg, file=stream, flush=True)
    return log


def run(batch_sizes=DEFAULT_BATCH_SIZES, dtypes=DEFAULT_DTYPES, repeats=5, out=DEFAULT_OUT, *,
        use_torch=True, full=False, quick=False, data=None, seed=None, block_seconds=None,
        gemm_n=None, stream=_STD, stdout=_STD):
    """Verify, then time every peer at every batch size and dtype; write the results.

    Parameters
    ----------
    batch_sizes : sequence of int (>= 2)
    dtypes : sequence of "float32" / "float64"
    repeats : int
        Timed blocks per peer and cell; the median is reported.
    out : str or Path
        Results folder (created): results.md, results.json, us_per_step.png.
    use_torch : bool
        Time PyTorch when it is importable (skipped with a note otherwise).
    full : bool
        Also time the full 200,000-step training (about 3 s here).
    quick : bool
        A smoke run: blocks of about 10 ms and a 512^3 GEMM for the peak. Not for real numbers.
    data : path of names.txt, a fastbn.data.Dataset, or None ($FASTBN_DATA, cache, download)
    seed : int
        Parameters (as ``fastbn train --seed``) and minibatch streams; default the CLI's.
    stream : file or None
        Progress messages (default sys.stderr). ``stdout`` receives the markdown table (default
        sys.stdout; None: not printed).

    Returns
    -------
    dict, as written to results.json.

    Raises
    ------
    VerificationError
        A peer disagrees with the fused step; nothing was timed.
    """
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        raise ImportError("fastbn bench pins BLAS to one thread with threadpoolctl: "
                          "pip install threadpoolctl") from None
    from . import data as fdata
    from .train import DEFAULT_SEED

    log = _log_to(sys.stderr if stream is _STD else stream)
    stdout = sys.stdout if stdout is _STD else stdout
    batch_sizes = [int(b) for b in batch_sizes]
    if not batch_sizes or min(batch_sizes) < 2:
        raise ValueError(f"batch sizes must be >= 2 (batch norm), got {batch_sizes}")
    dtypes = [np.dtype(d).name for d in dtypes]
    if not dtypes or any(d not in DEFAULT_DTYPES for d in dtypes):
        raise ValueError(f"dtypes must be float32 and/or float64, got {dtypes}")
    repeats = int(repeats)
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    block_seconds = (0.01 if quick else 0.3) if block_seconds is None else float(block_seconds)
    gemm_n = (512 if quick else 2048) if gemm_n is None else int(gemm_n)
    seed = DEFAULT_SEED if seed is None else int(seed)
    ds = data if isinstance(data, fdata.Dataset) else fdata.load_dataset(data, block_size=3)

    torch_mod, torch_note = None, None
    if use_torch:
        try:
            import torch as torch_mod
        except ImportError as e:
            torch_note = f"PyTorch skipped: not importable ({e})"
    else:
        torch_note = "PyTorch skipped (--no-torch)"
    if torch_note:
        log(torch_note)
    names = [k for k in IMPLS if k != "torch" or torch_mod is not None]

    init_ss, seeds = _seeds(seed)
    X, Y = ds.Xtr, ds.Ytr
    torch_threads = torch_mod.get_num_threads() if torch_mod is not None else None
    try:
        with threadpool_limits(limits=1):
            if torch_mod is not None:
                torch_mod.set_num_threads(1)
            machine = _machine(torch_mod)
            # verify everything first
            cells = {}
            for dt in dtypes:
                base = _make_model(ds.vocab, dt, np.random.default_rng(init_ss))
                for B in batch_sizes:
                    peers = {k: _PEERS[k](base, B, X, Y, seeds) for k in names}
                    cells[dt, B] = (peers, _verify_cell(peers, base, B, X, Y, dt, seeds))
            log(f"verified: {len(names)} implementations agree with the fused step over "
                f"{VERIFY_STEPS} steps at every batch size and dtype")
            log(f"GEMM peak ({gemm_n}^3, one thread) ...")
            peaks = {dt: gemm_peak(gemm_n, 2 if quick else 5, dt) for dt in dtypes}
            rows = []
            for (dt, B), (peers, ver) in cells.items():
                log(f"{dt}, B={B}:")
                timing = _time_cell(peers, repeats, block_seconds, log=log)
                rows.append(_row(dt, B, timing, ver, peaks[dt], peers["fused"].uses_table))
            fulltrain = full_training(ds, seed, log=log) if full else None
            machine["loadavg_at_end"] = _loadavg()
    finally:
        if torch_mod is not None:
            torch_mod.set_num_threads(torch_threads)

    res = {
        "title": "fastbn benchmark: one training step of the makemore BN-MLP",
        "created": time.strftime("%Y-%m-%d %H:%M:%S %z"),
        "machine": machine,
        "model": {"vocab": ds.vocab.size, **MODEL, "activation": "tanh",
                  "parameters": _make_model(ds.vocab, np.float32, 0).num_parameters(),
                  "shapes": _shapes(ds.vocab.size)},
        "data": {"path": str(ds.path), "train_examples": int(X.shape[0])},
        "settings": {"batch_sizes": batch_sizes, "dtypes": dtypes, "repeats": repeats,
                     "block_seconds": block_seconds, "lr": LR, "seed": seed,
                     "verify_steps": VERIFY_STEPS, "loss_tol": LOSS_TOL, "state_tol": STATE_TOL,
                     "quick": bool(quick), "statistic": "median over repeats of wall/steps",
                     "speedup": "peer us/step / fused us/step"},
        "implementations": {k: IMPLS[k] for k in names},
        "notes": [torch_note] if torch_note else [],
        "flops": {"formula": "6 * B * H * (T*D + V): the six GEMMs, 2*M*N*K each; elementwise "
                             "work excluded",
                  "fused_table_formula": "6 * T * V * D * H + 6 * B * H * V: the fused step "
                                         "with the table E_t = C @ W1[t] (large B)",
                  "per_step_b32": step_flops(32)},
        "gemm_peak": peaks,
        "results": rows,
        "full_training": fulltrain,
    }
    res["targets"] = _targets(res)
    _write(res, Path(out), stdout)
    return res


def _shapes(V, T=3, D=10, H=200):
    return {"X": ["B", T], "Y": ["B"], "C": [V, D], "x0": ["B", T * D], "W1": [T * D, H],
            "gamma, beta, running_mean, running_var": [H], "hpre, h": ["B", H], "W2": [H, V],
            "b2": [V], "logits": ["B", V]}


def _row(dt, B, timing, ver, peak, table):
    fused = timing["fused"]["us_per_step"]
    flops, done = step_flops(B), fused_flops(B, table)
    gflops = done / fused / 1e3
    row = {"dtype": dt, "batch_size": B, "flops": flops, "fused_flops": done,
           "fused_table": table, "fused_gflops": gflops,
           "fused_gflops_effective": flops / fused / 1e3,
           "fraction_of_peak": gflops / peak["gflops"],
           "floor_us": done / peak["gflops"] / 1e3,
           "floor_6gemm_us": flops / peak["gflops"] / 1e3, "impls": {}}
    for name, t in timing.items():
        row["impls"][name] = {**t, "speedup": t["us_per_step"] / fused}
    row["verification"] = ver
    return row


def _find(res, dt, B, name):
    for r in res["results"]:
        if r["dtype"] == dt and r["batch_size"] == B and name in r["impls"]:
            return r["impls"][name]
    return None


def _targets(res):
    """The issue's targets: [{"target", "measured", "ok"}] (ok None when not measured)."""
    out = []

    def add(text, value, ok, fmt):
        out.append({"target": text, "measured": None if value is None else fmt.format(value),
                    "value": value, "ok": ok})

    f = _find(res, "float32", 32, "fused")
    t = _find(res, "float32", 32, "torch")
    n = _find(res, "float32", 32, "numpy")
    t1k = _find(res, "float32", 1024, "torch")
    v = f and f["us_per_step"]
    add(f"B=32 float32: fused <= {TARGETS['b32_us']:g} us/step", v,
        None if v is None else v <= TARGETS["b32_us"], "{:.1f} us")
    v = t and t["speedup"]
    add(f"B=32 float32: >= {TARGETS['b32_vs_torch']:g}x faster than PyTorch eager", v,
        None if v is None else v >= TARGETS["b32_vs_torch"], "{:.1f}x")
    v = n and n["speedup"]
    add(f"B=32 float32: >= {TARGETS['b32_vs_numpy']:g}x faster than NumPy", v,
        None if v is None else v >= TARGETS["b32_vs_numpy"], "{:.1f}x")
    v = t1k and t1k["speedup"]
    add(f"B=1024 float32: >= {TARGETS['b1024_vs_torch']:g}x faster than PyTorch eager", v,
        None if v is None else v >= TARGETS["b1024_vs_torch"], "{:.1f}x")
    full = res["full_training"]
    v = full and full["wall_seconds"]
    add(f"200,000 steps (fused loop) <= {TARGETS['full_seconds']:g} s", v,
        None if v is None else v <= TARGETS["full_seconds"], "{:.2f} s")
    v = full and full["losses"]["val"]
    add(f"val loss after 200,000 steps <= {TARGETS['full_val']:g}", v,
        None if v is None else v <= TARGETS["full_val"], "{:.4f}")
    return out


# ----------------------------------------------------------------------------------------------
# output

def _markdown(res):
    m, s, mod, cpu = res["machine"], res["settings"], res["model"], res["machine"]["cpu"]
    names = list(res["implementations"])
    arch = ", ".join(str(a) for a in dict.fromkeys(m["blas_architecture"].values()))
    out = [f"# {res['title']}"]

    def para(*parts):
        out.extend(["", "".join(parts)])

    para(f"Measured {res['created']} on **{cpu['model']}** ",
         f"({cpu.get('usable_cpus', cpu['logical_cpus'])} usable CPUs, ",
         f"{'/'.join(cpu['flags'])}), everything on **one thread** (BLAS threads ",
         f"{m['blas_threads']}, torch threads {m.get('torch_threads', '-')}). ",
         f"OpenBLAS kernel: **{arch}**; numpy {m['numpy']}, scipy {m['scipy']}, torch ",
         f"{m['torch'] or 'not installed'} (BLAS {m.get('torch_blas') or '-'}, ",
         f"{m.get('torch_cpu_capability') or '-'}), Python {m['python']}, fastbn ",
         f"{m['fastbn']} ({m['fastbn_git'] or 'no git'}).")
    env = {k: v for k, v in m["env"].items() if v is not None}
    if env:
        para("Environment: ", ", ".join(f"`{k}={v}`" for k, v in env.items()), ".")
    para(f"Model: the default BN-MLP, vocab {mod['vocab']}, block {mod['block_size']}, ",
         f"n_embd {mod['n_embd']}, n_hidden {mod['n_hidden']}, {mod['n_layers']} layer, ",
         f"BN momentum {mod['bn_momentum']:g}, {mod['init']} init, {mod['parameters']:,} ",
         "parameters. One step = a random minibatch of the names training set ",
         f"({res['data']['train_examples']:,} examples) + forward + backward + SGD ",
         f"(lr {s['lr']:g}) + BN running statistics.")
    para(f"Median µs/step of {s['repeats']} timed blocks of ~{s['block_seconds']:g} s each, ",
         "after warm-up, the implementations taking turns; (N×) = its time / the fused ",
         "loop's time. Verified before timing: every implementation's losses over ",
         f"{s['verify_steps']} steps and its parameters afterwards agree with the fused step ",
         f"(loss within {s['loss_tol']['float32']['atol']:g} in float32, ",
         f"{s['loss_tol']['float64']['atol']:g} in float64).")
    for note in res["notes"]:
        para(f"Note: {note}")
    for dt in s["dtypes"]:
        peak = res["gemm_peak"][dt]
        head = (["B"] + [IMPLS[k] + " µs" for k in names]
                + ["fused GEMM MFLOP", "fused GFLOP/s", "% of GEMM peak", "floor µs"])
        out += ["", f"## {dt}", "", "| " + " | ".join(head) + " |", "|" + "---:|" * len(head)]
        for r in (r for r in res["results"] if r["dtype"] == dt):
            cells = [str(r["batch_size"])]
            for k in names:
                t = r["impls"][k]
                us = f"{t['us_per_step']:,.1f}" + ("†" if min(t["cpu_share"]) < MIN_CPU_SHARE
                                                   else "")
                cells.append(us if k == "fused" else f"{us} ({t['speedup']:.1f}×)")
            cells += [f"{r['fused_flops'] / 1e6:.2f}" + ("‡" if r["fused_table"] else ""),
                      f"{r['fused_gflops']:.1f}", f"{100 * r['fraction_of_peak']:.0f} %",
                      f"{r['floor_us']:,.1f}"]
            out.append("| " + " | ".join(cells) + " |")
        para(f"GEMM peak ({dt}, {peak['n']}³, one thread): **{peak['gflops']:.1f} GFLOP/s** ",
             f"(scipy.linalg.blas {peak['scipy']['gflops']:.1f}, numpy.matmul ",
             f"{peak['numpy']['gflops']:.1f}); floor µs = FLOPs / peak.")
    flagged = any(min(t["cpu_share"]) < MIN_CPU_SHARE
                  for r in res["results"] for t in r["impls"].values())
    discarded = sum(t["discarded"] for r in res["results"] for t in r["impls"].values())
    para("Every implementation runs on one thread: a timed block in which the process got less ",
         f"than {MIN_CPU_SHARE:.0%} of a CPU (other processes running) is discarded and timed ",
         f"again; {discarded} blocks were discarded in this run. ",
         "† marks a time whose blocks still include such a block (inflated). " if flagged else "",
         f"Load average at start / end: {_fmt_load(m.get('loadavg_at_start'))} / ",
         f"{_fmt_load(m.get('loadavg_at_end'))}.")
    para(f"FLOPs per step: {res['flops']['formula']}; ",
         f"{res['flops']['per_step_b32'] / 1e6:.2f} MFLOP at B=32. ",
         "‡ From B = 48 the fused step computes the embedding and the first Linear through ",
         "the table E_t = C @ W1[t] (fastbn.fused), so it performs fewer GEMM FLOPs than the ",
         f"other implementations: {res['flops']['fused_table_formula'].split(':')[0]}. ",
         "The fused GFLOP/s, % of peak and floor (µs at GEMM peak) use the FLOPs the fused ",
         "step performs; results.json also has the effective GFLOP/s of the 6-GEMM count.")
    full = res["full_training"]
    if full:
        out += ["", "## Full training (`fastbn train` defaults, fused loop)"]
        para(f"`fastbn.train` (the function behind `fastbn train`; path: {full['path']}), ",
             f"{full['steps']:,} steps, float32, batch {full['batch_size']}, lr 0.1 then 0.01 ",
             f"from step 100,000, seed {full['seed']}: **{full['wall_seconds']:.2f} s** in the ",
             f"training loop ({full['us_per_step']:.1f} µs/step; ",
             f"{full['seconds_with_evaluation']:.2f} s with the final evaluation). Then, in eval ",
             f"mode (running BN statistics): train loss {full['losses']['train']:.4f}, val loss ",
             f"{full['losses']['val']:.4f}. CPU share {full['cpu_share']:.2f}",
             f"; {len(full['discarded_attempts'])} preempted attempt(s) discarded"
             if full["discarded_attempts"] else "", ".")
    out += ["", "## Targets (issue 5)", "", "| target | measured | |", "|---|---:|---|"]
    for t in res["targets"]:
        verdict = "not measured" if t["ok"] is None else ("pass" if t["ok"] else "**FAIL**")
        out.append(f"| {t['target']} | {t['measured'] or '-'} | {verdict} |")
    out.append("")
    return "\n".join(out)


def _fmt_load(load):
    return "-" if not load else " ".join(f"{v:.2f}" for v in load)


def _chart(res, path):
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        return None
    dts = res["settings"]["dtypes"]
    fig = Figure(figsize=(5.5 * len(dts) + 0.5, 5.4), dpi=110)
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, len(dts), sharey=True, squeeze=False)[0]
    styles = {"fused": ("tab:red", "o"), "per_layer": ("tab:orange", "s"),
              "numpy": ("tab:blue", "^"), "torch": ("tab:green", "D")}
    from matplotlib.ticker import FuncFormatter, LogLocator, NullLocator
    for ax, dt in zip(axes, dts):
        rows = sorted((r for r in res["results"] if r["dtype"] == dt),
                      key=lambda r: r["batch_size"])
        Bs = [r["batch_size"] for r in rows]
        for k in res["implementations"]:
            color, marker = styles[k]
            ax.plot(Bs, [r["impls"][k]["us_per_step"] for r in rows], color=color,
                    marker=marker, label=IMPLS[k])
        ax.plot(Bs, [r["floor_6gemm_us"] for r in rows], color="gray", ls=":", lw=1,
                label="floor: the 6-GEMM step at GEMM peak")
        ax.plot(Bs, [r["floor_us"] for r in rows], color="gray", ls="--", lw=1,
                label="floor: the fused step's GEMMs at GEMM peak")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xticks(Bs)
        ax.set_xticklabels([str(b) for b in Bs])
        ax.xaxis.set_minor_locator(NullLocator())
        ax.yaxis.set_major_locator(LogLocator(subs=(1, 2, 5)))
        ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:,.0f}" if v >= 1
                                                   else f"{v:g}"))
        ax.yaxis.set_minor_locator(NullLocator())
        ax.set_xlabel("batch size B")
        ax.set_title(f"{dt} (GEMM peak {res['gemm_peak'][dt]['gflops']:.0f} GFLOP/s)")
        ax.grid(True, which="major", alpha=0.3)
    axes[0].set_ylabel("µs per training step (median, log scale)")
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=3, fontsize=8.5, frameon=False)
    arch = ", ".join(str(a) for a in dict.fromkeys(res["machine"]["blas_architecture"].values()))
    fig.suptitle(f"One training step of the BN-MLP, one thread: {res['machine']['cpu']['model']}, "
                 f"OpenBLAS {arch}")
    fig.tight_layout(rect=(0, 0.1, 1, 1))
    _atomic(path, lambda tmp: fig.savefig(tmp, format="png"))
    return path


def _atomic(path, write):
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def _write(res, out, stdout):
    out.mkdir(parents=True, exist_ok=True)
    png = _chart(res, out / CHART)
    res["chart"] = png.name if png else None
    if png is None:
        res["notes"].append("chart skipped: matplotlib is not installed")
    md = _markdown(res)
    if png is not None:
        md += f"\n![µs/step vs batch size]({png.name})\n"
    _atomic(out / "results.md", lambda tmp: tmp.write_text(md, encoding="utf-8"))
    _atomic(out / "results.json",
            lambda tmp: tmp.write_text(json.dumps(res, indent=1, default=_json_default) + "\n",
                                       encoding="utf-8"))
    if stdout is not None:
        print(md, file=stdout)


def _json_default(o):
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    raise TypeError(f"not JSON serializable: {type(o).__name__}")


# ----------------------------------------------------------------------------------------------
# command line (``fastbn bench`` and ``bench/run.py``)

def _int_list(text):
    try:
        vals = [int(v) for v in text.replace(",", " ").split()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected integers like 32,256, got {text!r}") from None
    if not vals or min(vals) < 2:
        raise argparse.ArgumentTypeError(f"batch sizes must be >= 2, got {text!r}")
    return vals


def _dtype_list(text):
    vals = text.replace(",", " ").split()
    bad = [v for v in vals if v not in DEFAULT_DTYPES]
    if not vals or bad:
        raise argparse.ArgumentTypeError(f"dtypes are float32 and/or float64, got {text!r}")
    return vals


def add_arguments(p):
    """The benchmark's options, on an argparse parser (shared by the CLI and bench/run.py)."""
    from .cli import _nonnegative, _positive
    p.add_argument("--batch-sizes", type=_int_list, default=list(DEFAULT_BATCH_SIZES),
                   metavar="B,B,...", help="batch sizes (default 32,256,1024,4096)")
    p.add_argument("--dtypes", type=_dtype_list, default=list(DEFAULT_DTYPES),
                   metavar="DT,...", help="float32 and/or float64 (default both)")
    p.add_argument("--repeats", type=_positive(), default=None,
                   help="timed blocks per measurement; the median is reported (default 5, "
                        "--quick 1)")
    p.add_argument("--out", metavar="DIR", default=DEFAULT_OUT,
                   help=f"results folder (default {DEFAULT_OUT})")
    p.add_argument("--no-torch", action="store_true", help="do not time PyTorch")
    p.add_argument("--full", action="store_true",
                   help="also time the full 200,000-step training (about 3 s here)")
    p.add_argument("--quick", action="store_true",
                   help="smoke test: ~10 ms blocks, 1 repeat, small GEMM; not real numbers")
    p.add_argument("--data", metavar="PATH",
                   help="names file (default: $FASTBN_DATA, the user cache, a verified download)")
    p.add_argument("--seed", type=_nonnegative, default=None,
                   help="parameter and minibatch seed (default fastbn train's)")
    return p


def run_from_args(args, stream=_STD, stdout=_STD):
    """Run with parsed ``add_arguments`` options; returns 0 (raises on failure)."""
    repeats = args.repeats if args.repeats is not None else (1 if args.quick else 5)
    run(args.batch_sizes, args.dtypes, repeats, args.out, use_torch=not args.no_torch,
        full=args.full, quick=args.quick, data=args.data, seed=args.seed, stream=stream,
        stdout=stdout)
    return 0


def main(argv=None):
    """``bench/run.py``: parse, run; verification failures exit 1 with the message."""
    p = argparse.ArgumentParser(prog="bench/run.py", description=__doc__.splitlines()[0])
    args = add_arguments(p).parse_args(argv)
    try:
        return run_from_args(args)
    except (VerificationError, OSError, ImportError) as e:
        print(f"bench: error: {e}", file=sys.stderr)
        return 1
