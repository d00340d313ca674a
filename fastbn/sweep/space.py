"""The search space of a sweep: parameters, their values, and the trials they make.

A trial is one ``fastbn.train`` run of one ``CharMLP``: a value for each parameter of the space
(the others keep the defaults of ``CharMLP`` and ``train``, which are ``fastbn train``'s) and a
seed. ``Space.trials()`` lists them:

- a **grid**: the product of every parameter's list of values, times the seeds;
- a **random search** (``random=N``): N draws, each parameter from its list (uniformly) or from
  its range (``Range``: log-uniform by default, as learning rates and gains are searched), times
  the seeds. The draws come from ``numpy.random.default_rng(space_seed)``, so the same space
  draws the same trials.

A trial's **id** is a hash of its parameter values and seed (``trial_id``): the same space gives
the same ids in every run, which is how ``--resume`` knows which trials are done. A seed means
what it means for ``fastbn train --seed S`` (``fastbn.training.seed_streams``): the trial with
seed S is that command with the same options, to the bit.

On the command line a parameter is ``NAME=V1,V2,...`` (``parse_param``); ``lr_schedule`` values
hold commas themselves, so its values are separated by ``;``. A range is ``LOW:HIGH``
(log-uniform, 0 < LOW < HIGH) or ``LOW:HIGH:lin`` (uniform) and needs ``random=N``.

This module imports no Dask.
"""
from __future__ import annotations

import hashlib
import inspect
import itertools
import json
import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .. import _validate
from ..model import ACTIVATIONS, INIT_SCHEMES, CharMLP
from ..training import (
    DEFAULT_SEED,
    default_lr_schedule,
    format_lr_schedule,
    parse_lr_schedule,
    train,
)

__all__ = ["PARAMS", "Param", "Range", "Space", "Trial", "default_seeds", "parse_param",
           "resolve", "trial_id"]


# ----------------------------------------------------------------------------------------------
# the parameters a sweep can vary

def _bool(text):
    t = str(text).strip().lower()
    if t in ("true", "yes", "on", "1"):
        return True
    if t in ("false", "no", "off", "0"):
        return False
    raise ValueError(f"expected true or false, got {text!r}")


def _number(kind, low=None, high=None, check=None):
    """A converter of text or a number to a ``kind`` taken by ``check`` (the library's check of
    the option, a function of ``fastbn._validate``, which says why not first), finite, within
    [low, high]."""
    def conv(v):
        if isinstance(v, bool):
            raise ValueError(f"expected a number, got {v!r}")
        if isinstance(v, str):
            try:
                x = kind(v.strip())
            except ValueError:
                raise ValueError(f"expected {'an integer' if kind is int else 'a number'}, "
                                 f"got {v!r}") from None
        elif kind is int and isinstance(v, (float, np.floating)):
            if not float(v).is_integer():
                raise ValueError(f"expected an integer, got {v!r}")
            x = int(v)
        else:
            x = kind(v)
        if check is not None:
            x = check(x, None)
        if not math.isfinite(x):
            raise ValueError(f"expected a finite number, got {v!r}")
        if low is not None and x < low:
            raise ValueError(f"must be >= {low:g}, got {v!r}")
        if high is not None and x > high:
            raise ValueError(f"must be <= {high:g}, got {v!r}")
        return x
    return conv


# a size or a count: an integer >= 1
_count = _number(int, check=_validate.positive_int)


def _choice(options):
    def conv(v):
        if v not in options:
            raise ValueError(f"expected one of {', '.join(options)}, got {v!r}")
        return v
    return conv


def _schedule(v):
    """A schedule from its text, one number, or (step, lr) pairs (exact: no rounding)."""
    if isinstance(v, str):
        return parse_lr_schedule(v)
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        return parse_lr_schedule(repr(float(v)))
    try:
        text = ",".join(f"{int(s)}:{float(lr)!r}" for s, lr in v)
    except (TypeError, ValueError):
        raise ValueError(f"expected STEP:LR,... or (step, lr) pairs, got {v!r}") from None
    return parse_lr_schedule(text)


def _dtype(v):
    return _validate.float_dtype(v, None).name


@dataclass(frozen=True)
class Param:
    """One parameter a sweep can vary: how to read a value, and where it goes.

    ``kind`` is "float", "int", "bool", "choice" or "schedule" (only numbers have ranges);
    ``target`` is "model" (a ``CharMLP`` argument) or "train" (a ``train`` argument).
    """

    name: str
    kind: str
    convert: Callable[[Any], Any] = field(repr=False)
    target: str
    help: str


PARAMS = {p.name: p for p in [
    Param("lr", "float", _number(float, check=_validate.finite_positive), "train",
          "one learning rate for the whole run (instead of lr_schedule)"),
    Param("lr_schedule", "schedule", _schedule, "train",
          "STEP:LR,... as fastbn train --lr-schedule; values separated by ';'"),
    Param("steps", "int", _count, "train", "SGD steps"),
    Param("batch_size", "int", _count, "train", "examples per step"),
    Param("calibrate", "bool", _bool, "train", "BN statistics from the whole training set"),
    Param("init", "choice", _choice(INIT_SCHEMES), "model", "initialization scheme"),
    Param("gain", "float", _number(float, check=_validate.finite_positive), "model",
          "Kaiming gain of the hidden layers (init kaiming)"),
    Param("batchnorm", "bool", _bool, "model", "BatchNorm after each hidden Linear"),
    Param("final_bn", "bool", _bool, "model", "a BatchNorm on the logits"),
    Param("bn_momentum", "float", _number(float, check=_validate.momentum), "model",
          "weight of the new batch in the running statistics"),
    Param("bn_eps", "float", _number(float, check=_validate.eps), "model",
          "BatchNorm epsilon"),
    Param("bn_unbiased", "bool", _bool, "model",
          "BatchNorm normalizes with the unbiased batch variance, the lecture's (fastbn train "
          "--bn-variance unbiased)"),
    Param("n_hidden", "int", _count, "model", "hidden width"),
    Param("n_embd", "int", _count, "model", "embedding size"),
    Param("block_size", "int", _count, "model", "characters of context"),
    Param("n_layers", "int", _count, "model", "hidden blocks"),
    Param("activation", "choice", _choice(ACTIVATIONS), "model", "nonlinearity"),
    Param("negative_slope", "float", _number(float, check=_validate.negative_slope), "model",
          "slope of leaky_relu below 0"),
    Param("dtype", "choice", _dtype, "model", "float32 or float64"),
]}


def _defaults():
    """The defaults of every parameter: those of ``CharMLP`` and ``train`` (``fastbn train``'s)."""
    out = {}
    for fn, skip in ((CharMLP.__init__, {"self", "vocab", "seed"}),
                     (train, {"model", "data", "seed"})):
        for name, p in inspect.signature(fn).parameters.items():
            if name in PARAMS and name not in skip and p.default is not inspect.Parameter.empty:
                out[name] = p.default
    out["dtype"] = np.dtype(out["dtype"]).name
    # None: train's default, the lecture's schedule scaled to the trial's steps (resolve)
    out["lr_schedule"] = None if out["lr_schedule"] is None else _schedule(out["lr_schedule"])
    return out


DEFAULTS = _defaults()


def default_seeds(k: int) -> list[int]:
    """The seeds of ``seeds=k``: ``fastbn train``'s default seed, then 1, 2, ..., k-1 (so one seed
    is exactly ``fastbn train``, and ten are those of ``bench/seeds.sh``).

    Parameters
    ----------
    k : int
        How many seeds.

    Returns
    -------
    list of int
        The seeds.
    """
    k = _number(int, 1)(k)
    return [DEFAULT_SEED] + list(range(1, k))


# ----------------------------------------------------------------------------------------------
# values, ranges and their text

@dataclass(frozen=True)
class Range:
    """A continuous range of a numeric parameter, drawn from by a random search: log-uniform
    (``scale="log"``, needs 0 < low) or uniform (``"lin"``); integers are rounded.

    Parameters
    ----------
    low, high : float
        The range.
    scale : {"log", "lin"}, default "log"
        Log-uniform or uniform.
    """

    low: float
    high: float
    scale: str = "log"

    def __post_init__(self) -> None:
        if self.scale not in ("log", "lin"):
            raise ValueError(f"a range's scale is 'log' or 'lin', got {self.scale!r}")
        if not (math.isfinite(self.low) and math.isfinite(self.high) and self.low < self.high):
            raise ValueError(f"a range needs finite LOW < HIGH, got {self.low:g}:{self.high:g}")
        if self.scale == "log" and not self.low > 0:
            raise ValueError(f"{self.low:g}:{self.high:g} is log-uniform, which needs LOW > 0; "
                             f"write {self.low:g}:{self.high:g}:lin for a uniform range")

    def draw(self, rng: np.random.Generator, kind: str) -> float:
        """One value from the range.

        Parameters
        ----------
        rng : numpy.random.Generator
            The source.
        kind : str
            The parameter's kind (``"int"`` rounds, within the range).

        Returns
        -------
        float or int
            The value.
        """
        if self.scale == "log":
            x = math.exp(rng.uniform(math.log(self.low), math.log(self.high)))
        else:
            x = rng.uniform(self.low, self.high)
        return min(max(round(x), math.ceil(self.low)), math.floor(self.high)) if kind == "int" \
            else float(x)

    def text(self) -> str:
        """The range as ``--param`` takes it.

        Returns
        -------
        str
            ``"LOW:HIGH"``, or ``"LOW:HIGH:lin"``.
        """
        return f"{self.low:g}:{self.high:g}" + (":lin" if self.scale == "lin" else "")


def _convert(param, v):
    try:
        return param.convert(v)
    except (TypeError, ValueError) as e:
        raise ValueError(f"{param.name}: {e}") from None


def _param(name):
    key = str(name).strip().replace("-", "_")
    if key not in PARAMS:
        raise ValueError(f"unknown parameter {name!r}; the parameters a sweep can vary are "
                         f"{', '.join(PARAMS)}")
    return PARAMS[key]


def _values(param, values):
    """A parameter's values checked and converted (a list, duplicates dropped) or a Range."""
    if isinstance(values, Range):
        if param.kind not in ("float", "int"):
            raise ValueError(f"{param.name} takes a list of values, not a range "
                             f"({values.text()})")
        if param.kind == "float":
            lo, hi = (_convert(param, v) for v in (values.low, values.high))
        else:           # integers: the range must hold one the parameter takes
            lo, hi = float(values.low), float(values.high)
            if math.ceil(lo) > math.floor(hi):
                raise ValueError(f"{param.name}: {values.text()} holds no integer")
            _convert(param, math.ceil(lo))
        return Range(lo, hi, values.scale)
    if isinstance(values, (str, bytes)) or not hasattr(values, "__iter__"):
        values = [values]
    out = []
    for v in values:
        v = _convert(param, v)
        if v not in out:
            out.append(v)
    if not out:
        raise ValueError(f"{param.name}: empty list of values")
    return out


def parse_param(text: str) -> tuple[str, list[Any] | Range]:
    """``"NAME=V1,V2,..."`` -> (name, [values]) or (name, Range) for ``"NAME=LOW:HIGH[:lin]"``.

    Parameters
    ----------
    text : str
        As ``fastbn sweep --param`` takes it.

    Returns
    -------
    name : str
        The parameter.
    values : list or Range
        Its values, converted.

    Raises
    ------
    ValueError
        Naming what is wrong: no ``=``, an unknown name, an empty list or value, a value of the
        wrong type, a range of a non-numeric parameter or a log range with LOW <= 0.
    """
    name, sep, rest = str(text).partition("=")
    if not sep:
        raise ValueError(f"expected NAME=V1,V2,... (e.g. lr=0.01,0.1), got {text!r}")
    param = _param(name)
    rest = rest.strip()
    if not rest:
        raise ValueError(f"{param.name}: empty list of values")
    if param.kind in ("float", "int") and ":" in rest:
        parts = rest.split(":")
        if len(parts) not in (2, 3) or "," in rest or (len(parts) == 3 and
                                                      parts[2] not in ("log", "lin")):
            raise ValueError(f"{param.name}: a range is LOW:HIGH (log-uniform) or LOW:HIGH:lin, "
                             f"got {rest!r}")
        try:
            lo, hi = float(parts[0]), float(parts[1])
        except ValueError:
            raise ValueError(f"{param.name}: a range is LOW:HIGH with two numbers, got "
                             f"{rest!r}") from None
        try:
            return param.name, _values(param, Range(lo, hi, parts[2] if len(parts) == 3
                                                    else "log"))
        except ValueError as e:
            raise ValueError(f"{param.name}: {e}".replace(f"{param.name}: {param.name}: ",
                                                          f"{param.name}: ")) from None
    sep = ";" if param.kind == "schedule" else ","
    items = [v.strip() for v in rest.split(sep)]
    if any(not v for v in items):
        raise ValueError(f"{param.name}: empty value in {rest!r}")
    return param.name, _values(param, items)


def _canonical(param, v):
    """A JSON-able form of a converted value, the same for equal values."""
    if param.kind == "schedule":
        return [[s, lr] for s, lr in v]
    return v


def _text(param, v):
    """A value as text (the results file, the report)."""
    if param.kind == "schedule":
        return format_lr_schedule(v)
    if param.kind == "bool":
        return "true" if v else "false"
    if param.kind == "float":
        return repr(float(v))
    return str(v)


def short_label(param, v):
    """A value as a short label (``0.1``, ``1.667``, ``true``)."""
    if param.kind == "float":
        return f"{v:.4g}"
    return _text(param, v)


def trial_id(params: Mapping[str, Any], seed: int) -> str:
    """12 hex digits of the SHA-256 of a trial's parameter values and seed (canonical JSON).

    Parameters
    ----------
    params : dict
        Parameter name -> value.
    seed : int
        The seed.

    Returns
    -------
    str
        12 hexadecimal digits.
    """
    blob = json.dumps({"params": {k: _canonical(PARAMS[k], v) for k, v in params.items()},
                       "seed": int(seed)}, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


# ----------------------------------------------------------------------------------------------
# trials

@dataclass(frozen=True)
class Trial:
    """One run: ``params`` (name -> value, the space's parameters) and ``seed``; ``id`` is
    ``trial_id(params, seed)``.

    Parameters
    ----------
    id : str
        ``trial_id(params, seed)``.
    params : dict
        Parameter name -> value.
    seed : int
        The run's seed.
    """

    id: str
    params: dict[str, Any] = field(hash=False)
    seed: int

    def text(self, name: str) -> str:
        """The value of parameter ``name`` as text.

        Parameters
        ----------
        name : str
            A parameter of the trial.

        Returns
        -------
        str
            Its value, as ``--param`` takes it.
        """
        return _text(PARAMS[name], self.params[name])

    def label(self, seed: bool = True) -> str:
        """``lr=0.1 n_hidden=200 seed=1``: the trial in words (``seed=False``: its point).

        Parameters
        ----------
        seed : bool, default True
            Include the seed.

        Returns
        -------
        str
            One line.
        """
        words = [f"{k}={short_label(PARAMS[k], v)}" for k, v in self.params.items()]
        return " ".join(words + ([f"seed={self.seed}"] if seed else [])) or "defaults"


def resolve(params: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(model keyword arguments, train keyword arguments) of a trial's ``params``, the defaults
    filled in. ``lr`` becomes a constant ``lr_schedule``; without either, the schedule is
    ``fastbn train``'s default, the lecture's scaled to the trial's steps
    (``default_lr_schedule``)."""
    cfg = dict(DEFAULTS)
    cfg.update(params)
    if "lr" in params:
        cfg["lr_schedule"] = ((0, float(params["lr"])),)
    elif cfg["lr_schedule"] is None:
        cfg["lr_schedule"] = default_lr_schedule(cfg["steps"])
    cfg.pop("lr", None)
    model = {k: v for k, v in cfg.items() if PARAMS[k].target == "model"}
    run = {k: v for k, v in cfg.items() if PARAMS[k].target == "train"}
    return model, run


def _check_combination(params):
    """The rules between parameters that no single value breaks (ValueError)."""
    model, run = resolve(params)
    if run["batch_size"] < 2 and (model["batchnorm"] or model["final_bn"]):
        raise ValueError("batch_size 1 cannot train with batch normalization (the variance of one "
                         "example is undefined): use batch_size >= 2 or batchnorm=false")
    if model["gain"] is not None and model["init"] != "kaiming":
        raise ValueError(f"gain applies to init kaiming only, not {model['init']}")


class Space:
    """Parameters and their values, and seeds: the trials of a sweep.

    Parameters
    ----------
    params : dict, optional
        Name (one of ``PARAMS``) -> a list of values, one value, or a ``Range`` (random search
        only). Values may be text (``"0.1"``, ``"true"``) or Python values.
    random : int, optional
        Draw this many points (each parameter from its list or range) instead of the grid.
    seeds : int or list of int
        K replicas of every point, with the seeds ``default_seeds(K)`` (``fastbn train``'s
        default seed first), or these seeds.
    space_seed : int
        Seeds the random draws.

    Raises
    ------
    ValueError
        For an unknown parameter, an empty list, a value of the wrong type, both ``lr`` and
        ``lr_schedule``, a range in a grid, or a combination no model can take.
    """

    def __init__(self, params: Mapping[str, Any] | None = None, *, random: int | None = None,
                 seeds: int | list[int] | tuple[int, ...] = 1, space_seed: int = 0) -> None:
        self.params: dict[str, Any] = {}      # name -> its list of values, or a Range
        for name, values in (params or {}).items():
            p = _param(name)
            if p.name in self.params:
                raise ValueError(f"{p.name} is given twice")
            self.params[p.name] = _values(p, values)
        if "lr" in self.params and "lr_schedule" in self.params:
            raise ValueError("give lr (one rate for the whole run) or lr_schedule, not both")
        if random is not None:
            random = _number(int, 1)(random)
        self.random = random
        self.space_seed = _number(int, 0)(space_seed)
        if isinstance(seeds, (list, tuple)):
            if not seeds:
                raise ValueError("seeds: empty list")
            self.seeds: list[int] = list(dict.fromkeys(_number(int, 0, 2**63 - 1)(s)
                                                       for s in seeds))
        else:
            self.seeds = default_seeds(seeds)
        ranges = [n for n, v in self.params.items() if isinstance(v, Range)]
        if ranges and random is None:
            raise ValueError(f"{ranges[0]}={self.params[ranges[0]].text()} is a range: draw "
                             "from it with random=N (--random N); a grid takes lists of values")
        self._trials: list[Trial] | None = None
        self.trials()       # every combination checked now, not on a worker

    @classmethod
    def parse(cls, specs: Iterable[str], **kw: Any) -> Space:
        """A Space from ``["NAME=V1,V2", "NAME=LOW:HIGH", ...]`` (``parse_param`` each)."""
        params: dict[str, Any] = {}
        for text in specs:
            name, values = parse_param(text)
            if name in params:
                raise ValueError(f"{name} is given twice; list its values once: "
                                 f"{name}=V1,V2,...")
            params[name] = values
        return cls(params, **kw)

    def swept(self) -> list[str]:
        """The parameters that take more than one value (a list of several, or a range).

        Returns
        -------
        list of str
            Their names.
        """
        return [n for n, v in self.params.items() if isinstance(v, Range) or len(v) > 1]

    def points(self) -> list[dict[str, Any]]:
        """The points of the space (params dicts, without seeds), in order.

        Returns
        -------
        list of dict
            Parameter name -> value.
        """
        names = list(self.params)
        if self.random is None:
            return [dict(zip(names, combo))
                    for combo in itertools.product(*(self.params[n] for n in names))]
        rng = np.random.default_rng(self.space_seed)
        pts: list[dict[str, Any]] = []
        for _ in range(self.random):
            pt: dict[str, Any] = {}
            for n in names:
                v = self.params[n]
                pt[n] = (v.draw(rng, PARAMS[n].kind) if isinstance(v, Range)
                         else v[int(rng.integers(len(v)))])
            pts.append(pt)
        return pts

    def trials(self) -> list[Trial]:
        """Every trial: each point times each seed (seeds innermost), duplicates dropped.

        Returns
        -------
        list of Trial
            The trials.
        """
        if self._trials is None:
            out: list[Trial] = []
            seen: set[str] = set()
            for pt in self.points():
                _check_combination(pt)
                for s in self.seeds:
                    t = Trial(trial_id(pt, s), pt, s)
                    if t.id not in seen:
                        seen.add(t.id)
                        out.append(t)
            self._trials = out
        return list(self._trials)

    def to_dict(self) -> dict[str, Any]:
        """The space as JSON-able data (``OUT/sweep.json``); ``Space.from_dict`` reads it.

        Returns
        -------
        dict
            JSON-able.
        """
        return {"params": {n: ({"range": [v.low, v.high, v.scale]} if isinstance(v, Range)
                               else [_canonical(PARAMS[n], x) for x in v])
                           for n, v in self.params.items()},
                "random": self.random, "space_seed": self.space_seed, "seeds": self.seeds}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Space:
        params: dict[str, Any] = {}
        for n, v in d["params"].items():
            if isinstance(v, dict):
                params[n] = Range(*v["range"])
            elif PARAMS[_param(n).name].kind == "schedule":
                params[n] = [tuple(map(tuple, x)) for x in v]
            else:
                params[n] = v
        return cls(params, random=d.get("random"), seeds=list(d["seeds"]),
                   space_seed=d.get("space_seed", 0))

    def describe(self) -> str:
        """``"lr=0.01,0.1 n_hidden=100,200 x 2 seeds: 8 trials"``.

        Returns
        -------
        str
            One line.
        """
        parts = []
        for n, v in self.params.items():
            vals = v.text() if isinstance(v, Range) else ",".join(_text(PARAMS[n], x) for x in v)
            parts.append(f"{n}={vals}")
        where = f"{self.random} random draws of " if self.random else ""
        seeds = f"{len(self.seeds)} seed{'s' if len(self.seeds) > 1 else ''}"
        space = " ".join(parts) or "fastbn train's defaults"
        return f"{where}{space} x {seeds}: {len(self.trials())} trials"

    def __repr__(self) -> str:
        return f"Space({self.describe()})"
