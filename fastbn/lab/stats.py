"""Statistics of a network's activations, gradients and parameters: numbers only.

Every function takes arrays (a layer's output ``t``, a gradient, a parameter) and returns Python
numbers or boolean arrays; nothing here knows about models, files or figures.

Conventions: std is the population std (ddof 0; torch's ``.std()`` is unbiased, a difference of
one part in 2*B*H here), computed in float64. Fractions are in [0, 1].
"""
from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from .. import registry

__all__ = [
    "BINS", "DEAD", "FLAT_REGION", "SATURATED", "UPDATE_GUIDE", "LossCheck", "activation_stats",
    "dead_map", "dead_units", "flat_region", "grad_data_ratio", "initial_loss_check",
    "update_data_ratio",
]

SATURATED = 0.97        # |t| above this counts as saturated (the lecture's histogram statistic)
DEAD = 0.99             # |t| above this for every example of a batch: a dead tanh unit (the map)
UPDATE_GUIDE = -3.0     # log10 of the update:data ratio the rule of thumb aims for
BINS = 60


def flat_region(kind: str, threshold: float = SATURATED) -> str:
    """The flat region of a nonlinearity in words ("|t| > 0.97", "t == 0", ...)."""
    return _nonlinearity(kind).flat_text(threshold)


def _nonlinearity(kind):
    act = registry.ACTIVATIONS.get(kind) if isinstance(kind, str) else None
    if act is None:
        raise ValueError(f"kind must be one of {registry.NONLINEARITIES}, got {kind!r}")
    return act


# What the "saturated" statistic counts for each kind of nonlinearity (fastbn.registry's).
FLAT_REGION = {kind: flat_region(kind) for kind in registry.NONLINEARITIES}


def nonlinearity_kind(layer):
    """The kind of nonlinearity a layer computes ("tanh", ...), or None."""
    act = registry.nonlinearity_of(layer)
    return None if act is None else act.name


def nonlinearity_options(layer):
    """The options of a nonlinearity layer ({} for tanh, {"negative_slope": ...}, ...)."""
    act = registry.nonlinearity_of(layer)
    return {} if act is None else registry.layer_options(act, layer)


def _flat(t, kind, threshold, options=None):
    """Boolean array: where ``t`` sits in the flat region of its nonlinearity."""
    return _nonlinearity(kind).flat(t, threshold, **(options or {}))


def activation_stats(t: ArrayLike, kind: str = "tanh", threshold: float = SATURATED,
                     options: Mapping[str, Any] | None = None) -> dict[str, float]:
    """Mean, std and fraction in the flat region of a nonlinearity's output ``t`` (any shape).

    The flat region, where the local derivative is about 0, is each activation's own
    (``fastbn.registry``, ``FLAT_REGION``): e.g. ``|t| > threshold`` for tanh (the gradient
    factor 1 - t**2 is below 1 - 0.97**2 = 0.06 there), t == 0 for ReLU (gradient 0), t < 0 for
    leaky ReLU (gradient ``negative_slope``); an activation whose slope varies is flat where it
    is under 1 - threshold**2. ``options`` are the layer's (``{"negative_slope": 0.01}``), for a
    flat region that depends on them. Returns ``{"mean", "std", "saturated"}`` as Python floats.

    Parameters
    ----------
    t : array_like, any shape
        A nonlinearity's output (the layer's ``.out``).
    kind : str, default "tanh"
        The activation (a name of ``fastbn.registry``).
    threshold : float
        The flat region's threshold (see ``activation_stats``).
    options : dict, optional
        The layer's options (``{"negative_slope": 0.01}``).

    Returns
    -------
    dict of str to float
        ``{"mean", "std", "saturated"}``.
    """
    t = np.asarray(t)
    if t.size == 0:
        raise ValueError("activation_stats of an empty array")
    return {"mean": float(t.mean(dtype=np.float64)), "std": float(t.std(dtype=np.float64)),
            "saturated": float(np.count_nonzero(_flat(t, kind, threshold, options))) / t.size}


def dead_map(t: ArrayLike, kind: str = "tanh", threshold: float = DEAD,
             options: Mapping[str, Any] | None = None) -> NDArray[np.bool_]:
    """Boolean (B, H): example b drives unit h into the flat region (tanh ``|t| > 0.99``, ReLU 0).

    Shown as an image (rows examples, columns units, white = flat) it is the lecture's
    ``plt.imshow(h.abs() > 0.99, cmap="gray")``; an all-white column is a dead unit.

    Parameters
    ----------
    t : array_like, shape (B, H)
        A nonlinearity's output (the layer's ``.out``).
    kind : str, default "tanh"
        The activation (a name of ``fastbn.registry``).
    threshold : float
        The flat region's threshold (see ``activation_stats``).
    options : dict, optional
        The layer's options (``{"negative_slope": 0.01}``).

    Returns
    -------
    numpy.ndarray of bool, shape (B, H)
        True where the example drives the unit into the flat region.
    """
    t = np.asarray(t)
    if t.ndim != 2:
        raise ValueError(f"dead_map needs a (B, H) array, got shape {t.shape}")
    return _flat(t, kind, threshold, options)


def dead_units(t: ArrayLike, kind: str = "tanh", threshold: float = DEAD,
               options: Mapping[str, Any] | None = None) -> NDArray[np.bool_]:
    """Boolean (H,): units flat on every example of ``t`` (B, H), i.e. that pass no gradient.

    Parameters
    ----------
    t : array_like, shape (B, H)
        A nonlinearity's output (the layer's ``.out``).
    kind : str, default "tanh"
        The activation (a name of ``fastbn.registry``).
    threshold : float
        The flat region's threshold (see ``activation_stats``).
    options : dict, optional
        The layer's options (``{"negative_slope": 0.01}``).

    Returns
    -------
    numpy.ndarray of bool, shape (H,)
        True for a dead unit.
    """
    # (B, H).all(axis=0) is an (H,) array (numpy types it as possibly a scalar)
    return dead_map(t, kind, threshold, options).all(axis=0)  # type: ignore[return-value]


def float_std(x: ArrayLike) -> float:
    return float(np.asarray(x).std(dtype=np.float64))


def grad_data_ratio(grad: ArrayLike, param: ArrayLike) -> float:
    """std(grad) / std(param): how big the gradient is next to the values it changes.

    NaN when std(param) is 0 (a freshly zeroed bias or BatchNorm beta).

    Parameters
    ----------
    grad : array_like
        A parameter's gradient.
    param : array_like
        The parameter, of the same shape.

    Returns
    -------
    float
        The ratio.
    """
    s = float_std(param)
    return float_std(grad) / s if s > 0 else float("nan")


def update_data_ratio(grad: ArrayLike, param: ArrayLike, lr: float) -> float:
    """log10(std(lr * grad) / std(param)): the relative size of one SGD update.

    Rule of thumb (the lecture): about -3, i.e. each step changes a parameter by a thousandth of
    its spread; much above means lr is too high for it, much below that it learns slowly. NaN when
    std(param) or the update is 0.

    Parameters
    ----------
    grad : array_like
        A parameter's gradient.
    param : array_like
        The parameter, of the same shape.
    lr : float
        The learning rate.

    Returns
    -------
    float
        The log10 ratio.
    """
    r = abs(float(lr)) * grad_data_ratio(grad, param)
    return math.log10(r) if r > 0 else float("nan")


def histogram(x, kind=None, bins=BINS):
    """(counts int32, lo, hi) of ``x`` over ``bins`` equal bins ([-1, 1] for tanh outputs)."""
    x = np.asarray(x).ravel()
    if kind == "tanh":
        lo, hi = -1.0, 1.0
    else:
        lo, hi = float(x.min()), float(x.max())
        if not hi > lo:
            lo, hi = lo - 0.5, hi + 0.5
    counts, _ = np.histogram(x, bins=bins, range=(lo, hi))
    return counts.astype(np.int32), lo, hi


@dataclass
class LossCheck:
    """The initial-loss check: ``measured`` against ln(``n_classes``), with a verdict in words.

    Parameters
    ----------
    measured : float
        The initial loss.
    n_classes : int
        C, the number of classes.
    tolerance : float, default 0.1
        How far from ln(C) is "as expected".
    """

    measured: float
    n_classes: int
    tolerance: float = 0.1

    @property
    def expected(self) -> float:
        """The loss of a uniform prediction, ln(C).

        Returns
        -------
        float
            ``ln(n_classes)``.
        """
        return math.log(self.n_classes)

    @property
    def verdict(self) -> str:
        """The check in words.

        Returns
        -------
        str
            "as expected", "too high", "confidently wrong", "below chance level" or "not a number".
        """
        m, e = self.measured, self.expected
        if not math.isfinite(m):
            return "not a number"
        if abs(m - e) <= self.tolerance:
            return "as expected"
        if m > 2 * e:
            return "confidently wrong"
        return "too high" if m > e else "below chance level"

    def explain(self) -> str:
        """The check and what it means, in a few sentences.

        Returns
        -------
        str
            The measured and expected loss, the verdict, and what it means for training.
        """
        m, e, C = self.measured, self.expected, self.n_classes
        head = f"initial loss {m:.4f}, expected ln({C}) = {e:.4f}: {self.verdict}."
        return head + " " + {
            "as expected": "The net starts out equally unsure of every class, as it should: "
                           "no training steps are wasted undoing a bad start.",
            "confidently wrong": f"It is {m / e:.1f}x the loss of a uniform guess: the logits "
                                 "are large at init, so the softmax puts most of its mass on "
                                 "a few classes, mostly the wrong ones. The first steps are spent "
                                 "squashing the logits (the hockey stick in the loss curve); "
                                 "scale the output layer down (W ×0.01, b = 0).",
            "too high": "The initial predictions are more confident than they should be: shrink "
                        "the output layer's weights.",
            "below chance level": "The net already predicts better than a uniform guess: it is "
                                  "not at its initialization, or the classes are unbalanced and "
                                  "the output bias knows it.",
            "not a number": "The forward pass produced NaN or infinity.",
        }[self.verdict]


def initial_loss_check(measured: float, n_classes: int, tolerance: float = 0.1) -> LossCheck:
    """``LossCheck(measured, n_classes)``: ``.expected`` ln(C), ``.verdict``, ``.explain()``.

    Parameters
    ----------
    measured : float
        The initial loss.
    n_classes : int
        C, the number of classes.
    tolerance : float, default 0.1
        How far from ln(C) is "as expected".

    Returns
    -------
    LossCheck
        The check.
    """
    return LossCheck(float(measured), int(n_classes), float(tolerance))

