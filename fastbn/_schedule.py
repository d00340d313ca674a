"""Learning-rate schedules: piecewise constant, ``(step, lr)`` pairs with steps increasing from 0.

``fastbn.train`` takes one as a number (constant), pairs, or their text ``"0:0.1,100000:0.01"``;
``check_schedule`` turns any of these into the checked tuple. The names are ``fastbn.training``'s
(this module holds them so that the command line's parsing needs no training loop).
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from . import _validate

# a checked learning-rate schedule: (step, lr) pairs, steps increasing from 0
Schedule = tuple[tuple[int, float], ...]
# what train and the schedule functions accept: a constant lr, (step, lr) pairs or their text
ScheduleLike = float | str | Sequence[tuple[int, float]]

__all__ = ["DEFAULT_LR_SCHEDULE", "Schedule", "ScheduleLike", "check_schedule",
           "default_lr_schedule", "format_lr_schedule", "lr_at", "parse_lr_schedule"]

DEFAULT_LR_SCHEDULE = ((0, 0.1), (100_000, 0.01))    # the lecture's, for its 200,000 steps


def check_schedule(schedule: ScheduleLike) -> Schedule:
    """A validated step schedule: a tuple of (step, lr), steps increasing from 0, lr > 0."""
    if isinstance(schedule, str):
        return parse_lr_schedule(schedule)
    if isinstance(schedule, (int, float)) and not isinstance(schedule, bool):
        schedule = ((0, schedule),)
    try:
        # a bool is not iterable: the TypeError below refuses it
        pairs = [(s, lr) for s, lr in schedule]  # type: ignore[union-attr]
    except (TypeError, ValueError):
        raise ValueError(f"lr schedule must be a number or (step, lr) pairs, got {schedule!r}") \
            from None
    if not pairs:
        raise ValueError("lr schedule is empty")
    out: list[tuple[int, float]] = []
    for s, lr in pairs:
        if isinstance(s, bool) or not isinstance(s, (int, np.integer)) or s < 0:
            raise ValueError(f"lr schedule steps must be integers >= 0, got {s!r}")
        lr = float(lr)
        try:
            _validate.finite_positive(lr, "learning rates")
        except ValueError as e:
            raise ValueError(f"{e} at step {s}") from None
        if out and s <= out[-1][0]:
            raise ValueError(f"lr schedule steps must increase, got {s} after {out[-1][0]}")
        out.append((int(s), lr))
    if out[0][0] != 0:
        raise ValueError(f"lr schedule must start at step 0, got {out[0][0]}")
    return tuple(out)


def parse_lr_schedule(text: str) -> Schedule:
    """``"0:0.1,100000:0.01"`` -> ((0, 0.1), (100000, 0.01)); a bare ``"0.05"`` is constant.

    Steps may use underscores (``100_000``).

    Parameters
    ----------
    text : str
        ``"STEP:LR,STEP:LR,..."`` from step 0, or one learning rate.

    Returns
    -------
    tuple of (int, float)
        The checked schedule.

    Raises
    ------
    ValueError
        On anything else (the message says what).

    Examples
    --------
    >>> from fastbn.training import parse_lr_schedule
    >>> parse_lr_schedule("0:0.1,100_000:0.01")
    ((0, 0.1), (100000, 0.01))
    """
    text = str(text).strip()
    if not text:
        raise ValueError("lr schedule is empty")
    lr: float | str
    if ":" not in text and "," not in text:
        try:
            lr = float(text)
        except ValueError:
            raise ValueError(f"cannot read lr schedule {text!r}; expected e.g. 0.1 or "
                             "'0:0.1,100000:0.01'") from None
        return check_schedule(lr)
    pairs = []
    for part in text.split(","):
        try:
            s, lr = part.split(":")
            pairs.append((int(s.strip()), float(lr)))
        except ValueError:
            raise ValueError(f"cannot read {part.strip()!r} in lr schedule {text!r}; expected "
                             "STEP:LR pairs separated by commas, e.g. '0:0.1,100000:0.01'") \
                from None
    return check_schedule(pairs)


def format_lr_schedule(schedule: ScheduleLike) -> str:
    """The inverse of ``parse_lr_schedule``: ``"0:0.1,100000:0.01"``.

    Parameters
    ----------
    schedule : float, sequence of (int, float), or str
        A schedule as ``train`` takes it.

    Returns
    -------
    str
        Its text form, which ``parse_lr_schedule`` reads back.
    """
    return ",".join(f"{s}:{lr:g}" for s, lr in check_schedule(schedule))


def default_lr_schedule(steps: int) -> Schedule:
    """The lecture's schedule scaled to a run of ``steps``: lr 0.1, then 0.01 from step
    ``steps // 2`` on (the lecture decays at step 100,000 of 200,000, so its run gets exactly
    ``DEFAULT_LR_SCHEDULE``); a run of one step keeps 0.1. The default of ``train`` and of
    ``fastbn train``, so that a shorter run decays too.

    Parameters
    ----------
    steps : int
        The run's length.

    Returns
    -------
    tuple of (int, float)
        The schedule, ``((0, 0.1), (steps // 2, 0.01))``.

    Examples
    --------
    >>> from fastbn.training import default_lr_schedule
    >>> default_lr_schedule(200_000)
    ((0, 0.1), (100000, 0.01))
    """
    steps = int(steps)
    half = steps // 2
    return ((0, 0.1), (half, 0.01)) if half >= 1 else ((0, 0.1),)


def lr_at(schedule: ScheduleLike, step: int) -> float | None:
    """The learning rate at ``step``: that of the last entry whose step is <= ``step``.

    Parameters
    ----------
    schedule : float, sequence of (int, float), or str
        A schedule as ``train`` takes it.
    step : int
        A step of the run.

    Returns
    -------
    float or None
        The learning rate.
    """
    lr = None
    for s, v in check_schedule(schedule):
        if s > step:
            break
        lr = v
    return lr
