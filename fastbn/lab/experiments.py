"""The laboratory's experiments: ``run_lab`` (``fastbn lab``) trains one model under a Probe and
writes its figures, tables and report; ``run_ladder`` and ``run_deep`` (``fastbn lab ladder``) run
the lecture's five initializations of the BN-MLP and its deep 5-layer net with and without batch
norm at gains 1, 5/3 and 3; ``write_ladder`` writes their report.
"""
from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from .._fileio import atomic_write_text
from ..model import LADDER, CharMLP
from ..sweep.space import Space
from ..training import DEFAULT_SEED, default_lr_schedule, lr_at, train
from . import report
from .plots import (
    plot_activations,
    plot_activations_over_training,
    plot_dead_units,
    plot_deep,
    plot_gradients,
    plot_ladder,
    plot_loss,
    plot_update_ratios,
    plot_weight_grads,
    save_figure,
)
from .probe import Probe, Snapshot, dead_units_on_split
from .report import when_taken
from .stats import LossCheck, initial_loss_check
from .trials import DEEP_LR, deep_trial, ladder_trial, run_sweep, seed_generators

if TYPE_CHECKING:
    from ..data import Dataset
    from ..training import ScheduleLike

__all__ = ["DEEP_GAINS", "DEEP_NET", "LabResult", "WriteError", "ladder_figures", "run_deep",
           "run_lab", "run_ladder", "write_lab", "write_ladder"]

# The lecture's deep net (part 3, second half) and the gains it tries.
DEEP_NET: dict[str, Any] = {"n_hidden": 100, "n_layers": 5, "final_bn": True, "bn_momentum": 0.1}
DEEP_GAINS = (1.0, 5 / 3, 3.0)


@dataclass(repr=False)
class LabResult:
    """What ``run_lab`` made: the trained model and its probe, the checks and losses, the figures
    (name -> ``matplotlib.figure.Figure``) and tables, and the files written (name -> path; empty,
    and ``report`` None, when ``run_lab`` was given no folder).

    In Jupyter a LabResult shows itself as the report: findings in words, the tables and the
    figures (embedded PNGs). ``markdown()`` is the same report as markdown.

    Parameters
    ----------
    model : CharMLP
        The trained model.
    probe : Probe
        Its records.
    loss_check : LossCheck
        The initial-loss check.
    dead_init, dead_final : dict of str to (int, int)
        Dead units per layer over the training split, at init and at the end.
    losses : dict of str to float
        The final losses.
    history : numpy.ndarray or None
        Every step's loss.
    wall_time : float
        Seconds of the run.
    overhead : float
        The share of the time the probe took.
    figures : dict of str to matplotlib.figure.Figure
        The figures, by name.
    tables : list
        The tables.
    settings : dict
        The run's settings.
    files : dict of str to pathlib.Path
        The files written.
    report : pathlib.Path or None
        report.md, when written.
    """

    model: CharMLP
    probe: Probe
    loss_check: LossCheck
    dead_init: dict[str, tuple[int, int]]
    dead_final: dict[str, tuple[int, int]]
    losses: dict[str, float]
    history: np.ndarray | None
    wall_time: float
    overhead: float
    figures: dict[str, Any]                 # name -> matplotlib Figure
    tables: list[Any]
    settings: dict[str, Any]
    files: dict[str, Path] = field(default_factory=dict)
    report: Path | None = None

    def markdown(self, embed: bool = True) -> str:
        """The report as markdown; figures embedded as PNG data URIs (``embed=True``, renders
        anywhere) or linked by the file names written next to ``report.md``.

        Parameters
        ----------
        embed : bool, default True
            Embed the figures (else link the files).

        Returns
        -------
        str
            Markdown.
        """
        if embed:
            links = {k: "data:image/png;base64," + report.png_base64(f)
                     for k, f in self.figures.items()}
        else:
            links = {k: p.name for k, p in self.files.items()}
        return report.lab_report(self, links)

    def _repr_html_(self) -> str:
        return report.markdown_to_html(self.markdown(embed=True) + "\n## Tables\n\n"
                                       + report.tables_text(self.tables, markdown=True))

    def __repr__(self) -> str:
        c = self.loss_check
        losses = ", ".join(f"{k} {v:.4f}" for k, v in self.losses.items())
        where = f", report={str(self.report)!r}" if self.report else ""
        return (f"LabResult({self.settings['steps']:,} steps, {len(self.probe.snapshots)} "
                f"snapshots, initial loss {c.measured:.4f} ({c.verdict}), loss {losses}, "
                f"{len(self.figures)} figures{where})")


def _init_batch(ds: Dataset, n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    ix = np.random.default_rng(seed).integers(0, len(ds.Xtr), size=n)
    return ds.Xtr[ix], ds.Ytr[ix]


def _lab_figures(probe, history):
    """The figures of a lab run, by name (the file stem each is saved under)."""
    last, when = probe.last, when_taken(probe.last)
    figs = {
        "activations": plot_activations(
            last, None, f"Forward pass {when}: distribution of each nonlinearity's output"),
        "gradients": plot_gradients(
            last, None, f"Backward pass {when}: distribution of dL/d(output) per nonlinearity"),
        "weight_grads": plot_weight_grads(
            last, None, f"Weight gradients {when} (grad:data = std(grad) / std(W))"),
        "update_ratio": plot_update_ratios(probe),
        "dead_units": plot_dead_units(probe),
    }
    if len(probe.snapshots) > 2:
        figs["activations_over_training"] = plot_activations_over_training(probe)
    if history is not None:
        figs["loss"] = plot_loss(history)
    return figs


def run_lab(ds: Dataset, out: str | os.PathLike[str] | None = None, *, steps: int = 1000,
            every: int = 100, batch_size: int = 32, lr_schedule: ScheduleLike | None = None,
            seed: int = DEFAULT_SEED, init_batch: int = 1000, fmt: Literal["png", "svg"] = "png",
            quiet: bool = True, **model_kw: Any) -> LabResult:
    """Build a ``CharMLP(ds.vocab, **model_kw)``, train it ``steps`` steps on the per-layer path
    with a Probe recording every ``every`` steps, and return a :class:`LabResult` with its
    figures, tables and findings.

    With ``out`` (a folder) it also writes the figures (``fmt`` "png" or "svg"), ``stats.txt`` and
    ``stats.md`` (the tables) and ``report.md`` (figures and findings in words) there; without,
    it writes nothing.

    The initial loss is measured over ``init_batch`` random training examples (training mode, no
    update); the first snapshot is step 0's minibatch (the init parameters), or with ``steps=0``
    one minibatch of ``batch_size``. Dead units are counted over the whole training split at init
    and at the end. ``lr_schedule`` None is ``fastbn.train``'s default, the lecture's scaled to
    ``steps`` (``default_lr_schedule``).

    Parameters
    ----------
    ds : fastbn.data.Dataset
        The names.
    out : str or os.PathLike, optional
        A folder to write the report into.
    steps : int, default 1000
        Training steps.
    every : int, default 100
        The probe's interval.
    batch_size : int, default 32
        The minibatch size.
    lr_schedule : float, sequence of (int, float), str or None
        As ``fastbn.train``.
    seed : int, optional
        The run's seed.
    init_batch : int, default 1000
        Examples of the initial-loss measure.
    fmt : {"png", "svg"}
        The figures' format.
    quiet : bool, default True
        No progress output.
    **model_kw
        Options of ``CharMLP``.

    Returns
    -------
    LabResult
        The model, the records, the figures, tables and findings.
    """
    if fmt not in ("png", "svg"):
        raise ValueError(f"fmt must be 'png' or 'svg', got {fmt!r}")
    init_rng, batch_rng = seed_generators(seed)
    model = CharMLP(ds.vocab, seed=init_rng, **model_kw)
    probe = Probe(model, every=every)
    # (measure records the loss it computes: never None)
    check = initial_loss_check(probe.measure(*_init_batch(ds, init_batch, seed)).loss,  # type: ignore[arg-type]
                               ds.vocab.size)
    dead_init = dead_units_on_split(model, ds.Xtr)
    history, wall = None, 0.0
    if steps > 0:
        res = train(model, ds, steps=steps, batch_size=batch_size, lr_schedule=lr_schedule,
                    seed=batch_rng, quiet=quiet, callback=probe, every=every, fused=False)
        history, wall, losses = res.history, res.wall_time, res.losses
    else:
        schedule = default_lr_schedule(1) if lr_schedule is None else lr_schedule
        probe.measure(*_init_batch(ds, batch_size, seed + 1), lr=lr_at(schedule, 0),
                      keep=True)
        losses = {n: model.evaluate(*ds.split(n)) for n in ("train", "val")}
    dead_final = dead_units_on_split(model, ds.Xtr)
    tables = report.lab_tables(check, losses, probe.first, probe.last, dead_init, dead_final,
                               init_batch, steps)
    overhead = probe.seconds / (wall - probe.seconds) if steps else float("nan")
    settings = {"steps": steps, "batch_size": batch_size, "seed": seed, "every": every}
    result = LabResult(model, probe, check, dead_init, dead_final, losses, history, wall,
                       overhead, _lab_figures(probe, history), tables, settings)
    if out is not None:
        write_lab(result, out, fmt)
    return result


class WriteError(OSError):
    """Writing a report's files failed part way; ``written`` are the files written before (the
    tables and the report come first, then the figures).

    Parameters
    ----------
    error : OSError
        What failed.
    path : path-like
        The file being written.
    written : sequence of pathlib.Path
        The files written before.
    """

    def __init__(self, error: OSError, path: object, written: Sequence[Path]) -> None:
        super().__init__(error.errno, error.strerror or str(error), str(path))
        self.written = list(written)


def write_all(out, writers):
    """Call ``writers`` [(path, write(path))] in order; a failure raises WriteError."""
    written = []
    try:
        out.mkdir(parents=True, exist_ok=True)
        for path, write in writers:
            write(path)
            written.append(path)
    except OSError as e:
        raise WriteError(e, e.filename or (writers[len(written)][0] if writers else out),
                         written) from e
    return written


def write_lab(result: LabResult, out: str | os.PathLike[str], fmt: str = "png") -> LabResult:
    """Write a LabResult's tables (stats.txt, stats.md), report (report.md) and figures into the
    folder ``out``, in that order, so that a failure (WriteError, an OSError) loses the least:
    ``WriteError.written`` lists what was written.

    Parameters
    ----------
    result : LabResult
        What ``run_lab`` made.
    out : str or os.PathLike
        The folder.
    fmt : {"png", "svg"}
        The figures' format.

    Returns
    -------
    LabResult
        ``result``, its ``files`` and ``report`` set.
    """
    out = Path(out)
    result.files = {k: out / f"{k}.{fmt}" for k in result.figures}   # the report links them
    writers = [(out / "stats.txt",
                lambda p: atomic_write_text(p, report.tables_text(result.tables))),
               (out / "stats.md",
                lambda p: atomic_write_text(p, report.tables_text(result.tables, markdown=True))),
               (out / "report.md", lambda p: atomic_write_text(p, result.markdown(embed=False)))]
    writers += [(path, lambda p, f=result.figures[k]: save_figure(f, p))  # type: ignore[misc]
                for k, path in result.files.items()]
    write_all(out, writers)
    result.report = out / "report.md"
    return result



@dataclass
class LadderRow:
    """One configuration of the init ladder: its init Snapshot, final losses, loss history.

    Parameters
    ----------
    name : str
        The configuration.
    init : Snapshot
        The statistics at init.
    losses : dict of str to float
        The final losses.
    history : numpy.ndarray or None
        Every step's loss.
    """

    name: str
    init: Snapshot
    losses: dict[str, float]
    history: np.ndarray | None = field(repr=False)

    @property
    def tanh(self) -> dict[str, Any]:
        """The first tanh layer's statistics at init.

        Returns
        -------
        dict
            ``{"mean", "std", "saturated", ...}``.
        """
        return next(iter(self.init.activations.values()))


@dataclass
class DeepRow:
    """The deep net at one gain, with or without batch norm: Snapshots at init and at the end.

    Parameters
    ----------
    batchnorm : bool
        With batch norm.
    gain : float
        The init gain.
    init, final : Snapshot
        The statistics at init and at the end.
    losses : dict of str to float
        The final losses.
    diverged : str, optional
        What diverged, when the run did.
    """

    batchnorm: bool
    gain: float
    init: Snapshot
    final: Snapshot
    losses: dict[str, float]
    diverged: str | None = None

    @property
    def name(self) -> str:
        """The net in words.

        Returns
        -------
        str
            For example ``"BN, gain 5/3"``.
        """
        g = {1.0: "1", 5 / 3: "5/3", 3.0: "3"}.get(self.gain, f"{self.gain:g}")
        return f"{'BN' if self.batchnorm else 'no BN'}, gain {g}"

    def verdict(self) -> str:
        """"gain too small / about right / too large", read from the statistics at init.

        The first tanh layer is left out: its input is the embedding (std 1), not a tanh. Too
        large: more than 15 % saturated on average; too small: the std falls by more than 20 %
        from the second tanh layer to the last.

        Returns
        -------
        str
            The verdict.
        """
        acts = list(self.init.activations.values())[1:] or list(self.init.activations.values())
        if np.mean([a["saturated"] for a in acts]) > 0.15:
            return "too large: tanh saturates"
        if acts[-1]["std"] < 0.8 * acts[0]["std"]:
            return "too small: activations shrink with depth"
        return "about right"


def run_ladder(ds: Dataset, steps: int = 200_000, seed: int = DEFAULT_SEED,
               init_batch: int = 1000, configs: Sequence[str] | None = None,
               progress: Callable[[str], object] | None = None,
               *, client: Any = None, scheduler: str | None = None,
               workers: int | None = None) -> list[LadderRow]:
    """The lecture's five configurations of the BN-MLP (``fastbn.model.LADDER``), each trained
    ``steps`` steps on the per-layer path from the same seed (same N(0,1) draws, same
    minibatches), with ``fastbn.train``'s default schedule: the lecture's scaled to ``steps``
    (lr 0.1, then 0.01 from ``steps // 2``; exactly the lecture's for 200,000 steps).

    The init statistics come from one forward on ``init_batch`` random training examples (the
    same for every configuration), here. The trainings are a sweep (``lab.trials.run_sweep``):
    in parallel on Dask (``client``, ``scheduler`` or ``workers``; by default a LocalCluster
    with a worker per core, or one after another here without Dask), with the same results as
    one after another. Returns a list of LadderRow.

    Parameters
    ----------
    ds : fastbn.data.Dataset
        The names.
    steps : int, default 200000
        Training steps per configuration.
    seed : int, optional
        The runs' seed.
    init_batch : int, default 1000
        Examples of the init statistics.
    configs : sequence of str, optional
        Names of ``fastbn.model.LADDER`` (default all five).
    progress : callable, optional
        Receives progress lines.
    client, scheduler, workers : optional
        The cluster, as ``fastbn.sweep.sweep`` takes it (default: a LocalCluster of a worker per
        core, or ``workers=0`` one after another here).

    Returns
    -------
    list of LadderRow
        One per configuration.
    """
    Xi, Yi = _init_batch(ds, init_batch, seed)
    names = list(configs or LADDER)
    snaps, models = {}, {}
    for name in names:
        init_rng, _ = seed_generators(seed)
        models[name] = CharMLP(ds.vocab, seed=init_rng, **LADDER[name])
        snaps[name] = Probe(models[name]).measure(Xi, Yi)
        if progress:
            progress(f"{name}: initial loss {snaps[name].loss:.4f}"
                     + (f"; training {steps:,} steps" if steps else ""))
    if not steps:
        return [LadderRow(n, snaps[n], {s: models[n].evaluate(*ds.split(s))
                                        for s in ("train", "val")}, None) for n in names]
    spaces = [Space({**LADDER[n], "steps": steps}, seeds=[seed]) for n in names]
    done = run_sweep(spaces, ds, ladder_trial, client=client, scheduler=scheduler,
                     workers=workers, progress=progress)
    rows = []
    for name, (_, row, extra) in zip(names, done):
        if row["status"] != "ok":
            raise _not_ok(name, row)
        rows.append(LadderRow(name, snaps[name], {"train": row["train_loss"],
                                                  "val": row["val_loss"]}, extra["history"]))
    return rows


def _not_ok(name, row):
    """The exception of a trial that did not finish: FloatingPointError when it diverged."""
    kind = FloatingPointError if row["status"] == "diverged" else RuntimeError
    return kind(f"{name}: {row['error']}")


def run_deep(ds: Dataset, steps: int = 1000, seed: int = DEFAULT_SEED,
             gains: Sequence[float] = DEEP_GAINS, batch_size: int = 32,
             progress: Callable[[str], object] | None = None,
             *, client: Any = None, scheduler: str | None = None,
             workers: int | None = None) -> list[DeepRow]:
    """The lecture's deep net (``DEEP_NET``) with and without batch norm at each gain.

    Without batch norm the net also has no final BatchNorm (the lecture removes both); its output
    layer is then 0.01 N(0,1) = 0.1/sqrt(100) N(0,1), the lecture's "make it less confident".
    Each is trained ``steps`` steps (lr 0.1, the per-layer path), as a sweep like ``run_ladder``
    (``client``, ``scheduler``, ``workers``). Returns a list of DeepRow with the snapshots of the
    first minibatch (init) and the last (B = ``batch_size``, the lecture's).

    Parameters
    ----------
    ds : fastbn.data.Dataset
        The names.
    steps : int, default 1000
        Training steps per net.
    seed : int, optional
        The runs' seed (``fastbn train``'s default).
    gains : sequence of float
        The init gains.
    batch_size : int, default 32
        The minibatch size.
    progress : callable, optional
        Receives progress lines.
    client, scheduler, workers : optional
        The cluster, as ``fastbn.sweep.sweep`` takes it (default: a LocalCluster of a worker per
        core, or ``workers=0`` one after another here).

    Returns
    -------
    list of DeepRow
        One per net and gain.
    """
    kws = [(bn, gain, dict(DEEP_NET, batchnorm=bn, final_bn=bn and DEEP_NET["final_bn"]))
           for bn in (True, False) for gain in gains]
    done: list[Any] = [(None, None, {})] * len(kws)
    if steps:
        spaces = [Space({**kw, "gain": gain, "steps": steps}, seeds=[seed])
                  for _, gain, kw in kws]
        done = run_sweep(spaces, ds, deep_trial, client=client, scheduler=scheduler,
                         workers=workers, progress=progress)
    rows = []
    for (bn, gain, kw), (_, row, extra) in zip(kws, done):
        first, last = extra.get("init"), extra.get("final")
        if row is not None and row["status"] == "failed":
            raise _not_ok(f"deep net, {'BN' if bn else 'no BN'}, gain {gain:g}", row)
        if first is None:
            model = CharMLP(ds.vocab, seed=seed_generators(seed)[0], gain=gain, **kw)
            probe = Probe(model, every=max(steps, 1))
            probe.measure(*_init_batch(ds, batch_size, seed), keep=True, lr=DEEP_LR)
            first = last = probe.first
        losses: dict[str, float] = ({} if row is None or row["status"] != "ok"
                                    else {"val": row["val_loss"]})
        diverged = row["error"] if row is not None and row["status"] == "diverged" else None
        r = DeepRow(bn, gain, first, last, losses, diverged)
        if progress:
            progress(f"deep net {r.name}: gain {r.verdict()}")
        rows.append(r)
    return rows


def ladder_figures(rows: Sequence[LadderRow], deep: Sequence[DeepRow]) -> dict[str, Any]:
    """The figures of the ladder (``plot_ladder``) and of the deep net (``plot_deep``: tanh
    outputs and their gradients, at init and at the end), by name.

    Parameters
    ----------
    rows : sequence of LadderRow
        The ladder (``run_ladder``).
    deep : sequence of DeepRow
        The deep nets (``run_deep``).

    Returns
    -------
    dict of str to matplotlib.figure.Figure
        The figures, by name.
    """
    figs = plot_ladder(rows) if rows else {}
    for section in ("activations", "gradients") if deep else ():
        for when in ("init", "final"):
            figs[f"deep_{section}_{when}"] = plot_deep(deep, None, section, when)
    return figs


def write_ladder(rows: Sequence[LadderRow], deep: Sequence[DeepRow], out: str | os.PathLike[str],
                 ext: str = "png", steps: int | None = None,
                 deep_steps: int | None = None) -> dict[str, Path]:
    """ladder.txt, ladder.md (the report) and the figures into ``out``, in that order (a
    failure raises WriteError, an OSError, listing what was written); returns {kind: path}.

    Parameters
    ----------
    rows : sequence of LadderRow
        The ladder.
    deep : sequence of DeepRow
        The deep nets.
    out : str or os.PathLike
        The folder.
    ext : {"png", "svg"}
        The figures' format.
    steps, deep_steps : int, optional
        The runs' steps, for the report.

    Returns
    -------
    dict of str to pathlib.Path
        The files written.
    """
    out = Path(out)
    figs = ladder_figures(rows, deep)
    files = {k: out / f"{k}.{ext}" for k in figs}
    text, md = report.ladder_report(rows, deep, {k: p.name for k, p in files.items()}, steps,
                                    deep_steps, DEEP_NET)
    write_all(out, [(out / "ladder.txt", lambda p: atomic_write_text(p, text)),
                     (out / "ladder.md", lambda p: atomic_write_text(p, md))]
               + [(path, lambda p, f=figs[k]: save_figure(f, p)) for k, path in files.items()])
    return {"report": out / "ladder.md", **files}
