"""Checkpoints of a ``CharMLP``: one NumPy ``.npz``, written atomically, read without pickle.

Contents (every entry a plain array, so ``np.load(..., allow_pickle=False)`` reads it)::

    format_version   int64 scalar, FORMAT_VERSION
    config           str, JSON of CharMLP.config (block_size, n_embd, n_hidden, ...); a key it
                     lacks takes CharMLP's default (a checkpoint written before bn_unbiased
                     existed loads with bn_unbiased=False, the variance it trained with)
    chars            str, the vocabulary in id order, token "." first
    dtype            str, "float32" or "float64"
    meta             str, JSON of free-form metadata (steps, seed, losses, ...)
    param/<name>     the parameters, by ``named_parameters()`` name ("param/0.weight", ...)
    buffer/<name>    BatchNorm running statistics ("buffer/2.running_mean", ...)
    folded           optional bool scalar, True: a model folded for inference
                     (``fastbn.fold_batchnorm``): its parameters are those of
                     ``fastbn.folding.folded_layout`` (no batch norm, every Linear with a bias);
                     it loads as a ``FoldedCharMLP`` and holds no training state
    state/step, state/sampler_state, state/history
                     optional: where a training run stands (``fastbn.training.TrainState``), so
                     ``fastbn train --resume`` continues it exactly

``save`` writes through ``fastbn._fileio.atomic_write``: a temporary file in the destination
folder, synced and renamed over the destination (``os.replace``), the folder synced, so a reader,
a crash or a power loss mid-save never sees a half-written checkpoint. The file's permissions
are those of any new file (0o666 less the umask).
``load`` refuses, with a ``ValueError`` that says what is wrong, anything that does not match:
an unreadable archive, pickled objects, a member whose header declares more data than the file
holds, an unknown format version, a config with wrong types or values out of bounds, missing or
unexpected entries, shapes or dtypes that contradict the config (checked on the .npy headers,
before any array is read), non-finite values. It builds the model last, from a config already
known to agree with the stored arrays, so a hostile file cannot make it allocate more than what
the file holds (up to 100 times the stored bytes of a compressed member).
"""
from __future__ import annotations

import inspect
import json
import math
import reprlib
import zipfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from . import _divergence, _validate
from ._fileio import atomic_write
from .data import Vocab
from .folding import FoldedCharMLP, folded_layout
from .model import ACTIVATIONS, INIT_SCHEMES, CharMLP

if TYPE_CHECKING:
    import os

    from .training import TrainState

__all__ = ["FORMAT_VERSION", "load", "save"]

FORMAT_VERSION = 1
_HEADER = ("format_version", "config", "chars", "dtype", "meta")


def save(model: CharMLP, path: str | os.PathLike[str], meta: dict[str, Any] | None = None,
         state: TrainState | None = None) -> Path:
    """Write ``model`` (and JSON-serializable ``meta``) to ``path`` atomically. Returns the Path.

    ``state``, a ``fastbn.training.TrainState``, makes the checkpoint resumable. The folder is
    created if needed. ``path`` is used as given (no ".npz" is appended). A folded model
    (``fastbn.fold_batchnorm``) is saved as such, without a training state.

    A model that ``load`` would refuse is not written (ValueError, and ``path`` is left as it
    was): one with a NaN or an infinity in a parameter or a running statistic (what a diverged
    training run leaves), or a negative running variance.

    Parameters
    ----------
    model : CharMLP or FoldedCharMLP
        The model to write: its hyperparameters, parameters and running statistics.
    path : str or os.PathLike
        The file to write (conventionally ``*.npz``); replaced atomically if it exists.
    meta : dict, optional
        JSON-serializable metadata, read back as ``model.meta``.
    state : fastbn.training.TrainState, optional
        The training state (step, schedule, sampler), which makes the checkpoint resumable.

    Returns
    -------
    pathlib.Path
        The path written.

    Raises
    ------
    ValueError
        For a model that is not finite (or has a negative running variance), or ``meta`` that
        JSON cannot write.
    OSError
        When the file cannot be written (``path`` is then left as it was).

    Examples
    --------
    >>> import tempfile, pathlib
    >>> import numpy as np
    >>> import fastbn
    >>> model = fastbn.CharMLP(".abcdefghijklmnopqrstuvwxyz", seed=0)
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     path = fastbn.save(model, pathlib.Path(tmp) / "model.npz", meta={"note": "init"})
    ...     back = fastbn.load(path)
    >>> back.meta["note"], all(np.array_equal(a, b)
    ...                        for a, b in zip(model.parameters(), back.parameters()))
    ('init', True)
    """
    if not isinstance(model, CharMLP):
        raise TypeError(f"save expects a CharMLP, got {type(model).__name__}")
    if model.folded and state is not None:
        raise ValueError("a folded model (fastbn.fold_batchnorm) is for inference only: it is "
                         "saved without a training state (save the unfolded model to resume)")
    path = Path(path)
    bad = _divergence.first_non_finite(model)
    if bad is not None:
        raise ValueError(f"cannot save {path}: the model's {bad[0]} {bad[1]} holds NaN or "
                         "infinite values (training diverged?), and load refuses such a "
                         "checkpoint")
    neg = _divergence.negative_variance(model)
    if neg is not None:
        raise ValueError(f"cannot save {path}: the model's running statistic {neg} has negative "
                         "variances, and load refuses such a checkpoint")
    entries: dict[str, Any] = {
        "format_version": np.array(FORMAT_VERSION, dtype=np.int64),
        "config": np.array(json.dumps(model.config, sort_keys=True)),
        "chars": np.array(model.vocab.chars),
        "dtype": np.array(model.dtype.name),
        "meta": np.array(json.dumps(meta or {}, sort_keys=True)),
    }
    entries.update({f"param/{n}": p for n, p in model.named_parameters()})
    entries.update({f"buffer/{n}": b for n, b in model.named_buffers()})
    if model.folded:
        entries["folded"] = np.array(True)
    if state is not None:
        entries.update({"state/step": np.array(state.step, dtype=np.int64),
                        "state/sampler_state": np.asarray(state.sampler_state, dtype=np.uint64),
                        "state/history": np.asarray(state.history, dtype=np.float64)})
    with atomic_write(path, "wb") as f:
        np.savez(f, **entries)
    return path


def _bad(path, why):
    return ValueError(f"{path} is not a valid fastbn checkpoint: {why}")


# What a hostile file may not make load do. Every member's declared size must be backed by the
# file: the stored bytes of all members fit in it, and a member inflates to at most _MAX_RATIO
# times its stored bytes (np.savez stores without compression; weights compress to ~90 %, a zip
# bomb to ~0.1 %). A config's dimensions are positive ints up to _MAX_DIM and it has at most
# _MAX_LAYERS hidden blocks; the shapes it implies are compared with the stored ones before any
# array is read or any model is built, so no allocation exceeds what the file holds.
_MAX_RATIO = 100
_MAX_DIM = 2**31 - 1
_MAX_LAYERS = 10_000
_ZIP_ERRORS = (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, OSError, ValueError,
               NotImplementedError, RuntimeError)   # RuntimeError: an encrypted member


class _Member:
    """A member of the archive: its ZipInfo and the shape and dtype its .npy header declares."""

    def __init__(self, info, shape, dtype):
        self.info, self.shape, self.dtype = info, shape, dtype


def _headers(zf, path):
    """{key: _Member} of every member, from the .npy headers alone (no array data is read)."""
    infos = zf.infolist()
    stored = sum(i.compress_size for i in infos)
    if stored > path.stat().st_size:
        raise _bad(path, f"its members claim {stored:,} stored bytes, more than the file's "
                         f"{path.stat().st_size:,}")
    heads = {}
    for info in infos:
        name = info.filename
        if not name.endswith(".npy"):
            raise _bad(path, f"member {name!r} is not a .npy array")
        key = name[:-len(".npy")]
        if key in heads:
            raise _bad(path, f"entry {key!r} appears twice")
        if info.file_size > _MAX_RATIO * max(info.compress_size, 1):
            raise _bad(path, f"entry {key!r} claims to inflate from {info.compress_size:,} to "
                             f"{info.file_size:,} bytes")
        try:
            with zf.open(info) as f:
                version = np.lib.format.read_magic(f)
                if version == (1, 0):
                    shape, _, dtype = np.lib.format.read_array_header_1_0(f)
                elif version == (2, 0):
                    shape, _, dtype = np.lib.format.read_array_header_2_0(f)
                else:
                    raise ValueError(f".npy format version {version} is not supported")
                offset = f.tell()
        except _ZIP_ERRORS as e:
            raise _bad(path, f"entry {key!r} is not a readable .npy array "
                             f"({type(e).__name__}: {e})") from e
        if dtype.hasobject:
            raise _bad(path, f"entry {key!r} holds pickled Python objects, which are never "
                             "loaded (allow_pickle=False)")
        if dtype.kind not in "biufcU" or dtype.fields is not None or dtype.subdtype is not None:
            raise _bad(path, f"entry {key!r} has dtype {dtype}, not a plain number or string")
        if any(n < 0 for n in shape):
            raise _bad(path, f"entry {key!r} declares the shape {shape}")
        nbytes = math.prod(shape) * dtype.itemsize
        if offset + nbytes != info.file_size:
            raise _bad(path, f"entry {key!r} declares {dtype} of shape {shape} ({nbytes:,} "
                             f"bytes), but holds {info.file_size - offset:,} bytes")
        heads[key] = _Member(info, tuple(shape), dtype)
    return heads


def _read(zf, heads, key, path):
    """The array of entry ``key``; its size was checked against the file by ``_headers``."""
    try:
        with zf.open(heads[key].info) as f:
            return np.lib.format.read_array(f, allow_pickle=False)
    except _ZIP_ERRORS as e:
        raise _bad(path, f"cannot read entry {key!r} ({type(e).__name__}: {e})") from e


def _text(zf, heads, key, path):
    h = heads[key]
    if h.dtype.kind != "U" or h.shape != ():
        raise _bad(path, f"entry {key!r} should be a string, got {h.dtype} of shape {h.shape}")
    return str(_read(zf, heads, key, path))


# the keys of CharMLP.config, with CharMLP's defaults for the keys a stored config lacks
_CONFIG_DEFAULTS = {k: p.default for k, p in inspect.signature(CharMLP).parameters.items()
                    if k not in ("vocab", "dtype", "seed")}


def _check_config(config):
    """The stored config with CharMLP's defaults for absent keys, its values checked.

    Returns (config, None), or (None, why) when it does not make a model."""
    known = _CONFIG_DEFAULTS
    unknown = sorted(set(config) - set(known))
    if unknown:
        return None, f"unknown keys {reprlib.repr(unknown)}"
    config = {**known, **config}

    def number(v):
        return not isinstance(v, bool) and isinstance(v, (int, float)) and math.isfinite(v)

    for k in ("block_size", "n_embd", "n_hidden", "n_layers"):
        v, top = config[k], _MAX_LAYERS if k == "n_layers" else _MAX_DIM
        if isinstance(v, bool) or not isinstance(v, int) or not 1 <= v <= top:
            return None, f"{k} must be an integer in [1, {top:,}], got {reprlib.repr(v)}"
    for k in ("batchnorm", "final_bn", "bn_unbiased"):
        if not isinstance(config[k], bool):
            return None, f"{k} must be true or false, got {reprlib.repr(config[k])}"
    checks = {"bn_momentum": (_validate.momentum, _validate.MOMENTUM_RULE),
              "bn_eps": (_validate.eps, _validate.EPS_RULE),
              "negative_slope": (_validate.negative_slope, _validate.SLOPE_RULE)}
    for k, (check, what) in checks.items():
        if not (number(config[k]) and _validate.accepts(check, config[k])):
            return None, f"{k} must be a number {what}, got {reprlib.repr(config[k])}"
    for k, choices in (("activation", ACTIVATIONS), ("init", INIT_SCHEMES)):
        if config[k] not in choices:
            return None, f"{k} must be one of {choices}, got {reprlib.repr(config[k])}"
    gain = config["gain"]
    if gain is not None and not (number(gain) and gain > 0 and config["init"] == "kaiming"):
        return None, (f"gain must be null or a number > 0 with init 'kaiming', got "
                      f"{reprlib.repr(gain)}")
    return config, None


def _layout(config, V):
    """[(key, shape)] of the parameters, then the buffers, of a CharMLP with this config and a
    vocabulary of V characters, by the names ``save`` gives them (the layers of
    ``fastbn.model.CharMLP``: Embedding, per block Linear [BatchNorm1d] activation, then the
    output Linear [BatchNorm1d])."""
    T, D, H = config["block_size"], config["n_embd"], config["n_hidden"]
    bn = config["batchnorm"]
    params, buffers = [("0.weight", (V, D))], []
    i, fan_in = 1, T * D

    def linear(fan_in, fan_out, bias):
        params.append((f"{i}.weight", (fan_in, fan_out)))
        if bias:
            params.append((f"{i}.bias", (fan_out,)))

    def batchnorm(dim):
        params.extend([(f"{i}.gamma", (dim,)), (f"{i}.beta", (dim,))])
        buffers.extend([(f"{i}.running_mean", (dim,)), (f"{i}.running_var", (dim,))])

    for _ in range(config["n_layers"]):
        linear(fan_in, H, bias=not bn)
        i += 1
        if bn:
            batchnorm(H)
            i += 1
        i += 1                                  # the activation
        fan_in = H
    linear(H, V, bias=not config["final_bn"])
    if config["final_bn"]:
        i += 1
        batchnorm(V)
    return [(f"param/{n}", s) for n, s in params] + [(f"buffer/{n}", s) for n, s in buffers]


def load(path: str | os.PathLike[str]) -> CharMLP:
    """Read a checkpoint written by ``save``. Returns the ``CharMLP``, in eval mode (a
    ``fastbn.folding.FoldedCharMLP`` when a folded model was saved).

    The saved metadata is on ``model.meta`` (a dict), the training state on ``model.train_state``
    (a ``fastbn.training.TrainState``, or None). Raises ``FileNotFoundError`` if there is no
    file and ``ValueError`` if it is not a valid checkpoint (see the module docstring).
    Nothing in the file is executed: pickled objects are refused. Everything is checked before
    the model is built, and every array's size before it is read.

    Parameters
    ----------
    path : str or os.PathLike
        A file written by :func:`save`.

    Returns
    -------
    CharMLP or FoldedCharMLP
        The model, in eval mode, with ``meta`` and ``train_state`` set.

    Raises
    ------
    FileNotFoundError
        When there is no file at ``path``.
    ValueError
        When the file is not a valid checkpoint (the message says what is wrong).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        zf = zipfile.ZipFile(path)
    except _ZIP_ERRORS as e:
        with open(path, "rb") as f:
            if f.read(len(np.lib.format.MAGIC_PREFIX)) == np.lib.format.MAGIC_PREFIX:
                raise _bad(path, "it holds a single .npy array, not an .npz archive") from None
        raise _bad(path, f"cannot read it as .npz ({type(e).__name__}: {e})") from e
    with zf:
        heads = _headers(zf, path)
        missing = [k for k in _HEADER if k not in heads]
        if missing:
            raise _bad(path, f"missing entries {missing}")
        h = heads["format_version"]
        if h.shape != () or h.dtype.kind not in "iu":
            raise _bad(path, f"format_version should be an integer scalar, got {h.dtype} of "
                             f"shape {h.shape}")
        version = int(_read(zf, heads, "format_version", path))
        if version != FORMAT_VERSION:
            raise _bad(path, f"format version {version} is not supported (this fastbn reads "
                             f"version {FORMAT_VERSION})")
        try:
            config = json.loads(_text(zf, heads, "config", path))
            meta = json.loads(_text(zf, heads, "meta", path))
        except (json.JSONDecodeError, RecursionError) as e:
            raise _bad(path, f"config or meta is not valid JSON ({e})") from e
        if not isinstance(config, dict) or not isinstance(meta, dict):
            raise _bad(path, "config and meta must be JSON objects")
        dtype = _text(zf, heads, "dtype", path)
        try:
            _validate.float_dtype_name(dtype)
        except ValueError as e:
            raise _bad(path, str(e)) from None
        chars = _text(zf, heads, "chars", path)
        try:
            vocab = Vocab.from_chars(chars)
        except ValueError as e:
            raise _bad(path, f"its vocabulary {reprlib.repr(chars)} is not valid ({e})") from e
        checked, why = _check_config(config)
        if why:
            raise _bad(path, f"its config does not make a model: {why}")

        folded = _folded(zf, heads, path)
        layout = _layout(checked, vocab.size)
        if folded:
            layout = [(f"param/{n}", s) for n, s in folded_layout(checked, vocab.size)]
        state = _train_state(zf, heads, path)
        if folded and state is not None:
            raise _bad(path, "a folded model holds no training state, and this one has one")
        stored = {k for k in heads if k not in _HEADER and k not in _STATE and k != "folded"}
        if stored != {k for k, _ in layout}:
            lost = sorted({k for k, _ in layout} - stored)
            extra = sorted(stored - {k for k, _ in layout})
            raise _bad(path, f"its entries do not match its config: missing {lost}, "
                             f"unexpected {extra}")
        for key, shape in layout:
            h = heads[key]
            if h.shape != shape:
                raise _bad(path, f"{key} has shape {h.shape}, but the config needs {shape}")
            if h.dtype != np.dtype(dtype):
                raise _bad(path, f"{key} has dtype {h.dtype}, but the checkpoint's dtype is "
                                 f"{dtype}")
        arrays = {key: _read(zf, heads, key, path) for key, _ in layout}
    for key, a in arrays.items():
        if not np.all(np.isfinite(a)):
            raise _bad(path, f"{key} contains NaN or infinite values")
        if key.endswith("running_var") and np.any(a < 0):
            raise _bad(path, f"{key} has negative variances")

    model: CharMLP
    try:
        if folded:
            model = FoldedCharMLP(vocab, [arrays[k] for k, _ in layout], dtype=dtype, **checked)
        else:
            model = CharMLP(vocab, dtype=dtype, seed=0, **checked)
    except (TypeError, ValueError) as e:
        raise _bad(path, f"its config does not make a model ({e})") from e
    targets = [(f"param/{n}", p) for n, p in model.named_parameters()]
    targets += [(f"buffer/{n}", b) for n, b in model.named_buffers()]
    if [(k, t.shape) for k, t in targets] != layout:    # a bug here, not in the file
        raise RuntimeError("fastbn.checkpoint's layout disagrees with CharMLP's parameters")
    if not folded:                  # (a folded model is built from the arrays: read-only)
        for key, target in targets:
            target[...] = arrays[key]
    model.meta = meta
    model.train_state = state
    return model.eval()


_STATE = ("state/step", "state/sampler_state", "state/history")


def _folded(zf, heads, path):
    """Whether the checkpoint holds a folded model (the optional entry "folded")."""
    if "folded" not in heads:
        return False
    h = heads["folded"]
    if h.shape != () or h.dtype.kind != "b":
        raise _bad(path, f"entry 'folded' should be a bool scalar, got {h.dtype} of shape "
                         f"{h.shape}")
    return bool(_read(zf, heads, "folded", path))


def _train_state(zf, heads, path):
    """The optional TrainState entries, validated; None when the checkpoint has none."""
    from .training import TrainState

    present = [k for k in _STATE if k in heads]
    if not present:
        return None
    if len(present) != len(_STATE):
        raise _bad(path, f"incomplete training state: has {present}, needs {list(_STATE)}")
    step_h, rng_h, hist_h = (heads[k] for k in _STATE)
    if step_h.shape != () or step_h.dtype.kind not in "iu":
        raise _bad(path, f"state/step must be a non-negative integer, got {step_h.dtype} of "
                         f"shape {step_h.shape}")
    step = int(_read(zf, heads, "state/step", path))
    if step < 0:
        raise _bad(path, f"state/step must be a non-negative integer, got {step}")
    if rng_h.shape != (2,) or rng_h.dtype != np.uint64:
        raise _bad(path, "state/sampler_state must be 2 uint64 with an odd stream increment")
    rng = _read(zf, heads, "state/sampler_state", path)
    if int(rng[1]) % 2 != 1:
        raise _bad(path, "state/sampler_state must be 2 uint64 with an odd stream increment")
    if hist_h.shape != (step,) or hist_h.dtype != np.float64:
        raise _bad(path, f"state/history must be {step} float64 losses, got {hist_h.dtype} "
                         f"of shape {hist_h.shape}")
    return TrainState(step, rng.copy(), _read(zf, heads, "state/history", path).copy())
