"""``sweep()``: a space of trials, run on Dask, into ``OUT/results.csv``, a report and figures.

What a sweep writes into its folder ``OUT``:

- ``sweep.json``: the space (or spaces), the data file and its SHA-256, the fastbn version; what
  ``fastbn sweep --resume OUT`` reads back;
- ``results.csv``: a row per finished trial, rewritten atomically as trials finish
  (``fastbn.sweep.results``);
- ``report.md`` and the figures (``val_vs_<param>.png``, ``heatmap_<a>_<b>.png``): the
  configurations ranked by val loss, at the end (also after Ctrl-C, for what finished).

A second client writing the same folder at the same time is refused (a lock on ``OUT/.lock``).
"""
from __future__ import annotations

import contextlib
import json
import math
import os
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TextIO

from .. import __version__
from .._fileio import atomic_write_text
from .progress import SweepProgress
from .report import markdown_report, summarize
from .results import ResultsFile
from .runner import cluster, require_dask, run_local, run_trials
from .space import Space, resolve
from .trial import run_trial

if TYPE_CHECKING:
    from ..data import Dataset
    from .report import Point
    from .space import Trial

__all__ = ["SweepInterrupted", "SweepResult", "dataset_for", "load_sweep", "sweep"]

SWEEP_FILE, RESULTS_FILE, REPORT_FILE, LOCK_FILE = "sweep.json", "results.csv", "report.md", \
    ".lock"


class SweepInterrupted(UserWarning):
    """A sweep was stopped by Ctrl-C; what finished is in its results (resume to finish)."""


@dataclass(repr=False)
class SweepResult:
    """What ``sweep`` returns: the trials, their rows (trial id -> row of results.csv, losses as
    floats), the configurations ranked (``points()``, ``best()``), the figures (name ->
    matplotlib Figure) and the files written. In Jupyter it shows itself as its report.

    Parameters
    ----------
    spaces : list of Space
        The spaces swept.
    trials : list of Trial
        Their trials.
    rows : dict of str to dict
        Trial id -> its row of results.csv.
    cluster : str
        The cluster, in words.
    wall_time, setup_time : float
        Seconds of the sweep, and of starting the cluster.
    interrupted : bool
        Ctrl-C stopped it.
    out : pathlib.Path or None
        The folder written.
    data_text : str
        The data, in words.
    vocab_size : int
        The vocabulary's size.
    figures : dict of str to matplotlib.figure.Figure
        The figures, by name.
    files : dict of str to pathlib.Path
        The files written, by name.
    extras : dict
        What trial functions returned under ``extra``, by trial id.
    """

    spaces: list[Space]
    trials: list[Trial]
    rows: dict[str, dict[str, Any]]
    cluster: str = ""
    wall_time: float = 0.0
    setup_time: float = 0.0
    interrupted: bool = False
    out: Path | None = None
    data_text: str = ""
    vocab_size: int = 27
    figures: dict[str, Any] = field(default_factory=dict)       # name -> matplotlib Figure
    files: dict[str, Path] = field(default_factory=dict)
    extras: dict[str, Any] = field(default_factory=dict)

    @property
    def description(self) -> str:
        """The sweep in words: its spaces' descriptions.

        Returns
        -------
        str
            For example ``"lr=0.01,0.1 x 2 seeds: 4 trials"``.
        """
        return " + ".join(s.describe() for s in self.spaces)

    def param_names(self) -> list[str]:
        """Every parameter of the spaces.

        Returns
        -------
        list of str
            In the order of the spaces.
        """
        return list(dict.fromkeys(n for s in self.spaces for n in s.params))

    def swept(self) -> list[str]:
        """The parameters whose value differs between trials.

        Returns
        -------
        list of str
            Their names.
        """
        return [n for n in self.param_names() if len({t.text(n) for t in self.trials}) > 1]

    def points(self) -> list[Point]:
        """The configurations (``report.Point``), best mean val loss first.

        Returns
        -------
        list of fastbn.sweep.report.Point
            One per configuration.
        """
        return summarize(self.trials, self.rows)

    def best(self, n: int = 5) -> list[Point]:
        """The ``n`` best configurations (lowest mean val loss).

        Parameters
        ----------
        n : int, default 5
            How many.

        Returns
        -------
        list of fastbn.sweep.report.Point
            The first ``n`` of ``points()``.
        """
        return self.points()[:n]

    def counts(self) -> dict[str, int]:
        """{status: number of trials} of the finished trials (ok, diverged, failed).

        Returns
        -------
        dict of str to int
            The counts.
        """
        out: dict[str, int] = {}
        for s in ("ok", "diverged", "failed"):
            k = sum(r["status"] == s for r in self.rows.values())
            if k:
                out[s] = k
        return out

    def markdown(self, embed: bool = True) -> str:
        """The report; figures embedded as PNG data URIs, or linked by the files written.

        Parameters
        ----------
        embed : bool, default True
            Embed the figures (else link the files).

        Returns
        -------
        str
            Markdown.
        """
        links = None if embed else {k: p.name for k, p in self.files.items() if k != "report"}
        return markdown_report(self, links)

    def _repr_markdown_(self) -> str:
        return self.markdown(embed=True)

    def __str__(self) -> str:
        """The summary ``fastbn sweep`` prints: trials finished, then the best configurations."""
        counts = ", ".join(f"{v} {k}" for k, v in self.counts().items()) or "none"
        stop = " (interrupted)" if self.interrupted else ""
        lines = [self.description,
                 f"{len(self.rows)} of {len(self.trials)} trials finished{stop} ({counts})"
                 + (f" in {self.wall_time:.1f} s on {self.cluster}" if self.cluster else "")]
        ranked = [p for p in self.points() if p.val]
        if ranked:
            lines.append("best configurations (val loss, mean ± sd over seeds):")
            for i, p in enumerate(ranked[:5], start=1):
                sd = f" ± {p.val_sd:.4f}" if len(p.val) > 1 else ""
                lines.append(f"  {i}. {p.label()}: val {p.val_mean:.4f}{sd} ({len(p.val)} of "
                             f"{len(p.trials)} seeds)")
        bad = [r for r in self.rows.values() if r["status"] != "ok"]
        for r in bad[:5]:
            lines.append(f"  {r['status']}: {r.get('trial', '')} {r.get('error', '')}".rstrip())
        return "\n".join(lines)

    def __repr__(self) -> str:
        c = ", ".join(f"{v} {k}" for k, v in self.counts().items()) or "none finished"
        best = self.best(1)
        b = f"; best {best[0].label()}: val {best[0].val_mean:.4f}" if best and best[0].val \
            else ""
        where = f", out={str(self.out)!r}" if self.out else ""
        stop = " (interrupted)" if self.interrupted else ""
        return (f"SweepResult({len(self.rows)} of {len(self.trials)} trials{stop}: {c}{b}"
                f"{where})")


# ----------------------------------------------------------------------------------------------
# data

def _load_data(data):
    from ..data import Dataset, load_dataset
    ds = data if isinstance(data, Dataset) else load_dataset(data)
    return ds.require_splits("train", "val")       # trials are ranked by their val loss


def dataset_for(ds: Dataset, block_size: int) -> Dataset:
    """``ds`` at another block size: the same words, split and vocabulary (``load_dataset``'s
    recipe), contexts of ``block_size`` characters.

    Parameters
    ----------
    ds : fastbn.data.Dataset
        The data.
    block_size : int
        The context length wanted.

    Returns
    -------
    fastbn.data.Dataset
        ``ds`` itself when its block size is that one.
    """
    if ds.block_size == block_size:
        return ds
    from ..data import Dataset, build_dataset, split_words
    parts = [build_dataset(w, ds.vocab, block_size) for w in split_words(ds.words)]
    return Dataset(ds.path, ds.words, ds.vocab, block_size, *parts[0], *parts[1], *parts[2])


def _block_size(trial):
    return resolve(trial.params)[0]["block_size"]


def _sha256(path):
    from ..data import sha256_file
    return sha256_file(path) if path is not None and Path(path).is_file() else None


# ----------------------------------------------------------------------------------------------
# the folder

@contextlib.contextmanager
def _locked(out):
    """Hold ``OUT/.lock`` (POSIX advisory lock): one client writes a sweep folder at a time."""
    if out is None:
        yield
        return
    try:
        import fcntl
    except ImportError:         # Windows: no lock
        yield
        return
    out.mkdir(parents=True, exist_ok=True)
    with open(out / LOCK_FILE, "a") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            raise RuntimeError(f"another fastbn sweep is writing {out} (it holds "
                               f"{out / LOCK_FILE})") from None
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def load_sweep(out: str | os.PathLike[str]) -> tuple[list[Space], str | None, str | None]:
    """(spaces, data path, data SHA-256) stored in ``OUT/sweep.json`` by ``sweep``.

    Parameters
    ----------
    out : str or os.PathLike
        A sweep's folder.

    Returns
    -------
    spaces : list of Space
        Its spaces.
    data : str or None
        The data file's path.
    sha256 : str or None
        Its SHA-256.

    Raises
    ------
    FileNotFoundError
        When there is no ``sweep.json``.
    ValueError
        When it cannot be read.
    """
    path = Path(out) / SWEEP_FILE
    try:
        d = json.loads(path.read_text(encoding="utf-8"))
        spaces = [Space.from_dict(s) for s in d["spaces"]]
    except FileNotFoundError:
        raise FileNotFoundError(f"{path} does not exist: {out} is not a sweep's folder") \
            from None
    except (ValueError, KeyError, TypeError) as e:
        raise ValueError(f"cannot read {path}: {e}") from None
    return spaces, d.get("data"), d.get("data_sha256")


# ----------------------------------------------------------------------------------------------
# the sweep

def sweep(space: Space | Sequence[Space], data: Dataset | str | os.PathLike[str] | None = None,
          out: str | os.PathLike[str] | None = None, *, client: Any = None,
          scheduler: str | None = None, workers: int | None = None,
          trial_timeout: float | None = None, resume: bool = False, retry_failed: bool = False,
          quiet: bool = False, fmt: Literal["png", "svg"] = "png",
          fn: Callable[[Any, Trial], dict[str, Any] | None] | None = None,
          stream: TextIO | None = None, report: bool = True) -> SweepResult:
    """Run every trial of ``space`` on Dask and return a :class:`SweepResult`.

    Parameters
    ----------
    space : Space or list of Space
        The trials (several spaces: their trials together; they must have the same parameters).
    data : fastbn.data.Dataset, path or None
        Loaded once here (None: ``FASTBN_DATA``, the cache or a download, as ``fastbn train``)
        and shipped to every worker; a sweep over ``block_size`` ships one dataset per size.
    out : folder, optional
        Where ``sweep.json``, ``results.csv``, ``report.md`` and the figures go. Without it
        nothing is written.
    client, scheduler, workers :
        The cluster (``runner.cluster``): a ``distributed.Client``, a scheduler address, or a
        LocalCluster of ``workers`` processes (default: one per core), one thread each.
        ``workers=0`` runs the trials one after another in this process, without Dask (and
        without ``trial_timeout``).
    trial_timeout : float, optional
        Seconds after which a running trial is recorded as failed (its worker is restarted).
    resume : bool
        Continue the sweep in ``out``: the trials in its results.csv are skipped. Without it an
        ``out`` that holds results is refused (FileExistsError).
    retry_failed : bool
        With ``resume``: run the failed trials again (diverged ones stay).
    quiet : bool
        No progress (otherwise a bar on a terminal, a line per trial elsewhere, on ``stream``).
    fmt : "png" or "svg"
        Figure format.
    fn : callable, optional
        The trial function (default ``trial.run_trial``), module-level so workers can import it.
    stream : file, optional
        Where the progress goes (default sys.stderr).
    report : bool
        Draw the figures and write report.md at the end.

    Returns
    -------
    SweepResult
        The trials, their results, the configurations ranked, the figures and the files.

    Notes
    -----
    Ctrl-C stops the sweep: the trials under way are cancelled, the results so far written,
    and it returns with ``interrupted=True`` (a ``SweepInterrupted`` warning says how to resume).
    """
    if fmt not in ("png", "svg"):
        raise ValueError(f"fmt must be 'png' or 'svg', got {fmt!r}")
    if trial_timeout is not None and not trial_timeout > 0:
        raise ValueError(f"trial_timeout must be > 0 seconds, got {trial_timeout}")
    if client is not None and (scheduler is not None or workers is not None):
        raise ValueError("give a client, a scheduler address or a number of workers, not several")
    if scheduler is not None and workers is not None:
        raise ValueError("workers is the size of a LocalCluster; a scheduler's cluster has its "
                         "own workers")
    spaces = [space] if isinstance(space, Space) else list(space)
    names = [list(s.params) for s in spaces]
    if any(sorted(n) != sorted(names[0]) for n in names):
        raise ValueError("the spaces of one sweep must have the same parameters")
    trials = list({t.id: t for s in spaces for t in s.trials()}.values())
    local = workers == 0 and client is None and scheduler is None
    if local and trial_timeout is not None:
        raise ValueError("trial_timeout needs Dask workers (a trial in this process cannot be "
                         "stopped): give workers >= 1")
    if client is None and scheduler is None and not local:
        require_dask()      # before loading anything: say how to install it
    ds = _load_data(data)
    sha = _sha256(ds.path)
    out = None if out is None else Path(out).expanduser()
    result = SweepResult(spaces, trials, {}, out=out, vocab_size=ds.vocab.size,
                         data_text=_describe_data(ds, sha))
    results = ResultsFile(None if out is None else out / RESULTS_FILE, result.param_names())
    with _locked(out):
        if out is not None:
            _prepare(out, results, trials, spaces, ds, sha, resume, retry_failed)
        todo = [t for t in trials if t.id not in results.rows]
        progress = SweepProgress(len(trials), done=len(results.rows), quiet=quiet,
                                 stream=stream)
        for line, tid, why in results.dropped:
            progress.note(f"{results.path}, line {line}: not a complete row ({why}); "
                          + (f"trial {tid} runs again" if tid else "dropped"))

        def record(trial: Trial, res: dict[str, Any], runs: int) -> None:
            row = results.add(trial, res, runs=runs, steps=resolve(trial.params)[1]["steps"])
            if res.get("extra") is not None:
                result.extras[trial.id] = res["extra"]
            progress.finished(trial, row)

        data_by_size = {T: replace(dataset_for(ds, T), words=[])
                        for T in dict.fromkeys(_block_size(t) for t in todo)}
        t0 = time.perf_counter()
        try:
            if todo and local:
                result.cluster = "this process, one trial after another (no Dask)"
                run_local(todo, data_by_size, fn or run_trial, data_key=_block_size,
                          on_result=record, on_start=progress.started)
                result.wall_time = time.perf_counter() - t0
            elif todo:
                with cluster(client, scheduler, workers) as (c, desc):
                    result.cluster = desc
                    result.setup_time = time.perf_counter() - t0
                    t1 = time.perf_counter()
                    run_trials(c, todo, data_by_size, fn or run_trial, data_key=_block_size,
                               trial_timeout=trial_timeout, on_result=record,
                               on_start=progress.started, log=progress.note)
                    result.wall_time = time.perf_counter() - t1
        except KeyboardInterrupt:
            result.interrupted = True
            result.wall_time = time.perf_counter() - t0 - result.setup_time
        finally:
            progress.close()
            results.flush()
        result.rows = dict(results.rows)
        if out is not None:
            result.files["results"] = results.path
        if report and result.rows:
            _report(result, out, fmt)
    if result.interrupted:
        where = f" (fastbn sweep --resume {out})" if out is not None else ""
        warnings.warn(f"sweep interrupted after {len(result.rows)} of {len(trials)} trials; "
                      f"resume it with sweep(..., resume=True){where}", SweepInterrupted,
                      stacklevel=2)
    return result


def _describe_data(ds, sha):
    return (f"{ds.path} ({len(ds.Xtr):,} / {len(ds.Xdev):,} / {len(ds.Xte):,} examples, "
            f"vocabulary {ds.vocab.size}" + (f", SHA-256 {sha[:16]}..." if sha else "") + ")")


def _prepare(out, results, trials, spaces, ds, sha, resume, retry_failed):
    """Check the folder against ``resume``, read its results, write sweep.json."""
    meta_path = out / SWEEP_FILE
    if results.path.exists() and not resume:
        raise FileExistsError(f"{out} already holds a sweep's results ({results.path}): resume "
                              "it (fastbn sweep --resume OUT, or sweep(..., resume=True)) or "
                              "choose another folder")
    if resume and meta_path.exists():
        _, path, old_sha = load_sweep(out)
        if old_sha is not None and sha is not None and old_sha != sha:
            raise ValueError(f"the data {ds.path} is not the data of the sweep in {out} "
                             f"({path}, SHA-256 {old_sha[:16]}...): its trials would not be "
                             "comparable")
    if resume:
        results.load(trials)        # a row cut short or invalid is dropped: it runs again
        if retry_failed:
            results.drop("failed")
    out.mkdir(parents=True, exist_ok=True)
    meta = {"fastbn": __version__, "spaces": [s.to_dict() for s in spaces],
            "data": None if ds.path is None else str(Path(ds.path).resolve()),
            "data_sha256": sha, "columns": results.header}
    atomic_write_text(meta_path, json.dumps(meta, indent=1) + "\n")
    results.flush(force=True)       # the header at least: the folder is a sweep's from now on


def _report(result, out, fmt):
    """Draw the figures and, with a folder, write them and report.md."""
    from .figures import sweep_figures
    values = {}
    for s in result.spaces:
        values.update(s.params)
    result.figures = sweep_figures(result.points(), values, result.swept(),
                                   ceiling=math.log(result.vocab_size))
    if out is None:
        return
    from .._figures import save_figure
    for name, fig in result.figures.items():
        result.files[name] = save_figure(fig, out / f"{name}.{fmt}")
    result.files["report"] = atomic_write_text(out / REPORT_FILE, result.markdown(embed=False))
