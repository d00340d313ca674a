"""The implementations the benchmark times ("peers") and the model they all train.

One training step = draw a random minibatch of the names training set, forward, backward, SGD
update (``p -= lr * grad``) and the BatchNorm running-statistics update, of the lecture's model
(``MODEL``: vocabulary 27, block 3, n_embd 10, n_hidden 200, one hidden layer, BN momentum
0.001, Kaiming init). The peers:

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

and the compiled peers of :mod:`fastbn.bench.compiled` (``torch.compile``, JAX ``jit`` of one
step and of a loop of steps), when their packages are installed.

Every peer records each step's loss as the fused loop does (``loss.item()``, ``float(loss)``).
A peer is built from the fused model's initial parameters (``PEERS[key](model, B, X, Y, seeds)``)
and has ``step(rows, lr)`` (one step on the given rows, for verification), ``run(n, lr)`` (``n``
steps on its own minibatches, for timing) and ``state()`` (its parameters and running
statistics, by the net's names).
"""
from typing import Any

import numpy as np

__all__ = ["ARRAY_NAMES", "IMPLS", "LR", "MODEL", "PEERS", "TorchEager", "clone", "make_model",
           "model_state"]

IMPLS: dict[str, str] = {
    "fused": "fastbn fused loop",
    "per_layer": "fastbn per-layer API",
    "numpy": "NumPy (manual backprop)",
    "torch": "PyTorch eager + autograd",
    # the compiled peers (fastbn.bench.compiled)
    "torch_compile": "PyTorch torch.compile",
    "jax_jit": "JAX jit (one step)",
    "jax_loop": "JAX jit (loop of steps)",
}
MODEL: dict[str, Any] = {"block_size": 3, "n_embd": 10, "n_hidden": 200, "n_layers": 1,
                         "bn_momentum": 0.001, "bn_eps": 1e-5, "init": "kaiming"}
LR = 0.1


# ----------------------------------------------------------------------------------------------
# the model and its copies

def make_model(vocab, dtype, rng):
    """The benchmarked CharMLP (``MODEL``) over ``vocab``; ``rng`` seeds its parameters."""
    from ..model import CharMLP
    return CharMLP(vocab, dtype=dtype, seed=rng, **MODEL)


def clone(model):
    """A new CharMLP with a copy of ``model``'s parameters and running statistics."""
    from ..model import CharMLP
    new = CharMLP(model.vocab, dtype=model.dtype, seed=0, **model.config)
    for p, q in zip(new.parameters(), model.parameters()):
        p[...] = q
    for (_, p), (_, q) in zip(new.named_buffers(), model.named_buffers()):
        p[...] = q
    return new


def model_state(model):
    """{name: copy} of the parameters and running statistics, in the net's names."""
    return {n: np.array(a) for n, a in model.named_parameters() + model.named_buffers()}


#: the default model's arrays, by the lecture's names: their names in the net (nn.Sequential)
ARRAY_NAMES = {"C": "0.weight", "W1": "1.weight", "gamma": "2.gamma", "beta": "2.beta",
          "W2": "4.weight", "b2": "4.bias", "rmean": "2.running_mean", "rvar": "2.running_var"}


# ----------------------------------------------------------------------------------------------
# the peers: step(rows) for verification, run(n) for timing, state() for comparison

class _Fused:
    key = "fused"

    def __init__(self, model, B, X, Y, seeds):
        from ..fused import BatchSampler, FusedTrainer
        self.model = clone(model)
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
        return model_state(self.model)

    @property
    def uses_table(self):
        # the trainer's own choice, as bound (FusedTrainer(table=None) picks by batch size)
        return self.trainer.uses_table


class _PerLayer:
    key = "per_layer"

    def __init__(self, model, B, X, Y, seeds):
        self.model = clone(model)
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
        return model_state(self.model)


class _NumPy(_PerLayer):
    """The manual-backprop step of the lecture (part 4) with ``fastbn.reference`` ops."""

    key = "numpy"

    def __init__(self, model, B, X, Y, seeds):
        st = model_state(model)
        self.p = {k: st[n].copy() for k, n in ARRAY_NAMES.items()}
        self.momentum, self.eps = model.config["bn_momentum"], model.config["bn_eps"]
        self.B, self.X, self.Y = B, X, Y
        self.rng = np.random.default_rng(seeds["numpy"])

    def train_step(self, Xb, Yb, lr):
        from .. import reference as R
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
        return {ARRAY_NAMES[k]: v.copy() for k, v in self.p.items()}


class TorchEager:
    """PyTorch eager with autograd: the lecture's training step (part 3). A peer of the run
    (``PEERS["torch"]``)."""

    key = "torch"

    def __init__(self, model, B, X, Y, seeds):
        import torch
        import torch.nn.functional as F
        self.torch, self.F = torch, F
        st = model_state(model)
        t = {k: torch.tensor(st[n]) for k, n in ARRAY_NAMES.items()}
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
        return {ARRAY_NAMES[k]: v.detach().numpy().copy() for k, v in arrays.items()}


PEERS: dict[str, Any] = {"fused": _Fused, "per_layer": _PerLayer, "numpy": _NumPy,
                         "torch": TorchEager}
