"""The figures of a sweep: val loss against each swept parameter, and heatmaps of two.

Drawn with the laboratory's helpers (``fastbn.lab.plots._figure``: matplotlib Figures without
pyplot, which a notebook shows inline; ``save_figure`` writes them atomically). matplotlib is
imported when a figure is drawn.

Colors and axes stop at a ``ceiling``, ln(vocabulary size) in a sweep: the loss of a uniform
guess, above which a configuration has learned nothing (a diverging or saturated net can be far
above it, and would otherwise flatten every other difference).
"""
import itertools
import math

import numpy as np

from ..lab.plots import _figure
from .space import PARAMS, Range, _short

__all__ = ["draw_heatmap", "pair_heatmap", "sweep_figures", "val_against"]

CMAP = "viridis_r"      # low loss bright


def _axis_values(values, param):
    """(x positions, tick labels, log scale?) of a parameter's values."""
    if param.kind in ("float", "int"):
        xs = np.array([float(v) for v in values])
        log = bool(np.all(xs > 0) and xs.max() / xs.min() >= 10)
        return xs, None, log
    labels = [_short(param, v) for v in values]
    return np.arange(len(values), dtype=float), labels, False


def val_against(points, name, values=None, ceiling=None, path=None):
    """Val loss (mean ± sd over seeds) of every point against parameter ``name``; a line through
    the best point at each value; a red x at the top for points where no seed finished."""
    param = PARAMS[name]
    fig, ax = _figure(7, 4.2)
    ax = ax[0, 0]
    rng_param = isinstance(values, Range)
    present = _present(points, name)
    xs, labels, log = _axis_values(present, param)
    if rng_param:
        log = values.scale == "log"
    values = present
    pos = {v: x for v, x in zip(values, xs)}
    ok = [p for p in points if p.val]
    top = max([p.val_mean for p in ok], default=1.0)
    if ceiling is not None:
        top = min(top, ceiling)
    above, div = [], []
    for p in points:
        x = pos[p.params[name]]
        if not p.val:
            div.append(x)
        elif p.val_mean > top:
            above.append(x)
        else:
            sd = 0 if math.isnan(p.val_sd) else p.val_sd
            ax.errorbar([x], [p.val_mean], yerr=[sd], fmt="o", ms=4, color="tab:blue",
                        alpha=0.6, capsize=2, lw=1)
    best = {}
    for p in ok:
        v = p.params[name]
        best[v] = min(best.get(v, math.inf), p.val_mean)
    if len(best) > 1 and not rng_param:
        bx = sorted((pos[v], m) for v, m in best.items())
        ax.plot([b[0] for b in bx], [min(b[1], top) for b in bx], "-", color="tab:red", lw=1.2,
                label="best at each value")
    y_top = top + 0.02 * max(top - min([p.val_mean for p in ok], default=top), 0.05)
    if above:
        ax.plot(above, [y_top] * len(above), "^", color="tab:orange",
                label=f"val loss above {top:.2f}")
    if div:
        ax.plot(div, [y_top] * len(div), "x", color="tab:red", ms=8,
                label="no seed finished (diverged / failed)")
    if log:
        ax.set_xscale("log")
    if labels is not None:
        ax.set_xticks(xs, labels, rotation=20 if max(map(len, labels)) > 6 else 0, fontsize=8)
    ax.set_xlabel(name)
    ax.set_ylabel("val loss (mean ± sd over seeds)")
    ax.set_title(f"Val loss against {name}", fontsize=10)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=7)
    fig.tight_layout()
    if path is not None:
        from ..lab.plots import save_figure
        save_figure(fig, path)
    return fig


def draw_heatmap(ax, cells, text, xlabels, ylabels, vmin, vmax, xlabel, ylabel, title):
    """One heatmap into ``ax``: ``cells`` (rows, cols) of losses (NaN: nothing finished),
    ``text`` the same shape (what to write in each cell). Returns the image (for a colorbar)."""
    img = ax.imshow(np.clip(cells, vmin, vmax), cmap=CMAP, vmin=vmin, vmax=vmax, origin="lower",
                    aspect="auto", interpolation="nearest")
    ax.set_facecolor("0.85")
    small = cells.shape[1] > 8
    for (i, j), s in np.ndenumerate(text):
        if s:
            v = cells[i, j]
            dark = math.isnan(v) or (v - vmin) < 0.5 * (vmax - vmin)
            ax.text(j, i, s, ha="center", va="center", fontsize=6 if small else 7,
                    color="black" if dark else "white")
    ax.set_xticks(range(len(xlabels)), xlabels, fontsize=7)
    ax.set_yticks(range(len(ylabels)), ylabels, fontsize=7)
    ax.set_xlabel(xlabel, fontsize=8)
    ax.set_ylabel(ylabel, fontsize=8)
    ax.set_title(title, fontsize=9)
    return img


def cell_text(v, diverged, failed):
    """A cell's text: the loss, or why there is none."""
    if not math.isnan(v):
        return f"{v:.3f}"
    return "div" if diverged else ("fail" if failed else "")


def pair_heatmap(points, a, b, values_a, values_b, ceiling=None, path=None):
    """Rows: the values of ``a``; columns: those of ``b``; a cell is the best mean val loss over
    the points with those two values (NaN, written "div" or "fail", when none finished)."""
    pa, pb = PARAMS[a], PARAMS[b]
    cells = np.full((len(values_a), len(values_b)), np.nan)
    div = np.zeros(cells.shape, bool)
    fail = np.zeros(cells.shape, bool)
    ia = {v: i for i, v in enumerate(values_a)}
    ib = {v: j for j, v in enumerate(values_b)}
    for p in points:
        i, j = ia[p.params[a]], ib[p.params[b]]
        if p.val:
            cells[i, j] = np.fmin(cells[i, j], p.val_mean)
        div[i, j] |= p.diverged > 0
        fail[i, j] |= p.failed > 0
    text = np.empty(cells.shape, dtype=object)
    for idx in np.ndindex(cells.shape):
        text[idx] = cell_text(cells[idx], div[idx], fail[idx])
    finite = cells[np.isfinite(cells)]
    vmin = float(finite.min()) if finite.size else 0.0
    vmax = float(finite.max()) if finite.size else 1.0
    if ceiling is not None:
        vmax = min(vmax, ceiling)
    vmax = max(vmax, vmin + 1e-3)
    fig, ax = _figure(1.6 + 0.75 * len(values_b), 1.4 + 0.45 * len(values_a))
    ax = ax[0, 0]
    img = draw_heatmap(ax, cells, text, [_short(pb, v) for v in values_b],
                       [_short(pa, v) for v in values_a], vmin, vmax, b, a,
                       f"Val loss: {a} x {b}")
    fig.colorbar(img, ax=ax, label="val loss")
    fig.tight_layout()
    if path is not None:
        from ..lab.plots import save_figure
        save_figure(fig, path)
    return fig


def _scatter_pair(points, a, b, space_values, ceiling):
    """A random search's pair: every point at (b, a), colored by its mean val loss."""
    fig, ax = _figure(6, 4.5)
    ax = ax[0, 0]
    ok = [p for p in points if p.val]
    vals = np.array([p.val_mean for p in ok])
    vmax = min(vals.max(), ceiling) if ceiling is not None and vals.size else None
    img = ax.scatter([float(p.params[b]) if PARAMS[b].kind in ("float", "int") else 0
                      for p in ok],
                     [float(p.params[a]) if PARAMS[a].kind in ("float", "int") else 0
                      for p in ok], c=vals, cmap=CMAP, vmax=vmax, s=30)
    for name, setter in ((a, ax.set_yscale), (b, ax.set_xscale)):
        v = space_values.get(name)
        if isinstance(v, Range) and v.scale == "log":
            setter("log")
    ax.set_xlabel(b)
    ax.set_ylabel(a)
    ax.set_title(f"Val loss: {a} x {b} ({len(ok)} points that finished)", fontsize=9)
    fig.colorbar(img, ax=ax, label="val loss")
    fig.tight_layout()
    return fig


def sweep_figures(points, space_values, swept, ceiling=None, max_pairs=6):
    """{name: Figure}: ``val_vs_<param>`` for each swept parameter and ``heatmap_<a>_<b>`` for
    each pair of them (as long as there are at most ``max_pairs`` pairs). ``space_values``:
    name -> the space's list of values or Range (the axis order)."""
    figs = {}
    if not points:
        return figs
    for name in swept:
        figs[f"val_vs_{name}"] = val_against(points, name, space_values.get(name), ceiling)
    pairs = list(itertools.combinations(swept, 2))
    if 0 < len(pairs) <= max_pairs:
        for a, b in pairs:
            va, vb = space_values.get(a), space_values.get(b)
            if isinstance(va, Range) or isinstance(vb, Range):
                figs[f"heatmap_{a}_{b}"] = _scatter_pair(points, a, b, space_values, ceiling)
            else:
                figs[f"heatmap_{a}_{b}"] = pair_heatmap(points, a, b, _present(points, a),
                                                        _present(points, b), ceiling)
    return figs


def _present(points, name):
    """The values of ``name`` the points have, in axis order."""
    return _ordered(list(dict.fromkeys(p.params[name] for p in points)), name)


def _ordered(values, name):
    """A list of values in axis order: numbers ascending, others as given."""
    if PARAMS[name].kind in ("float", "int"):
        return sorted(values)
    return list(values)
