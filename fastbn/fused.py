"""The fused training step and the compiled training loop of the BN-MLP.

``FusedTrainer(model, batch_size)`` binds a :class:`fastbn.CharMLP` to the C implementation in
``csrc/fused.c``: one call runs forward, backward, the SGD update and the running-statistics update
of a minibatch with the GIL released (``step``), or many steps, drawing minibatches with a seeded
PCG32 generator, without returning to Python (``run``). It computes what the per-layer path
(``CharMLP.train_step``) computes, in the same order; tanh and exp use vectorizable
approximations (within 6 ulp of exact in float32, 2 in float64) and sums are blocked, so the two
paths agree to float tolerance, not bit for bit.

The trainer works on the model's own arrays (parameters, gradients, running statistics), so the
model always holds the current state and can be evaluated, sampled or saved between calls.
Inside a call the output weight is used transposed, ``(V, H)``, whose GEMMs run faster: each
call copies ``Wout`` into that layout at its start and back (with ``dWout``) at its end.
Workspaces are allocated once, for one batch size, 64-byte aligned, from the one list of the
step's arrays (``FB_NET_ARRAYS`` in ``csrc/fused.h``, read as ``_kernels.fused_layout``), which
the model's arrays are checked against too. Supported models: batch norm on, with either variance
(``CharMLP(bn_unbiased=...)``: torch's biased one or the lecture's Bessel-corrected one, one
scalar in the normalization and one in the backward), tanh, no final batch norm, any number of
hidden layers up to ``MAX_LAYERS`` (the default model is one); :func:`supports` says why another
model is not.

``FusedTrainer.time_phases`` runs ``run`` with each phase of the compiled step timed
(``PHASES``: the first layer, batch norm and tanh, the output layer, softmax and the loss, each
forward and backward, SGD, ...); ``bench/phases.py`` in the repository prints the shares.

Divergence (``fastbn.train``'s definition, the per-layer path's too): the compiled step raises
flags in the passes that already touch the values, at no extra pass: the batch-norm + tanh pass
checks every pre-activation, the softmax's max pass every logit, the running-statistics update
and SGD every value they write (``x - x`` is 0 for a finite x and NaN otherwise: the comparisons
with 0 are ANDed, or, in the batch-norm pass, summed per column; both vectorize). A non-finite
pre-activation, logit or loss (rounded to the model's dtype) stops the step before its update; a
parameter or running statistic left non-finite stops the loop after it. ``FusedTrainer.divergence``
says which.

Minibatch rows come from :class:`BatchSampler` (PCG32, unbiased bounded integers), which the
per-layer training path uses too, so both paths see the same minibatches for the same seed.

Threads. The compiled code runs with the GIL released, so other threads run meanwhile. What it
indexes with is private to the call: ``step`` and ``loss`` gather ``X[rows]`` and ``Y[rows]``
into fresh arrays, ``run`` copies ``X`` and ``Y`` (copied and checked in one pass: 0.4 ms per
call for the 182,625 x 3 names training set, 0.1 ms more than checking alone took), and the ids
are checked in the copies, so another thread writing the caller's arrays during the call changes
nothing it reads. A trainer's
workspaces serve one call at a time: calls on one trainer from several threads are serialized
(a lock per trainer), each one whole. A sampler is locked around every draw, including those of
``run``, which holds it for the whole loop. Two trainers of one model cannot run at once: the second
call, from another thread, raises RuntimeError (one model trains in one thread at a time).
"""
from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from . import _arrays, _divergence, _validate
from . import _kernels as K
from ._busy import training_model
from .blocks import structure
from .inference import table_pays

if TYPE_CHECKING:
    from .model import CharMLP

__all__ = ["FusedTrainer", "BatchSampler", "supports", "MAX_LAYERS", "PHASES"]

MAX_LAYERS = K.MAX_LAYERS
# the phases of the compiled step, in their order, as FusedTrainer.time_phases reports them
# (FB_PHASES in csrc/fused.h)
PHASES = K.PHASES


class BatchSampler:
    """Seeded minibatch rows: PCG32 in compiled code, uniform over [0, n), with replacement.

    ``state`` (2,) uint64 is the whole generator state: copy it to checkpoint; to resume, write
    into it or assign it (an assigned array is copied: two samplers never share a state).

    Thread-safe as NumPy's bit generators are: ``lock`` (a ``threading.Lock``) is held around
    every draw, ``FusedTrainer.run``'s included, so threads sharing a sampler get whole draws, each
    a piece of the one sequence, and none is lost. Hold it yourself to read or write ``state``
    while other threads draw.

    Parameters
    ----------
    seed : int, default 0
        The generator's seed.
    """

    def __init__(self, seed: int = 0) -> None:
        seed = int(seed)
        if not 0 <= seed < 2**64:
            raise ValueError(f"seed must be in [0, 2**64), got {seed}")
        self.lock = threading.Lock()
        self._state = np.zeros(2, dtype=np.uint64)
        K.pcg32_seed(self._state, np.uint64(seed))

    @property
    def state(self) -> NDArray[np.uint64]:
        """The generator state, (2,) uint64 (this sampler's own array)."""
        return self._state

    @state.setter
    def state(self, value: ArrayLike) -> None:
        v = np.asarray(value)
        if v.dtype != np.uint64 or v.shape != (2,):
            raise ValueError(f"the sampler state must be a uint64 array of shape (2,), got "
                             f"{v.dtype} of shape {v.shape}")
        with self.lock:
            self._state = np.array(v, order="C", copy=True)

    def draw(self, n: int, batch_size: int,
             out: NDArray[np.int64] | None = None) -> NDArray[np.int64]:
        """``batch_size`` rows from [0, n) as int64 (into ``out``, (batch_size,), when given).

        Parameters
        ----------
        n : int
            The number of rows to draw from.
        batch_size : int
            How many rows.
        out : numpy.ndarray of int64, shape (batch_size,), optional
            Receives them.

        Returns
        -------
        numpy.ndarray of int64, shape (batch_size,)
            The rows.
        """
        if not 0 < n < 2**32:
            raise ValueError(f"n must be in [1, 2**32), got {n}")
        if out is None:
            out = np.empty(batch_size, dtype=np.int64)
        elif (not isinstance(out, np.ndarray) or out.dtype != np.int64
              or out.shape != (batch_size,) or not out.flags.c_contiguous):
            raise ValueError(f"out must be a C-contiguous int64 array of shape ({batch_size},)")
        with self.lock:
            K.draw_rows(_state(self), int(n), out)
        return out

    # pickle and copy: the state, not the lock
    def __getstate__(self) -> dict[str, Any]:
        return {"state": self._state.copy()}

    def __setstate__(self, d: dict[str, Any]) -> None:
        self.lock = threading.Lock()
        self._state = np.zeros(2, dtype=np.uint64)
        self.state = d["state"]


def _state(sampler):
    """The sampler's PCG32 state, checked: the compiled code reads and writes two uint64."""
    st = getattr(sampler, "state", None)
    if (not isinstance(st, np.ndarray) or st.dtype != np.uint64 or st.shape != (2,)
            or not st.flags.c_contiguous or not st.flags.writeable):
        desc = f"{st.dtype} array of shape {st.shape}" if isinstance(st, np.ndarray) else \
            type(st).__name__
        raise ValueError(f"the sampler state must be a writeable uint64 array of shape (2,), "
                         f"got a {desc}")
    return st


def supports(model: object) -> tuple[bool, str]:
    """``(True, "")`` when the fused path can train ``model``, else ``(False, reason)``.

    Parameters
    ----------
    model : object
        A model, usually a ``CharMLP``.

    Returns
    -------
    ok : bool
        Whether ``FusedTrainer`` can train it.
    reason : str
        Why not, or "".
    """
    cfg = getattr(model, "config", None)
    if cfg is None or not hasattr(model, "layers"):
        return False, "not a fastbn.CharMLP"
    if getattr(model, "folded", False):
        return False, "a folded model (fastbn.fold_batchnorm) is for inference only"
    if not cfg["batchnorm"]:
        return False, "the fused step needs batch norm (batchnorm=True)"
    if cfg["activation"] != "tanh":
        return False, f"the fused step is written for tanh, not {cfg['activation']}"
    if cfg["final_bn"]:
        return False, "the fused step has no final batch norm on the logits"
    if cfg["n_layers"] > MAX_LAYERS:
        return False, f"the fused step takes at most {MAX_LAYERS} hidden layers"
    return True, ""


def _model_arrays(model):
    """The model's arrays in the fused step's terms, from its description
    (``fastbn.blocks.structure``), after checking it is one the step runs; and the hidden
    blocks."""
    d = structure(model.layers)
    hidden, out = d.hidden, d.output.linear.layer
    ok = (len(hidden) == model.config["n_layers"] and out.bias is not None
          and d.output.batchnorm is None
          and all(b.linear.layer.bias is None and b.batchnorm is not None
                  and b.activation is not None and b.activation.activation == "tanh"
                  for b in hidden))
    if not ok:
        raise ValueError("the model's layers are not Embedding, [Linear(no bias), BatchNorm1d, "
                         "Tanh] x n_layers, Linear")
    emb = d.embedding.layer
    a = {"C": emb.weight, "dC": emb.dweight, "Wout": out.weight, "dWout": out.dweight,
         "bout": out.bias, "dbout": out.dbias}
    for key, get in [("W", lambda b: b.linear.layer.weight),
                     ("dW", lambda b: b.linear.layer.dweight),
                     ("gamma", lambda b: b.batchnorm.layer.gamma),
                     ("dgamma", lambda b: b.batchnorm.layer.dgamma),
                     ("beta", lambda b: b.batchnorm.layer.beta),
                     ("dbeta", lambda b: b.batchnorm.layer.dbeta),
                     ("rmean", lambda b: b.batchnorm.layer.running_mean),
                     ("rvar", lambda b: b.batchnorm.layer.running_var)]:
        a[key] = [get(b) for b in hidden]
    return a, hidden


class FusedTrainer:
    """The fused step of one model at one batch size.

    Parameters
    ----------
    model : fastbn.CharMLP
        Its arrays are updated in place by every step.
    batch_size : int
        B of every step (>= 2: batch norm needs two rows).
    table : bool or None
        Compute the embedding and first Linear through the table ``E_t = C @ W_0[t*D:(t+1)*D]``
        (the same arithmetic, summed in another order): cheaper for large batches. None chooses
        by batch size (``fastbn.inference.table_pays(..., training=True)``, the table rule of
        both paths).
    """

    def __init__(self, model: CharMLP, batch_size: int, table: bool | None = None) -> None:
        self.table = table
        ok, why = supports(model)
        if not ok:
            raise ValueError(f"this model cannot use the fused step: {why}")
        B = int(batch_size)
        if B < 2:
            raise ValueError(f"batch_size must be >= 2 with batch norm, got {batch_size}")
        self.model, self.batch_size = model, B
        # of the last step or run (see run)
        self.divergence: _divergence.Divergence | None = None
        self._lock = threading.Lock()            # one call at a time: shared workspaces
        self._loaded: tuple[np.ndarray, np.ndarray] | None = None    # (X, Y) of load_data
        self._bind()

    def _bind(self):
        model, B = self.model, self.batch_size
        arrays, hidden = _model_arrays(model)
        bns = [b.batchnorm.layer for b in hidden]
        dt = model.dtype
        for name, v in arrays.items():
            for arr in (v if isinstance(v, list) else [v]):
                if (not isinstance(arr, np.ndarray) or arr.dtype != dt
                        or not arr.flags.c_contiguous or not arr.flags.writeable):
                    raise ValueError(f"model array {name} must be writeable, C-contiguous {dt}")
        for name in ("C", "Wout"):
            if arrays[name].ndim != 2:
                raise ValueError(f"model array {name} must be 2-D, got shape "
                                 f"{arrays[name].shape}")
        for i, w in enumerate(arrays["W"]):
            if w.ndim != 2:
                raise ValueError(f"model array W[{i}] must be 2-D, got shape {w.shape}")
        V, D = arrays["C"].shape
        T = model.block_size
        H = [w.shape[1] for w in arrays["W"]]
        if getattr(self, "_net", None) is not None and (V, T) != (self._vocab, self._T):
            # the data a call checked (fastbn.train checks its copy once) stays in range
            raise ValueError(f"the model's vocabulary or context changed from V={self._vocab}, "
                             f"T={self._T} to V={V}, T={T}: make a new FusedTrainer")
        if arrays["Wout"].shape[1] != V:
            raise ValueError(f"the embedding has {V} rows but the output layer "
                             f"{arrays['Wout'].shape[1]} classes")
        # (2**30, not 2**31 - 1: the C loops step an int index by up to 64 past a bound)
        if max([B, T * D, V] + H) > 2**30:
            raise ValueError(f"dimensions B={B}, T*D={T * D}, V={V}, H={H} exceed 2**30, the "
                             "limit of the fused step's 32-bit int loops and BLAS")
        # The C step reads every array with the shapes implied by (V, D, T, H), those of the one
        # list of its arrays (csrc/fused.h): a model array replaced by one of another shape would
        # be read out of bounds, so all are checked here (and again where the net is filled)
        layout = K.fused_layout(B, T, D, V, H, dt == np.float64)
        for name, (_, owner, want) in layout.items():
            if owner != "model":
                continue
            got = arrays[name]
            for i, (arr, shape) in enumerate(zip(got, want) if isinstance(got, list)
                                             else [(got, want)]):
                if arr.shape != shape:
                    where = f"{name}[{i}]" if isinstance(got, list) else name
                    raise ValueError(f"model array {where} has shape {arr.shape}, expected "
                                     f"{shape} (V={V}, D={D}, T={T}, H={H})")
        moms = {bn.momentum for bn in bns}
        epss = {bn.eps for bn in bns}
        unbiased = {bn.unbiased for bn in bns}
        if len(moms) != 1 or len(epss) != 1 or len(unbiased) != 1:
            raise ValueError("the fused step needs one momentum, one eps and one variance "
                             "(unbiased or not) for all BatchNorms")
        try:
            _validate.unbiased(next(iter(unbiased)), "BatchNorm unbiased")
        except TypeError as e:
            raise ValueError(str(e)) from None
        _validate.momentum(next(iter(moms)), "BatchNorm momentum")
        _validate.eps(next(iter(epss)), "BatchNorm eps")
        # the workspaces, as the list says, on 64-byte lines (_arrays.aligned_empty)
        for name, (dtype, owner, shape) in layout.items():
            if owner == "work":
                arrays[name] = [_arrays.aligned_empty(s, dtype) for s in shape] \
                    if isinstance(shape, list) else _arrays.aligned_empty(shape, dtype)
        table = self._use_table(B, T, V, D, H[0])
        self._arrays = arrays
        self._rows = np.arange(B)                # the rows of a gathered batch (private)
        self._rows.flags.writeable = False
        self._bound = self._identity()
        self._net = K.FusedNet(arrays, B, T, D, V, H, moms.pop(), epss.pop(), dt == np.float64,
                               table, bool(unbiased.pop()))
        self._vocab, self._T, self._table = V, T, table
        # the model's layer index of each hidden block's BatchNorm1d (its divergences' names)
        self._bn_index = [b.batchnorm.index for b in hidden]

    @property
    def uses_table(self) -> bool:
        """True when the first layer goes through the table (see ``table``)."""
        return self._table

    def _use_table(self, B, T, V, D, H):
        """Whether the first layer goes through the table E_t = C @ W_0[t] (see csrc): ``table``
        if set, else the table rule's training case (``fastbn.inference.table_pays``)."""
        if self.table is not None:
            return bool(self.table)
        return table_pays(T, V, D, H, self.model.dtype.itemsize, rows=B, training=True)

    def _identity(self):
        # each array's identity and layout (an in-place .shape assignment keeps the id), and the
        # BatchNorm settings the C step copied when it was bound
        arrays = self.model.parameters() + [b for _, b in self.model.named_buffers()] + \
            self.model.grads()
        return [(id(a), a.shape, a.strides, a.dtype, a.flags.writeable) for a in arrays] + \
               [(bn.momentum, bn.eps, bn.unbiased) for bn in self.model.batchnorms()]

    def _check_bound(self):
        # arrays replaced on the model (e.g. assigned, not written in place): bind again
        if self._identity() != self._bound:
            self._bind()

    def _data(self, X, Y):
        """Private copies of X (N, T) and Y (N,), the data of ``run``: read-only, C-contiguous
        int64, every id in [0, V), checked in the copies (see the module docstring)."""
        what = f"the vocabulary has {self._vocab} ids"
        X = _arrays.index_array("X", X, self._vocab, what)
        Y = _arrays.index_array("Y", Y, self._vocab, what)
        self._check_data(X, Y)
        return X, Y

    def _check_data(self, X, Y):
        if X.ndim != 2 or X.shape[1] != self._T or Y.shape != (X.shape[0],) or X.shape[0] == 0:
            raise ValueError(f"X must be (N, {self._T}) and Y (N,) with N >= 1, got {X.shape} "
                             f"and {Y.shape}")

    def _batch(self, X, Y, rows):
        """The ids of one step, X[rows] (B, T) and Y[rows] (B,) for rows (B,) (default all of
        X): gathered into fresh arrays, checked there."""
        X, Y = np.asarray(X), np.asarray(Y)
        for name, a in (("X", X), ("Y", Y)):
            if a.dtype == np.bool_ or not np.issubdtype(a.dtype, np.integer):
                raise TypeError(f"{name} must be integer ids, got dtype {a.dtype}")
        self._check_data(X, Y)
        N = X.shape[0]
        rows = _arrays.index_array("rows", np.arange(N) if rows is None else rows, N,
                            f"X has {N} rows")
        if rows.shape != (self.batch_size,):
            raise ValueError(f"rows must have shape ({self.batch_size},), got {rows.shape}")
        what = f"the vocabulary has {self._vocab} ids"
        return (_arrays.index_array("X", X[rows], self._vocab, what),
                _arrays.index_array("Y", Y[rows], self._vocab, what))

    def step(self, X: ArrayLike, Y: ArrayLike, lr: float, rows: ArrayLike | None = None) -> float:
        """One SGD step on ``X[rows], Y[rows]`` (rows (B,) int, default all of X when len(X) == B).

        Returns the loss before the update (a float). ``divergence`` is then None, or what
        diverged, as ``CharMLP.train_step`` has it: a non-finite pre-activation, logit or loss
        returns without any update applied; a step that leaves a parameter or a running
        statistic non-finite is applied.

        Parameters
        ----------
        X : array_like of int, shape (N, T)
            The contexts of the training set.
        Y : array_like of int, shape (N,)
            Their next characters.
        lr : float
            The learning rate.
        rows : array_like of int, shape (B,), optional
            The minibatch's rows of X.

        Returns
        -------
        float
            The minibatch's loss before the update.
        """
        lr = _validate.lr(lr)
        with self._lock, training_model(self.model, "FusedTrainer.step"):
            self._check_bound()
            X, Y = self._batch(X, Y, rows)
            loss = self._net.step(X, Y, self._rows, lr)
            self.divergence = self._divergence(loss)
            return loss

    def _divergence(self, loss):
        """The Divergence of the net's last step (None: it did not diverge), in the model's
        terms (the net's hidden layer l is the BatchNorm1d of the model's hidden block l)."""
        kind, layer = self._net.fault
        if kind == "none":
            return None
        if kind == "pre-activation":
            return _divergence.preactivation(self.model, self._bn_index[layer])
        if kind == "logits":
            return _divergence.logits(self.model)
        if kind == "loss":
            return _divergence.loss(self.model, loss)
        return _divergence.after_update(self.model) or \
            _divergence.Divergence("parameter", "a parameter was not finite in the step")

    def run(self, X: ArrayLike, Y: ArrayLike, steps: int, lr: float, sampler: BatchSampler,
            losses: NDArray[np.float64] | None = None) -> tuple[int, NDArray[np.float64]]:
        """``steps`` SGD steps at learning rate ``lr``, minibatches drawn by ``sampler``.

        ``losses`` (steps,) float64 receives each step's loss (allocated when None). Returns
        ``(done, losses)``: done == steps, or the index of the first step that diverged, and
        ``divergence`` says what (see ``step``): the model then holds the state after step
        done - 1, or, when ``divergence.applied``, after step done. The sampler has drawn the
        rows of steps 0 .. done, no more.

        Parameters
        ----------
        X : array_like of int, shape (N, T)
            The contexts of the training set.
        Y : array_like of int, shape (N,)
            Their next characters.
        steps : int
            How many steps.
        lr : float
            The learning rate.
        sampler : BatchSampler
            Draws each step's rows.
        losses : numpy.ndarray of float64, shape (steps,), optional
            Receives each step's loss.

        Returns
        -------
        done : int
            The steps completed (``steps``, or the step that diverged).
        losses : numpy.ndarray of float64, shape (steps,)
            Each step's loss.
        """
        with self._lock, training_model(self.model, "FusedTrainer.run"):
            X, Y = self._data(X, Y)
            return self._run_locked(X, Y, steps, lr, sampler, losses)

    def load_data(self, X: ArrayLike, Y: ArrayLike) -> tuple[NDArray[np.int64],
                                                             NDArray[np.int64]]:
        """Check X (N, T) and Y (N,) as ``run`` does, once, and keep copies of them: the data
        of ``run_loaded``, which then neither checks nor copies them again (``fastbn.train``
        runs its chunks on one data set).

        Parameters
        ----------
        X : array_like of int, shape (N, T)
            The contexts of the training set.
        Y : array_like of int, shape (N,)
            Their next characters.

        Returns
        -------
        X, Y : numpy.ndarray of int64
            Read-only views of the trainer's copies.
        """
        with self._lock:
            X, Y = (np.array(a, copy=True) for a in self._data(X, Y))
            X.flags.writeable = Y.flags.writeable = False
            self._loaded = (X, Y)
            return X.view(), Y.view()     # read-only for good: their base is

    def run_loaded(self, steps: int, lr: float, sampler: BatchSampler,
                   losses: NDArray[np.float64] | None = None) -> tuple[int, NDArray[np.float64]]:
        """``run`` on the data of the last ``load_data``.

        Parameters
        ----------
        steps, lr, sampler, losses
            As ``run``.

        Returns
        -------
        done : int
            As ``run``.
        losses : numpy.ndarray of float64, shape (steps,)
            As ``run``.
        """
        with self._lock, training_model(self.model, "FusedTrainer.run"):
            if self._loaded is None:
                raise RuntimeError("run_loaded needs data: call load_data(X, Y) first")
            return self._run_locked(*self._loaded, steps, lr, sampler, losses)

    def _run_locked(self, X, Y, steps, lr, sampler, losses):
        self._check_bound()
        self._check_data(X, Y)
        if X.shape[0] >= 2**32:
            raise ValueError("at most 2**32 - 1 training examples")
        lr = _validate.lr(lr)
        steps = _validate.nonnegative_int(int(steps), "steps")
        if losses is None:
            losses = np.empty(steps, dtype=np.float64)
        if (not isinstance(losses, np.ndarray) or losses.dtype != np.float64
                or losses.shape != (steps,) or not losses.flags.c_contiguous
                or not losses.flags.writeable):
            raise ValueError(f"losses must be a writeable, contiguous float64 array of shape "
                             f"({steps},)")
        if not isinstance(sampler, BatchSampler):
            raise TypeError(f"sampler must be a fastbn.fused.BatchSampler, got "
                            f"{type(sampler).__name__}")
        with sampler.lock:
            state = _state(sampler)
            self.divergence = None
            if steps == 0:
                return 0, losses
            done = int(self._net.train(X, Y, steps, lr, state, losses))
        if done < steps:
            self.divergence = self._divergence(losses[done])
        return done, losses

    def time_phases(self, X: ArrayLike, Y: ArrayLike, steps: int, lr: float,
                    sampler: BatchSampler) -> tuple[int, NDArray[np.float64], dict[str, float]]:
        """``run``, with the time of each phase of the compiled step measured.

        The steps are those ``run`` takes (they update the model, to the same values: the clock
        reads change no arithmetic). Returns ``(done, losses, seconds)``, ``seconds`` a dict
        ``{phase: total seconds in the call}`` over ``PHASES`` in the order of the step:
        ``transpose`` (Wout into and out of its step layout, once per call), ``batch`` (drawing
        the rows, gathering X[rows] and Y[rows]), then the first layer (the embedding and
        W_0, or the table), the hidden linear layers, batch norm and tanh, the output layer,
        softmax and the loss, each ``_forward`` or ``_backward``, ``running_stats`` and ``sgd``.
        A phase that does not occur (``linear_*`` in a net of one hidden layer) reads 0. Each
        phase costs a clock read, some tens of nanoseconds; bench/phases.py reports the shares.

        Parameters
        ----------
        X, Y, steps, lr, sampler
            As ``run``.

        Returns
        -------
        done : int
            As ``run``.
        losses : numpy.ndarray of float64, shape (steps,)
            As ``run``.
        seconds : dict of str to float
            Seconds per phase.
        """
        with self._lock, training_model(self.model, "FusedTrainer.time_phases"):
            X, Y = self._data(X, Y)
            self._check_bound()
            net = self._net
            net.reset_phase_times()
            net.profile = True
            try:
                done, losses = self._run_locked(X, Y, steps, lr, sampler, None)
            finally:
                net.profile = False
            return done, losses, net.phase_times()

    def loss(self, X: ArrayLike, Y: ArrayLike, rows: ArrayLike | None = None,
             training: bool = False) -> float:
        """The loss on ``X[rows], Y[rows]`` (B rows) without updating anything.

        Parameters
        ----------
        X : array_like of int, shape (N, T)
            The contexts of the training set.
        Y : array_like of int, shape (N,)
            Their next characters.
        rows : array_like of int, shape (B,), optional
            The rows (default all of X when len(X) == B).
        training : bool, default False
            Batch statistics (training mode) instead of the running ones.

        Returns
        -------
        float
            The mean cross-entropy.
        """
        with self._lock:
            self._check_bound()
            X, Y = self._batch(X, Y, rows)
            return self._net.loss(X, Y, self._rows, bool(training))

