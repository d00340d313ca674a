"""The makemore character-level MLP (Bengio et al. 2003) with batch normalization, on ``fastbn.nn``.

The default model is the lecture's BN-MLP (makemore part 3), 12,097 parameters::

    X (B, T) ids -> Embedding(V, 10) -> (B, T*10) -> Linear(T*10, 200, no bias) -> BatchNorm1d(200)
                 -> Tanh -> Linear(200, V) -> logits (B, V) -> cross-entropy with Y (B,)

Options make the other models of the lecture: ``n_layers`` hidden blocks (the deep net of part 3
has 5 of width 100), ``batchnorm=False`` (hidden Linears get a bias), ``final_bn`` (a BatchNorm on
the logits, the deep net's last layer), ``activation`` (one of ``ACTIVATIONS``, the activations of
``fastbn.registry``), ``dtype`` and ``init``, the initialization scheme by name:

============ ================== ======================== ===================== ===================
init         hidden W           hidden b (no batchnorm)  output W              output b
============ ================== ======================== ===================== ===================
original     N(0,1)             N(0,1)                   N(0,1)                N(0,1)
fix_softmax  N(0,1)             N(0,1)                   0.01 N(0,1)           0
fix_tanh     0.2 N(0,1)         0.01 N(0,1)              0.01 N(0,1)           0
kaiming      gain/sqrt(fan_in)  0                        0.01 N(0,1)           0
============ ================== ======================== ===================== ===================

These are the lecture's steps (``LADDER`` lists the five configurations with their batchnorm
setting). The embedding is N(0,1) in every scheme. With ``final_bn`` the output Linear has no bias
and is initialized like a hidden Linear, and the final BatchNorm's gamma is 0.1 (1 under
"original"). Every scheme draws the same N(0,1) numbers from the same seed, in the same order, and
only scales them, so the configurations differ only by their scales.

Shapes: B batch, T = block_size, V = vocabulary size, D = n_embd, H = n_hidden.
"""
from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np
from numpy.typing import ArrayLike, DTypeLike

from . import _divergence, _kernels, _validate, nn, ops, registry
from . import init as _init
from ._busy import holds_model
from ._divergence import Divergence
from .blocks import Description, structure
from .data import Vocab
from .inference import CHUNK, Plan

if TYPE_CHECKING:
    from .training import TrainState

_M = TypeVar("_M", bound="CharMLP")

__all__ = ["ACTIVATIONS", "INIT_SCHEMES", "LADDER", "CharMLP"]

INIT_SCHEMES = ("original", "fix_softmax", "fix_tanh", "kaiming")
# the activations of fastbn.ops (tanh, relu, leaky_relu, ...): each is a layer of fastbn.nn
ACTIVATIONS = registry.NONLINEARITIES

# The lecture's ladder (part 3): each step fixes one thing; the last adds batch normalization.
LADDER: dict[str, dict[str, Any]] = {
    "original": {"init": "original", "batchnorm": False},
    "fix_softmax": {"init": "fix_softmax", "batchnorm": False},
    "fix_tanh": {"init": "fix_tanh", "batchnorm": False},
    "kaiming": {"init": "kaiming", "batchnorm": False},
    "batchnorm": {"init": "kaiming", "batchnorm": True},
}

# scale of N(0,1) for: hidden W (None = Kaiming), hidden b, output W, output b
_SCALES: dict[str, tuple[float | None, float, float, float]] = {
    "original": (1.0, 1.0, 1.0, 1.0),
    "fix_softmax": (1.0, 1.0, 0.01, 0.0),
    "fix_tanh": (0.2, 0.01, 0.01, 0.0),
    "kaiming": (None, 0.0, 0.01, 0.0),
}

MAX_SAMPLE_LEN = 50
_LAYER_STATE = ("out", "dout", "_cache")      # what a forward/backward leaves on a layer


def _as_vocab(vocab: Vocab | str) -> Vocab:
    if isinstance(vocab, Vocab):
        return vocab
    if isinstance(vocab, str):
        return Vocab.from_chars(vocab)
    raise TypeError(f"vocab must be a fastbn.data.Vocab or its characters as a string "
                    f"(e.g. '.abc'), got {type(vocab).__name__}")


class EvalModel:
    """What a model does in eval mode, through its inference plan (``plan()``): its parameters
    and running statistics, and the bodies of ``evaluate`` and ``sample`` (each model's own
    method, with its docstring, calls them). ``CharMLP`` adds training to it;
    ``fastbn.folding.FoldedCharMLP``, inference only, nothing."""

    folded = False          # a fastbn.folding.FoldedCharMLP (inference only) says True
    train_state: TrainState | None      # set by fastbn.load: the checkpoint's training state
    vocab: Vocab
    block_size: int
    dtype: np.dtype[Any]
    config: dict[str, Any]
    meta: dict[str, Any]
    net: nn.Sequential
    layers: list[nn.Module]

    def plan(self, rows: int | None = None) -> Plan:
        raise NotImplementedError

    def named_parameters(self) -> list[tuple[str, np.ndarray]]:
        """[(name, array)]: the net's parameter names (``"0.weight"`` is the embedding)."""
        return self.net.named_parameters()

    def parameters(self) -> list[np.ndarray]:
        """The parameter arrays, aligned with ``grads()``; update them in place."""
        return self.net.parameters()

    def num_parameters(self) -> int:
        return int(sum(p.size for p in self.parameters()))

    def batchnorms(self) -> list[nn.BatchNorm1d]:
        """The BatchNorm1d layers, in order."""
        return [layer for layer in self.layers if isinstance(layer, nn.BatchNorm1d)]

    def named_buffers(self) -> list[tuple[str, np.ndarray]]:
        """[(name, array)] of the running statistics: ``"2.running_mean"``, ``"2.running_var"``."""
        return [(f"{i}.{n}", getattr(layer, n)) for i, layer in enumerate(self.layers)
                if isinstance(layer, nn.BatchNorm1d) for n in ("running_mean", "running_var")]

    def _check_X(self, X: ArrayLike) -> np.ndarray:
        X = np.asarray(X)
        if X.ndim != 2 or X.shape[1] != self.block_size:
            raise ValueError(f"X must have shape (B, {self.block_size}) (block_size "
                             f"{self.block_size}), got {X.shape}")
        return X

    def _evaluate(self, X: ArrayLike, Y: ArrayLike, chunk: int) -> float:
        """``evaluate``, for every model: through ``self.plan()``."""
        X = self._check_X(X)
        _divergence.check_finite(self, "evaluate")
        return self.plan(X.shape[0]).loss(X, Y, chunk)

    def _sample(self, n: int, seed: int | np.random.Generator | None, max_len: int) -> list[str]:
        """``sample``, for every model: through ``self.plan()``."""
        n = _validate.positive_int(n, "n")
        max_len = _validate.positive_int(max_len, "max_len")
        _divergence.check_finite(self, "sample")
        rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
        ctx = np.zeros((n, self.block_size), dtype=np.int64)
        out = np.zeros((n, max_len), dtype=np.int64)
        done = np.zeros(n, dtype=bool)
        forward = self.plan(n * max_len).logits_fn(n)   # the model is left as it is (evaluate)
        for t in range(max_len):
            logits = forward(ctx).astype(np.float64)
            p = np.exp(logits - logits.max(1, keepdims=True))
            cdf = np.cumsum(p, axis=1)
            u = rng.random(n) * cdf[:, -1]
            ix = np.minimum((cdf <= u[:, None]).sum(1), cdf.shape[1] - 1)
            ix[done] = 0
            out[:, t] = ix
            done |= ix == 0
            if done.all():
                break
            ctx = np.concatenate([ctx[:, 1:], ix[:, None]], axis=1)
        names = []
        for row in out:
            ids = row.tolist()
            ids = ids[:ids.index(0)] if 0 in ids else ids
            names.append(self.vocab.decode(ids))
        return names

    def _tree(self) -> str:
        """The layers' rows of the repr: the Sequential's, with their shapes and counts."""
        return repr(self.net).split("\n", 1)[1]          # the Sequential's rows and ")"


class CharMLP(EvalModel):
    """Character-level MLP language model over ``fastbn.nn`` layers (no autograd).

    Parameters
    ----------
    vocab : fastbn.data.Vocab or str
        The vocabulary (``dataset.vocab``, or its characters, token ``"."`` first).
    block_size : int
        T, characters of context.
    n_embd, n_hidden, n_layers : int
        Embedding size D, hidden width H, number of [Linear -> BatchNorm1d -> activation] blocks.
    batchnorm : bool
        BatchNorm1d after each hidden Linear (which then has no bias: BN subtracts it anyway).
    final_bn : bool
        BatchNorm1d on the logits (the lecture's deep net); the output Linear then has no bias.
    bn_momentum, bn_eps : float
        Of every BatchNorm1d. momentum is the weight of the new batch (torch's meaning); 0.001 is
        the lecture's choice for batch 32.
    bn_unbiased : bool
        Of every BatchNorm1d: False (default) normalizes with the biased batch variance, as torch;
        True with the Bessel-corrected one (/ (B - 1)), as the makemore lecture's code does
        (``fastbn.ops.batchnorm_forward``). The running statistics are the same either way.
    activation : str
        One of ``ACTIVATIONS`` ("tanh", "relu", "leaky_relu", ...).
    negative_slope : float
        Of leaky_relu. (The options of an activation that CharMLP has no parameter for keep
        their defaults.)
    init : one of ``INIT_SCHEMES``
        See the module docstring.
    gain : float or None
        Of the "kaiming" scheme: hidden W ~ N(0,1) * gain / sqrt(fan_in). None (the default) is
        ``fastbn.init.calculate_gain(activation)`` (with negative_slope for leaky_relu), 5/3 for
        tanh; the lecture's deep net tries 1, 5/3 and 3. Only the "kaiming" scheme has a gain.
    dtype : float32 or float64
    seed : int, numpy.random.Generator or None
        The same seed gives identical parameters.

    Attributes
    ----------
    layers : list of fastbn.nn.Module
        Embedding, then per block Linear, [BatchNorm1d,] activation, then the output Linear
        [and BatchNorm1d]; each keeps its last output as ``.out`` for diagnostics.
    net : fastbn.nn.Sequential
        The same layers; parameter names are its names (``"1.weight"``, ``"2.gamma"``, ...).
    config : dict
        The constructor arguments (minus seed), as saved in checkpoints.
    """

    def __init__(self, vocab: Vocab | str, block_size: int = 3, n_embd: int = 10,
                 n_hidden: int = 200, n_layers: int = 1, *,
                 batchnorm: bool = True, final_bn: bool = False, bn_momentum: float = 0.001,
                 bn_eps: float = 1e-5, bn_unbiased: bool = False, activation: str = "tanh",
                 negative_slope: float = 0.01, init: str = "kaiming", gain: float | None = None,
                 dtype: DTypeLike = np.float32,
                 seed: int | np.random.Generator | None = None) -> None:
        self.vocab = _as_vocab(vocab)
        V = self.vocab.size
        T = _validate.positive_int(block_size, "block_size")
        D = _validate.positive_int(n_embd, "n_embd")
        H = _validate.positive_int(n_hidden, "n_hidden")
        L = _validate.positive_int(n_layers, "n_layers")
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {ACTIVATIONS}, got {activation!r}")
        if init not in INIT_SCHEMES:
            raise ValueError(f"init must be one of {INIT_SCHEMES}, got {init!r}")
        dt = _validate.float_dtype(dtype)
        bn_momentum = _validate.momentum(bn_momentum, "bn_momentum")
        bn_eps = _validate.eps(bn_eps, "bn_eps")
        _validate.unbiased(bn_unbiased, "bn_unbiased")
        negative_slope = _validate.negative_slope(negative_slope)
        if gain is not None:
            if init != "kaiming":
                raise ValueError(f"gain applies to the 'kaiming' init only, not {init!r}")
            gain = _validate.finite_positive(gain, "gain")
        self.config: dict[str, Any] = {"block_size": T, "n_embd": D, "n_hidden": H, "n_layers": L,
                       "batchnorm": bool(batchnorm), "final_bn": bool(final_bn),
                       "bn_momentum": bn_momentum, "bn_eps": bn_eps,
                       "bn_unbiased": bool(bn_unbiased), "activation": activation,
                       "negative_slope": negative_slope, "init": init, "gain": gain}
        self.dtype = dt
        self.block_size = T

        rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
        # the activation's options that are CharMLP parameters (negative_slope), by name
        act_options = {o: self.config[o] for o in registry.ACTIVATIONS[activation].options
                       if o in self.config}
        if gain is None:
            gain = _init.calculate_gain(activation, *act_options.values())
        w_scale, b_scale, out_w_scale, out_b_scale = _SCALES[init]
        dummy = np.random.default_rng(0)   # nn layers draw their own init; we overwrite it

        def linear(fan_in: int, fan_out: int, w_std: float,
                   b_std: float | None = None) -> nn.Linear:
            """A Linear with W ~ N(0,1) * w_std and, unless b_std is None, b ~ N(0,1) * b_std."""
            layer = nn.Linear(fan_in, fan_out, bias=b_std is not None, dtype=dt, generator=dummy)
            layer.weight[...] = rng.standard_normal(layer.weight.shape) * w_std
            if b_std is not None:
                # bias=True above: bias is an array (nn.Linear types it Optional)
                layer.bias[...] = rng.standard_normal(fan_out) * b_std  # type: ignore[index]
            return layer

        def hidden_std(fan_in: int) -> float:
            return _init.kaiming_std(fan_in, gain) if w_scale is None else w_scale

        def bn(dim: int) -> nn.BatchNorm1d:
            return nn.BatchNorm1d(dim, eps=bn_eps, momentum=bn_momentum,
                                  unbiased=bool(bn_unbiased), dtype=dt)

        def act() -> nn.Module:
            return registry.ACTIVATIONS[activation].layer(**act_options)

        layers: list[nn.Module] = [nn.Embedding(V, D, dtype=dt, generator=rng)]
        fan_in = T * D
        for _ in range(L):
            layers.append(linear(fan_in, H, hidden_std(fan_in), None if batchnorm else b_scale))
            if batchnorm:
                layers.append(bn(H))
            layers.append(act())
            fan_in = H
        if final_bn:
            layers.append(linear(H, V, hidden_std(H)))
            last = bn(V)
            last.gamma *= 1.0 if init == "original" else 0.1
            layers.append(last)
        else:
            layers.append(linear(H, V, out_w_scale, out_b_scale))
        self.net = nn.Sequential(*layers)
        self.layers = self.net.layers
        self._ce_cache: _kernels.Cache | None = None
        # train_step's copies of the running statistics
        self._buffer_copies: list[np.ndarray] = []
        self.meta: dict[str, Any] = {}
        # why the last train_step diverged (see train_step)
        self.divergence: Divergence | None = None

    # ------------------------------------------------------------------------------------------
    # parameters and mode

    def grads(self) -> list[np.ndarray]:
        """The gradient arrays of the last ``backward()``, aligned with ``parameters()``.

        Returns
        -------
        list of numpy.ndarray
            One array per parameter, of its shape.
        """
        return self.net.grads()

    def blocks(self) -> Description:
        """The model's description (``fastbn.blocks``): its Embedding, its hidden blocks
        (Linear, BatchNorm1d or None, activation) and its output block (Linear, BatchNorm1d or
        None), each part naming its layer and the layer's index. What the fused step, the
        inference plan and folding read, rather than the layer list.

        Returns
        -------
        fastbn.blocks.Description
            The parts, in order.
        """
        return structure(self.layers)

    @property
    def training(self) -> bool:
        """Whether the model is in training mode (its layers').

        Returns
        -------
        bool
            True in training mode.
        """
        return self.net.training

    def train(self: _M, mode: bool = True) -> _M:
        """Training mode: BatchNorm normalizes with batch statistics and updates its buffers.

        Parameters
        ----------
        mode : bool, default True
            Training mode, or eval mode with False.

        Returns
        -------
        CharMLP
            The model itself.
        """
        self.net.train(mode)
        return self

    def eval(self: _M) -> _M:
        """Eval mode: BatchNorm normalizes with its running statistics and changes nothing.

        Returns
        -------
        CharMLP
            The model itself.
        """
        return self.train(False)

    def zero_grad(self) -> None:
        """Set every gradient to 0, in place.

        The arrays of ``grads()`` stay the same objects.
        """
        self.net.zero_grad()

    # ------------------------------------------------------------------------------------------
    # forward / backward / one SGD step

    def logits(self, X: ArrayLike) -> np.ndarray:
        """Logits (B, V) of contexts X (B, T), in the current mode.

        Parameters
        ----------
        X : array_like of int, shape (B, T)
            Contexts (character ids).

        Returns
        -------
        numpy.ndarray, shape (B, V)
            The logits, of the model's dtype; the layers keep what ``backward`` needs.
        """
        return self.net(self._check_X(X))

    def forward(self, X: ArrayLike, Y: ArrayLike) -> np.floating[Any]:
        """Mean cross-entropy of predicting Y (B,) from contexts X (B, T), in the current mode.

        Returns the loss as a NumPy scalar of the model's dtype and keeps what ``backward`` needs.

        Parameters
        ----------
        X : array_like of int, shape (B, T)
            Contexts (character ids).
        Y : array_like of int, shape (B,)
            The next characters.

        Returns
        -------
        numpy.floating
            The mean cross-entropy.
        """
        loss, self._ce_cache = ops.cross_entropy_forward(self.logits(X), Y)
        return loss

    def backward(self, dloss: float = 1.0) -> None:
        """Backpropagate from the loss of the last ``forward``; fills ``grads()``.

        Parameters
        ----------
        dloss : float, default 1.0
            The gradient of the objective with respect to the loss.
        """
        if self._ce_cache is None:
            raise RuntimeError("CharMLP.backward called before forward")
        self.net.backward(ops.cross_entropy_backward(dloss, self._ce_cache))

    @holds_model("CharMLP.train_step")
    def train_step(self, X: ArrayLike, Y: ArrayLike, lr: float) -> float:
        """One step of minibatch SGD: forward, backward, ``p -= lr * grad``. Returns the loss.

        Divergence, as ``fastbn.train`` defines it and the fused step (``fastbn.fused``) detects
        it: ``self.divergence`` is None after a good step, else a ``Divergence`` saying what was
        not finite. A non-finite pre-activation of a hidden layer (the input of its
        nonlinearity), logit or loss (in the model's dtype) returns before backward: nothing is
        updated (the running statistics included; ``divergence.applied`` is False). A step
        that leaves a parameter or a running statistic non-finite is applied (``applied`` is
        True). The checks cost one compiled pass over the pre-activations, the logits and the
        running statistics, and a flag the compiled update raises as it writes.

        The model must be in training mode (batch statistics, running statistics updated): in
        eval mode this raises RuntimeError rather than train with frozen batch norm.

        The layers run one by one, as ``forward`` and ``backward`` run them, so their ``.out``
        and ``.dout`` are this step's afterwards. The update is one compiled call over all the
        parameters (``fastbn._kernels.sgd_update``) for a Python float ``lr``: NumPy's
        ``p -= lr * g``, bit for bit; NumPy does it for any other ``lr``.

        Parameters
        ----------
        X : array_like of int, shape (B, T)
            Contexts (character ids).
        Y : array_like of int, shape (B,)
            The next characters.
        lr : float
            The learning rate.

        Returns
        -------
        float
            The minibatch's loss before the update.
        """
        if not self.training:
            raise RuntimeError(
                "train_step needs the model in training mode, and it is in eval mode (batch norm "
                "would normalize with its running statistics and never update them): call "
                "model.train() first")
        # BatchNorm updates its running statistics in forward: keep them to restore
        self.divergence = None
        buffers = self._buffers()
        saved = self._copy_buffers(buffers) if buffers else None
        loss = float(self.forward(X, Y))
        # the forward's values, then the running statistics it updated: one compiled call
        pre = self._preactivations()
        k = _kernels.all_finite([self.layers[i].out for i in pre] + [self.layers[-1].out]
                                + buffers)
        if 0 <= k <= len(pre) or not math.isfinite(loss):
            for b, old in zip(buffers, saved or ()):
                b[...] = old
            self.divergence = (_divergence.preactivation(self, pre[k]) if 0 <= k < len(pre)
                               else _divergence.logits(self) if k == len(pre)
                               else _divergence.loss(self, loss))
            return loss
        self.backward()
        params: list[np.ndarray] = []
        grads: list[np.ndarray] = []
        self.net._collect(params, grads)
        finite = _kernels.sgd_update_finite(params, grads, lr)
        if finite is None:
            for p, g in zip(params, grads):
                p -= lr * g
            finite = _kernels.all_finite(params) < 0
        if k >= 0 or not finite:
            self.divergence = _divergence.after_update(self)
        return loss

    def _preactivations(self) -> list[int]:
        """The indices of the layers whose output is a pre-activation (the layer before each
        nonlinearity), computed again when the layer list changes."""
        key = (id(self.layers), len(self.layers))
        cached = getattr(self, "_preact_cache", None)
        if cached is None or cached[0] != key:
            cached = self._preact_cache = (key, _divergence.preactivation_layers(self))
        return cached[1]

    def _buffers(self) -> list[np.ndarray]:
        """The running statistics, as ``named_buffers`` lists them (without the names)."""
        return [b for layer in self.layers if isinstance(layer, nn.BatchNorm1d)
                for b in (layer.running_mean, layer.running_var)]

    def _copy_buffers(self, buffers: list[np.ndarray]) -> list[np.ndarray]:
        """Copies of ``buffers``, in arrays the model keeps for the purpose (one compiled copy
        when they are as the last step left them)."""
        copies = getattr(self, "_buffer_copies", [])
        if not _kernels.copy_arrays(buffers, copies):
            copies = self._buffer_copies = [np.array(b, order="C") for b in buffers]
        return copies

    # ------------------------------------------------------------------------------------------
    # evaluation, calibration, sampling

    def _chunks(self, n: int, chunk: int) -> Iterator[tuple[int, int]]:
        chunk = _validate.positive_int(chunk, "chunk")
        return ((i, min(i + chunk, n)) for i in range(0, n, chunk))

    @contextlib.contextmanager
    def _aside(self) -> Iterator[None]:
        """Run the net in eval mode, then put back the mode and what the layers hold: their
        ``.out``, ``.dout`` and caches, and the loss's cache. So calibrating between a training
        step and a look at the activations (or a ``backward``) changes nothing there.
        (``evaluate`` and ``sample`` do not need this: they run a ``Plan``, not the layers.)"""
        kept = [(m, {k: v for k, v in vars(m).items() if k in _LAYER_STATE})
                for m in [self.net, *self.layers]]
        ce_cache, was = self._ce_cache, self.training
        self.eval()
        try:
            yield
        finally:
            self.train(was)
            for m, attrs in kept:
                for k in _LAYER_STATE:
                    if k in attrs:
                        setattr(m, k, attrs[k])
                    else:
                        vars(m).pop(k, None)
            self._ce_cache = ce_cache

    def plan(self, rows: int | None = None) -> Plan:
        """``fastbn.inference.Plan(self)``: the eval-mode function of the model as it is now (a
        snapshot of its arrays), for inference. ``rows``, the rows of the call it is for, is for
        a folded model (``fastbn.folding``), which decides its table by it.

        Parameters
        ----------
        rows : int, optional
            The rows of the calls it will serve (read by a folded model only).

        Returns
        -------
        fastbn.inference.Plan
            A frozen copy of the model's eval-mode function.
        """
        return Plan(self)

    def evaluate(self, X: ArrayLike, Y: ArrayLike, chunk: int = CHUNK) -> float:
        """Mean cross-entropy over all of (X, Y) in eval mode (running statistics), in chunks of
        ``chunk`` rows. Returns a Python float.

        Through the inference path: ``self.plan()``, made per call (``fastbn.inference``), runs
        the layers' kernels without what training keeps. Nothing on the model changes, in either
        mode: not the mode, not the layers' ``.out``, ``.dout`` and caches (those of the last
        training step), not the running statistics. The loss is the layers' eval-mode loss up to
        rounding: a chunk's GEMMs may round differently from those of another row count, and
        each chunk's mean is kept in float64.

        A model whose parameters or running statistics are not finite (a diverged training run
        leaves one) is refused with a ValueError (checked once per call).

        Parameters
        ----------
        X : array_like of int, shape (B, T)
            Contexts (character ids).
        Y : array_like of int, shape (B,)
            The next characters.
        chunk : int, optional
            Rows per pass.

        Returns
        -------
        float
            The mean cross-entropy.
        """
        return self._evaluate(X, Y, chunk)

    def calibrate_batchnorm(self, X: ArrayLike, chunk: int = 16384) -> None:
        """Set every BatchNorm's running statistics from all of X (the lecture's "calibrate the
        batch norm at the end of training").

        running_mean = mean of the layer's input over X; running_var = its unbiased variance
        (fastbn's convention for running_var). Layers are calibrated in order: the input of a
        BatchNorm is computed in eval mode with the earlier BatchNorms already calibrated. Sums
        are in float64 (per chunk mean and M2, combined as Chan et al.).

        Parameters
        ----------
        X : array_like of int, shape (N, T)
            Contexts, usually the whole training split.
        chunk : int, default 16384
            Rows per pass.
        """
        X = self._check_X(X)
        N = X.shape[0]
        if N < 2:
            raise ValueError(f"calibration needs at least 2 examples, got {N}")
        with self._aside():
            for k, layer in enumerate(self.layers):
                if not isinstance(layer, nn.BatchNorm1d):
                    continue
                n, mean, m2 = 0, 0.0, 0.0
                for a, b in self._chunks(N, chunk):
                    h = X[a:b]
                    for prev in self.layers[:k]:
                        h = prev(h)
                    h = h.astype(np.float64)
                    nb, mb = b - a, h.mean(0)
                    m2b = ((h - mb) ** 2).sum(0)
                    delta = mb - mean
                    tot = n + nb
                    mean = mean + delta * nb / tot
                    m2 = m2 + m2b + delta**2 * n * nb / tot
                    n = tot
                layer.running_mean[...] = mean
                layer.running_var[...] = m2 / (n - 1)

    def sample(self, n: int = 20, seed: int | np.random.Generator | None = None,
               max_len: int = MAX_SAMPLE_LEN) -> list[str]:
        """Generate ``n`` names in eval mode (running statistics), through the inference path
        (``self.plan()``, as ``evaluate``: nothing on the model changes).

        All n names are generated together, one character per step: the next id is drawn from
        softmax(logits) by inverse CDF with one uniform number per name from
        ``numpy.random.default_rng(seed)``; a name ends at the token ``"."`` or after ``max_len``
        characters. Same model, n and seed -> same names. Returns a list of str (token removed).

        As ``evaluate``, refuses (ValueError) a model whose parameters or running statistics are
        not finite (checked once per call).

        Parameters
        ----------
        n : int, default 20
            How many names.
        seed : int, numpy.random.Generator or None, optional
            The draws' source.
        max_len : int, optional
            The longest name.

        Returns
        -------
        list of str
            The names.
        """
        return self._sample(n, seed, max_len)

    def __repr__(self) -> str:
        """A torch-like tree: the layers with their shapes and parameter counts (the full
        configuration is ``model.config``)."""
        mode = "training" if self.training else "eval"
        return (f"CharMLP(vocab={self.vocab.size}, {self.num_parameters():,} parameters, "
                f"{self.dtype.name}, {mode} mode\n{self._tree()}")
