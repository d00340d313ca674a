"""What counts as a diverged training step, in words both training paths share.

A step diverges when its loss, or an intermediate that feeds the loss, is not finite: the
pre-activation of a hidden layer (the input of its nonlinearity: the batch-norm output with
batch norm, the Linear's output without) or the logits; the step is then not applied. Or when,
after its update, a parameter or a running statistic is not finite; the step is then applied.
The compiled step (``fastbn.fused``) raises flags in the passes that compute these values;
``CharMLP.train_step`` checks them in compiled calls; both describe what they found here, so the
two paths say the same thing about the same step.
"""
from dataclasses import dataclass

import numpy as np

from . import _kernels, nn

__all__ = ["Divergence"]


@dataclass(frozen=True)
class Divergence:
    """Why a training step diverged.

    kind : str
        "pre-activation", "logits" or "loss" (the step was not applied), or "parameter" or
        "running statistic" (it was applied, and left that array non-finite).
    what : str
        The value, in words: "the output of layer 2 (BatchNorm1d), the input of the tanh, is
        not finite", "running_var of layer 2 is not finite", ...
    """

    kind: str
    what: str

    @property
    def applied(self) -> bool:
        """Whether the step's update was applied (the after-update kinds)."""
        return self.kind in ("parameter", "running statistic")


def preactivation(model, index):
    """The pre-activation that is the output of ``model.layers[index]`` is not finite."""
    layer = model.layers[index]
    return Divergence("pre-activation",
                      f"the output of layer {index} ({type(layer).__name__}), the input of the "
                      f"{model.config['activation']}, is not finite")


def logits(model):
    index = len(model.layers) - 1
    return Divergence("logits", f"the logits (the output of layer {index}, "
                                f"{type(model.layers[index]).__name__}) are not finite")


def loss(model, value):
    """The loss, in the model's dtype (a float32 loss beyond its range is inf), is not
    finite."""
    with np.errstate(over="ignore"):
        value = model.dtype.type(value)
    return Divergence("loss", f"the loss is {value}")


def preactivation_layers(model):
    """The indices of the layers whose output is a pre-activation: the layer before each
    nonlinearity (every layer of a CharMLP that is not an Embedding, a Linear or a
    BatchNorm1d)."""
    return [i - 1 for i, layer in enumerate(model.layers)
            if i and not isinstance(layer, (nn.Embedding, nn.Linear, nn.BatchNorm1d))]


def _named_state(model):
    return ([("parameter", n, p) for n, p in model.named_parameters()]
            + [("running statistic", n, b) for n, b in model.named_buffers()])


def first_non_finite(model):
    """(kind, name) of the first parameter (in ``named_parameters`` order), then running
    statistic, that holds a NaN or an infinity; None when all are finite. One compiled call."""
    state = _named_state(model)
    k = _kernels.all_finite([a for _, _, a in state])
    return None if k < 0 else state[k][:2]


def after_update(model):
    """The Divergence of a step that left ``model`` with a non-finite array (None if none)."""
    bad = first_non_finite(model)
    if bad is None:
        return None
    kind, name = bad
    index, attr = name.split(".", 1)
    return Divergence(kind, f"{attr} of layer {index} is not finite")


def check_finite(model, action):
    """Raise ValueError when a parameter or a running statistic of ``model`` is not finite
    (what a diverged training run leaves): ``action`` names what refuses (e.g. "sample")."""
    bad = first_non_finite(model)
    if bad is not None:
        kind, name = bad
        raise ValueError(f"{action}: the model's {kind} {name} holds NaN or infinite values "
                         "(training diverged?); load the last good checkpoint")


def negative_variance(model):
    """The name of the first running_var with a negative entry, or None."""
    for name, b in model.named_buffers():
        if name.endswith("running_var") and np.any(b < 0):
            return name
    return None
