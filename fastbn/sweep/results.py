"""``OUT/results.csv``: one row per finished trial, written atomically as trials finish.

Columns: ``trial`` (the id), one per parameter of the space (``steps`` is among the results),
``seed``, then the trial's result
(``fastbn.sweep.trial.COLUMNS``: status, train/val/test loss, steps, wall time, trial time,
path, worker, error) and ``runs`` (how many times the trial was started: more than 1 when a
worker died under it and Dask ran it again). Floats are written with ``repr``, so they read back
bit for bit.

Every write replaces the whole file through ``fastbn._fileio.atomic_write`` (a temporary file,
synced, renamed over the old one): a reader, or a client killed at any instant, sees the
previous complete file or the new one, never a part. Writes are throttled to one per
``interval`` seconds while trials stream in (rewriting a long file for every trial would cost
quadratic time); ``flush`` writes what is pending, and the sweep flushes at the end, on Ctrl-C
and on any error. A client killed outright (SIGKILL, power loss) loses at most the last
``interval`` seconds of results, which ``--resume`` runs again.

``--resume`` trusts only complete, valid rows (``ResultsFile.load``): a file cut short by
something else (a copy interrupted, a full disk on another tool's write, an edit) has its bad
rows run again, and is rewritten with the good ones.
"""
import csv
import io
import math
import time
from pathlib import Path

from .._fileio import atomic_write_text
from .trial import COLUMNS

__all__ = ["ResultsFile", "STATUSES", "columns"]

STATUSES = ("ok", "diverged", "failed")
_FLOATS = ("train_loss", "val_loss", "test_loss", "wall_time", "trial_time")
_MAX_ERROR = 300


def columns(param_names):
    """The header of a results file for these parameters (``steps``, a parameter and a result,
    is one column: the steps the trial ran)."""
    return ["trial", *_own(param_names), "seed", *COLUMNS, "runs"]


def _own(param_names):
    return [n for n in param_names if n not in COLUMNS]


def _cell(v):
    if v is None:
        return ""
    if isinstance(v, float):
        return "" if math.isnan(v) else repr(v)
    return str(v)


def _float(text):
    return float(text) if text not in ("", None) else math.nan


def _number(text, kind, low, required):
    """Why ``text`` is not a ``kind`` (int or float) >= ``low`` (finite), or None. Empty text is
    fine unless ``required``."""
    if text == "":
        return "is empty" if required else None
    try:
        v = kind(text)
    except ValueError:
        return f"{text!r} is not a number" if kind is float else f"{text!r} is not an integer"
    if not (math.isfinite(v) and v >= low):
        return f"{text!r} is not a finite number >= {low}"
    return None


def _invalid(line, fields, header):
    """Why a line of a results file is not a complete, well-formed row, or None."""
    if not line.endswith("\n"):
        return "the line is cut short (no newline at its end: the write did not finish)"
    if len(fields) != len(header):
        return f"it has {len(fields)} columns, not {len(header)}"
    row = dict(zip(header, fields))
    status = row["status"]
    if status not in STATUSES:
        return f"unknown status {status!r}"
    checks = {"seed": (int, 0, True), "steps": (int, 0, True), "runs": (int, 1, True),
              "trial_time": (float, 0, status == "ok"), "wall_time": (float, 0, status == "ok"),
              "val_loss": (float, -math.inf, status == "ok"),
              "train_loss": (float, -math.inf, False), "test_loss": (float, -math.inf, False)}
    for k, (kind, low, required) in checks.items():
        why = _number(row[k], kind, low, required)
        if why is not None:
            return f"{k}: {why}"
    if status == "ok" and not row["worker"]:      # a trial the cluster lost has no worker
        return "worker: is empty"
    if status != "ok" and not row["error"]:
        return f"a {status} trial without its error"
    if row["path"] not in ("", "fused", "per-layer"):
        return f"path: unknown {row['path']!r}"
    return None


def _other_trial(row, trial, param_names):
    """Why ``row`` is not a row of ``trial`` (its parameter values and seed), or None."""
    if trial is None:
        return None
    if row["seed"] != str(trial.seed):
        return f"seed {row['seed']!r} is not the trial's {trial.seed}"
    for n in param_names:
        want = trial.text(n) if n in trial.params else ""
        if row[n] != want:
            return f"{n} {row[n]!r} is not the trial's {want!r}"
    return None


class ResultsFile:
    """The results of a sweep, in memory and in ``path``.

    ``rows`` maps trial id -> row (a dict of the columns: the parameters and the seed as text,
    losses and times as float, NaN when absent), in the order the trials finished.
    """

    def __init__(self, path, param_names, interval=1.0):
        self.path = None if path is None else Path(path)
        self.header = columns(param_names)
        self.param_names = _own(param_names)
        self.interval = float(interval)
        self.rows = {}
        self._dirty = False
        self._written = -math.inf
        self.dropped = []

    def load(self, trials):
        """Read the rows already in the file (none if there is no file) for ``--resume``.

        ``trials``: the sweep's trials (or only their ids, which checks less). Only complete,
        valid rows count as done: a row is kept when it ends with a newline (the last line of a
        file cut short by a crash or a full disk does not), has every column, and each column
        reads as what it holds (the trial's own parameter values and seed; a status of
        ``STATUSES`` with the fields it requires: an "ok" row its finite val loss, times and
        worker, a diverged or failed one its error; numbers that parse; ``runs`` >= 1). Any
        other row is dropped (its trial runs again), listed in ``self.dropped`` as (line number,
        trial id or "", reason), and the file is marked to be rewritten with the good rows
        (``flush``).

        Raises ValueError when the file is not a results file of this space: another header, a
        complete row of a trial id the space does not have, or a trial twice.
        """
        self.dropped = []
        if self.path is None or not self.path.exists():
            return {}
        by_id = {(t if isinstance(t, str) else t.id): (None if isinstance(t, str) else t)
                 for t in trials}
        text = self.path.read_text(encoding="utf-8", errors="replace")
        parts = text.split("\n")        # rows hold no newline (an error is put on one line)
        lines = [p + "\n" for p in parts[:-1]] + ([parts[-1]] if parts[-1] else [])
        header = next(csv.reader(lines[:1]), None)
        if header != self.header:
            raise ValueError(f"{self.path} has the columns {', '.join(header or [])}; "
                             f"this sweep's are {', '.join(self.header)}: it is the results "
                             "file of another sweep")
        for i, line in enumerate(lines[1:], start=2):
            if not line.strip():
                continue
            fields = next(csv.reader([line]), [])
            tid = fields[0] if fields else ""
            why = _invalid(line, fields, self.header)
            if why is None:
                row = dict(zip(self.header, fields))
                if tid not in by_id:
                    raise ValueError(f"{self.path}, line {i}: trial {tid} is not in this "
                                     "sweep's space (the file belongs to another sweep, or was "
                                     "edited)")
                if tid in self.rows:
                    raise ValueError(f"{self.path}, line {i}: trial {tid} appears twice")
                why = _other_trial(row, by_id[tid], self.param_names)
            if why is not None:
                self.dropped.append((i, tid if tid in by_id else "", why))
                continue
            for k in _FLOATS:
                row[k] = _float(row[k])
            self.rows[tid] = row
        self._dirty = self._dirty or bool(self.dropped)
        return dict(self.rows)

    def drop(self, status):
        """Forget the rows with this status (they run again); returns how many."""
        gone = [k for k, r in self.rows.items() if r["status"] == status]
        for k in gone:
            del self.rows[k]
        self._dirty = self._dirty or bool(gone)
        return len(gone)

    def add(self, trial, result, runs=1, steps=None):
        """Record a finished trial (``result``: the dict ``execute`` returned); writes the file
        when ``interval`` seconds have passed since the last write."""
        row = {"trial": trial.id, "seed": str(trial.seed), "runs": str(runs)}
        for n in self.param_names:
            row[n] = trial.text(n) if n in trial.params else ""
        for k in COLUMNS:
            v = result.get(k)
            row[k] = (_float(v) if v is None else float(v)) if k in _FLOATS else _cell(v)
        if not row["steps"] and steps is not None:
            row["steps"] = str(steps)
        err = " ".join(row["error"].split())          # one line
        row["error"] = err if len(err) <= _MAX_ERROR else err[:_MAX_ERROR - 3] + "..."
        self.rows[trial.id] = row
        self._dirty = True
        if time.monotonic() - self._written >= self.interval:
            self.flush()
        return row

    def text(self):
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=self.header, lineterminator="\n")
        w.writeheader()
        for row in self.rows.values():
            w.writerow({k: _cell(v) for k, v in row.items()})
        return buf.getvalue()

    def flush(self, force=False):
        """Write the file now if anything changed since the last write (atomically)."""
        if self.path is None or not (self._dirty or force):
            return
        atomic_write_text(self.path, self.text())
        self._dirty = False
        self._written = time.monotonic()
