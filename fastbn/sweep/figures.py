"""The figures of a sweep: val loss against each swept parameter, and heatmaps of two.

Drawn with ``fastbn._figures`` (``new_figure``: matplotlib Figures without pyplot, which a
notebook shows inline; ``save_figure`` writes them atomically), as the laboratory's are.
matplotlib is imported when a figure is drawn.

Colors and axes stop at a ``ceiling``, ln(vocabulary size) in a sweep: the loss of a uniform
guess, above which a configuration has learned nothing (a diverging or saturated net can be far
above it, and would otherwise flatten every other difference).
"""
import itertools
import math

import numpy as np

from .._figures import new_figure, save_figure
from .space import PARAMS, Range, short_label

__all__ = ["draw_heatmap", "pair_heatmap", "sweep_figures", "val_against"]

CMAP = "viridis_r"      # low loss bright


def _axis_values(values, param):
    """(x positions, tick labels, log scale?) of a parameter's values."""
    if param.kind in ("float", "int"):
        xs = np.array([float(v) for v in values])
        log = bool(np.all(xs > 0) and xs.max() / xs.min() >= 10)
        return xs, None, log
    labels = [short_label(param, v) for v in values]
    return np.arange(len(values), dtype=float), labels, False


def val_against(points, name, values=None, ceiling=None, path=None, max_lines=8):
    """Val loss (mean ± sd over seeds) of every point against parameter ``name``.

    Points that differ only in ``name`` are joined by a line, one per setting of the other
    swept parameters (labelled), when there are at most ``max_lines`` of them; otherwise the
    points are dots and a red line joins the best at each value. A random search's points
    (``values`` a Range) are dots. Points where no seed finished are red x's at the top; those
    above ``ceiling``, orange triangles there.
    """
    param = PARAMS[name]
    fig, ax = new_figure(7, 4.2)
    ax = ax[0, 0]
    rng_param = isinstance(values, Range)
    present = _present(points, name)
    xs, labels, log = _axis_values(present, param)
    if rng_param:
        log = values.scale == "log"
    pos = {v: x for v, x in zip(present, xs)}
    ok = [p for p in points if p.val]
    top = max([p.val_mean for p in ok], default=1.0)
    if ceiling is not None:
        top = min(top, ceiling)
    groups = {}
    for p in points:
        others = tuple((k, short_label(PARAMS[k], v)) for k, v in p.params.items() if k != name)
        groups.setdefault(others, []).append(p)
    keys = [k for k in points[0].params if k != name] if points else []
    varying = [k for k in keys if len({dict(g).get(k) for g in groups}) > 1]
    lines = not rng_param and 1 < len(present) and len(groups) <= max_lines
    above, div = [], []
    for gi, (others, ps) in enumerate(groups.items()):
        label = " ".join(f"{k}={v}" for k, v in others if k in varying) or None
        color = f"C{gi % 10}" if lines else "tab:blue"
        shown = sorted(((pos[p.params[name]], p) for p in ps if p.val and p.val_mean <= top),
                       key=lambda t: t[0])
        for x, p in shown:
            sd = 0 if math.isnan(p.val_sd) else p.val_sd
            ax.errorbar([x], [p.val_mean], yerr=[sd], fmt="o", ms=4, color=color,
                        alpha=0.8 if lines else 0.6, capsize=2, lw=1)
        if lines and shown:
            ax.plot([x for x, _ in shown], [p.val_mean for _, p in shown], "-", color=color,
                    lw=1.2, label=label)
        above += [pos[p.params[name]] for p in ps if p.val and p.val_mean > top]
        div += [pos[p.params[name]] for p in ps if not p.val]
    if not lines and not rng_param:
        best = {}
        for p in ok:
            v = p.params[name]
            best[v] = min(best.get(v, math.inf), p.val_mean)
        if len(best) > 1:
            bx = sorted((pos[v], m) for v, m in best.items())
            ax.plot([b[0] for b in bx], [min(b[1], top) for b in bx], "-", color="tab:red",
                    lw=1.2, label="best at each value")
    y_top = top + 0.02 * max(top - min([p.val_mean for p in ok], default=top), 0.05)
    if above:
        ax.plot(above, [y_top] * len(above), "^", color="tab:orange", ls="",
                label=f"val loss above {top:.2f}")
    if div:
        ax.plot(div, [y_top] * len(div), "x", color="tab:red", ms=8, ls="",
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
    fig, ax = new_figure(2.4 + 0.75 * len(values_b), 1.6 + 0.45 * len(values_a))
    fig.set_layout_engine("constrained")
    ax = ax[0, 0]
    img = draw_heatmap(ax, cells, text, [short_label(pb, v) for v in values_b],
                       [short_label(pa, v) for v in values_a], vmin, vmax, b, a,
                       f"Val loss: {a} x {b}")
    fig.colorbar(img, ax=ax, label="val loss")
    if path is not None:
        save_figure(fig, path)
    return fig


def _scatter_pair(points, a, b, space_values, ceiling):
    """A random search's pair: every point at (b, a), colored by its mean val loss."""
    fig, ax = new_figure(6, 4.5)
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
