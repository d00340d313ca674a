"""The probe: what a model's layers hold after a step, recorded as Snapshots.

``Probe(model)`` is the ``callback`` of ``fastbn.train`` (per-layer path); ``Probe.measure``
runs one forward and backward without an update. ``dead_units_on_split`` counts dead units over
a whole split; ``measure_overhead`` times what recording costs.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from .stats import (
    BINS,
    activation_stats,
    dead_map,
    float_std,
    grad_data_ratio,
    histogram,
    nonlinearity_kind,
    nonlinearity_options,
    update_data_ratio,
)

if TYPE_CHECKING:
    from ..model import CharMLP

__all__ = ["Probe", "Snapshot", "dead_units_on_split", "measure_overhead"]


@dataclass(repr=False)
class Snapshot:
    """What a probe read from the model at one step.

    ``activations``: label -> {kind, mean, std, saturated (fraction in the flat region), dead
    (units flat on every example of the batch), units, hist}; ``gradients``: label -> {mean, std,
    hist} of dL/d(output); ``weights``: 2-D parameter name -> {shape, mean, std (of the gradient),
    grad_data, hist}; ``updates``: parameter name -> log10 update:data (every parameter; NaN when
    lr is None). ``maps``: label -> (B, H) ``dead_map``, kept only by the first and the latest
    snapshot. A hist is (counts, lo, hi) over equal bins.

    Parameters
    ----------
    step : int
        The training step.
    loss, lr : float or None
        The step's loss and learning rate.
    activations, gradients, weights : dict
        As above, by layer label or parameter name.
    updates : dict of str to float
        As above.
    maps : dict of str to numpy.ndarray, optional
        As above.
    """

    step: int
    loss: float | None
    lr: float | None
    activations: dict[str, dict[str, Any]] = field(default_factory=dict)
    gradients: dict[str, dict[str, Any]] = field(default_factory=dict)
    weights: dict[str, dict[str, Any]] = field(default_factory=dict)
    updates: dict[str, float] = field(default_factory=dict)
    maps: dict[str, NDArray[np.bool_]] | None = None

    def __repr__(self) -> str:
        loss = "" if self.loss is None else f", loss {self.loss:.4f}"
        acts = ", ".join(f"{k.split(' (')[0]} std {a['std']:.2f} flat {100 * a['saturated']:.1f}%"
                         for k, a in list(self.activations.items())[:3])
        more = "" if len(self.activations) <= 3 else f", +{len(self.activations) - 3} layers"
        return f"Snapshot(step {self.step}{loss}; {acts}{more}; {len(self.weights)} weights)"


def _nonlinear(model):
    """[(label, kind, layer)] of the model's nonlinearity layers, labelled by hidden block:
    "hidden layer 1 (Tanh)", ..., "hidden layer N (Tanh)" (one nonlinearity per block)."""
    layers = [layer for layer in model.layers if nonlinearity_kind(layer)]
    return [(f"hidden layer {k} ({type(layer).__name__})", nonlinearity_kind(layer), layer)
            for k, layer in enumerate(layers, start=1)]


def _param_labels(model):
    """{parameter name: what it is, by block}: "embedding (0.weight)", "hidden layer 1 weight
    (1.weight)", ..., "output weight (4.weight)" (the names of ``named_parameters()`` in
    parentheses)."""
    from ..nn import Embedding, Linear
    linears = [i for i, layer in enumerate(model.layers) if isinstance(layer, Linear)]
    out = {}
    for name, _ in model.named_parameters():
        i, _, attr = name.partition(".")
        layer = model.layers[int(i)] if i.isdigit() and int(i) < len(model.layers) else None
        if isinstance(layer, Embedding):
            what = "embedding"
        elif isinstance(layer, Linear):
            k = linears.index(int(i))
            what = ("output " if k == len(linears) - 1 else f"hidden layer {k + 1} ") + attr
        else:
            continue
        out[name] = f"{what} ({name})"
    return out


class Probe:
    """Records diagnostics of a model every ``every`` steps.

    Parameters
    ----------
    model : CharMLP (or anything with ``layers`` and aligned ``named_parameters()``/``grads()``)
    every : int
        Pass it on as ``fastbn.train(..., callback=probe, every=probe.every)``.
    bins : int
        Histogram bins.

    Notes
    -----
    The probe is the callback: ``probe(step, loss, lr)`` reads the nonlinearity layers' ``.out``
    and ``.dout`` and the parameters' gradients of the step that just ran (the parameters already
    updated, as the lecture measures). Only the per-layer path runs the layers: a Probe says so
    (``reads_layers``), so ``fastbn.train`` takes that path for it, and ``record`` refuses
    layers that have not run since its last record. ``measure(X, Y)`` runs one forward and
    backward without an update instead. ``snapshots`` are the records in order; ``seconds`` the
    time spent recording.
    """

    reads_layers = True       # fastbn.train then takes the per-layer path (fused="auto")

    def __init__(self, model: CharMLP, every: int = 100, bins: int = BINS) -> None:
        every = int(every)
        if every < 1:
            raise ValueError(f"every must be >= 1, got {every}")
        self.model, self.every, self.bins = model, every, int(bins)
        self.nonlinear = _nonlinear(model)
        self.labels = _param_labels(model) if hasattr(model, "layers") else {}
        names, params = zip(*model.named_parameters())
        self.params = list(zip(names, params, model.grads()))
        self.snapshots: list[Snapshot] = []
        self.seconds = 0.0
        # the .out arrays of the last record (to detect stale layers)
        self._seen: list[Any] | None = None

    def __call__(self, step: int, loss: float | None = None, lr: float | None = None) -> Snapshot:
        return self.record(step, loss, lr)

    def __repr__(self) -> str:
        steps = [s.step for s in self.snapshots]
        span = f", steps {steps[0]}..{steps[-1]}" if steps else ""
        return (f"Probe(every={self.every}, {len(self.snapshots)} snapshots{span}, "
                f"{len(self.nonlinear)} nonlinearity layers, {len(self.params)} parameters)")

    def record(self, step: int, loss: float | None = None, lr: float | None = None) -> Snapshot:
        """Read the model now and append the Snapshot (returned).

        Parameters
        ----------
        step : int
            The training step.
        loss, lr : float, optional
            The step's loss and learning rate.

        Returns
        -------
        Snapshot
            The record.

        Raises
        ------
        RuntimeError
            When the layers have not run since the last record (the compiled loop does not
            run them).
        """
        t0 = time.perf_counter()
        outs = [getattr(layer, "out", None) for _, _, layer in self.nonlinear]
        if self._seen is not None and all(o is s for o, s in zip(outs, self._seen)):
            raise RuntimeError("the layers have not run since the last record (the compiled "
                               "training loop does not run them): train with fused=False")
        self._seen = outs
        snap = self._append(self._read(step, loss, lr))
        self.seconds += time.perf_counter() - t0
        return snap

    def _append(self, snap: Snapshot) -> Snapshot:
        if len(self.snapshots) > 1:          # keep the maps of the first and the latest only
            self.snapshots[-1].maps = None
        self.snapshots.append(snap)
        return snap

    def measure(self, X: ArrayLike, Y: ArrayLike, lr: float | None = None,
                keep: bool = False) -> Snapshot:
        """One forward and backward in training mode on (X, Y), no update; returns the Snapshot
        (appended to ``snapshots`` when ``keep``).

        BatchNorm running statistics are restored afterwards, so the model is unchanged (but its
        layers' ``.out`` and gradients are those of this batch). ``lr``, when given, is the one
        the update:data ratios are computed for. Gradients are of the mean loss over the batch,
        so they scale as 1/B: compare snapshots of equal batch sizes.

        Parameters
        ----------
        X : array_like of int, shape (B, T)
            Contexts.
        Y : array_like of int, shape (B,)
            Next characters.
        lr : float, optional
            The learning rate the update:data ratios are for.
        keep : bool, default False
            Append the Snapshot to ``snapshots``.

        Returns
        -------
        Snapshot
            The record.
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
            options = nonlinearity_options(layer)
            stats = activation_stats(t, kind, options=options)
            flat = dead_map(t, kind, options=options)
            stats.update(kind=kind, dead=int(flat.all(0).sum()), units=int(t.shape[1]),
                         hist=histogram(t, kind, self.bins))
            snap.activations[label] = stats
            snap.maps[label] = flat
            snap.gradients[label] = {"mean": float(d.mean(dtype=np.float64)), "std": float_std(d),
                                     "hist": histogram(d, None, self.bins)}
        for name, p, g in self.params:
            if p.ndim == 2:
                snap.weights[name] = {"label": self.labels.get(name, name), "shape": p.shape,
                                      "mean": float(g.mean(dtype=np.float64)),
                                      "std": float_std(g), "grad_data": grad_data_ratio(g, p),
                                      "hist": histogram(g, None, self.bins)}
            snap.updates[name] = (update_data_ratio(g, p, lr) if lr is not None
                                  else float("nan"))
        return snap

    def series(self, section: str, name: str,
               key: str | None = None) -> tuple[NDArray[np.int64], NDArray[np.float64]]:
        """(steps, values) over the snapshots, e.g. ``("activations", label, "std")`` or
        ``("updates", "1.weight")``.

        Parameters
        ----------
        section : str
            ``"activations"``, ``"gradients"``, ``"weights"`` or ``"updates"``.
        name : str
            A layer label or a parameter name.
        key : str, optional
            The statistic (``"std"``, ``"saturated"``, ...), for a section of dicts.

        Returns
        -------
        steps : numpy.ndarray of int64
            The snapshots' steps.
        values : numpy.ndarray of float64
            The statistic at each.
        """
        steps = np.array([s.step for s in self.snapshots], dtype=np.int64)
        vals = [getattr(s, section)[name] for s in self.snapshots]
        if key is not None:
            vals = [v[key] for v in vals]
        return steps, np.array(vals, dtype=np.float64)

    @property
    def first(self) -> Snapshot:
        """The first snapshot.

        Returns
        -------
        Snapshot
            ``snapshots[0]``.
        """
        return self.snapshots[0]

    @property
    def last(self) -> Snapshot:
        """The latest snapshot.

        Returns
        -------
        Snapshot
            ``snapshots[-1]``.
        """
        return self.snapshots[-1]


def dead_units_on_split(model: CharMLP, X: np.ndarray,
                        chunk: int = 8192) -> dict[str, tuple[int, int]]:
    """Per nonlinearity layer, the number of units flat on every example of X (N, T).

    The forward runs in training mode, over chunks (batch statistics per chunk of ``chunk``
    examples, what the net sees while it trains), with the BatchNorm running statistics restored
    afterwards. Returns {label: (dead, units)}. The layers' ``.out`` are left from the last chunk.

    Parameters
    ----------
    model : CharMLP
        The model (its running statistics are restored).
    X : numpy.ndarray of int, shape (N, T)
        Contexts, usually a whole split.
    chunk : int, default 8192
        Examples per forward.

    Returns
    -------
    dict of str to (int, int)
        Layer label -> (dead units, units).
    """
    nonlinear = _nonlinear(model)
    alive: dict[str, Any] = {label: None for label, _, _ in nonlinear}
    saved = [b.copy() for _, b in model.named_buffers()]
    was = model.training
    model.train()
    try:
        for a in range(0, len(X), chunk):
            model.logits(X[a:a + chunk])
            for label, kind, layer in nonlinear:
                flat = dead_map(layer.out, kind, options=nonlinearity_options(layer)).all(0)
                alive[label] = ~flat if alive[label] is None else alive[label] | ~flat
    finally:
        for (_, b), s in zip(model.named_buffers(), saved):
            b[...] = s
        model.train(was)
    return {label: (int((~v).sum()), int(v.size)) for label, v in alive.items()}


def measure_overhead(model: CharMLP, X: np.ndarray, Y: np.ndarray, every: int = 100,
                     steps: int = 2000, repeats: int = 3, lr: float = 0.01,
                     seed: int = 0) -> dict[str, float]:
    """How much a Probe recording every ``every`` steps slows ``model.train_step``.

    Alternates ``repeats`` timed runs of ``steps`` steps with and without the probe (minibatches
    of 32 from (X, Y)) and compares medians. Returns {"plain_s", "probed_s", "overhead" (fraction),
    "record_ms" (median time of one record), "step_us"}. Trains the model.

    Parameters
    ----------
    model : CharMLP
        The model (it is trained).
    X, Y : numpy.ndarray of int
        Training contexts (N, T) and next characters (N,).
    every : int, default 100
        The probe's interval.
    steps : int, default 2000
        Steps per timed run.
    repeats : int, default 3
        Timed runs with and without the probe.
    lr : float, default 0.01
        The learning rate.
    seed : int, default 0
        The minibatches' seed.

    Returns
    -------
    dict of str to float
        As above.
    """
    rng = np.random.default_rng(seed)
    probe = Probe(model, every=every)

    def run(with_probe: bool) -> float:
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

