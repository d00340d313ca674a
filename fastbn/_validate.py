"""The scalar options of fastbn, each checked in one place.

Every entry point that takes one of these options (``fastbn.ops``, the layers of ``fastbn.nn``,
``CharMLP``, the fused step, the checkpoint reader, the command line's argument types, a sweep's
space) calls the function here, so an option is accepted, refused and described alike
everywhere. Each function returns the value as the library uses it (a float, an int, a bool, a
NumPy dtype) or raises with a message that starts with ``name`` (none when ``name`` is None: an
argparse type, whose option argparse names itself). A caller that must raise another exception
type (a checkpoint error, argparse's) re-raises the message as it is.
"""
from __future__ import annotations

import math
import numbers
from collections.abc import Callable
from typing import Any

import numpy as np

# the float dtypes of every array of fastbn
FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))

# the rules of the options a checkpoint stores, in words (its reader says them too)
EPS_RULE = ">= 0"
MOMENTUM_RULE = "in [0, 1]"
SLOPE_RULE = "finite"


def accepts(check: Callable[[Any, str | None], Any], v: Any) -> bool:
    """Whether ``check`` (a function of this module) takes ``v``."""
    try:
        check(v, None)
    except (TypeError, ValueError):
        return False
    return True


def _must(name: str | None, rule: str, got: Any) -> str:
    """``"<name> must be <rule>, got <got>"`` (``"must be ..."`` without a name)."""
    return f"{name + ' ' if name else ''}must be {rule}, got {got}"


def positive_int(v: Any, name: str | None) -> int:
    """``v`` as an int if it is an integer >= 1 (Python or NumPy, not bool); else ValueError."""
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
        raise ValueError(_must(name, "a positive integer", repr(v)))
    return int(v)


def nonnegative_int(v: int, name: str | None) -> int:
    """An int ``v`` >= 0; else ValueError."""
    if v < 0:
        raise ValueError(_must(name, ">= 0", v))
    return v


def positive(v: float, name: str | None) -> float:
    """A number ``v`` > 0 and finite; else ValueError ("> 0", or "a finite number > 0" for
    infinity)."""
    if not v > 0:
        raise ValueError(_must(name, "> 0", v))
    if not math.isfinite(v):
        raise ValueError(_must(name, "a finite number > 0", v))
    return v


def finite_positive(v: Any, name: str | None) -> float:
    """``v`` as a float, finite and > 0 (a gain, a learning rate of a schedule); else
    ValueError."""
    v = float(v)
    if not (math.isfinite(v) and v > 0):
        raise ValueError(_must(name, "finite and > 0", v))
    return v


def tolerance(v: float, name: str | None) -> float:
    """A number ``v`` >= 0 and finite (an atol or an rtol); else ValueError."""
    if not (v >= 0 and math.isfinite(v)):
        raise ValueError(_must(name, "a finite number >= 0", v))
    return v


def eps(v: Any, name: str | None = "eps") -> float:
    """Batch norm's epsilon as a float, >= 0 (infinity included); else ValueError."""
    v = float(v)
    if not v >= 0:
        raise ValueError(_must(name, EPS_RULE, v))
    return v


def momentum(v: Any, name: str | None = "momentum") -> float:
    """Batch norm's momentum (the weight of the new batch) as a float in [0, 1]; else
    ValueError."""
    v = float(v)
    if not 0 <= v <= 1:
        raise ValueError(_must(name, MOMENTUM_RULE, v))
    return v


def unbiased(v: Any, name: str | None = "unbiased") -> bool:
    """Batch norm's variance variant, a bool (Python or NumPy); else TypeError."""
    if not isinstance(v, (bool, np.bool_)):
        raise TypeError(_must(name, "True or False", repr(v)))
    return bool(v)


def alpha(v: Any, name: str | None = "alpha") -> float:
    """ELU's alpha as a float: a real number (TypeError), finite and >= 0 (ValueError)."""
    if isinstance(v, bool) or not isinstance(v, numbers.Real):
        raise TypeError(_must(name, "a real number", type(v).__name__))
    v = float(v)
    if not (v >= 0 and math.isfinite(v)):
        raise ValueError(_must(name, "a finite number >= 0", v))
    return v


def negative_slope(v: Any, name: str | None = "negative_slope") -> float:
    """Leaky ReLU's slope below 0 as a float, finite; else ValueError."""
    v = float(v)
    if not math.isfinite(v):
        raise ValueError(_must(name, SLOPE_RULE, v))
    return v


def lr(v: Any, name: str | None = "the learning rate") -> float:
    """A learning rate as a float, finite; else ValueError."""
    v = float(v)
    if not math.isfinite(v):
        raise ValueError(_must(name, "finite", v))
    return v


def float_dtype(v: Any, name: str | None = "dtype") -> np.dtype:
    """``np.dtype(v)`` if it is float32 or float64; else TypeError."""
    dt = np.dtype(v)
    if dt not in FLOAT_DTYPES:
        raise TypeError(_must(name, "float32 or float64", dt))
    return dt


def float_dtype_name(v: Any, name: str | None = "dtype") -> str:
    """``v`` if it is the text "float32" or "float64" (a dtype as a file stores it); else
    ValueError."""
    if v not in ("float32", "float64"):
        raise ValueError(_must(name, "float32 or float64", repr(v)))
    return v


def float_array_dtype(dt: np.dtype, name: str) -> np.dtype:
    """The dtype ``dt`` of the array ``name`` if it is float32 or float64; else TypeError."""
    if dt not in FLOAT_DTYPES:
        raise TypeError(_must(name, "a float32 or float64 array", f"dtype {dt}"))
    return dt
