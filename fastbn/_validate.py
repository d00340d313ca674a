"""Argument checks shared by the library's constructors (``fastbn.nn``, ``fastbn.model``)."""
from __future__ import annotations

from typing import Any

import numpy as np


def positive_int(name: str, v: Any) -> int:
    """``v`` as an int if it is an integer >= 1 (Python or NumPy, not bool); else ValueError."""
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
        raise ValueError(f"{name} must be a positive integer, got {v!r}")
    return int(v)
