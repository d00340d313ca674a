"""Checkpoints of a ``CharMLP``: one NumPy ``.npz``, written atomically, read without pickle.

Contents (every entry a plain array, so ``np.load(..., allow_pickle=False)`` reads it)::

    format_version   int64 scalar, FORMAT_VERSION
    config           str, JSON of CharMLP.config (block_size, n_embd, n_hidden, ...)
    chars            str, the vocabulary in id order, token "." first
    dtype            str, "float32" or "float64"
    meta             str, JSON of free-form metadata (steps, seed, losses, ...)
    param/<name>     the parameters, by ``named_parameters()`` name ("param/0.weight", ...)
    buffer/<name>    BatchNorm running statistics ("buffer/2.running_mean", ...)
    state/step, state/sampler_state, state/history
                     optional: where a training run stands (``fastbn.train.TrainState``), so
                     ``fastbn train --resume`` continues it exactly

``save`` writes to a temporary file in the destination folder and renames it over the destination
(``os.replace``), so a reader, or a crash mid-save, never sees a half-written checkpoint.
``load`` rebuilds the model from the config and refuses, with a ``ValueError`` that says what is
wrong, anything that does not match it: unknown format version, missing or unexpected entries,
shapes or dtypes that contradict the config, non-finite values.
"""
import json
import os
import tempfile
import zipfile
from pathlib import Path

import numpy as np

from .model import CharMLP

__all__ = ["FORMAT_VERSION", "load", "save"]

FORMAT_VERSION = 1
_HEADER = ("format_version", "config", "chars", "dtype", "meta")


def save(model, path, meta=None, state=None):
    """Write ``model`` (and JSON-serializable ``meta``) to ``path`` atomically. Returns the Path.

    ``state``, a ``fastbn.train.TrainState``, makes the checkpoint resumable. The folder is
    created if needed. ``path`` is used as given (no ".npz" is appended).
    """
    if not isinstance(model, CharMLP):
        raise TypeError(f"save expects a CharMLP, got {type(model).__name__}")
    path = Path(path)
    entries = {
        "format_version": np.array(FORMAT_VERSION, dtype=np.int64),
        "config": np.array(json.dumps(model.config, sort_keys=True)),
        "chars": np.array(model.vocab.chars),
        "dtype": np.array(model.dtype.name),
        "meta": np.array(json.dumps(meta or {}, sort_keys=True)),
    }
    entries.update({f"param/{n}": p for n, p in model.named_parameters()})
    entries.update({f"buffer/{n}": b for n, b in model.named_buffers()})
    if state is not None:
        entries.update({"state/step": np.array(state.step, dtype=np.int64),
                        "state/sampler_state": np.asarray(state.sampler_state, dtype=np.uint64),
                        "state/history": np.asarray(state.history, dtype=np.float64)})
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **entries)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def _bad(path, why):
    return ValueError(f"{path} is not a valid fastbn checkpoint: {why}")


def _text(z, key, path):
    a = z[key]
    if a.dtype.kind != "U" or a.shape != ():
        raise _bad(path, f"entry {key!r} should be a string, got {a.dtype} of shape {a.shape}")
    return str(a)


def load(path):
    """Read a checkpoint written by ``save``. Returns the ``CharMLP``, in eval mode.

    The saved metadata is on ``model.meta`` (a dict), the training state on ``model.train_state``
    (a ``fastbn.train.TrainState``, or None). Raises ``FileNotFoundError`` if there is no
    file and ``ValueError`` if it is not a valid checkpoint (see the module docstring).
    Nothing in the file is executed: pickled objects are refused.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        z = np.load(path, allow_pickle=False)
        if isinstance(z, np.lib.npyio.NpzFile):
            with z:
                arrays = {k: z[k] for k in z.files}
    except (zipfile.BadZipFile, EOFError, OSError, KeyError) as e:
        raise _bad(path, f"cannot read it as .npz ({type(e).__name__}: {e})") from e
    except ValueError as e:   # e.g. "Object arrays cannot be loaded when allow_pickle=False"
        raise _bad(path, str(e)) from e
    if not isinstance(z, np.lib.npyio.NpzFile):
        raise _bad(path, "it holds a single .npy array, not an .npz archive")

    missing = [k for k in _HEADER if k not in arrays]
    if missing:
        raise _bad(path, f"missing entries {missing}")
    version = arrays["format_version"]
    if version.shape != () or version.dtype.kind not in "iu":
        raise _bad(path, f"format_version should be an integer scalar, got {version!r}")
    if int(version) != FORMAT_VERSION:
        raise _bad(path, f"format version {int(version)} is not supported (this fastbn reads "
                         f"version {FORMAT_VERSION})")
    try:
        config = json.loads(_text(arrays, "config", path))
        meta = json.loads(_text(arrays, "meta", path))
    except json.JSONDecodeError as e:
        raise _bad(path, f"config or meta is not valid JSON ({e})") from e
    if not isinstance(config, dict) or not isinstance(meta, dict):
        raise _bad(path, "config and meta must be JSON objects")
    dtype = _text(arrays, "dtype", path)
    if dtype not in ("float32", "float64"):
        raise _bad(path, f"dtype must be float32 or float64, got {dtype!r}")
    try:
        model = CharMLP(_text(arrays, "chars", path), dtype=dtype, seed=0, **config)
    except (TypeError, ValueError) as e:
        raise _bad(path, f"its config {config} does not make a model ({e})") from e

    expected = {f"param/{n}": p for n, p in model.named_parameters()}
    expected.update({f"buffer/{n}": b for n, b in model.named_buffers()})
    state = _train_state(arrays, path)
    stored = {k for k in arrays if k not in _HEADER and k not in _STATE}
    if stored != set(expected):
        lost, extra = sorted(set(expected) - stored), sorted(stored - set(expected))
        raise _bad(path, f"its entries do not match its config: missing {lost}, unexpected {extra}")
    for key, target in expected.items():
        a = arrays[key]
        if a.shape != target.shape:
            raise _bad(path, f"{key} has shape {a.shape}, but the config needs {target.shape}")
        if a.dtype != target.dtype:
            raise _bad(path, f"{key} has dtype {a.dtype}, but the checkpoint's dtype is {dtype}")
        if not np.all(np.isfinite(a)):
            raise _bad(path, f"{key} contains NaN or infinite values")
        target[...] = a
    for name, rv in model.named_buffers():
        if name.endswith("running_var") and np.any(rv < 0):
            raise _bad(path, f"buffer/{name} has negative variances")
    model.meta = meta
    model.train_state = state
    return model.eval()


_STATE = ("state/step", "state/sampler_state", "state/history")


def _train_state(arrays, path):
    """The optional TrainState entries, validated; None when the checkpoint has none."""
    from .train import TrainState

    present = [k for k in _STATE if k in arrays]
    if not present:
        return None
    if len(present) != len(_STATE):
        raise _bad(path, f"incomplete training state: has {present}, needs {list(_STATE)}")
    step, rng, hist = (arrays[k] for k in _STATE)
    if step.shape != () or step.dtype.kind not in "iu" or int(step) < 0:
        raise _bad(path, f"state/step must be a non-negative integer, got {step!r}")
    if rng.shape != (2,) or rng.dtype != np.uint64 or int(rng[1]) % 2 != 1:
        raise _bad(path, "state/sampler_state must be 2 uint64 with an odd stream increment")
    if hist.shape != (int(step),) or hist.dtype != np.float64:
        raise _bad(path, f"state/history must be {int(step)} float64 losses, got {hist.dtype} "
                         f"of shape {hist.shape}")
    return TrainState(int(step), rng.copy(), hist.copy())
