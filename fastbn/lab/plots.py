"""The laboratory's figures: one function per figure, each drawn from Snapshots or results.

Every ``plot_*`` returns a ``matplotlib.figure.Figure`` (which a Jupyter notebook shows inline as
the value of a cell); given a ``path`` it also writes it there, SVG when the path ends in
``.svg``, PNG otherwise. Figures are made without pyplot (an Agg canvas each), so drawing one
changes no global matplotlib state and no window opens.
"""
from __future__ import annotations

import os
import textwrap
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from numpy.typing import ArrayLike

from .._figures import new_figure, save_figure
from .report import distinct, percent, when_taken
from .stats import DEAD, FLAT_REGION, SATURATED, UPDATE_GUIDE, flat_region

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from .experiments import DeepRow, LadderRow
    from .probe import Probe, Snapshot

__all__ = [
    "plot_activations", "plot_activations_over_training", "plot_dead_units", "plot_deep",
    "plot_gradients", "plot_ladder", "plot_loss", "plot_update_ratios", "plot_weight_grads",
    "save_figure",
]

MAP_ROWS = 32           # examples shown in the units x examples map (the lecture's batch)


_figure = new_figure          # the name the lab's plots use


def _done(fig, path):
    """Lay ``fig`` out, save it when ``path`` is given, and return it."""
    fig.tight_layout()
    if path is not None:
        save_figure(fig, path)
    return fig


def _density(ax, hist, label, **kw):
    counts, lo, hi = hist
    n = len(counts)
    width = (hi - lo) / n
    centers = lo + width * (np.arange(n) + 0.5)
    ax.plot(centers, counts / max(counts.sum(), 1) / width, label=label, **kw)


def _histograms(path, curves, xlabel, title, legend_loc):
    """One figure of density lines: ``curves`` is [(hist, legend label)]."""
    fig, ax = _figure()
    ax = ax[0, 0]
    for hist, label in curves:
        _density(ax, hist, label)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("density")
    ax.set_title(title)
    ax.legend(fontsize=7, loc=legend_loc)
    return _done(fig, path)


def plot_activations(snap: Snapshot, path: str | os.PathLike[str] | None = None,
                     title: str | None = None) -> Figure:
    """Histogram (as density lines) of every nonlinearity layer's output, stats in the legend.

    Parameters
    ----------
    snap : Snapshot
        A probe's record.
    path : str or os.PathLike, optional
        Also write the figure there (PNG, or SVG for ``.svg``).
    title : str, optional
        The figure's title.

    Returns
    -------
    matplotlib.figure.Figure
        The figure (shown inline in a notebook).
    """
    curves = [(a["hist"], f"{label}: mean {a['mean']:+.2f}, std {a['std']:.2f}, "
                          f"{FLAT_REGION[a['kind']]} {percent(a['saturated'])}")
              for label, a in snap.activations.items()]
    return _histograms(path, curves, "activation value (layer output)",
                       title or "Forward pass: distribution of each nonlinearity's output",
                       "upper center")


def plot_gradients(snap: Snapshot, path: str | os.PathLike[str] | None = None,
                   title: str | None = None) -> Figure:
    """Histogram of dL/d(output) of every nonlinearity layer: homogeneous layers overlap.

    Parameters
    ----------
    snap : Snapshot
        A probe's record.
    path : str or os.PathLike, optional
        Also write the figure there (PNG, or SVG for ``.svg``).
    title : str, optional
        The figure's title.

    Returns
    -------
    matplotlib.figure.Figure
        The figure (shown inline in a notebook).
    """
    curves = [(g["hist"], f"{label}: mean {g['mean']:+.1e}, std {g['std']:.2e}")
              for label, g in snap.gradients.items()]
    return _histograms(path, curves, "gradient of the loss w.r.t. the layer output, dL/dt",
                       title or "Backward pass: distribution of each nonlinearity's output "
                                "gradient", "upper right")


def plot_weight_grads(snap: Snapshot, path: str | os.PathLike[str] | None = None,
                      title: str | None = None) -> Figure:
    """Histogram of the gradient of every 2-D parameter, with grad:data in the legend.

    Parameters
    ----------
    snap : Snapshot
        A probe's record.
    path : str or os.PathLike, optional
        Also write the figure there (PNG, or SVG for ``.svg``).
    title : str, optional
        The figure's title.

    Returns
    -------
    matplotlib.figure.Figure
        The figure (shown inline in a notebook).
    """
    curves = [(w["hist"], f"{w.get('label', name)}, {'x'.join(map(str, w['shape']))}: grad std "
                          f"{w['std']:.1e}, grad:data {w['grad_data']:.1e}")
              for name, w in snap.weights.items()]
    return _histograms(path, curves, "gradient value",
                       title or "Weight gradients per 2-D parameter (grad:data = "
                                "std(grad)/std(W))", "upper right")


def plot_update_ratios(probe: Probe, path: str | os.PathLike[str] | None = None,
                       title: str | None = None) -> Figure:
    """log10(std(lr*grad)/std(param)) of every 2-D parameter over training, and the -3 guide.

    Parameters
    ----------
    probe : Probe
        The records.
    path : str or os.PathLike, optional
        Also write the figure there (PNG, or SVG for ``.svg``).
    title : str, optional
        The figure's title.

    Returns
    -------
    matplotlib.figure.Figure
        The figure (shown inline in a notebook).
    """
    fig, ax = _figure()
    ax = ax[0, 0]
    snaps = probe.snapshots
    steps = [s.step for s in snaps]
    for name, w in snaps[0].weights.items():
        v = [s.updates[name] for s in snaps]
        ax.plot(steps, v, marker="o" if len(v) < 3 else None, lw=1,
                label=f"{w.get('label', name)}, {'x'.join(map(str, w['shape']))}")
    ax.axhline(UPDATE_GUIDE, color="k", ls="--", lw=1, label="guide: 1e-3 per step")
    ax.set_xlabel("step")
    ax.set_ylabel("log10( std(lr·grad) / std(param) )")
    ax.set_title(title or "Update:data ratio per 2-D parameter (above -3: lr high for it; "
                          "below: slow)", fontsize=10)
    ax.legend(fontsize=7, loc="lower right")
    return _done(fig, path)


def plot_dead_units(probe: Probe, path: str | os.PathLike[str] | None = None,
                    title: str | None = None) -> Figure:
    """The units x examples maps (white: flat region) of the first and latest snapshot.

    Parameters
    ----------
    probe : Probe
        The records.
    path : str or os.PathLike, optional
        Also write the figure there (PNG, or SVG for ``.svg``).
    title : str, optional
        The figure's title.

    Returns
    -------
    matplotlib.figure.Figure
        The figure (shown inline in a notebook).
    """
    pairs = [(s, when_taken(s)) for s in distinct(probe.first, probe.last)]
    labels = list(pairs[0][0].maps)
    width = max(8.0, 4.5 * len(pairs))
    fig, axes = _figure(width, 1.2 + 1.6 * len(labels), len(labels), len(pairs))
    for c, (snap, when) in enumerate(pairs):
        for r, label in enumerate(labels):
            ax, m = axes[r, c], snap.maps[label][:MAP_ROWS]
            a = snap.activations[label]
            ax.imshow(m, cmap="gray", vmin=0, vmax=1, interpolation="nearest", aspect="auto")
            ax.set_title(f"{label} {when}: {a['dead']}/{a['units']} dead on this batch",
                         fontsize=8)
            ax.set_ylabel("example", fontsize=7)
            ax.tick_params(labelsize=6)
        axes[-1, c].set_xlabel("hidden unit", fontsize=7)
    kind = next(iter(pairs[0][0].activations.values()))["kind"]
    flat = flat_region(kind, DEAD)
    text = title or (f"Units x examples, white where {flat}: an all-white column is a dead unit "
                     "(no gradient flows through it)")
    fig.suptitle(textwrap.fill(text, int(width * 12)), fontsize=9)
    return _done(fig, path)


def plot_activations_over_training(probe: Probe, path: str | os.PathLike[str] | None = None,
                                   title: str | None = None) -> Figure:
    """Per layer: std and flat fraction of the output over the recorded steps.

    Parameters
    ----------
    probe : Probe
        The records.
    path : str or os.PathLike, optional
        Also write the figure there (PNG, or SVG for ``.svg``).
    title : str, optional
        The figure's title.

    Returns
    -------
    matplotlib.figure.Figure
        The figure (shown inline in a notebook).
    """
    fig, axes = _figure(9, 4, 1, 2)
    for label, _, _ in probe.nonlinear:
        steps, std = probe.series("activations", label, "std")
        _, sat = probe.series("activations", label, "saturated")
        axes[0, 0].plot(steps, std, label=label)
        axes[0, 1].plot(steps, 100 * sat, label=label)
    flat = FLAT_REGION[probe.nonlinear[0][1]]
    axes[0, 0].set_ylabel("std of the output")
    axes[0, 1].set_ylabel(f"% of outputs with {flat}")
    for ax in axes[0]:
        ax.set_xlabel("step")
        ax.legend(fontsize=7)
    fig.suptitle(title or "Activations over training, per nonlinearity layer (one minibatch "
                          "per point)", fontsize=10)
    return _done(fig, path)


def plot_loss(history: ArrayLike, path: str | os.PathLike[str] | None = None, window: int = 100,
              title: str | None = None) -> Figure:
    """log10 of the minibatch loss per step and its mean over ``window`` steps.

    Parameters
    ----------
    history : array_like, shape (steps,)
        Every step's loss.
    path : str or os.PathLike, optional
        Also write the figure there (PNG, or SVG for ``.svg``).
    window : int, default 100
        The steps of the running mean.
    title : str, optional
        The figure's title.

    Returns
    -------
    matplotlib.figure.Figure
        The figure.
    """
    h = np.log10(np.asarray(history, dtype=np.float64))
    fig, ax = _figure()
    ax = ax[0, 0]
    ax.plot(h, lw=0.3, alpha=0.4, label="minibatch")
    if h.size >= window:
        n = h.size // window
        ax.plot((np.arange(n) + 0.5) * window, h[:n * window].reshape(n, window).mean(1),
                lw=1.8, label=f"mean over {window} steps")
    ax.set_xlabel("step")
    ax.set_ylabel("log10(loss)")
    ax.set_title(title or "Training loss")
    ax.legend()
    return _done(fig, path)


def plot_deep(rows: Sequence[DeepRow], path: str | os.PathLike[str] | None = None,
              section: str = "activations", when: str = "init", title: str | None = None) -> Figure:
    """A grid: rows with / without batch norm, columns by gain; per panel the density of every
    tanh layer's output ("activations") or its gradient ("gradients"), at init or at the end.

    Parameters
    ----------
    rows : sequence of DeepRow
        The deep nets (``run_deep``).
    path : str or os.PathLike, optional
        Also write the figure there.
    section : {"activations", "gradients"}
        What to draw.
    when : {"init", "final"}
        At initialization or at the end of training.
    title : str, optional
        The figure's title.

    Returns
    -------
    matplotlib.figure.Figure
        The figure.
    """
    gains = sorted({r.gain for r in rows})
    nets = sorted({r.batchnorm for r in rows}, reverse=True)
    fig, axes = _figure(4.2 * len(gains), 3.3 * len(nets), len(nets), len(gains))
    for r in rows:
        ax = axes[nets.index(r.batchnorm), gains.index(r.gain)]
        snap = r.init if when == "init" else r.final
        for label, st in getattr(snap, section).items():
            if section == "activations":
                text = f"std {st['std']:.2f}, sat {percent(st['saturated'])}"
            else:
                text = f"std {st['std']:.1e}"
            _density(ax, st["hist"], f"{label.split(' (')[0]}: {text}", lw=1)
        ax.set_title(f"{r.name}: {r.verdict()}", fontsize=9)
        ax.set_xlabel("tanh output" if section == "activations" else "dL/d(tanh output)",
                      fontsize=8)
        ax.set_ylabel("density", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.legend(fontsize=6)
    what = "tanh outputs" if section == "activations" else "gradients of the tanh outputs"
    snap = rows[0].init if when == "init" else rows[0].final
    fig.suptitle(title or f"5-layer tanh net {when_taken(snap)}: {what} per layer, by gain "
                          "(columns), with and without batch norm (rows)", fontsize=10)
    return _done(fig, path)


def plot_ladder(rows: Sequence[LadderRow], out: str | os.PathLike[str] | None = None,
                ext: str = "png") -> dict[str, Figure]:
    """The ladder's figures, {"ladder_init": tanh histograms at init per configuration,
    "ladder_loss": the training losses (when every row has a history of 100 steps or more)};
    each also written to ``out/<name>.<ext>`` when ``out`` is given.

    Parameters
    ----------
    rows : sequence of LadderRow
        The ladder (``run_ladder``).
    out : str or os.PathLike, optional
        A folder to write the figures into.
    ext : {"png", "svg"}
        Their format.

    Returns
    -------
    dict of str to matplotlib.figure.Figure
        The figures, by name.
    """
    fig, ax = _figure()
    ax = ax[0, 0]
    for r, ls in zip(rows, ["-", "--", "-", "-", "-", ":"]):
        t = r.tanh
        _density(ax, t["hist"], f"{r.name}: std {t['std']:.2f}, "
                               f"|t| > {SATURATED} {percent(t['saturated'])}", ls=ls)
    ax.set_xlabel("tanh output at initialization")
    ax.set_ylabel("density")
    ax.set_yscale("log")
    ax.set_title("The init ladder: hidden tanh outputs at initialization "
                 "(fix_softmax keeps the original W1)", fontsize=10)
    ax.legend(fontsize=7, loc="upper center")
    figs = {"ladder_init": fig}
    if all(r.history is not None and r.history.size >= 100 for r in rows):
        fig, ax = _figure()
        ax = ax[0, 0]
        for r in rows:
            h = np.log10(r.history)  # type: ignore[arg-type]  # not None: checked above
            w = max(100, h.size // 200)
            n = h.size // w
            ax.plot((np.arange(n) + 0.5) * w, h[:n * w].reshape(n, w).mean(1),
                    label=f"{r.name}: val {r.losses['val']:.4f}")
        ax.set_xlabel("step")
        ax.set_ylabel(f"log10(loss), mean over {w} steps")
        ax.set_title("The init ladder: training loss")
        ax.legend(fontsize=8)
        figs["ladder_loss"] = fig
    for name, fig in figs.items():
        _done(fig, None if out is None else Path(out) / f"{name}.{ext}")
    return figs
