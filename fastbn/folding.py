"""Batch norm folded for inference: ``fold_batchnorm(model)`` and the folded model.

In eval mode a BatchNorm1d is an affine map per feature with constants, its running statistics:
``BN(z) = gamma * (z - mean) / sqrt(var + eps) + beta``. After a Linear, ``z = x @ W + b``, the two
are one Linear (as ``torch.nn.utils.fusion.fuse_linear_bn_eval`` computes; weights are stored
(fan_in, fan_out) here, so the scale is per column)::

    s  = gamma / sqrt(running_var + eps)          (fan_out,)
    W' = W * s                                    (fan_in, fan_out): column j scaled by s[j]
    b' = beta + (b - running_mean) * s            (fan_out,); b = 0 when the Linear has no bias

The fold is computed in float64 from the model's arrays and rounded once to the model's dtype.

Then the embedding and the first Linear, two linear maps in a row, are folded too, into one table
per context position (``fastbn.inference``, the table)::

    Tab[t] = C @ W1'[t*D:(t+1)*D, :]     (V, H), t = 0 .. T-1, and Tab[0] += b1'
    first layer: x0 @ W1' + b1' = sum_t Tab[t][X[:, t]]       (B, H)

so the first layer is T row gathers and adds instead of a gather and a GEMM of depth T*D (D times
fewer operations), at the price of T*V*H entries against the pair's V*D + T*D*H, and of making
the table (T*V*D*H multiply-adds in float64) each time a plan is made: per ``evaluate``,
``logits`` or ``sample`` call, from the model's arrays as they are then. It is not stored: the
parameters, the checkpoint and ``net`` are those of the folded Embedding and Linear. The rule
(``fastbn.inference.table_pays``): the table is used when it has at most 4 times the entries of
the pair, or takes at most 256 KiB, and only by calls of at least 8 V rows (216 for V = 27: a
call of fewer is faster without it). ``fold_batchnorm(model, table=...)`` overrides the rule.
The measurements behind the rule, for several model sizes, are in the benchmarks
(``bench/results/fold_table.md``).

So the folded model skips batch norm's pass over the activations and the first GEMM; its
inference path (``fastbn.inference``, also what ``CharMLP.evaluate`` and ``sample`` run) keeps
none of what training needs (caches, probabilities, ``.out``), runs tanh in place and works in
cache-sized chunks. It computes the same function as the unfolded model in eval mode, up to
rounding: the fold reorders the arithmetic (float64 logits agree to ~1e-15 of the logits' scale,
float32 to ~1e-6, with or without the table; the tests hold them to 1e-12 and 1e-5 of it).

What gets folded. A ``CharMLP``'s layers are Embedding, then per block Linear, BatchNorm1d,
activation, then the output Linear and, with ``final_bn``, a BatchNorm1d on the logits. Every
BatchNorm1d directly follows a Linear (``final_bn``'s follows the output Linear), so every one is
folded into the Linear before it, which gets a bias; the folded model has no batch norm left. (A
BatchNorm1d not after a Linear cannot occur in a CharMLP; ``fastbn.inference.Plan`` would keep
one as its eval-mode affine step.)

Decisions:

- The folded model is a NEW model; the one folded is left as it was, bit for bit (parameters,
  running statistics, mode, layer state).
- A model in training mode is folded all the same, with its running statistics: the folded model
  is the eval-mode function, what ``evaluate`` and ``sample`` of either mode compute. (torch's
  ``fuse_linear_bn_eval`` asserts eval mode instead; here folding changes nothing on the model,
  so there is no mode to get wrong, and a folded model cannot normalize with batch statistics.)
- A model without batch norm (``batchnorm=False`` and no ``final_bn``), or one already folded,
  gives an equivalent copy, inference-only like any folded model: no batch norm to fold, the
  same parameters bit for bit; its embedding and first Linear become a table as any folded
  model's (by the rule), so its logits are the same up to rounding (bit for bit without the
  table).
- A folded model is for inference only, by construction: not a ``CharMLP`` but an object that
  holds the folded parameters and runs them through an inference plan. It can ``logits``,
  ``forward`` (the loss), ``evaluate``, ``sample`` (``CharMLP``'s methods, shared), be saved
  with ``fastbn.save`` and loaded back folded (the checkpoint records it); it has no
  ``train``, ``train_step``, ``backward`` or ``calibrate_batchnorm``, and ``fastbn.train`` and
  ``fastbn train --resume`` refuse it with a ``RuntimeError`` saying to train the unfolded
  model. Its parameters are read-only arrays.
"""
from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any, TypeVar

import numpy as np
from numpy.typing import ArrayLike, DTypeLike

from . import _arrays, _divergence, nn, ops
from .blocks import structure
from .data import Vocab
from .inference import (
    CHUNK,
    TABLE_CACHE_BYTES,
    TABLE_MAX_RATIO,
    TABLE_MIN_ROWS_PER_V,
    Plan,
    table_pays,
)
from .model import MAX_SAMPLE_LEN, CharMLP, EvalModel

_F = TypeVar("_F", bound="FoldedCharMLP")

__all__ = ["FoldedCharMLP", "fold_batchnorm", "fold_linear_bn", "folded_layout"]


def fold_linear_bn(weight: ArrayLike, bias: ArrayLike | None,
                   bn: nn.BatchNorm1d) -> tuple[np.ndarray, np.ndarray]:
    """``(W', b')``: a Linear (``weight`` (I, O), ``bias`` (O,) or None) followed by the eval-mode
    BatchNorm1d ``bn`` (O features), as one Linear (the formula of the module docstring).

    Computed in float64, returned as new arrays of ``weight``'s dtype.

    Parameters
    ----------
    weight : array_like, shape (I, O)
        The Linear's weight.
    bias : array_like, shape (O,), or None
        Its bias.
    bn : fastbn.nn.BatchNorm1d
        The batch norm after it (O features), whose running statistics are folded.

    Returns
    -------
    weight, bias : numpy.ndarray
        ``W'`` (I, O) and ``b'`` (O,).

    Raises
    ------
    ValueError
        When the shapes do not match or a folded value is not finite.
    """
    w = np.asarray(weight)
    O = w.shape[1] if w.ndim == 2 else -1
    if bn.gamma.shape != (O,):
        raise ValueError(f"a BatchNorm1d of {bn.gamma.shape[0]} features cannot fold into a "
                         f"Linear of weight shape {w.shape}")
    f64 = np.float64
    with np.errstate(all="ignore"):                 # checked below, with the reason
        s = bn.gamma.astype(f64) / np.sqrt(bn.running_var.astype(f64) + bn.eps)  # (O,)
        b = np.zeros(O) if bias is None else np.asarray(bias, f64)
        new_w = (w.astype(f64) * s).astype(w.dtype)                               # (I, O)
        new_b = (bn.beta.astype(f64) + (b - bn.running_mean.astype(f64)) * s).astype(w.dtype)
    if not (np.all(np.isfinite(new_w)) and np.all(np.isfinite(new_b))):
        bad = ~np.isfinite(s)
        why = (f"running_var + eps is {bn.running_var[bad][0] + bn.eps:g} for feature "
               f"{int(np.argmax(bad))}" if bad.any() else
               f"the folded values overflow {w.dtype} or the arrays hold NaN or infinities")
        raise ValueError(f"cannot fold this BatchNorm1d into its Linear: {why}")
    return new_w, new_b


def _folded_params(layers: Sequence[nn.Module]) -> list[np.ndarray]:
    """The folded model's parameters, in its ``named_parameters`` order, from the layers of a
    CharMLP (folded or not), by their description (``fastbn.blocks.structure``): the
    embedding, then each block's Linear with its BatchNorm1d folded in (or with its bias, zero
    when it has none)."""
    d = structure(layers)
    params: list[np.ndarray] = [d.embedding.layer.weight.copy()]
    for block in (*d.hidden, d.output):
        lin = block.linear.layer
        if block.batchnorm is not None:
            params.extend(fold_linear_bn(lin.weight, lin.bias, block.batchnorm.layer))
        else:
            b = np.zeros(lin.weight.shape[1], lin.weight.dtype) if lin.bias is None \
                else lin.bias.copy()
            params.extend([lin.weight.copy(), b])
    return params


def folded_layout(config: dict[str, Any], V: int) -> list[tuple[str, tuple[int, ...]]]:
    """[(name, shape)] of a folded model's parameters, for a CharMLP ``config`` and a vocabulary
    of V characters: Embedding ``0.weight`` (V, D); per block a Linear with a bias, then the
    activation; the output Linear with a bias (the names ``named_parameters`` gives them).

    Parameters
    ----------
    config : dict
        A ``CharMLP.config``.
    V : int
        The vocabulary's size.

    Returns
    -------
    list of (str, tuple of int)
        The parameters' names and shapes.
    """
    T, D, H = config["block_size"], config["n_embd"], config["n_hidden"]
    out: list[tuple[str, tuple[int, ...]]] = [("0.weight", (V, D))]
    fan_in, i = T * D, 1
    for _ in range(config["n_layers"]):
        out += [(f"{i}.weight", (fan_in, H)), (f"{i}.bias", (H,))]
        i, fan_in = i + 2, H
    return out + [(f"{i}.weight", (H, V)), (f"{i}.bias", (V,))]


def _frozen(a: np.ndarray) -> np.ndarray:
    out = _arrays.aligned_copy(a)
    out.flags.writeable = False
    return out


class FoldedCharMLP(EvalModel):
    """A ``CharMLP`` with its batch norm folded into its Linears: inference only.

    Made by :func:`fold_batchnorm` (or by ``fastbn.load`` from a folded checkpoint). Not a
    ``CharMLP``: it holds the folded parameters and runs them through an inference plan
    (``fastbn.inference.Plan``), and has what eval needs (``CharMLP``'s ``evaluate``,
    ``sample``, ``named_parameters``, ... : the same methods) and no training method at all
    (no ``train``, ``train_step``, ``backward``, ``calibrate_batchnorm``). ``config`` is the
    unfolded model's (what it was trained as); ``layers`` are Embedding, per block Linear (with
    a bias) and the activation, and the output Linear (with a bias), their arrays read-only.
    ``logits``, ``evaluate`` and ``sample`` run the plan, with the embedding and the first
    Linear as one table when ``table``; ``net`` still runs the layers (``model.net(X)`` fills
    their ``.out``).

    Parameters
    ----------
    vocab : fastbn.data.Vocab or str
    params : sequence of arrays
        The parameters in ``named_parameters`` order (shapes: :func:`folded_layout`), copied.
    dtype, **config
        As ``CharMLP``'s (``config`` is ``CharMLP.config``).
    table : bool or None
        Run the embedding and the first Linear as one table (T, V, H) for inference: True
        always, False never, None (the default) by ``fastbn.inference.table_pays`` (the table's
        size, the call's rows); kept as ``self.table``. ``uses_table(rows)`` says what a call
        of ``rows`` rows runs, ``fold_summary()`` (and the repr) what was folded.
    """

    folded = True

    def __init__(self, vocab: Vocab | str, params: Sequence[np.ndarray], *,
                 dtype: DTypeLike = np.float32, table: bool | None = None,
                 **config: Any) -> None:
        # CharMLP builds (and checks) the unfolded structure, whose layers, folded, are ours
        unfolded = CharMLP(vocab, dtype=dtype, seed=0, **config)
        self.vocab, self.config = unfolded.vocab, unfolded.config
        self.dtype, self.block_size = unfolded.dtype, unfolded.block_size
        self.meta: dict[str, Any] = {}
        layout = folded_layout(self.config, self.vocab.size)
        params = list(params)
        if len(params) != len(layout):
            raise ValueError(f"a folded model of this config has {len(layout)} parameters, got "
                             f"{len(params)}")
        for (name, shape), p in zip(layout, params):
            if not isinstance(p, np.ndarray) or p.shape != shape or p.dtype != self.dtype:
                got = f"{p.dtype} {p.shape}" if isinstance(p, np.ndarray) else type(p).__name__
                raise ValueError(f"parameter {name} must be {self.dtype} of shape {shape}, got "
                                 f"{got}")
        it = iter(params)
        d = unfolded.blocks()
        emb = d.embedding.layer
        emb.weight = _frozen(next(it))
        layers: list[nn.Module] = [emb]
        for block in (*d.hidden, d.output):
            lin = block.linear.layer
            if lin.bias is None:
                lin.bias = _arrays.aligned_copy(np.zeros(lin.weight.shape[1], self.dtype))
                lin._param_names = ("weight", "bias")
            lin.weight, lin.bias = _frozen(next(it)), _frozen(next(it))
            lin._init_grads()
            layers += [lin] if block.activation is None else [lin, block.activation.layer]
        self.net = nn.Sequential(*layers)
        self.layers = self.net.layers
        self.net.eval()
        if table is not None and not isinstance(table, (bool, np.bool_)):
            raise TypeError(f"table must be True, False or None, got {table!r}")
        self.table: bool | None = None if table is None else bool(table)

    @property
    def training(self) -> bool:
        """Always False: eval mode is all a folded model has."""
        return False

    def eval(self: _F) -> _F:
        """Eval mode, which a folded model is always in: returns the model.

        Returns
        -------
        FoldedCharMLP
            The model itself.
        """
        return self

    def _table_dims(self) -> tuple[int, int, int, int]:
        c = self.config
        return c["block_size"], self.vocab.size, c["n_embd"], c["n_hidden"]

    def uses_table(self, rows: int | None = None) -> bool:
        """Whether a call of ``rows`` rows (None: of many rows) runs the table: ``self.table``
        if it was set, else ``fastbn.inference.table_pays``.

        Parameters
        ----------
        rows : int, optional
            The rows of the call.

        Returns
        -------
        bool
            Whether the plan for it runs the table.
        """
        if self.table is not None:
            return self.table
        return table_pays(*self._table_dims(), self.dtype.itemsize, rows)

    def fold_summary(self) -> str:
        """What was folded, in words: the batch norms, and the table or why there is none.

        Returns
        -------
        str
            One line.
        """
        c = self.config
        n_bn = c["n_layers"] * c["batchnorm"] + c["final_bn"]
        bn = (f"{n_bn} BatchNorm1d into the Linear before {'it' if n_bn == 1 else 'each'}"
              if n_bn else "no batch norm to fold")
        T, V, D, H = self._table_dims()
        ratio = T * V * H / (V * D + T * D * H)
        table = f"a table ({T}, {V}, {H}), {_bytes(T * V * H * self.dtype.itemsize)}"
        if self.table is False:
            return f"{bn}; the Embedding and Linear (1) kept apart (table=False)"
        if self.table:
            return f"{bn}; the Embedding and Linear (1) into {table} (table=True)"
        if self.uses_table():
            return (f"{bn}; the Embedding and Linear (1) into {table}, for calls of "
                    f">= {TABLE_MIN_ROWS_PER_V * V:,} rows")
        return (f"{bn}; the Embedding and Linear (1) kept apart ({table}, would have "
                f"{ratio:.1f}x their entries, > {TABLE_MAX_RATIO}, and take > "
                f"{_bytes(TABLE_CACHE_BYTES)})")

    # ------------------------------------------------------------------------------------------
    # inference: through fastbn.inference

    def plan(self, rows: int | None = None) -> Plan:
        """A ``fastbn.inference.Plan`` of this model, its arrays as they are now, for a call of
        ``rows`` rows (None: many): with the embedding and the first Linear as one table when
        ``uses_table(rows)``. ``evaluate`` and ``sample`` run it.

        Parameters
        ----------
        rows : int, optional
            The rows of the call it is for.

        Returns
        -------
        fastbn.inference.Plan
            A frozen copy of the model's function.
        """
        return Plan(self, table=self.uses_table(rows))

    def logits(self, X: ArrayLike) -> np.ndarray:
        """Logits (B, V) of contexts X (B, T) (the eval-mode logits of the unfolded model).

        Parameters
        ----------
        X : array_like of int, shape (B, T)
            Contexts (character ids).

        Returns
        -------
        numpy.ndarray, shape (B, V)
            The logits, of the model's dtype.
        """
        X = self._check_X(X)
        return self.plan(X.shape[0]).logits(X)

    def evaluate(self, X: ArrayLike, Y: ArrayLike, chunk: int = CHUNK) -> float:
        """Mean cross-entropy over all of (X, Y), a Python float: ``CharMLP.evaluate``, through
        this model's plan (the table when ``uses_table(len(X))``).

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

    def sample(self, n: int = 20, seed: int | np.random.Generator | None = None,
               max_len: int = MAX_SAMPLE_LEN) -> list[str]:
        """``n`` names (a list of str): ``CharMLP.sample``, through this model's plan (the
        same names from the same seed as the unfolded model, up to rounding).

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

    def forward(self, X: ArrayLike, Y: ArrayLike) -> np.floating[Any]:
        """Mean cross-entropy of predicting Y (B,) from contexts X (B, T), as ``CharMLP.forward``
        in eval mode computes it from ``logits(X)`` (a NumPy scalar of the model's dtype);
        nothing is kept (there is no backward).

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
        loss, _ = ops.cross_entropy_forward(self.logits(X), Y)
        return loss

    def __repr__(self) -> str:
        """``CharMLP``'s repr with "folded" for the mode (always eval) and what was folded."""
        return (f"CharMLP(vocab={self.vocab.size}, {self.num_parameters():,} parameters, "
                f"{self.dtype.name}, folded\n  folded: {self.fold_summary()}\n{self._tree()}")


def _bytes(n: float) -> str:
    return f"{n / 2**20:.1f} MiB" if n >= 2**20 else f"{n / 2**10:.1f} KiB"


def fold_batchnorm(model: CharMLP | FoldedCharMLP, table: bool | None = None) -> FoldedCharMLP:
    """A new, inference-only model: ``model`` with every BatchNorm1d folded into the Linear
    before it, and for inference its embedding and first Linear folded into a table (see the
    module docstring for the formulas and the decisions).

    Parameters
    ----------
    model : fastbn.CharMLP
        In either mode (its running statistics are folded); left unchanged. A model without
        batch norm, or already folded, gives an equivalent inference-only copy.
    table : bool or None
        Whether the inference path runs the embedding and the first Linear as one table
        (T, V, H): True always, False never, None (the default) when
        ``fastbn.inference.table_pays`` (by the table's size and the rows of a call).

    Returns
    -------
    FoldedCharMLP
        Its ``meta`` is a copy of the model's; its eval-mode logits equal the model's up to
        rounding (to ~1e-15 of the logits' scale in float64, ~1e-6 in float32).

    Raises
    ------
    ValueError
        Naming the array, when a parameter or a running statistic of ``model`` is not finite
        (a diverged training run leaves such a model).
    """
    if not isinstance(model, (CharMLP, FoldedCharMLP)):
        raise TypeError(f"fold_batchnorm expects a fastbn.CharMLP, got {type(model).__name__}")
    # a diverged model: say so, rather than what its NaN does to a folded value
    _divergence.check_finite(model, "fold_batchnorm")
    folded = FoldedCharMLP(model.vocab, _folded_params(model.layers), dtype=model.dtype,
                           table=table, **model.config)
    folded.meta = copy.deepcopy(model.meta)
    return folded
