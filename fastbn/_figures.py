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

from ._fileio import atomic_save_figure

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = ["new_figure", "save_figure"]

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
    return the path. The file appears whole or not at all (``fastbn._fileio.atomic_write``)."""
    path = Path(path)
    return atomic_save_figure(fig, path, format="svg" if path.suffix.lower() == ".svg" else "png")
