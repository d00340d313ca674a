"""Figures as objects: every figure fastbn draws is made here, without pyplot.

``new_figure`` returns a ``matplotlib.figure.Figure`` on its own Agg canvas: drawing one changes
no global matplotlib state and opens no window, and a notebook shows it inline as the value of a
cell (``_repr_png_``, so no inline backend is needed). ``save_figure`` writes one atomically, SVG
for a path ending in ``.svg`` and PNG otherwise. matplotlib is imported on first use only.
"""
from __future__ import annotations

import io
import os
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from numpy.typing import ArrayLike

from ._fileio import atomic_save_figure

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from ._schedule import Schedule

__all__ = ["new_figure", "plot_history", "save_figure"]

_FIGURE = None


def _figure_class():
    """A Figure subclass that shows itself in Jupyter as a PNG.

    A Figure made without pyplot has no rich display of its own until pyplot's inline backend
    is loaded; this one displays inline in any notebook, and no global display state changes.
    """
    global _FIGURE
    if _FIGURE is None:
        from matplotlib.figure import Figure

        class FastbnFigure(Figure):
            def _repr_png_(self):
                buf = io.BytesIO()
                self.savefig(buf, format="png")
                return buf.getvalue()

        _FIGURE = FastbnFigure
    return _FIGURE


def new_figure(w=8.0, h=4.5, rows=1, cols=1, **subplots_kw):
    """``(fig, axes)``: a ``w`` x ``h`` inch Figure (100 dpi) and its ``rows`` x ``cols`` array of
    axes (always 2-D)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    fig = _figure_class()(figsize=(w, h), dpi=100)
    FigureCanvasAgg(fig)
    return fig, fig.subplots(rows, cols, squeeze=False, **subplots_kw)


def save_figure(fig: Figure, path: str | os.PathLike[str]) -> Path:
    """Write ``fig`` to ``path`` (SVG when it ends in .svg, else PNG), creating its folder, and
    return the path. The file appears whole or not at all (``fastbn._fileio.atomic_write``).

    Parameters
    ----------
    fig : matplotlib.figure.Figure
        The figure.
    path : str or os.PathLike
        Where to write it.

    Returns
    -------
    pathlib.Path
        The path written.
    """
    path = Path(path)
    return atomic_save_figure(fig, path, format="svg" if path.suffix.lower() == ".svg" else "png")


# ----------------------------------------------------------------------------------------------
# the loss curve

def plot_history(history: ArrayLike, path: str | os.PathLike[str] | None = None, *,
                 schedule: Schedule | None = None, window: int = 1000,
                 title: str | None = None) -> Figure:
    """The loss curve: log10 of every step's loss, and its mean over ``window`` steps (the
    lecture's ``torch.tensor(lossi).view(-1, 1000).mean(1)``), with the learning-rate steps of
    ``schedule`` marked. Returns the ``matplotlib.figure.Figure`` (shown inline in a notebook);
    with ``path`` it is also written there, atomically (PNG, or SVG for ``.svg``).

    Parameters
    ----------
    history : array_like, shape (steps,)
        Every step's loss (``TrainResult.history``).
    path : str or os.PathLike, optional
        Also write the figure there.
    schedule : tuple of (int, float), optional
        The learning-rate schedule, whose steps are marked.
    window : int, default 1000
        The steps of the running mean.
    title : str, optional
        The figure's title.

    Returns
    -------
    matplotlib.figure.Figure
        The figure.
    """
    h = np.log10(np.asarray(history, dtype=np.float64))
    fig, ax = new_figure()
    ax = ax[0, 0]
    steps = np.arange(h.size)
    ax.plot(steps, h, lw=0.3, alpha=0.35, color="tab:blue", label="minibatch loss")
    if h.size >= window:
        n = h.size // window
        means = h[: n * window].reshape(n, window).mean(1)
        ax.plot((np.arange(n) + 0.5) * window, means, lw=1.8, color="tab:red",
                label=f"mean over {window} steps")
    for s, lr in (schedule or ())[1:]:
        if s < h.size:
            ax.axvline(s, color="gray", ls="--", lw=0.8)
            ax.text(s, ax.get_ylim()[1], f" lr {lr:g}", va="top", fontsize=8, color="gray")
    ax.set_xlabel("step")
    ax.set_ylabel("log10(loss)")
    ax.set_title(title or "training loss")
    ax.legend(loc="upper right")
    fig.tight_layout()
    if path is not None:
        save_figure(fig, path)
    return fig
