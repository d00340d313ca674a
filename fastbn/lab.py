"""The laboratory: instruments that show why a network trains or fails (makemore part 3).

The failure modes a student must learn to see, and what each instrument measures:

- **confidently wrong at init**: the initial loss against ln(C), the loss of a uniform guess over
  C classes (``initial_loss_check``);
- **saturated tanh, vanishing gradients**: per nonlinearity layer, the mean, std and fraction of
  saturated outputs, |t| > 0.97 (``activation_stats``), and the histograms of the outputs and of
  their gradients dL/dt (the layer's ``.dout``);
- **dead units**: a unit whose output is flat for every example of a batch, |t| > 0.99 for tanh,
  exactly 0 for ReLU (``dead_map``, ``dead_units``; ``dead_units_on_split`` over a whole split);
- **layers that are not homogeneous**: per 2-D parameter the std of its gradient and the
  grad:data ratio std(grad) / std(param) (``grad_data_ratio``);
- **a learning rate far from right**: the update:data ratio log10(std(lr * grad) / std(param))
  per parameter over training, against the guide line at -3 (``update_data_ratio``).

``Probe(model)`` reads these from the layers of a ``CharMLP`` (their ``.out``, ``.dout``,
parameters and gradients) and is the ``callback`` of ``fastbn.train``::

    probe = Probe(model, every=100)
    train(model, ds, steps=5000, callback=probe, every=probe.every)
    plot_update_ratios(probe, "update_ratio.png")

``run_lab`` (``fastbn lab``) trains one model and writes figures, tables and a report;
``run_ladder`` (``fastbn lab ladder``) runs the lecture's five initializations of the BN-MLP and its
deep 5-layer net with and without batch norm at gains 1, 5/3 and 3.

Conventions: std is the population std (ddof 0; torch's ``.std()`` is unbiased, a difference of
one part in 2*B*H here), computed in float64. Fractions are in [0, 1]; tables show percents.
matplotlib is imported only by the plotting functions (Agg canvas, no pyplot state); a path
ending in ``.svg`` writes SVG, anything else PNG.
"""
import math
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from . import nn
from .model import LADDER, CharMLP
from .train import DEFAULT_LR_SCHEDULE, DEFAULT_SEED, lr_at

__all__ = [
    "DEEP_GAINS", "DEEP_NET", "LECTURE_LOSSES", "LossCheck", "Probe", "Snapshot",
    "activation_stats", "dead_map", "dead_units", "dead_units_on_split", "format_table",
    "grad_data_ratio", "initial_loss_check", "measure_overhead", "run_deep", "run_lab",
    "run_ladder", "update_data_ratio",
]

SATURATED = 0.97        # |t| above this counts as saturated (the lecture's histogram statistic)
DEAD = 0.99             # |t| above this for every example of a batch: a dead tanh unit (the map)
UPDATE_GUIDE = -3.0     # log10 of the update:data ratio the rule of thumb aims for
BINS = 60
MAP_ROWS = 32           # examples shown in the units x examples map (the lecture's batch)

# What the "saturated" statistic counts for each kind of nonlinearity.
FLAT_REGION = {"tanh": f"|t| > {SATURATED}", "relu": "t == 0", "leaky_relu": "t < 0"}

# The lecture's train / val losses after 200,000 steps (lecture-figures.md) and initial losses.
LECTURE_LOSSES = {"original": (2.1245, 2.1682), "fix_softmax": (2.07, 2.13),
                  "fix_tanh": (2.0356, 2.1027), "kaiming": (2.0377, 2.1070),
                  "batchnorm": (2.0668, 2.1048)}
LECTURE_INIT_LOSS = {"original": 27.0}     # about 27; every fixed configuration: ln 27 = 3.29

# The lecture's deep net (part 3, second half) and the gains it tries.
DEEP_NET = {"n_hidden": 100, "n_layers": 5, "final_bn": True, "bn_momentum": 0.1}
DEEP_GAINS = (1.0, 5 / 3, 3.0)


# ----------------------------------------------------------------------------------------------
# statistics of arrays

def _kind(layer):
    if isinstance(layer, nn.Tanh):
        return "tanh"
    if isinstance(layer, nn.ReLU):
        return "relu"
    if isinstance(layer, nn.LeakyReLU):
        return "leaky_relu"
    return None


def _flat(t, kind, threshold):
    """Boolean array: where ``t`` sits in the flat region of its nonlinearity."""
    if kind == "tanh":
        return np.abs(t) > threshold
    if kind == "relu":
        return t == 0
    if kind == "leaky_relu":
        return t < 0
    raise ValueError(f"kind must be one of {tuple(FLAT_REGION)}, got {kind!r}")


def activation_stats(t, kind="tanh", threshold=SATURATED):
    """Mean, std and fraction in the flat region of a nonlinearity's output ``t`` (any shape).

    The flat region is |t| > ``threshold`` for tanh (the gradient factor 1 - t**2 is below
    1 - 0.97**2 = 0.06 there), t == 0 for ReLU (gradient 0), t < 0 for leaky ReLU (gradient
    ``negative_slope``). Returns ``{"mean", "std", "saturated"}`` as Python floats.
    """
    t = np.asarray(t)
    if t.size == 0:
        raise ValueError("activation_stats of an empty array")
    return {"mean": float(t.mean(dtype=np.float64)), "std": float(t.std(dtype=np.float64)),
            "saturated": float(np.count_nonzero(_flat(t, kind, threshold))) / t.size}


def dead_map(t, kind="tanh", threshold=DEAD):
    """Boolean (B, H): example b drives unit h into the flat region (tanh |t| > 0.99, ReLU 0).

    Shown as an image (rows examples, columns units, white = flat) it is the lecture's
    ``plt.imshow(h.abs() > 0.99, cmap="gray")``; an all-white column is a dead unit.
    """
    t = np.asarray(t)
    if t.ndim != 2:
        raise ValueError(f"dead_map needs a (B, H) array, got shape {t.shape}")
    return _flat(t, kind, threshold)


def dead_units(t, kind="tanh", threshold=DEAD):
    """Boolean (H,): units flat on every example of ``t`` (B, H), i.e. that pass no gradient."""
    return dead_map(t, kind, threshold).all(axis=0)


def _std(x):
    return float(np.asarray(x).std(dtype=np.float64))


def grad_data_ratio(grad, param):
    """std(grad) / std(param): how big the gradient is next to the values it changes.

    NaN when std(param) is 0 (a freshly zeroed bias or BatchNorm beta).
    """
    s = _std(param)
    return _std(grad) / s if s > 0 else float("nan")


def update_data_ratio(grad, param, lr):
    """log10(std(lr * grad) / std(param)): the relative size of one SGD update.

    Rule of thumb (the lecture): about -3, i.e. each step changes a parameter by a thousandth of
    its spread; much above means lr is too high for it, much below that it learns slowly. NaN when
    std(param) or the update is 0.
    """
    r = abs(float(lr)) * grad_data_ratio(grad, param)
    return math.log10(r) if r > 0 else float("nan")


def _hist(x, kind=None, bins=BINS):
    """(counts int32, lo, hi) of ``x`` over ``bins`` equal bins ([-1, 1] for tanh outputs)."""
    x = np.asarray(x).ravel()
    if kind == "tanh":
        lo, hi = -1.0, 1.0
    else:
        lo, hi = float(x.min()), float(x.max())
        if not hi > lo:
            lo, hi = lo - 0.5, hi + 0.5
    counts, _ = np.histogram(x, bins=bins, range=(lo, hi))
    return counts.astype(np.int32), lo, hi


@dataclass
class LossCheck:
    """The initial-loss check: ``measured`` against ln(``n_classes``), with a verdict in words."""

    measured: float
    n_classes: int
    tolerance: float = 0.1

    @property
    def expected(self):
        return math.log(self.n_classes)

    @property
    def verdict(self):
        m, e = self.measured, self.expected
        if not math.isfinite(m):
            return "not a number"
        if abs(m - e) <= self.tolerance:
            return "as expected"
        if m > 2 * e:
            return "confidently wrong"
        return "too high" if m > e else "below chance level"

    def explain(self):
        m, e, C = self.measured, self.expected, self.n_classes
        head = f"initial loss {m:.4f}, expected ln({C}) = {e:.4f}: {self.verdict}."
        return head + " " + {
            "as expected": "The net starts out equally unsure of every class, as it should: "
                           "no training steps are wasted undoing a bad start.",
            "confidently wrong": f"It is {m / e:.1f}x the loss of a uniform guess: the logits "
                                 "are large at init, so the softmax puts most of its mass on "
                                 "a few classes, mostly the wrong ones. The first steps are spent "
                                 "squashing the logits (the hockey stick in the loss curve); "
                                 "scale the output layer down (W ×0.01, b = 0).",
            "too high": "The initial predictions are more confident than they should be: shrink "
                        "the output layer's weights.",
            "below chance level": "The net already predicts better than a uniform guess: it is "
                                  "not at its initialization, or the classes are unbalanced and "
                                  "the output bias knows it.",
            "not a number": "The forward pass produced NaN or infinity.",
        }[self.verdict]


def initial_loss_check(measured, n_classes, tolerance=0.1):
    """``LossCheck(measured, n_classes)``: ``.expected`` ln(C), ``.verdict``, ``.explain()``."""
    return LossCheck(float(measured), int(n_classes), float(tolerance))


# ----------------------------------------------------------------------------------------------
# the probe

@dataclass
class Snapshot:
    """What a probe read from the model at one step.

    ``activations``: label -> {kind, mean, std, saturated (fraction in the flat region), dead
    (units flat on every example of the batch), units, hist}; ``gradients``: label -> {mean, std,
    hist} of dL/d(output); ``weights``: 2-D parameter name -> {shape, mean, std (of the gradient),
    grad_data, hist}; ``updates``: parameter name -> log10 update:data (every parameter; NaN when
    lr is None). ``maps``: label -> (B, H) ``dead_map``, kept only by the first and the latest
    snapshot. A hist is (counts, lo, hi) over equal bins.
    """

    step: int
    loss: float | None
    lr: float | None
    activations: dict = field(default_factory=dict)
    gradients: dict = field(default_factory=dict)
    weights: dict = field(default_factory=dict)
    updates: dict = field(default_factory=dict)
    maps: dict | None = None


def _label(i, layer):
    return f"layer {i} ({type(layer).__name__})"


class Probe:
    """Records diagnostics of a model every ``every`` steps.

    Parameters
    ----------
    model : CharMLP (or anything with ``layers`` and aligned ``named_parameters()``/``grads()``)
    every : int
        Pass it on as ``fastbn.train(..., callback=probe, every=probe.every, fused=False)``.
    bins : int
        Histogram bins.

    The probe is the callback: ``probe(step, loss, lr)`` reads the nonlinearity layers' ``.out``
    and ``.dout`` and the parameters' gradients of the step that just ran (the parameters already
    updated, as the lecture measures). Only the per-layer path runs the layers, so train with
    ``fused=False``: the compiled loop leaves ``.out`` untouched, which ``record`` detects and
    refuses. ``measure(X, Y)`` runs one forward and backward without an update instead.
    ``snapshots`` are the records in order; ``seconds`` the time spent recording.
    """

    def __init__(self, model, every=100, bins=BINS):
        every = int(every)
        if every < 1:
            raise ValueError(f"every must be >= 1, got {every}")
        self.model, self.every, self.bins = model, every, int(bins)
        self.nonlinear = [(_label(i, layer), _kind(layer), layer)
                          for i, layer in enumerate(model.layers) if _kind(layer)]
        names, params = zip(*model.named_parameters())
        self.params = list(zip(names, params, model.grads()))
        self.snapshots = []
        self.seconds = 0.0
        self._seen = None         # the .out arrays of the last record (to detect stale layers)

    def __call__(self, step, loss=None, lr=None):
        return self.record(step, loss, lr)

    def record(self, step, loss=None, lr=None):
        """Read the model now and append the Snapshot (returned)."""
        t0 = time.perf_counter()
        outs = [getattr(layer, "out", None) for _, _, layer in self.nonlinear]
        if self._seen is not None and all(o is s for o, s in zip(outs, self._seen)):
            raise RuntimeError("the layers have not run since the last record (the compiled "
                               "training loop does not run them): train with fused=False")
        self._seen = outs
        snap = self._append(self._read(step, loss, lr))
        self.seconds += time.perf_counter() - t0
        return snap

    def _append(self, snap):
        if len(self.snapshots) > 1:          # keep the maps of the first and the latest only
            self.snapshots[-1].maps = None
        self.snapshots.append(snap)
        return snap

    def measure(self, X, Y, lr=None, keep=False):
        """One forward and backward in training mode on (X, Y), no update; returns the Snapshot
        (appended to ``snapshots`` when ``keep``).

        BatchNorm running statistics are restored afterwards, so the model is unchanged (but its
        layers' ``.out`` and gradients are those of this batch). ``lr``, when given, is the one
        the update:data ratios are computed for. Gradients are of the mean loss over the batch,
        so they scale as 1/B: compare snapshots of equal batch sizes.
        """
        m = self.model
        saved = [b.copy() for _, b in m.named_buffers()]
        was = m.training
        m.train()
        try:
            loss = float(m.forward(X, Y))
            m.backward()
            snap = self._read(0, loss, lr)
        finally:
            for (_, b), s in zip(m.named_buffers(), saved):
                b[...] = s
            m.train(was)
        return self._append(snap) if keep else snap

    def _read(self, step, loss, lr):
        snap = Snapshot(int(step), None if loss is None else float(loss),
                        None if lr is None else float(lr), maps={})
        for label, kind, layer in self.nonlinear:
            t = getattr(layer, "out", None)
            d = getattr(layer, "dout", None)
            if t is None or d is None:
                raise RuntimeError(f"{label} has no output or output gradient yet: record after "
                                   "a forward and backward")
            stats = activation_stats(t, kind)
            flat = dead_map(t, kind)
            stats.update(kind=kind, dead=int(flat.all(0).sum()), units=int(t.shape[1]),
                         hist=_hist(t, kind, self.bins))
            snap.activations[label] = stats
            snap.maps[label] = flat
            snap.gradients[label] = {"mean": float(d.mean(dtype=np.float64)), "std": _std(d),
                                     "hist": _hist(d, None, self.bins)}
        for name, p, g in self.params:
            if p.ndim == 2:
                snap.weights[name] = {"shape": p.shape, "mean": float(g.mean(dtype=np.float64)),
                                      "std": _std(g), "grad_data": grad_data_ratio(g, p),
                                      "hist": _hist(g, None, self.bins)}
            snap.updates[name] = (update_data_ratio(g, p, lr) if lr is not None
                                  else float("nan"))
        return snap

    def series(self, section, name, key=None):
        """(steps, values) over the snapshots, e.g. ``("activations", label, "std")`` or
        ``("updates", "1.weight")``."""
        steps = np.array([s.step for s in self.snapshots], dtype=np.int64)
        vals = [getattr(s, section)[name] for s in self.snapshots]
        if key is not None:
            vals = [v[key] for v in vals]
        return steps, np.array(vals, dtype=np.float64)

    @property
    def first(self):
        return self.snapshots[0]

    @property
    def last(self):
        return self.snapshots[-1]


def dead_units_on_split(model, X, chunk=8192):
    """Per nonlinearity layer, the number of units flat on every example of X (N, T).

    The forward runs in training mode, over chunks (batch statistics per chunk of ``chunk``
    examples, what the net sees while it trains), with the BatchNorm running statistics restored
    afterwards. Returns {label: (dead, units)}. The layers' ``.out`` are left from the last chunk.
    """
    nonlinear = [(_label(i, layer), _kind(layer), layer)
                 for i, layer in enumerate(model.layers) if _kind(layer)]
    alive = {label: None for label, _, _ in nonlinear}
    saved = [b.copy() for _, b in model.named_buffers()]
    was = model.training
    model.train()
    try:
        for a in range(0, len(X), chunk):
            model.logits(X[a:a + chunk])
            for label, kind, layer in nonlinear:
                flat = dead_map(layer.out, kind).all(0)
                alive[label] = ~flat if alive[label] is None else alive[label] | ~flat
    finally:
        for (_, b), s in zip(model.named_buffers(), saved):
            b[...] = s
        model.train(was)
    return {label: (int((~v).sum()), int(v.size)) for label, v in alive.items()}


def measure_overhead(model, X, Y, every=100, steps=2000, repeats=3, lr=0.01, seed=0):
    """How much a Probe recording every ``every`` steps slows ``model.train_step``.

    Alternates ``repeats`` timed runs of ``steps`` steps with and without the probe (minibatches
    of 32 from (X, Y)) and compares medians. Returns {"plain_s", "probed_s", "overhead" (fraction),
    "record_ms" (median time of one record), "step_us"}. Trains the model.
    """
    rng = np.random.default_rng(seed)
    probe = Probe(model, every=every)

    def run(with_probe):
        ix = rng.integers(0, len(X), size=(steps, 32))
        t0 = time.perf_counter()
        for i in range(steps):
            loss = model.train_step(X[ix[i]], Y[ix[i]], lr)
            if with_probe and i % every == 0:
                probe(i, loss, lr)
        return time.perf_counter() - t0

    run(False)                                   # warm-up
    plain, probed, per_record = [], [], []
    for _ in range(repeats):
        plain.append(run(False))
        n0, s0 = len(probe.snapshots), probe.seconds
        probed.append(run(True))
        per_record.append((probe.seconds - s0) / (len(probe.snapshots) - n0))
    p, q = float(np.median(plain)), float(np.median(probed))
    return {"plain_s": p, "probed_s": q, "overhead": q / p - 1,
            "record_ms": 1e3 * float(np.median(per_record)), "step_us": 1e6 * p / steps}


# ----------------------------------------------------------------------------------------------
# tables

def format_table(headers, rows, markdown=False):
    """Rows of strings as an aligned plain-text table, or a markdown table."""
    rows = [[str(c) for c in r] for r in rows]
    if markdown:
        lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
        return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows]) + "\n"
    w = [max(len(str(h)), *(len(r[j]) for r in rows)) for j, h in enumerate(headers)]
    fmt = "  ".join(f"{{:<{w[0]}}}" if j == 0 else f"{{:>{w[j]}}}" for j in range(len(w)))
    lines = [fmt.format(*headers), "  ".join("-" * n for n in w)]
    return "\n".join(lines + [fmt.format(*r) for r in rows]) + "\n"


def _pct(x):
    return f"{100 * x:.1f}%"


def _activation_rows(snap, dead_split=None):
    rows = []
    for label, a in snap.activations.items():
        g = snap.gradients[label]
        d = dead_split.get(label) if dead_split else None
        rows.append([label, f"{a['mean']:+.3f}", f"{a['std']:.3f}", _pct(a["saturated"]),
                     f"{a['dead']}/{a['units']}", "-" if d is None else f"{d[0]}/{d[1]}",
                     f"{g['mean']:+.2e}", f"{g['std']:.2e}"])
    return rows


ACT_HEADERS = ["layer", "act mean", "act std", "flat %", "dead (batch)", "dead (split)",
               "grad mean", "grad std"]
WEIGHT_HEADERS = ["parameter", "shape", "grad mean", "grad std", "grad:data", "log10 update:data"]


def _weight_rows(snap):
    return [[n, "x".join(map(str, w["shape"])), f"{w['mean']:+.2e}", f"{w['std']:.2e}",
             f"{w['grad_data']:.2e}", f"{snap.updates[n]:+.2f}"]
            for n, w in snap.weights.items()]


# ----------------------------------------------------------------------------------------------
# figures

def _figure(w=8.0, h=4.5, rows=1, cols=1, **kw):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    fig = Figure(figsize=(w, h), dpi=100)
    FigureCanvasAgg(fig)
    return fig, fig.subplots(rows, cols, squeeze=False, **kw)


def _save(fig, path):
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fmt = "svg" if path.suffix.lower() == ".svg" else "png"
    fig.tight_layout()
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fig.savefig(tmp, format=fmt)
    os.replace(tmp, path)
    return path


def _density(ax, hist, label, **kw):
    counts, lo, hi = hist
    n = len(counts)
    width = (hi - lo) / n
    centers = lo + width * (np.arange(n) + 0.5)
    ax.plot(centers, counts / max(counts.sum(), 1) / width, label=label, **kw)


def _distinct(*items):
    """The items without repeats (by identity), in order."""
    out = []
    for x in items:
        if all(x is not y for y in out):
            out.append(x)
    return out


def _when(snap):
    return "at initialization" if snap.step == 0 else f"at step {snap.step}"


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
    return _save(fig, path)


def plot_activations(snap, path, title=None):
    """Histogram (as density lines) of every nonlinearity layer's output, stats in the legend."""
    curves = [(a["hist"], f"{label}: mean {a['mean']:+.2f}, std {a['std']:.2f}, "
                          f"{FLAT_REGION[a['kind']]} {_pct(a['saturated'])}")
              for label, a in snap.activations.items()]
    return _histograms(path, curves, "activation value (layer output)",
                       title or "Forward pass: distribution of each nonlinearity's output",
                       "upper center")


def plot_gradients(snap, path, title=None):
    """Histogram of dL/d(output) of every nonlinearity layer: homogeneous layers overlap."""
    curves = [(g["hist"], f"{label}: mean {g['mean']:+.1e}, std {g['std']:.2e}")
              for label, g in snap.gradients.items()]
    return _histograms(path, curves, "gradient of the loss w.r.t. the layer output, dL/dt",
                       title or "Backward pass: distribution of each nonlinearity's output "
                                "gradient", "upper right")


def plot_weight_grads(snap, path, title=None):
    """Histogram of the gradient of every 2-D parameter, with grad:data in the legend."""
    curves = [(w["hist"], f"{name} ({'x'.join(map(str, w['shape']))}): grad std "
                          f"{w['std']:.1e}, grad:data {w['grad_data']:.1e}")
              for name, w in snap.weights.items()]
    return _histograms(path, curves, "gradient value",
                       title or "Weight gradients per 2-D parameter (grad:data = "
                                "std(grad)/std(W))", "upper right")


def plot_update_ratios(probe, path, title=None):
    """log10(std(lr*grad)/std(param)) of every 2-D parameter over training, and the -3 guide."""
    fig, ax = _figure()
    ax = ax[0, 0]
    snaps = probe.snapshots
    steps = [s.step for s in snaps]
    for name, w in snaps[0].weights.items():
        v = [s.updates[name] for s in snaps]
        ax.plot(steps, v, marker="o" if len(v) < 3 else None, lw=1,
                label=f"{name} ({'x'.join(map(str, w['shape']))})")
    ax.axhline(UPDATE_GUIDE, color="k", ls="--", lw=1, label="guide: 1e-3 per step")
    ax.set_xlabel("step")
    ax.set_ylabel("log10( std(lr·grad) / std(param) )")
    ax.set_title(title or "Update:data ratio per 2-D parameter (above -3: lr high for it; "
                          "below: slow)", fontsize=10)
    ax.legend(fontsize=7, loc="lower right")
    return _save(fig, path)


def plot_dead_units(probe, path, title=None):
    """The units x examples maps (white: flat region) of the first and latest snapshot."""
    pairs = [(s, _when(s)) for s in _distinct(probe.first, probe.last)]
    labels = list(pairs[0][0].maps)
    fig, axes = _figure(4.5 * len(pairs), 1.0 + 1.6 * len(labels), len(labels), len(pairs))
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
    flat = {"tanh": f"|t| > {DEAD}"}.get(kind, FLAT_REGION[kind])
    fig.suptitle(title or f"Units x examples, white where {flat}: an all-white column is a "
                          "dead unit (no gradient flows through it)", fontsize=9)
    return _save(fig, path)


def plot_activations_over_training(probe, path, title=None):
    """Per layer: std and flat fraction of the output over the recorded steps."""
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
    return _save(fig, path)


def plot_loss(history, path, window=100, title=None):
    """log10 of the minibatch loss per step and its mean over ``window`` steps."""
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
    return _save(fig, path)


# ----------------------------------------------------------------------------------------------
# findings in words

def _activation_finding(label, a):
    s, f = a["std"], a["saturated"]
    if a["kind"] == "tanh":
        if f > 0.10:
            return (f"{label}: {_pct(f)} of outputs saturated (std {s:.2f}): too many; the "
                    "gradient through those is nearly killed (1 - t² ≈ 0). Shrink the weights "
                    "before it or normalize (batch norm).")
        if s < 0.4:
            return (f"{label}: std {s:.2f}, outputs squashed toward 0: the signal shrinks; the "
                    "gain before it is too small.")
        return (f"{label}: std {s:.2f}, {_pct(f)} saturated: healthy (the guide: std ≈ 0.65, "
                "≤ 5 % saturated).")
    return (f"{label}: {_pct(f)} of outputs in the flat region ({FLAT_REGION[a['kind']]}), std "
            f"{s:.2f}.")


def _gradient_finding(snap):
    stds = {k: g["std"] for k, g in snap.gradients.items()}
    if len(stds) < 2:
        (s,) = stds.values()
        return f"One nonlinearity layer; its output gradient has std {s:.2e}."
    hi, lo = max(stds, key=stds.get), min(stds, key=stds.get)
    r = stds[hi] / stds[lo]
    if r <= 2:
        return (f"Gradient std across layers {stds[lo]:.2e} to {stds[hi]:.2e} (×{r:.1f}): "
                "homogeneous, every layer learns at a similar pace.")
    return (f"Gradient std ranges from {stds[lo]:.2e} ({lo}) to {stds[hi]:.2e} ({hi}), ×{r:.1f}: "
            "not homogeneous; gradients shrink or grow through the stack.")


def _update_finding(probe, tail=10):
    out = []
    snaps = probe.snapshots[-tail:]
    for name in snaps[0].weights:
        v = np.nanmean([s.updates[name] for s in snaps])
        word = ("too high: lr is large for this parameter" if v > -2 else
                "too low: it barely moves" if v < -4 else "near the guide")
        out.append(f"{name}: log10 update:data {v:+.2f} ({word}).")
    return out


# ----------------------------------------------------------------------------------------------
# fastbn lab

@dataclass
class LabResult:
    """What ``run_lab`` made: the model, its probe, checks, losses, files written."""

    model: CharMLP
    probe: Probe
    loss_check: LossCheck
    dead_init: dict
    dead_final: dict
    losses: dict
    history: np.ndarray | None
    wall_time: float
    overhead: float
    files: dict
    report: Path


def _seeds(seed):
    init_ss, batch_ss = np.random.SeedSequence(seed).spawn(2)
    return np.random.default_rng(init_ss), np.random.default_rng(batch_ss)


def _init_batch(ds, n, seed):
    ix = np.random.default_rng(seed).integers(0, len(ds.Xtr), size=n)
    return ds.Xtr[ix], ds.Ytr[ix]


def _draw_lab_figures(probe, history, out, ext):
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        print("fastbn lab: matplotlib is not installed, so no figures were drawn "
              "(pip install 'fastbn[plot]')", file=sys.stderr)
        return {}
    last, when = probe.last, _when(probe.last)
    files = {
        "activations": plot_activations(
            last, out / f"activations.{ext}",
            f"Forward pass {when}: distribution of each nonlinearity's output"),
        "gradients": plot_gradients(
            last, out / f"gradients.{ext}",
            f"Backward pass {when}: distribution of dL/d(output) per nonlinearity"),
        "weight_grads": plot_weight_grads(
            last, out / f"weight_grads.{ext}",
            f"Weight gradients {when} (grad:data = std(grad) / std(W))"),
        "update_ratio": plot_update_ratios(probe, out / f"update_ratio.{ext}"),
        "dead_units": plot_dead_units(probe, out / f"dead_units.{ext}"),
    }
    if len(probe.snapshots) > 2:
        files["over_training"] = plot_activations_over_training(
            probe, out / f"activations_over_training.{ext}")
    if history is not None:
        files["loss"] = plot_loss(history, out / f"loss.{ext}")
    return files


def run_lab(ds, out, *, steps=1000, every=100, batch_size=32, lr_schedule=DEFAULT_LR_SCHEDULE,
            seed=DEFAULT_SEED, init_batch=1000, fmt="png", quiet=True, **model_kw):
    """Build a CharMLP(``ds.vocab``, **model_kw), train it ``steps`` steps on the per-layer path
    with a Probe recording every ``every`` steps, and write the figures, ``stats.txt`` and
    ``stats.md`` (tables) and ``report.md`` (figures and findings in words) into ``out``.

    The initial loss is measured over ``init_batch`` random training examples (training mode, no
    update); the first snapshot is step 0's minibatch (the init parameters), or with ``steps=0``
    one minibatch of ``batch_size``. Dead units are counted over the whole training split at init
    and at the end. ``fmt`` is "png" or "svg". Returns a LabResult.
    """
    from .train import train
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    init_rng, batch_rng = _seeds(seed)
    model = CharMLP(ds.vocab, seed=init_rng, **model_kw)
    probe = Probe(model, every=every)
    check = initial_loss_check(probe.measure(*_init_batch(ds, init_batch, seed)).loss,
                               ds.vocab.size)
    dead_init = dead_units_on_split(model, ds.Xtr)
    history, wall = None, 0.0
    if steps > 0:
        res = train(model, ds, steps=steps, batch_size=batch_size, lr_schedule=lr_schedule,
                    seed=batch_rng, quiet=quiet, callback=probe, every=every, fused=False)
        history, wall, losses = res.history, res.wall_time, res.losses
    else:
        probe.measure(*_init_batch(ds, batch_size, seed + 1), lr=lr_at(lr_schedule, 0),
                      keep=True)
        losses = {n: model.evaluate(*ds.split(n)) for n in ("train", "val")}
    dead_final = dead_units_on_split(model, ds.Xtr)
    files = _draw_lab_figures(probe, history, out, "svg" if fmt == "svg" else "png")

    first, last = probe.first, probe.last
    tables = [("Loss", ["quantity", "value"],
               [[f"initial loss ({init_batch} examples)", f"{check.measured:.4f}"],
                [f"expected ln({check.n_classes})", f"{check.expected:.4f}"],
                ["verdict", check.verdict],
                *([["first minibatch loss", f"{first.loss:.4f}"]] if steps else []),
                *[[f"{k} loss (final)", f"{v:.4f}"] for k, v in losses.items()]])]
    for snap in _distinct(last, first):
        dead = dead_final if snap is last else dead_init
        tables.append((f"Activations and their gradients {_when(snap)}", ACT_HEADERS,
                       _activation_rows(snap, dead)))
    for snap in _distinct(last, first):
        tables.append((f"Weight gradients {_when(snap)}", WEIGHT_HEADERS, _weight_rows(snap)))
    (out / "stats.txt").write_text("".join(f"{t}\n{format_table(h, r)}\n"
                                           for t, h, r in tables))
    (out / "stats.md").write_text("".join(f"### {t}\n\n{format_table(h, r, markdown=True)}\n"
                                          for t, h, r in tables))

    overhead = probe.seconds / (wall - probe.seconds) if steps else float("nan")
    cfg = ", ".join(f"{k}={v}" for k, v in model.config.items())
    md = ["# fastbn lab report\n\n",
          (f"Model: CharMLP({cfg}), {model.num_parameters():,} parameters. {steps:,} steps of "
           f"batch {batch_size}, seed {seed}; {len(probe.snapshots)} snapshots (every {every} "
           "steps). Final loss: " + ", ".join(f"{k} {v:.4f}" for k, v in losses.items())
           + ".\n"),
          "\n## Initial loss\n\n", check.explain() + "\n"]

    def fig(key, alt):
        if key in files:
            md.append(f"\n![{alt}]({files[key].name})\n\n")

    md.append("\n## Forward pass: activations\n")
    fig("activations", "activation histograms")
    for snap in _distinct(last, first):
        md.append(f"{_when(snap).capitalize()}:\n\n")
        md += [f"- {_activation_finding(k, a)}\n" for k, a in snap.activations.items()]
        md.append("\n")
    md.append("\n## Backward pass: gradients of the activations\n")
    fig("gradients", "gradient histograms")
    md.append(_gradient_finding(last) + "\n")
    md.append("\n## Weight gradients\n")
    fig("weight_grads", "weight gradient histograms")
    for snap in _distinct(last, first):
        gd = {n: w["grad_data"] for n, w in snap.weights.items()}
        hi, lo = max(gd, key=gd.get), min(gd, key=gd.get)
        md.append(f"- {_when(snap)}: grad:data from {gd[lo]:.1e} ({lo}) to {gd[hi]:.1e} ({hi}), "
                  f"×{gd[hi] / gd[lo]:.0f}.\n")
    md.append("\nA parameter whose gradient is large next to its values moves faster than the "
              "others under one learning rate, and plain SGD cannot compensate: a good init and "
              "batch norm keep the layers alike. An output layer scaled down on purpose at init "
              "(×0.01, so the softmax starts unconfident) has a high ratio because its values "
              "are small, not its gradient; it settles as those weights grow.\n")
    md.append("\n## Update:data ratio\n")
    fig("update_ratio", "update to data ratio over training")
    md += [f"- {s}\n" for s in _update_finding(probe)]
    md.append("\nMean over the last snapshots. The guide is log10 ≈ -3: each step moves a "
              "parameter by about a thousandth of its spread. Much higher: the learning rate is "
              "too high for that parameter (or its values are tiny, as the ×0.01 output layer's); "
              "much lower: it learns slowly.\n")
    md.append("\n## Dead units\n")
    fig("dead_units", "units by examples map")
    md += [f"- {k}: {dead_init[k][0]} of {dead_init[k][1]} units dead on the whole training split "
           f"at init, {dead_final[k][0]} at the end.\n" for k in dead_init]
    md.append("\nA dead unit sits in the flat part of its nonlinearity for every example, so no "
              "gradient ever reaches its weights: it never learns.\n")
    if "over_training" in files:
        md.append("\n## Activations over training\n")
        fig("over_training", "activation statistics over training")
    if "loss" in files:
        md.append("\n## Loss\n")
        fig("loss", "training loss")
    md.append("\n## Numbers\n\nAll tables: [stats.md](stats.md) (plain text: "
              "[stats.txt](stats.txt)).\n")
    if steps:
        md.append(f"\nProbe cost: {probe.seconds:.2f} s recording within {wall:.2f} s of "
                  f"training: {100 * overhead:.1f} % on top of the training steps.\n")
    report = out / "report.md"
    report.write_text("".join(md))
    return LabResult(model, probe, check, dead_init, dead_final, losses, history, wall,
                     overhead, files, report)


# ----------------------------------------------------------------------------------------------
# fastbn lab ladder

@dataclass
class LadderRow:
    name: str
    init: Snapshot
    losses: dict
    history: np.ndarray | None

    @property
    def tanh(self):
        return next(iter(self.init.activations.values()))


@dataclass
class DeepRow:
    batchnorm: bool
    gain: float
    init: Snapshot
    final: Snapshot
    losses: dict
    diverged: str | None = None

    @property
    def name(self):
        g = {1.0: "1", 5 / 3: "5/3", 3.0: "3"}.get(self.gain, f"{self.gain:g}")
        return f"{'BN' if self.batchnorm else 'no BN'}, gain {g}"

    def verdict(self):
        """"gain too small / about right / too large", read from the statistics at init.

        The first tanh layer is left out: its input is the embedding (std 1), not a tanh. Too
        large: more than 15 % saturated on average; too small: the std falls by more than 20 %
        from the second tanh layer to the last.
        """
        acts = list(self.init.activations.values())[1:] or list(self.init.activations.values())
        if np.mean([a["saturated"] for a in acts]) > 0.15:
            return "too large: tanh saturates"
        if acts[-1]["std"] < 0.8 * acts[0]["std"]:
            return "too small: activations shrink with depth"
        return "about right"


def _train_quiet(model, ds, steps, seed, probe=None, splits=("train", "val")):
    from .train import train
    res = train(model, ds, steps=steps, seed=seed, quiet=True, evaluate=False, callback=probe,
                every=probe.every if probe else 1000, fused=False)
    return res.history, {n: model.evaluate(*ds.split(n)) for n in splits}


def run_ladder(ds, steps=200_000, seed=DEFAULT_SEED, init_batch=1000, configs=None,
               progress=None):
    """The lecture's five configurations of the BN-MLP (``fastbn.model.LADDER``), each trained
    ``steps`` steps on the per-layer path from the same seed (same N(0,1) draws, same
    minibatches).

    The init statistics come from one forward on ``init_batch`` random training examples (the
    same for every configuration). Returns a list of LadderRow.
    """
    Xi, Yi = _init_batch(ds, init_batch, seed)
    rows = []
    for name in configs or LADDER:
        init_rng, batch_rng = _seeds(seed)
        model = CharMLP(ds.vocab, seed=init_rng, **LADDER[name])
        snap = Probe(model).measure(Xi, Yi)
        if progress:
            progress(f"{name}: initial loss {snap.loss:.4f}; training {steps:,} steps")
        history = None
        if steps:
            history, losses = _train_quiet(model, ds, steps, batch_rng)
        else:
            losses = {n: model.evaluate(*ds.split(n)) for n in ("train", "val")}
        rows.append(LadderRow(name, snap, losses, history))
    return rows


def run_deep(ds, steps=1000, seed=DEFAULT_SEED, gains=DEEP_GAINS, batch_size=32, progress=None):
    """The lecture's deep net (``DEEP_NET``) with and without batch norm at each gain.

    Without batch norm the net also has no final BatchNorm (the lecture removes both); its output
    layer is then 0.01 N(0,1) = 0.1/sqrt(100) N(0,1), the lecture's "make it less confident".
    Each is trained ``steps`` steps (lr 0.1, the per-layer path). Returns a list of DeepRow with
    the snapshots of the first minibatch (init) and the last (B = ``batch_size``, the lecture's).
    """
    rows = []
    for bn in (True, False):
        for gain in gains:
            init_rng, batch_rng = _seeds(seed)
            kw = dict(DEEP_NET, batchnorm=bn, final_bn=bn and DEEP_NET["final_bn"])
            model = CharMLP(ds.vocab, seed=init_rng, gain=gain, **kw)
            probe = Probe(model, every=max(steps, 1))
            losses, diverged = {}, None
            if steps:
                try:
                    _, losses = _train_quiet(model, ds, steps, batch_rng, probe, ("val",))
                except FloatingPointError as e:
                    diverged = str(e)
            if not probe.snapshots:
                probe.measure(*_init_batch(ds, batch_size, seed), keep=True,
                              lr=lr_at(DEFAULT_LR_SCHEDULE, 0))
            row = DeepRow(bn, gain, probe.first, probe.last, losses, diverged)
            if progress:
                progress(f"deep net {row.name}: gain {row.verdict()}")
            rows.append(row)
    return rows


def ladder_table(rows, markdown=False):
    headers = ["configuration", "initial loss", "tanh saturated", "tanh std", "train", "val",
               "lecture train", "lecture val", "lecture initial"]
    body = []
    for r in rows:
        t = r.tanh
        lt, lv = LECTURE_LOSSES.get(r.name, (float("nan"),) * 2)
        body.append([r.name, f"{r.init.loss:.4f}", _pct(t["saturated"]), f"{t['std']:.3f}",
                     f"{r.losses['train']:.4f}", f"{r.losses['val']:.4f}", f"{lt:.4f}",
                     f"{lv:.4f}", f"≈{LECTURE_INIT_LOSS.get(r.name, math.log(27)):.2f}"])
    return format_table(headers, body, markdown)


def deep_table(rows, markdown=False, steps=None):
    after = f"after {steps}" if steps else "final"
    headers = ["net", "layer", "std init", "sat init", "grad std init", f"mean {after}",
               f"std {after}", f"sat {after}", f"grad std {after}", "gain (from init)"]
    body = []
    for r in rows:
        for j, (k, a) in enumerate(r.final.activations.items()):
            a0, g, g0 = r.init.activations[k], r.final.gradients[k], r.init.gradients[k]
            body.append([r.name, k.replace(" (Tanh)", ""), f"{a0['std']:.3f}",
                         _pct(a0["saturated"]), f"{g0['std']:.2e}", f"{a['mean']:+.3f}",
                         f"{a['std']:.3f}", _pct(a["saturated"]), f"{g['std']:.2e}",
                         r.verdict() if j == 0 else ""])
    return format_table(headers, body, markdown)


def plot_deep(rows, path, section="activations", when="init", title=None):
    """A grid: rows with / without batch norm, columns by gain; per panel the density of every
    tanh layer's output ("activations") or its gradient ("gradients"), at init or at the end."""
    gains = sorted({r.gain for r in rows})
    nets = sorted({r.batchnorm for r in rows}, reverse=True)
    fig, axes = _figure(4.2 * len(gains), 3.3 * len(nets), len(nets), len(gains))
    for r in rows:
        ax = axes[nets.index(r.batchnorm), gains.index(r.gain)]
        snap = r.init if when == "init" else r.final
        for label, st in getattr(snap, section).items():
            if section == "activations":
                text = f"std {st['std']:.2f}, sat {_pct(st['saturated'])}"
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
    fig.suptitle(title or f"5-layer tanh net {_when(snap)}: {what} per layer, by gain (columns), "
                          "with and without batch norm (rows)", fontsize=10)
    return _save(fig, path)


def plot_ladder(rows, out, ext="png"):
    """ladder_init (tanh histograms at init per configuration) and ladder_loss figures."""
    fig, ax = _figure()
    ax = ax[0, 0]
    for r, ls in zip(rows, ["-", "--", "-", "-", "-", ":"]):
        t = r.tanh
        _density(ax, t["hist"], f"{r.name}: std {t['std']:.2f}, "
                               f"|t| > {SATURATED} {_pct(t['saturated'])}", ls=ls)
    ax.set_xlabel("tanh output at initialization")
    ax.set_ylabel("density")
    ax.set_yscale("log")
    ax.set_title("The init ladder: hidden tanh outputs at initialization "
                 "(fix_softmax keeps the original W1)", fontsize=10)
    ax.legend(fontsize=7, loc="upper center")
    files = {"ladder_init": _save(fig, Path(out) / f"ladder_init.{ext}")}
    if all(r.history is not None and r.history.size >= 100 for r in rows):
        fig, ax = _figure()
        ax = ax[0, 0]
        for r in rows:
            h = np.log10(r.history)
            w = max(100, h.size // 200)
            n = h.size // w
            ax.plot((np.arange(n) + 0.5) * w, h[:n * w].reshape(n, w).mean(1),
                    label=f"{r.name}: val {r.losses['val']:.4f}")
        ax.set_xlabel("step")
        ax.set_ylabel(f"log10(loss), mean over {w} steps")
        ax.set_title("The init ladder: training loss")
        ax.legend(fontsize=8)
        files["ladder_loss"] = _save(fig, Path(out) / f"ladder_loss.{ext}")
    return files


def write_ladder(rows, deep, out, ext="png", steps=None, deep_steps=None):
    """Figures, ladder.txt, ladder.md (the report) into ``out``; returns {kind: path}."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    files = {}
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        print("fastbn lab ladder: matplotlib is not installed, so no figures were drawn",
              file=sys.stderr)
    else:
        if rows:
            files.update(plot_ladder(rows, out, ext))
        for section in ("activations", "gradients") if deep else ():
            for when in ("init", "final"):
                files[f"deep_{section}_{when}"] = plot_deep(
                    deep, out / f"deep_{section}_{when}.{ext}", section, when)
    text, md = [], ["# The init ladder and the deep net\n"]
    if rows:
        text += [f"The init ladder, {steps:,} steps each\n", ladder_table(rows), "\n"]
        md += [f"\n## The init ladder ({steps:,} steps each)\n\n",
               ("Initial loss and tanh statistics on 1000 training examples at init; train "
                "and val losses in eval mode (running BatchNorm statistics) after training. The "
                "lecture's numbers are after 200,000 steps; its initial loss is about 27 for "
                "the original init and ln 27 = 3.29 once fixed.\n\n"), ladder_table(rows, True)]
        for key, alt in (("ladder_init", "tanh at init"), ("ladder_loss", "ladder loss")):
            if key in files:
                md.append(f"\n![{alt}]({files[key].name})\n")
    if deep:
        text += [(f"The deep net ({DEEP_NET['n_layers']} x {DEEP_NET['n_hidden']} tanh), "
                  f"at init and after {deep_steps} steps\n"), deep_table(deep, False, deep_steps),
                 "\n"]
        md += ["\n## The deep net: gains with and without batch norm\n\n",
               (f"{DEEP_NET['n_layers']} tanh layers of {DEEP_NET['n_hidden']}, BatchNorm "
                f"momentum {DEEP_NET['bn_momentum']}, batch 32, lr 0.1 for {deep_steps} steps. "
                "Per tanh layer: std and saturation (|t| > 0.97) of the output and the std of "
                "its gradient dL/d(output), on the first minibatch (init) and the last. Without "
                "batch norm the gain decides: too small and the activations shrink layer by "
                "layer, too large and they saturate; 5/3 keeps them steady. With batch norm "
                "every layer is renormalized and the gain barely matters. The lecture, with "
                "batch norm after 1,000 steps: std 0.63-0.65, 1.7-2.8 % saturated, gradient std "
                "2.0e-3 to 2.6e-3.\n\n"), deep_table(deep, True, deep_steps)]
        for key, path in files.items():
            if key.startswith("deep_"):
                md.append(f"\n![{key}]({path.name})\n")
        md += [f"\n- {r.name} diverged: {r.diverged}\n" for r in deep if r.diverged]
    (out / "ladder.txt").write_text("".join(text))
    (out / "ladder.md").write_text("".join(md))
    files["report"] = out / "ladder.md"
    return files
