"""One training call per model at a time: ``with training_model(model, "train"):``.

Two threads training one model at once would interleave their updates of the same parameter
arrays (and the fused step's workspaces), leaving parameters that neither order of the two runs
gives, with no error. ``fastbn.train``, ``CharMLP.train_step`` and ``FusedTrainer.step``/``run``
therefore hold the model for their whole duration; a second call on the same model from another
thread, while the first runs, raises RuntimeError at once instead of waiting (waiting would
silently serialize two runs the caller meant to overlap, whose order would decide the result).

Calls on one ``FusedTrainer`` from several threads wait for each other instead (the trainer's
own lock, taken first, serializes them, each one whole), as its documentation says.

The same thread may enter again (``train`` calls ``train_step`` or the fused trainer; a
callback may take a step of its own). The hold is per model object, kept in this module (a lock
on the model itself could not be pickled or copied with it).
"""
from __future__ import annotations

import contextlib
import functools
import threading
from collections.abc import Callable, Iterator
from typing import Concatenate, ParamSpec, TypeVar

_P = ParamSpec("_P")
_R = TypeVar("_R")
_S = TypeVar("_S")

__all__ = ["holds_model", "training_model"]

_guard = threading.Lock()
_holders: dict[int, list[int]] = {}           # id(model) -> [thread ident, depth]


@contextlib.contextmanager
def training_model(model: object, what: str) -> Iterator[None]:
    """Hold ``model`` for ``what`` (a name for the message) in this thread; RuntimeError if
    another thread holds it."""
    key, me = id(model), threading.get_ident()
    with _guard:
        held = _holders.get(key)
        if held is not None and held[0] != me:
            raise RuntimeError(
                f"{what}: this model is being trained by another thread right now; one model "
                "trains in one thread at a time (two runs would mix their updates of the same "
                "parameters). Wait for the other call to return, or train a copy "
                "(copy.deepcopy(model))")
        if held is None:
            held = _holders[key] = [me, 0]
        held[1] += 1
    try:
        yield
    finally:
        with _guard:
            held[1] -= 1
            if held[1] == 0:
                del _holders[key]


def holds_model(what: str) -> Callable[[Callable[Concatenate[_S, _P], _R]],
                                        Callable[Concatenate[_S, _P], _R]]:
    """Decorator: the function's first argument (the model, or ``self``) is held while it runs
    (``training_model``)."""
    def decorate(fn: Callable[Concatenate[_S, _P], _R]) -> Callable[Concatenate[_S, _P], _R]:
        @functools.wraps(fn)
        def held(model: _S, *args: _P.args, **kwargs: _P.kwargs) -> _R:
            with training_model(model, what):
                return fn(model, *args, **kwargs)
        return held
    return decorate
