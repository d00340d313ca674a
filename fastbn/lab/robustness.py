"""Batch norm's robustness map: the val loss of the lecture's deep net over a grid of init gain x
learning rate, with and without batch norm (``fastbn lab robustness``).

The lecture says why batch norm made deep nets trainable: without it, a 5-layer tanh net trains
only when the init gain and the learning rate are both about right; with it, almost anywhere.
This measures it: the deep net of ``run_deep`` (``DEEP_NET``: 5 tanh layers of 100, BatchNorm
momentum 0.1 and a BatchNorm on the logits, or neither), trained at every (gain, lr) of the grid
with one constant learning rate, as a sweep (``fastbn.sweep``; its trials are ``fastbn train``
runs: a trial with seed S is ``fastbn train --seed S`` with those options). The map is two
heatmaps side by side on one color scale, and a table; the *trainable region* of a net is the
cells within ``tolerance`` of its best val loss.
"""
from __future__ import annotations

import math
import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from .._figures import new_figure, save_figure
from .._fileio import atomic_write_text
from ..sweep.space import Space
from .experiments import DEEP_NET, write_all

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from ..data import Dataset
    from ..sweep.run import SweepResult

__all__ = ["GAINS", "LRS", "RobustnessMap", "plot_robustness", "robustness_spaces",
           "run_robustness", "write_robustness"]

GAINS = (0.2, 0.5, 1.0, 5 / 3, 3.0, 5.0)
LRS = (0.01, 0.03, 0.1, 0.3, 1.0)
TOLERANCE = 0.05      # a cell within this much of the net's best val loss is "trainable"


def _net(bn):
    return dict(DEEP_NET, batchnorm=bn, final_bn=bn and DEEP_NET["final_bn"])


def robustness_spaces(gains: Sequence[float] = GAINS, lrs: Sequence[float] = LRS,
                      steps: int = 10_000, seeds: int | list[int] = 1) -> list[Space]:
    """The two spaces of the map: the deep net with batch norm, and without, over gains x lrs."""
    return [Space({**_net(bn), "gain": list(gains), "lr": list(lrs), "steps": steps},
                  seeds=seeds) for bn in (True, False)]


def _gain_label(g):
    return {5 / 3: "5/3"}.get(g, f"{g:g}")


@dataclass(repr=False)
class RobustnessMap:
    """The map: for ``bn`` in (True, False), ``val[bn]`` (gains, lrs) mean val loss over the
    seeds that finished (NaN where none did), ``sd[bn]`` their sample sd, ``diverged[bn]`` and
    ``failed[bn]`` trial counts; the sweep's result in ``sweep``.

    Parameters
    ----------
    gains, lrs : tuple of float
        The map's rows and columns.
    steps : int
        Training steps per trial.
    seeds : list of int
        The seeds.
    val, sd, diverged, failed : dict of bool to numpy.ndarray
        As above, shape (len(gains), len(lrs)).
    sweep : fastbn.sweep.SweepResult, optional
        The sweep's result.
    figure : matplotlib.figure.Figure, optional
        The figure.
    files : dict of str to pathlib.Path
        The files written.
    tolerance : float, default 0.05
        How close to the best val loss a cell is "trainable".
    """

    gains: tuple[float, ...]
    lrs: tuple[float, ...]
    steps: int
    seeds: list[int]
    val: dict[bool, np.ndarray]
    sd: dict[bool, np.ndarray]
    diverged: dict[bool, np.ndarray]
    failed: dict[bool, np.ndarray]
    sweep: SweepResult | None = None
    figure: Any = None                      # a matplotlib Figure, once drawn
    files: dict[str, Path] = field(default_factory=dict)
    tolerance: float = TOLERANCE

    def trainable(self, bn: bool) -> tuple[int, int]:
        """Cells within ``tolerance`` of the net's best val loss: (count, cells).

        Parameters
        ----------
        bn : bool
            The net with batch norm, or without.

        Returns
        -------
        count, cells : int
            The trainable cells and all cells.
        """
        v = self.val[bn]
        best = np.nanmin(v) if np.isfinite(v).any() else np.nan
        ok = np.isfinite(v) & (v <= best + self.tolerance)
        return int(ok.sum()), v.size

    def table(self, bn: bool) -> str:
        """Markdown table of one net: rows gains, columns learning rates.

        Parameters
        ----------
        bn : bool
            The net with batch norm, or without.

        Returns
        -------
        str
            Markdown.
        """
        head = "| gain \\ lr | " + " | ".join(f"{lr:g}" for lr in self.lrs) + " |"
        lines = [head, "|---|" + "---:|" * len(self.lrs)]
        best = np.nanmin(self.val[bn]) if np.isfinite(self.val[bn]).any() else np.nan
        for i, g in enumerate(self.gains):
            cells = []
            for j in range(len(self.lrs)):
                v = self.val[bn][i, j]
                if math.isnan(v):
                    cells.append("diverged" if self.diverged[bn][i, j] else
                                 "failed" if self.failed[bn][i, j] else "—")
                else:
                    text = f"{v:.4f}"
                    cells.append(f"**{text}**" if v <= best + self.tolerance else text)
            lines.append(f"| {_gain_label(g)} | " + " | ".join(cells) + " |")
        return "\n".join(lines)

    def markdown(self, figure_link: str | None = None) -> str:
        """The report: what batch norm buys, the two tables and the figure.

        Parameters
        ----------
        figure_link : str, optional
            The figure's file name, linked at the top.

        Returns
        -------
        str
            Markdown.
        """
        n = len(self.gains) * len(self.lrs)
        with_bn, without = self.trainable(True)[0], self.trainable(False)[0]
        seeds = len(self.seeds)
        md = ["# Batch norm's robustness map", ""]
        if figure_link:
            md += [f"![robustness map]({figure_link})", ""]
        md += [f"The lecture's deep net ({DEEP_NET['n_layers']} tanh layers of "
               f"{DEEP_NET['n_hidden']}; with batch norm: BatchNorm1d after every hidden Linear "
               f"and on the logits, momentum {DEEP_NET['bn_momentum']}), Kaiming init at each "
               f"gain, trained {self.steps:,} steps of batch 32 at one constant learning rate; "
               f"val loss in eval mode, mean over {seeds} seed{'s' if seeds > 1 else ''} "
               f"({', '.join(map(str, self.seeds))}). In bold: within {self.tolerance} of the "
               f"net's best, its trainable region: **{with_bn} of {n}** cells with batch norm, "
               f"**{without} of {n}** without.", ""]
        for bn in (True, False):
            md += [f"## {'With' if bn else 'Without'} batch norm", "", self.table(bn), ""]
        return "\n".join(md)


_Arrays = dict[bool, np.ndarray]


def _collect(res: SweepResult, gains: Sequence[float],
             lrs: Sequence[float]) -> tuple[_Arrays, _Arrays, _Arrays, _Arrays]:
    """The map's arrays from a sweep result."""
    shape = (len(gains), len(lrs))
    val = {bn: np.full(shape, np.nan) for bn in (True, False)}
    sd = {bn: np.full(shape, np.nan) for bn in (True, False)}
    div = {bn: np.zeros(shape, int) for bn in (True, False)}
    fail = {bn: np.zeros(shape, int) for bn in (True, False)}
    gi = {float(g): i for i, g in enumerate(gains)}
    li = {float(lr): j for j, lr in enumerate(lrs)}
    for p in res.points():
        bn, i, j = p.params["batchnorm"], gi[p.params["gain"]], li[p.params["lr"]]
        if p.val:
            val[bn][i, j] = p.val_mean
            sd[bn][i, j] = p.val_sd
        div[bn][i, j] = p.diverged
        fail[bn][i, j] = p.failed
    return val, sd, div, fail


def plot_robustness(m: RobustnessMap, path: str | os.PathLike[str] | None = None,
                    ceiling: float | None = None) -> Figure:
    """The two heatmaps side by side (gain rows, lr columns), one color scale, stopped at
    ``ceiling`` (default: the loss of a uniform guess, ln of the vocabulary size).

    Parameters
    ----------
    m : RobustnessMap
        The map (``run_robustness``).
    path : str or os.PathLike, optional
        Also write the figure there.
    ceiling : float, optional
        The top of the color scale.

    Returns
    -------
    matplotlib.figure.Figure
        The figure.
    """
    from ..sweep.figures import cell_text, draw_heatmap
    ceiling = ceiling if ceiling is not None else math.log(m.sweep.vocab_size if m.sweep
                                                           else 27)
    finite = np.concatenate([v[np.isfinite(v)] for v in m.val.values()])
    vmin = float(finite.min()) if finite.size else 0.0
    vmax = max(min(float(finite.max()) if finite.size else 1.0, ceiling), vmin + 1e-3)
    fig, axes = new_figure(5.2 * 2 + 1.2, 1.8 + 0.5 * len(m.gains), 1, 2)
    fig.set_layout_engine("constrained")
    for ax, bn in zip(axes[0], (True, False)):
        text = np.empty(m.val[bn].shape, dtype=object)
        for idx in np.ndindex(text.shape):
            text[idx] = cell_text(m.val[bn][idx], m.diverged[bn][idx], m.failed[bn][idx])
        k, n = m.trainable(bn)
        img = draw_heatmap(ax, m.val[bn], text, [f"{lr:g}" for lr in m.lrs],
                           [_gain_label(g) for g in m.gains], vmin, vmax, "learning rate",
                           "init gain (Kaiming)",
                           f"{'with' if bn else 'without'} batch norm: {k} of {n} cells within "
                           f"{m.tolerance} of its best")
    fig.colorbar(img, ax=list(axes[0]), label=f"val loss (colors stop at {vmax:.2f})")
    fig.suptitle(f"Val loss of the 5-layer tanh net after {m.steps:,} steps, over init gain x "
                 "learning rate", fontsize=10)
    if path is not None:
        save_figure(fig, path)
    return fig


def run_robustness(ds: Dataset, out: str | os.PathLike[str] | None = None, *,
                   gains: Sequence[float] = GAINS, lrs: Sequence[float] = LRS,
                   steps: int = 10_000, seeds: int | list[int] = 1, client: Any = None,
                   scheduler: str | None = None, workers: int | None = None,
                   trial_timeout: float | None = None, resume: bool = False,
                   quiet: bool = True, fmt: Literal["png", "svg"] = "png") -> RobustnessMap:
    """Measure the map (a sweep of 2 x len(gains) x len(lrs) x seeds trials) and return a
    :class:`RobustnessMap` with its figure. With ``out``: the sweep's sweep.json and
    results.csv go into ``out/robustness/`` (``resume=True`` continues them), the figure and
    robustness.md into ``out``. Ctrl-C raises KeyboardInterrupt once the sweep has stopped and
    written what finished.

    Parameters
    ----------
    ds : fastbn.data.Dataset
        The names.
    out : str or os.PathLike, optional
        The folder.
    gains, lrs : sequence of float
        The map's rows and columns.
    steps : int, default 10000
        Training steps per trial.
    seeds : int or list of int, default 1
        As ``fastbn.sweep.Space``.
    client, scheduler, workers : optional
        The cluster, as ``fastbn.sweep.sweep`` takes it (default: a LocalCluster of a worker per
        core, or ``workers=0`` one after another here).
    trial_timeout : float, optional
        As ``fastbn.sweep.sweep``.
    resume : bool, default False
        Continue the sweep in ``out/robustness/``.
    quiet : bool, default True
        No progress output.
    fmt : {"png", "svg"}
        The figure's format.

    Returns
    -------
    RobustnessMap
        The map and its figure.
    """
    from ..sweep import SweepInterrupted, sweep
    spaces = robustness_spaces(gains, lrs, steps, seeds)
    folder = None if out is None else Path(out) / "robustness"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SweepInterrupted)
        res = sweep(spaces, ds, folder, client=client, scheduler=scheduler, workers=workers,
                    trial_timeout=trial_timeout, resume=resume, quiet=quiet, report=False)
    if res.interrupted:     # what finished is in out/robustness/results.csv: resume=True
        raise KeyboardInterrupt
    gains, lrs = tuple(float(g) for g in gains), tuple(float(lr) for lr in lrs)
    m = RobustnessMap(gains, lrs, steps, spaces[0].seeds, *_collect(res, gains, lrs), sweep=res)
    m.figure = plot_robustness(m)
    if out is not None:
        write_robustness(m, out, fmt)
    return m


def write_robustness(m: RobustnessMap, out: str | os.PathLike[str],
                     fmt: str = "png") -> dict[str, Path]:
    """``robustness.md``, then ``robustness.<fmt>``, into ``out`` (a failure raises
    ``WriteError``, an OSError, listing what was written); returns {kind: path}.

    Parameters
    ----------
    m : RobustnessMap
        The map.
    out : str or os.PathLike
        The folder.
    fmt : {"png", "svg"}
        The figure's format.

    Returns
    -------
    dict of str to pathlib.Path
        The files written.
    """
    out = Path(out)
    figure, report = out / f"robustness.{fmt}", out / "robustness.md"
    write_all(out, [(report, lambda p: atomic_write_text(p, m.markdown(figure.name))),
                     (figure, lambda p: save_figure(m.figure, p))])
    m.files.update(figure=figure, report=report)
    return m.files
