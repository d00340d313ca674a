"""Argument types of the command line (argparse ``type=`` converters), shared by ``fastbn.cli``
and the benchmark's options (``fastbn._bench_options``).

Each takes the text of one option and returns its value, or raises
``argparse.ArgumentTypeError`` with a message argparse shows as a usage error (exit status 2).
The rules are those of the library (``fastbn._validate``): an option is refused with the words
the library uses for the same value.
"""
import argparse
import os
from pathlib import Path

from . import _validate

__all__ = ["file_problem", "momentum", "nonnegative", "positive", "positive_floats", "schedule",
           "sweep_param", "tolerance"]


def file_problem(path):
    """Why ``path`` cannot be read as an input file (a names file, a checkpoint), in words, or
    None when it can: missing, a directory, not a regular file, or not readable."""
    p = Path(path).expanduser()
    if p.is_dir():
        return "is a directory, not a file"
    if not p.exists():
        return "no such file"
    if not p.is_file():
        return "is not a regular file"
    if not os.access(p, os.R_OK):
        return "cannot be read (permission denied)"
    return None


def _checked(check, v):
    """``check(v, None)`` (a function of ``fastbn._validate``), its refusal as argparse's."""
    try:
        return check(v, None)
    except (TypeError, ValueError) as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def nonnegative(text):
    """An int >= 0."""
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid int value: {text!r}") from None
    return _checked(_validate.nonnegative_int, v)


def positive(kind=int):
    """A converter to a finite ``kind`` (int or float) > 0: ``type=positive(float)``."""
    def conv(text):
        try:
            v = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"invalid {kind.__name__} value: {text!r}") from None
        return _checked(_validate.positive, v)
    return conv


def tolerance(text):
    """A finite float >= 0 (an atol or rtol)."""
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid float value: {text!r}") from None
    return _checked(_validate.tolerance, v)


def schedule(text):
    """A learning-rate schedule, ``STEP:LR,...`` or one number (``train.parse_lr_schedule``)."""
    from .training import parse_lr_schedule
    try:
        return parse_lr_schedule(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def momentum(text):
    """A float in [0, 1] (BatchNorm momentum: the weight of the new batch)."""
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid float value: {text!r}") from None
    return _checked(_validate.momentum, v)


def sweep_param(text):
    """A sweep's ``NAME=V1,V2,...`` or ``NAME=LOW:HIGH[:lin]`` -> (name, values or Range)
    (``fastbn.sweep.space.parse_param``; imports no Dask)."""
    from .sweep.space import parse_param
    try:
        return parse_param(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def positive_floats(text):
    """Comma-separated finite numbers > 0, fractions allowed (``0.2,1,5/3``) -> tuple of float."""
    from fractions import Fraction
    out = []
    for part in str(text).split(","):
        try:
            v = float(Fraction(part.strip()))
        except (ValueError, ZeroDivisionError):
            raise argparse.ArgumentTypeError(f"invalid number {part.strip()!r} in {text!r}") \
                from None
        out.append(_checked(_validate.finite_positive, v))
    return tuple(dict.fromkeys(out))
