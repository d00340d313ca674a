"""Targets a benchmark run is judged against: which number, and its bound.

The installed benchmark has no targets of its own; a run is judged against the targets it is
given (``run(targets=...)``, ``fastbn bench --targets FILE``), and results.md lists them under
their title. A targets file is JSON, ``{"title": "Targets (...)", "targets": [target, ...]}`` or
just the list; each target names a metric and one bound, ``"max"`` (met when measured <= max) or
``"min"`` (met when measured >= min):

============== ========================================= ==========================================
metric         keys besides the bound                    measured
============== ========================================= ==========================================
us_per_step    dtype, batch_size, peer (default fused)   the peer's median µs per step
speedup        dtype, batch_size, peer                   peer µs / fused µs (times slower than
                                                         the fused loop)
speedup_of     dtype, batch_size, impl, peer             peer µs / impl µs (how many times faster
                                                         impl is than peer), e.g. per_layer/numpy
full_seconds   (none)                                    wall seconds of the full training run
full_val_loss  (none)                                    its val loss afterwards (eval mode)
op_speedup     op, pass, batch_size, peer, dtype         one op call (``fastbn.bench.opcalls``):
               (default float32)                         peer µs / fastbn µs; pass "forward",
                                                         "backward" or "forward+backward" (sums)
op_gap_us      op, pass, batch_size, peer, dtype         fastbn µs - peer µs of one op call
               (default float32)
============== ========================================= ==========================================

The inference metrics (``fastbn.bench.inference``) take ``dtype``, ``task`` ("eval" or "sample")
and ``peer`` (default "folded"): ``inference_rate`` is the peer's examples/s (eval) or names/s
(sample), ``inference_speedup`` its rate / the unfolded model's.

Example: ``{"metric": "speedup", "dtype": "float32", "batch_size": 32, "peer": "torch",
"min": 10}`` reads "B=32 float32: >= 10x faster than PyTorch eager"; ``{"metric": "op_speedup",
"op": "tanh", "pass": "forward", "batch_size": 32, "peer": "numpy", "min": 1}`` reads "one call,
B=32 float32: tanh forward >= 1x faster than NumPy"; ``{"metric": "inference_speedup", "dtype":
"float32", "task": "eval", "min": 1.5}`` reads "float32 eval: fastbn, folded >= 1.5x the unfolded
model's examples/s". A target the run did not measure (another batch size, no ``--full``, no
torch) is reported as not measured.
"""
from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

from .. import _validate
from . import inference
from .opcalls import OPS as OPCALL_OPS
from .opcalls import PASSES
from .peers import IMPLS
from .timing import FULL_STEPS

__all__ = ["judge", "load_targets"]

_KEYS = {"us_per_step": {"dtype", "batch_size", "peer"},
         "speedup": {"dtype", "batch_size", "peer"},
         "speedup_of": {"dtype", "batch_size", "impl", "peer"},
         "full_seconds": set(), "full_val_loss": set(),
         "op_speedup": {"op", "pass", "batch_size", "peer", "dtype"},
         "op_gap_us": {"op", "pass", "batch_size", "peer", "dtype"}}
_KEYS.update(inference.TARGET_METRICS)          # inference_rate, inference_speedup
_OP_METRICS = ("op_speedup", "op_gap_us")
_OP_PASSES = (*PASSES, "forward+backward")
_OP_PEERS = ("numpy", "torch")
# the peers as a target's text names them
_SHORT = {"fused": "fused", "per_layer": "the per-layer API", "numpy": "NumPy",
          "torch": "PyTorch eager"}
_OP_SHORT = {"numpy": "NumPy", "torch": "PyTorch"}


def load_targets(source: str | os.PathLike[str] | dict[str, Any] | list[Any] | None,
                 ) -> dict[str, Any] | None:
    """Targets from a JSON file (str or Path), a dict or a list as in the module docstring.

    Parameters
    ----------
    source : str, os.PathLike, dict, list or None
        The targets.

    Returns
    -------
    dict or None
        ``{"title": str, "targets": [dict, ...]}`` checked and completed (``peer`` filled in), or
        None for None.

    Raises
    ------
    ValueError
        Naming the bad entry.
    OSError
        For an unreadable file.
    """
    if source is None:
        return None
    where = "targets"
    if isinstance(source, (str, Path)):
        where = f"targets file {source}"
        try:
            source = json.loads(Path(source).read_text(encoding="utf-8"))
        except json.JSONDecodeError as e:
            raise ValueError(f"{where}: not valid JSON ({e})") from None
    if isinstance(source, list):
        source = {"targets": source}
    if not isinstance(source, dict) or set(source) - {"title", "targets"} or \
            not isinstance(source.get("targets"), list):
        raise ValueError(f"{where}: expected a list of targets or {{\"title\": ..., "
                         f"\"targets\": [...]}}, got {_short(source)}")
    title = source.get("title", "Targets")
    if not isinstance(title, str) or not title.strip() or "\n" in title:
        raise ValueError(f"{where}: the title must be a one-line string, got {title!r}")
    return {"title": title, "targets": [_check(t, f"{where}, target {i}")
                                        for i, t in enumerate(source["targets"])]}


def _check(t, where):
    if not isinstance(t, dict) or t.get("metric") not in _KEYS:
        raise ValueError(f"{where}: expected {{\"metric\": one of {', '.join(_KEYS)}, ...}}, "
                         f"got {_short(t)}")
    keys = _KEYS[t["metric"]]
    bounds = [k for k in ("min", "max") if k in t]
    unknown = set(t) - keys - {"metric", "min", "max"}
    if unknown:
        raise ValueError(f"{where}: unknown key(s) {', '.join(sorted(unknown))} for metric "
                         f"{t['metric']} (its keys: {', '.join(sorted(keys | {'min', 'max'}))})")
    if len(bounds) != 1:
        raise ValueError(f"{where}: give exactly one bound, min or max, got {_short(t)}")
    bound = t[bounds[0]]
    if isinstance(bound, bool) or not isinstance(bound, (int, float)) or not math.isfinite(bound):
        raise ValueError(f"{where}: {bounds[0]} must be a finite number, got {bound!r}")
    if t["metric"] in inference.TARGET_METRICS:
        return inference.check_target(t, where)
    out = dict(t)
    if t["metric"] in _OP_METRICS:
        return _check_op(t, where)
    if keys:
        need = {"dtype", "batch_size"} | ({"peer"} if t["metric"] == "speedup" else set()) | \
            ({"impl", "peer"} if t["metric"] == "speedup_of" else set())
        missing = need - set(t)
        if missing:
            raise ValueError(f"{where}: metric {t['metric']} needs {', '.join(sorted(missing))}")
        try:
            _validate.float_dtype_name(t["dtype"])
        except ValueError as e:
            raise ValueError(f"{where}: {e}") from None
        B = t["batch_size"]
        if isinstance(B, bool) or not isinstance(B, int) or B < 2:
            raise ValueError(f"{where}: batch_size must be an integer >= 2, got {B!r}")
        out["peer"] = t.get("peer", "fused")
        if out["peer"] not in IMPLS or (t["metric"] == "speedup" and out["peer"] == "fused"):
            allowed = [k for k in IMPLS if t["metric"] != "speedup" or k != "fused"]
            raise ValueError(f"{where}: peer must be one of {', '.join(allowed)}, got "
                             f"{out['peer']!r}")
        if t["metric"] == "speedup_of" and (t["impl"] not in IMPLS or t["impl"] == t["peer"]):
            raise ValueError(f"{where}: impl must be one of {', '.join(IMPLS)} other than the "
                             f"peer, got {t['impl']!r}")
    return out


def _check_op(t, where):
    """A target of one op call: op, pass, batch_size, peer; dtype float32 unless given."""
    out = {"dtype": "float32", **t}
    missing = {"op", "pass", "batch_size", "peer"} - set(t)
    if missing:
        raise ValueError(f"{where}: metric {t['metric']} needs {', '.join(sorted(missing))}")
    for key, allowed in (("op", tuple(OPCALL_OPS)), ("pass", _OP_PASSES), ("peer", _OP_PEERS),
                         ("dtype", ("float32", "float64"))):
        if out[key] not in allowed:
            raise ValueError(f"{where}: {key} must be one of {', '.join(allowed)}, got "
                             f"{out[key]!r}")
    B = t["batch_size"]
    if isinstance(B, bool) or not isinstance(B, int) or B < 2:
        raise ValueError(f"{where}: batch_size must be an integer >= 2, got {B!r}")
    return out


def _short(obj, n=80):
    text = repr(obj)
    return text if len(text) <= n else text[:n - 3] + "..."


def _find(res, dt, B, name):
    for r in res["results"]:
        if r["dtype"] == dt and r["batch_size"] == B and name in r["impls"]:
            return r["impls"][name]
    return None


def judge(res: dict[str, Any], targets: dict[str, Any] | None) -> list[dict[str, Any]]:
    """The run ``res`` (as ``run`` returns it) against ``load_targets``' targets.

    Parameters
    ----------
    res : dict
        A run's results.
    targets : dict or None
        As ``load_targets`` returns them.

    Returns
    -------
    list of dict
        ``[{"target": text, "measured": formatted or None, "value": float or None, "ok": bool,
        or None when not measured}]``, in the order of the targets; [] for None.
    """
    if targets is None:
        return []
    full = res["full_training"]
    steps = full["steps"] if full else FULL_STEPS
    out = []
    for t in targets["targets"]:
        kind = "min" if "min" in t else "max"
        bound, op = t[kind], ">=" if kind == "min" else "<="
        metric = t["metric"]
        if metric in _OP_METRICS:
            value, text, fmt = _judge_op(res.get("opcalls"), t, op, bound)
        elif metric == "speedup_of":
            impl, peer = (_find(res, t["dtype"], t["batch_size"], k) for k in (t["impl"],
                                                                                t["peer"]))
            value = impl and peer and peer["us_per_step"] / impl["us_per_step"]
            text = (f"B={t['batch_size']} {t['dtype']}: {_SHORT[t['impl']]} {op} {bound:g}x "
                    f"faster than {_SHORT[t['peer']]}")
            fmt = "{:.2f}x"
        elif metric in ("us_per_step", "speedup"):
            cell = _find(res, t["dtype"], t["batch_size"], t["peer"])
            where = f"B={t['batch_size']} {t['dtype']}: "
            if metric == "us_per_step":
                value = cell and cell["us_per_step"]
                text, fmt = f"{where}{_SHORT[t['peer']]} {op} {bound:g} us/step", "{:.1f} us"
            else:
                value = cell and cell["speedup"]
                text = f"{where}{op} {bound:g}x faster than {_SHORT[t['peer']]}"
                fmt = "{:.1f}x"
        elif metric in inference.TARGET_METRICS:
            value, text, fmt = inference.judge_target(res, t, op, bound)
        elif metric == "full_seconds":
            value = full and full["wall_seconds"]
            text, fmt = f"{steps:,} steps (fused loop) {op} {bound:g} s", "{:.2f} s"
        else:
            value = full and full["losses"]["val"]
            text, fmt = f"val loss after {steps:,} steps {op} {bound:g}", "{:.4f}"
        ok = None if value is None else (value >= bound if kind == "min" else value <= bound)
        out.append({"target": text, "measured": None if value is None else fmt.format(value),
                    "value": value, "ok": ok})
    return out


def _judge_op(opc, t, op, bound):
    """(value or None, text, format) of an op-call target against the run's table ``opc``."""
    label = OPCALL_OPS[t["op"]].split(" (")[0]
    where = f"one call, B={t['batch_size']} {t['dtype']}: {label} {t['pass']}"
    if t["metric"] == "op_speedup":
        text, fmt = f"{where} {op} {bound:g}x faster than {_OP_SHORT[t['peer']]}", "{:.2f}x"
    else:
        text = f"{where} {op} {bound:g} us slower than {_OP_SHORT[t['peer']]}"
        fmt = "{:+.2f} us"
    if not opc or opc["dtype"] != t["dtype"] or t["peer"] not in opc["impls"]:
        return None, text, fmt
    us = {}
    for p in t["pass"].split("+"):
        row = next((r for r in opc["rows"] if r["op"] == t["op"] and r["pass"] == p
                    and r["batch_size"] == t["batch_size"]), None)
        if row is None:
            return None, text, fmt
        for k in ("fastbn", t["peer"]):
            us[k] = us.get(k, 0.0) + row["impls"][k]["us"]
    if t["metric"] == "op_speedup":
        return us[t["peer"]] / us["fastbn"], text, fmt
    return us["fastbn"] - us[t["peer"]], text, fmt
