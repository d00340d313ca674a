"""Weight initialization: gains and Kaiming-normal scaling, as ``torch.nn.init``.

The rule (Kaiming He et al. 2015, in the lecture's form): draw ``W ~ N(0, 1)`` and scale it so that

    sigma_W = gain / sqrt(fan_in)

which keeps the variance of the activations roughly constant from layer to layer; ``gain``
compensates for what the nonlinearity after the layer does to that variance (tanh squashes, so
5/3; ReLU zeroes half, so sqrt(2)).

Convention: fastbn's Linear weights are (fan_in, fan_out) (the lecture's ``x @ W``), so the
fan-in of a 2-D weight is ``shape[0]``. ``torch.nn.init`` reads ``shape[1]``, because torch
stores (out, in).
"""
from __future__ import annotations

import math

import numpy as np
from numpy.typing import DTypeLike, NDArray

from . import _validate, registry

__all__ = ["calculate_gain", "kaiming_normal", "kaiming_std"]

_LINEAR = ("linear", "identity", "sigmoid")


def calculate_gain(nonlinearity: str, param: float | None = None) -> float:
    """The recommended gain for a nonlinearity, with ``torch.nn.init.calculate_gain``'s values.

    ========================= ===========================================================
    nonlinearity              gain
    ========================= ===========================================================
    linear, identity, sigmoid 1
    tanh                      5/3
    relu                      sqrt(2)
    leaky_relu                sqrt(2 / (1 + negative_slope**2))
    selu                      3/4
    elu                       1 / sqrt(E[elu(z)**2]) for z ~ N(0, 1): 1.2452 for alpha = 1
    ========================= ===========================================================

    torch has no ELU entry; fastbn's keeps the second moment of unit-normal pre-activations, the
    argument that gives ReLU its sqrt(2) (see ``fastbn.registry``).

    The gains of the activations of ``fastbn.ops`` (tanh, relu, leaky_relu, ...) are their
    ``fastbn.registry`` entries'. ``param`` is the activation's option (leaky_relu's negative
    slope, default 0.01; elu's alpha, default 1); nonlinearities without one ignore it.

    Parameters
    ----------
    nonlinearity : str
        One of the names in the table.
    param : float, optional
        The activation's option (leaky_relu's ``negative_slope``, elu's ``alpha``).

    Returns
    -------
    float
        The gain.

    Raises
    ------
    ValueError
        For an unknown nonlinearity or an option that is not a real number.

    Examples
    --------
    >>> from fastbn.init import calculate_gain
    >>> round(calculate_gain("tanh"), 4), round(calculate_gain("relu"), 4)
    (1.6667, 1.4142)
    >>> round(calculate_gain("leaky_relu", 0.2), 4)
    1.3868
    """
    if nonlinearity in _LINEAR:
        return 1.0
    if nonlinearity == "selu":
        return 3.0 / 4
    act = registry.ACTIVATIONS.get(nonlinearity) if isinstance(nonlinearity, str) else None
    if act is None:
        raise ValueError(f"unsupported nonlinearity {nonlinearity!r}; expected one of "
                         f"{[*_LINEAR, *registry.NONLINEARITIES, 'selu']}")
    if param is None or not act.options:
        return float(act.gain())
    if isinstance(param, bool) or not isinstance(param, (int, float)):
        raise ValueError(f"{act.options[0]} {param!r} is not a valid number")
    return float(act.gain(float(param)))


def kaiming_std(fan_in: int, gain: float = 1.0) -> float:
    """``gain / sqrt(fan_in)``, the standard deviation of a Kaiming-normal weight.

    Parameters
    ----------
    fan_in : int
        The number of inputs of each output unit (a weight's ``shape[0]``); >= 1.
    gain : float, default 1.0
        For example ``calculate_gain("tanh")``.

    Returns
    -------
    float
        The standard deviation.

    Examples
    --------
    >>> from fastbn.init import kaiming_std
    >>> round(kaiming_std(30, 5 / 3), 4)   # the lecture's first Linear: (5/3) / sqrt(30)
    0.3043
    """
    return float(gain) / math.sqrt(_validate.positive_int(fan_in, "fan_in"))


def kaiming_normal(shape_or_array: int | tuple[int, ...] | NDArray[np.floating],
                   gain: float = 1.0, fan_in: int | None = None,
                   generator: int | np.random.Generator | None = None,
                   dtype: DTypeLike = None) -> NDArray[np.floating]:
    """Draw ``N(0, 1) * gain / sqrt(fan_in)``.

    The draw is made in float64 and cast, so a seed gives the same values in float32 and float64
    up to rounding.

    Parameters
    ----------
    shape_or_array : int, tuple of int, or numpy.ndarray
        A shape (a new array is returned) or a float32/float64 array (filled in place and
        returned).
    gain : float, default 1.0
        For example ``calculate_gain("tanh")``.
    fan_in : int, optional
        Default ``shape[0]`` (fastbn's (fan_in, fan_out) layout); for a 1-D shape, its size.
    generator : numpy.random.Generator, int or None, optional
        The source of the draw (an int is a seed; None draws fresh entropy).
    dtype : {numpy.float32, numpy.float64}, optional
        The dtype of a new array (float32 by default); an array keeps its own dtype.

    Returns
    -------
    numpy.ndarray
        Of the given shape (or the array passed in), with standard deviation
        ``gain / sqrt(fan_in)``.

    Raises
    ------
    TypeError
        For an array that is not float32 or float64.
    ValueError
        For a 0-D shape without ``fan_in``, or a ``fan_in`` that is not a positive integer.

    Examples
    --------
    >>> from fastbn.init import calculate_gain, kaiming_normal
    >>> w = kaiming_normal((30, 200), gain=calculate_gain("tanh"), generator=0)
    >>> w.shape, w.dtype, round(float(w.std()), 2)
    ((30, 200), dtype('float32'), 0.3)
    """
    rng = generator if isinstance(generator, np.random.Generator) else \
        np.random.default_rng(generator)
    if isinstance(shape_or_array, np.ndarray):
        out = shape_or_array
        if out.dtype not in (np.float32, np.float64):
            raise TypeError(f"kaiming_normal fills float32/float64 arrays, got {out.dtype}")
        shape = out.shape
    else:
        shape = tuple(int(s) for s in np.atleast_1d(shape_or_array))
        out = None
    if fan_in is None:
        if not shape:
            raise ValueError("cannot infer fan_in of a 0-D array; pass fan_in")
        fan_in = shape[0]
    w = rng.standard_normal(shape) * kaiming_std(fan_in, gain)
    if out is None:
        return w.astype(np.float32 if dtype is None else dtype)
    out[...] = w
    return out
