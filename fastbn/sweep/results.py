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

    def load(self, trial_ids):
        """Read the rows already in the file (none if there is no file) for ``--resume``.

        Raises ValueError when the file is not a results file of this space: another header, a
        trial id the space does not have, a trial twice, or an unknown status.
        """
        if self.path is None or not self.path.exists():
            return {}
        text = self.path.read_text(encoding="utf-8")
        reader = csv.DictReader(io.StringIO(text))
        if reader.fieldnames != self.header:
            raise ValueError(f"{self.path} has the columns {', '.join(reader.fieldnames or [])}; "
                             f"this sweep's are {', '.join(self.header)}: it is the results "
                             "file of another sweep")
        known = set(trial_ids)
        for i, row in enumerate(reader, start=2):
            tid = row["trial"]
            if tid not in known:
                raise ValueError(f"{self.path}, line {i}: trial {tid} is not in this sweep's "
                                 "space (the file belongs to another sweep, or was edited)")
            if tid in self.rows:
                raise ValueError(f"{self.path}, line {i}: trial {tid} appears twice")
            if row["status"] not in STATUSES:
                raise ValueError(f"{self.path}, line {i}: unknown status {row['status']!r}")
            for k in _FLOATS:
                row[k] = _float(row[k])
            self.rows[tid] = row
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
