"""Batch norm folded for inference: ``fold_batchnorm(model)`` and the folded ``CharMLP``.

In eval mode a BatchNorm1d is an affine map per feature with constants, its running statistics:
``BN(z) = gamma * (z - mean) / sqrt(var + eps) + beta``. After a Linear, ``z = x @ W + b``, the two
are one Linear (as ``torch.nn.utils.fusion.fuse_linear_bn_eval`` computes; weights are stored
(fan_in, fan_out) here, so the scale is per column)::

    s  = gamma / sqrt(running_var + eps)          (fan_out,)
    W' = W * s                                    (fan_in, fan_out): column j scaled by s[j]
    b' = beta + (b - running_mean) * s            (fan_out,); b = 0 when the Linear has no bias

The fold is computed in float64 from the model's arrays and rounded once to the model's dtype.
The folded model skips batch norm's pass over the activations; its inference path
(``fastbn.inference``) also keeps none of what training needs (caches, probabilities, ``.out``),
runs tanh in place and works in cache-sized chunks. It computes the same function as the
unfolded model in eval mode, up to rounding: the fold reorders the arithmetic (float64 logits
agree to ~1e-15 of the logits' scale, float32 to ~1e-6; the tests hold them to 1e-12 and 1e-5
of it).

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
  gives an equivalent copy, inference-only like any folded model: nothing to fold, the same
  numbers bit for bit, and the inference path's speed.
- A folded model is for inference only: it can ``logits``, ``forward`` (the loss), ``evaluate``,
  ``sample``, be saved with ``fastbn.save`` and loaded back folded (the checkpoint records it),
  but ``train_step``, ``backward``, ``train()`` (training mode), ``calibrate_batchnorm``,
  ``fastbn.train`` and ``fastbn train --resume`` refuse it with a ``RuntimeError`` saying to train
  the unfolded model. Its parameters are read-only arrays.
"""
import copy

import numpy as np

from . import nn
from .inference import CHUNK, Plan
from .model import CharMLP

__all__ = ["FoldedCharMLP", "fold_batchnorm", "fold_linear_bn", "folded_layout"]

_REFUSED = ("this CharMLP is folded for inference (its batch norm is folded into the Linears, "
            "by fastbn.fold_batchnorm): it cannot be trained. Train the unfolded model, then "
            "fold it again")


def fold_linear_bn(weight, bias, bn):
    """``(W', b')``: a Linear (``weight`` (I, O), ``bias`` (O,) or None) followed by the eval-mode
    BatchNorm1d ``bn`` (O features), as one Linear (the formula of the module docstring).

    Computed in float64, returned as new arrays of ``weight``'s dtype.
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


def _folded_params(layers):
    """The folded model's parameters, in its ``named_parameters`` order, from the layers of a
    CharMLP (folded or not)."""
    params = []
    for i, layer in enumerate(layers):
        nxt = layers[i + 1] if i + 1 < len(layers) else None
        if isinstance(layer, nn.Embedding):
            params.append(layer.weight.copy())
        elif isinstance(layer, nn.Linear):
            if isinstance(nxt, nn.BatchNorm1d):
                params.extend(fold_linear_bn(layer.weight, layer.bias, nxt))
            else:
                b = np.zeros(layer.weight.shape[1], layer.weight.dtype) if layer.bias is None \
                    else layer.bias.copy()
                params.extend([layer.weight.copy(), b])
        elif isinstance(layer, nn.BatchNorm1d):
            if not isinstance(layers[i - 1] if i else None, nn.Linear):   # not in a CharMLP
                raise ValueError(f"layer {i}, a BatchNorm1d, does not follow a Linear")
    return params


def folded_layout(config, V):
    """[(name, shape)] of a folded model's parameters, for a CharMLP ``config`` and a vocabulary
    of V characters: Embedding ``0.weight`` (V, D); per block a Linear with a bias, then the
    activation; the output Linear with a bias (the names ``named_parameters`` gives them)."""
    T, D, H = config["block_size"], config["n_embd"], config["n_hidden"]
    out, fan_in, i = [("0.weight", (V, D))], T * D, 1
    for _ in range(config["n_layers"]):
        out += [(f"{i}.weight", (fan_in, H)), (f"{i}.bias", (H,))]
        i, fan_in = i + 2, H
    return out + [(f"{i}.weight", (H, V)), (f"{i}.bias", (V,))]


def _frozen(a):
    out = nn._aligned(a)
    out.flags.writeable = False
    return out


class FoldedCharMLP(CharMLP):
    """A ``CharMLP`` with its batch norm folded into its Linears: inference only.

    Made by :func:`fold_batchnorm` (or by ``fastbn.load`` from a folded checkpoint). ``config``
    is the unfolded model's (what it was trained as); ``layers`` are Embedding, per block
    Linear (with a bias) and the activation, and the output Linear (with a bias), their arrays
    read-only. ``logits``, ``evaluate`` and ``sample`` run ``fastbn.inference.Plan``; ``net``
    still runs the layers (``model.net(X)`` fills their ``.out``).

    Parameters
    ----------
    vocab : fastbn.data.Vocab or str
    params : sequence of arrays
        The parameters in ``named_parameters`` order (shapes: :func:`folded_layout`), copied.
    dtype, **config
        As ``CharMLP``'s (``config`` is ``CharMLP.config``).
    """

    folded = True

    def __init__(self, vocab, params, *, dtype=np.float32, **config):
        # CharMLP builds (and checks) the unfolded structure; its layers are then replaced
        super().__init__(vocab, dtype=dtype, seed=0, **config)
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
        layers = []
        for layer in self.layers:
            if isinstance(layer, nn.Embedding):
                layer.weight = _frozen(next(it))
            elif isinstance(layer, nn.Linear):
                if layer.bias is None:
                    layer.bias = nn._aligned(np.zeros(layer.weight.shape[1], self.dtype))
                    layer._param_names = ("weight", "bias")
                layer.weight, layer.bias = _frozen(next(it)), _frozen(next(it))
                layer._init_grads()
            elif isinstance(layer, nn.BatchNorm1d):
                continue
            layers.append(layer)
        self.net = nn.Sequential(*layers)
        self.layers = self.net.layers
        self.net.eval()

    # ------------------------------------------------------------------------------------------
    # inference: through fastbn.inference

    def plan(self):
        """A ``fastbn.inference.Plan`` of this model: its arrays as they are now."""
        return Plan(self)

    def logits(self, X):
        """Logits (B, V) of contexts X (B, T) (the eval-mode logits of the unfolded model)."""
        return self.plan().logits(X)

    def evaluate(self, X, Y, chunk=CHUNK):
        """Mean cross-entropy over all of (X, Y), in chunks of ``chunk`` rows (a Python float).

        Through the inference path: the layers' ``.out`` and caches are not touched.
        """
        return self.plan().loss(X, Y, chunk)

    def _inference_logits(self, rows):
        return self.plan().logits_fn(rows)

    # ------------------------------------------------------------------------------------------
    # no training

    def train(self, mode=True):
        """Eval mode is all a folded model has: ``train()`` (training mode) raises."""
        if mode:
            raise RuntimeError(f"train(): {_REFUSED}")
        return super().train(False)

    def train_step(self, X, Y, lr):
        raise RuntimeError(f"train_step: {_REFUSED}")

    def backward(self, dloss=1.0):
        raise RuntimeError(f"backward: {_REFUSED}")

    def calibrate_batchnorm(self, X, chunk=16384):
        raise RuntimeError("calibrate_batchnorm: this CharMLP is folded (by "
                           "fastbn.fold_batchnorm): its batch norm statistics are part of its "
                           "Linears now. Calibrate the unfolded model, then fold it again")

    def __repr__(self):
        head, tree = super().__repr__().split("\n", 1)
        return f"{head.rsplit(', ', 1)[0]}, folded\n{tree}"     # the mode is always eval


def fold_batchnorm(model):
    """A new, inference-only model: ``model`` with every BatchNorm1d folded into the Linear
    before it (see the module docstring for the formula and the decisions).

    Parameters
    ----------
    model : fastbn.CharMLP
        In either mode (its running statistics are folded); left unchanged. A model without
        batch norm, or already folded, gives an equivalent inference-only copy.

    Returns
    -------
    FoldedCharMLP
        Its ``meta`` is a copy of the model's; its eval-mode logits equal the model's up to
        rounding (to ~1e-15 of the logits' scale in float64, ~1e-6 in float32).
    """
    if not isinstance(model, CharMLP):
        raise TypeError(f"fold_batchnorm expects a fastbn.CharMLP, got {type(model).__name__}")
    folded = FoldedCharMLP(model.vocab, _folded_params(model.layers), dtype=model.dtype,
                           **model.config)
    folded.meta = copy.deepcopy(model.meta)
    return folded
