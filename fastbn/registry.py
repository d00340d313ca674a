"""The activations of ``fastbn.ops``, as the runtime knows them: one entry per nonlinearity with
its ``fastbn.nn`` layer, its Kaiming gain and its flat region.

:class:`Nonlinearity` is what the layers, the model (``CharMLP(activation=...)``),
``fastbn.init.calculate_gain``, ``fastbn.inference`` and the lab (``fastbn.lab.activation_stats``)
read; ``ACTIVATIONS`` maps each name (the op's, ``fastbn.ops.<name>_forward``) to its entry.

The test metadata of every op (sample inputs, the PyTorch equivalent, variants, error inputs, the
benchmark's rows) is ``fastbn._opinfo``, which ``import fastbn`` does not load; its entries of
the activations point at these.
"""
import math
from dataclasses import dataclass

import numpy as np

from . import nn

__all__ = ["ACTIVATIONS", "NONLINEARITIES", "Nonlinearity", "layer_options", "nonlinearity_of"]


@dataclass(frozen=True)
class Nonlinearity:
    """What the layers, the model, ``init`` and the lab need of an activation.

    - ``name``: the op's name (``fastbn.ops.<name>_forward``);
    - ``layer``: its ``fastbn.nn`` class, built as ``layer(**options)`` (the options of the op are
      attributes of the layer, by the same names);
    - ``options``: the names of the op's scalar options, in the forward's order (those of
      ``CharMLP``'s config are passed to the layer);
    - ``gain(*options)``: the Kaiming gain, ``sigma_W = gain / sqrt(fan_in)``;
    - ``flat(t, threshold, **options)``: boolean array, where the output ``t`` sits in the flat
      region (local derivative about 0). ``threshold`` is the lab's tanh threshold on ``|t|`` (0.97
      for "saturated", 0.99 for "dead"); an activation whose derivative varies says its flat
      region by the same gradient factor, ``1 - threshold**2`` (0.059, 0.020);
    - ``flat_text(threshold)``: the flat region in words, for figures and reports.

    Parameters
    ----------
    name : str
        The op's name.
    layer : type
        The ``fastbn.nn`` class.
    gain, flat, flat_text : callable
        As above.
    options : tuple of str, optional
        The names of the op's scalar options.
    """

    name: str
    layer: type
    gain: object
    flat: object
    flat_text: object
    options: tuple = ()


# ----------------------------------------------------------------------------------------------
# gains (Kaiming: keep the second moment of the activations) and flat regions

def _tanh_flat(t, threshold):
    return np.abs(t) > threshold


def _relu_flat(t, threshold):
    return t == 0


def _leaky_relu_flat(t, threshold, negative_slope=0.01):
    return t < 0


def _leaky_relu_gain(negative_slope=0.01):
    return math.sqrt(2.0 / (1 + negative_slope**2))


def _elu_flat(t, threshold, alpha=1.0):
    # for x <= 0 (t <= 0) the derivative is alpha e^x = t + alpha: flat where it is under tanh's
    # factor at |t| = threshold, 1 - threshold**2 (alpha = 1: x < ln 0.059 = -2.83 for 0.97)
    return (t <= 0) & (t + alpha < 1 - threshold**2)


def _elu_gain(alpha=1.0):
    """torch.nn.init.calculate_gain has no ELU. Kaiming's own argument, the one that gives ReLU
    sqrt(2) and leaky ReLU sqrt(2 / (1 + slope**2)): the gain that keeps the second moment of
    unit-normal pre-activations (what batch norm hands the activation), 1 / sqrt(E[elu(z)**2])
    for z ~ N(0, 1), with, from E[e^(kz); z < 0] = e^(k**2/2) Phi(-k),

        E[elu(z)**2] = 1/2 + alpha**2 (e**2 Phi(-2) - 2 e**(1/2) Phi(-1) + 1/2)

    1.2452 for alpha = 1; sqrt(2) at alpha = 0, where ELU is ReLU."""
    def phi(k):                                 # the normal CDF at -k
        return 0.5 * math.erfc(k / math.sqrt(2))
    m2 = 0.5 + alpha**2 * (math.exp(2) * phi(2) - 2 * math.exp(0.5) * phi(1) + 0.5)
    return 1 / math.sqrt(m2)


_ACTIVATIONS = [
    Nonlinearity("tanh", nn.Tanh, lambda: 5.0 / 3, _tanh_flat,
                 lambda threshold: f"|t| > {threshold:g}"),
    Nonlinearity("relu", nn.ReLU, lambda: math.sqrt(2.0), _relu_flat, lambda threshold: "t == 0"),
    Nonlinearity("leaky_relu", nn.LeakyReLU, _leaky_relu_gain, _leaky_relu_flat,
                 lambda threshold: "t < 0", options=("negative_slope",)),
    Nonlinearity("elu", nn.ELU, _elu_gain, _elu_flat,
                 lambda threshold: f"t + alpha < {1 - threshold**2:.3g}", options=("alpha",)),
]

ACTIVATIONS = {a.name: a for a in _ACTIVATIONS}
NONLINEARITIES = tuple(ACTIVATIONS)


def nonlinearity_of(layer):
    """The entry of the activation a ``fastbn.nn`` layer computes, or None (not an activation).

    Parameters
    ----------
    layer : fastbn.nn.Module
        A layer.

    Returns
    -------
    Nonlinearity or None
        Its entry.
    """
    for a in _ACTIVATIONS:
        if isinstance(layer, a.layer):
            return a
    return None


def layer_options(nonlinearity, layer):
    """``{option name: value}`` of an activation layer (its attributes of the options' names).

    Parameters
    ----------
    nonlinearity : Nonlinearity
        The activation's entry.
    layer : fastbn.nn.Module
        A layer of that activation.

    Returns
    -------
    dict of str to float
        Its options, for example ``{"negative_slope": 0.01}``.
    """
    return {name: getattr(layer, name) for name in nonlinearity.options}
