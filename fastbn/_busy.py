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

import functools
import threading
from collections.abc import Callable
from types import TracebackType
from typing import Concatenate, ParamSpec, TypeVar

_P = ParamSpec("_P")
_R = TypeVar("_R")
_S = TypeVar("_S")

__all__ = ["holds_model", "training_model"]

_guard = threading.Lock()
_holders: dict[int, list[int]] = {}           # id(model) -> [thread ident, depth]


def _enter(model: object, what: str) -> tuple[int, list[int]]:
    """Hold ``model`` in this thread (once more, if it holds it already); RuntimeError if another
    thread holds it. Returns what ``_exit`` takes. Plain calls, not a generator: the per-layer
    path enters once a step."""
    key, me = id(model), threading.get_ident()
    held = _holders.get(key)
    if held is not None and held[0] == me and held[1] > 0:
        # held by this thread already (train -> train_step): no other thread takes a held
        # model or changes its depth, so no lock is needed to go one deeper
        held[1] += 1
        return key, held
    with _guard:
        held = _holders.get(key)
        if held is None:
            held = _holders[key] = [me, 1]
        elif held[0] == me:
            held[1] += 1
        else:
            raise RuntimeError(
                f"{what}: this model is being trained by another thread right now; one model "
                "trains in one thread at a time (two runs would mix their updates of the same "
                "parameters). Wait for the other call to return, or train a copy "
                "(copy.deepcopy(model))")
    return key, held


def _exit(key: int, held: list[int]) -> None:
    if held[1] > 1:          # still held by this thread after this: only it touches the depth
        held[1] -= 1
        return
    with _guard:
        held[1] -= 1
        if held[1] == 0:
            del _holders[key]


class training_model:  # noqa: N801  (used as a function: ``with training_model(m, "x"):``)
    """Hold ``model`` for ``what`` (a name for the message) in this thread for the block;
    RuntimeError if another thread holds it."""

    __slots__ = ("model", "what", "_held")

    def __init__(self, model: object, what: str) -> None:
        self.model, self.what = model, what

    def __enter__(self) -> None:
        self._held = _enter(self.model, self.what)

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None,
                 tb: TracebackType | None) -> None:
        _exit(*self._held)


def holds_model(what: str) -> Callable[[Callable[Concatenate[_S, _P], _R]],
                                        Callable[Concatenate[_S, _P], _R]]:
    """Decorator: the function's first argument (the model, or ``self``) is held while it runs
    (``training_model``)."""
    def decorate(fn: Callable[Concatenate[_S, _P], _R]) -> Callable[Concatenate[_S, _P], _R]:
        @functools.wraps(fn)
        def held(model: _S, *args: _P.args, **kwargs: _P.kwargs) -> _R:
            token = _enter(model, what)
            try:
                return fn(model, *args, **kwargs)
            finally:
                _exit(*token)
        return held
    return decorate
