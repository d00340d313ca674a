"""The laboratory: instruments that show why a network trains or fails (makemore part 3).

The failure modes a student must learn to see, and what each instrument measures:

- **confidently wrong at init**: the initial loss against ln(C), the loss of a uniform guess over
  C classes (``initial_loss_check``);
- **saturated tanh, vanishing gradients**: per nonlinearity layer, the mean, std and fraction of
  saturated outputs, ``|t| > 0.97`` (``activation_stats``), and the histograms of the outputs and of
  their gradients dL/dt (the layer's ``.dout``);
- **dead units**: a unit whose output is flat for every example of a batch, ``|t| > 0.99`` for tanh,
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
deep 5-layer net with and without batch norm at gains 1, 5/3 and 3; ``run_robustness``
(``fastbn lab robustness``) maps the deep net's val loss over init gain x learning rate with and
without batch norm. The ladder's, the deep net's and the map's runs are sweeps
(``fastbn.sweep``): in parallel on Dask, every core by default.

Conventions: std is the population std (ddof 0; torch's ``.std()`` is unbiased, a difference of
one part in 2*B*H here), computed in float64. Fractions are in [0, 1]; tables show percents.
A figure path ending in ``.svg`` writes SVG, anything else PNG.

Where things are, one job a module:

- ``stats``: the numbers (activation, dead-unit, gradient and update statistics, the loss check);
- ``probe``: ``Probe`` and ``Snapshot``, reading a model's layers during training;
- ``plots``: the figures (matplotlib, imported only when a figure is drawn; no pyplot state);
- ``report``: tables, findings in words, the markdown reports;
- ``experiments``: ``run_lab``, ``run_ladder``, ``run_deep``, ``write_lab``, ``write_ladder``;
- ``trials``: the ladder's and the deep net's runs as sweep trials, and ``run_sweep``;
- ``robustness``: batch norm's robustness map (``run_robustness``, ``plot_robustness``).
"""
from .experiments import (
    DEEP_GAINS,
    DEEP_NET,
    DeepRow,
    LabResult,
    LadderRow,
    WriteError,
    ladder_figures,
    run_deep,
    run_lab,
    run_ladder,
    write_lab,
    write_ladder,
)
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
from .probe import Probe, Snapshot, dead_units_on_split, measure_overhead
from .report import LECTURE_LOSSES, deep_table, format_table, ladder_table
from .robustness import RobustnessMap, plot_robustness, run_robustness, write_robustness
from .stats import (
    DEAD,
    FLAT_REGION,
    SATURATED,
    UPDATE_GUIDE,
    LossCheck,
    activation_stats,
    dead_map,
    dead_units,
    grad_data_ratio,
    initial_loss_check,
    update_data_ratio,
)

__all__ = [
    "DEAD", "DEEP_GAINS", "DEEP_NET", "FLAT_REGION", "LECTURE_LOSSES", "SATURATED", "UPDATE_GUIDE",
    "DeepRow", "LabResult", "LadderRow", "LossCheck", "Probe", "RobustnessMap", "Snapshot",
    "WriteError",
    "activation_stats",
    "dead_map", "dead_units", "dead_units_on_split", "deep_table", "format_table",
    "grad_data_ratio", "initial_loss_check", "ladder_figures", "ladder_table", "measure_overhead",
    "plot_activations", "plot_activations_over_training", "plot_dead_units", "plot_deep",
    "plot_gradients", "plot_ladder", "plot_loss", "plot_robustness", "plot_update_ratios",
    "plot_weight_grads", "run_deep", "run_lab", "run_ladder", "run_robustness", "save_figure",
    "update_data_ratio", "write_lab", "write_ladder", "write_robustness",
]
