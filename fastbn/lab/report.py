"""The laboratory's words and tables: plain-text and markdown tables, findings in words, and
the reports of ``run_lab`` and ``run_ladder`` (markdown that links figures by file name).

Fractions are shown as percents.
"""
from __future__ import annotations

import base64
import html
import io
import math
import re
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from .stats import FLAT_REGION

if TYPE_CHECKING:
    from .experiments import DeepRow, LadderRow

__all__ = ["LECTURE_LOSSES", "deep_table", "format_table", "ladder_table"]

# The lecture's train / val losses after 200,000 steps (lecture-figures.md) and initial losses.
LECTURE_LOSSES: dict[str, tuple[float, float]] = {
    "original": (2.1245, 2.1682), "fix_softmax": (2.07, 2.13), "fix_tanh": (2.0356, 2.1027),
    "kaiming": (2.0377, 2.1070), "batchnorm": (2.0668, 2.1048)}
LECTURE_INIT_LOSS = {"original": 27.0}     # about 27; every fixed configuration: ln 27 = 3.29


def format_table(headers: Sequence[str], rows: Iterable[Sequence[Any]],
                 markdown: bool = False) -> str:
    """Rows of strings as an aligned plain-text table, or a markdown table.

    Parameters
    ----------
    headers : sequence of str
        The column titles.
    rows : iterable of sequences
        The cells (converted with ``str``).
    markdown : bool, default False
        A markdown table instead of plain text.

    Returns
    -------
    str
        The table.
    """
    rows = [[str(c) for c in r] for r in rows]
    if markdown:
        lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
        return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows]) + "\n"
    w = [max(len(str(h)), *(len(r[j]) for r in rows)) for j, h in enumerate(headers)]
    fmt = "  ".join(f"{{:<{w[0]}}}" if j == 0 else f"{{:>{w[j]}}}" for j in range(len(w)))
    lines = [fmt.format(*headers), "  ".join("-" * n for n in w)]
    return "\n".join(lines + [fmt.format(*r) for r in rows]) + "\n"


def percent(x):
    return f"{100 * x:.1f}%"


def _activation_rows(snap, dead_split=None):
    rows = []
    for label, a in snap.activations.items():
        g = snap.gradients[label]
        d = dead_split.get(label) if dead_split else None
        rows.append([label, f"{a['mean']:+.3f}", f"{a['std']:.3f}", percent(a["saturated"]),
                     f"{a['dead']}/{a['units']}", "-" if d is None else f"{d[0]}/{d[1]}",
                     f"{g['mean']:+.2e}", f"{g['std']:.2e}"])
    return rows


ACT_HEADERS = ["layer", "act mean", "act std", "flat %", "dead (batch)", "dead (split)",
               "grad mean", "grad std"]
WEIGHT_HEADERS = ["parameter", "shape", "grad mean", "grad std", "grad:data", "log10 update:data"]


def _weight_rows(snap):
    return [[w.get("label", n), "x".join(map(str, w["shape"])), f"{w['mean']:+.2e}",
             f"{w['std']:.2e}",
             f"{w['grad_data']:.2e}", f"{snap.updates[n]:+.2f}"]
            for n, w in snap.weights.items()]


def distinct(*items):
    """The items without repeats (by identity), in order."""
    out = []
    for x in items:
        if all(x is not y for y in out):
            out.append(x)
    return out


def when_taken(snap):
    return "at initialization" if snap.step == 0 else f"at step {snap.step}"


def _activation_finding(label, a):
    s, f = a["std"], a["saturated"]
    if a["kind"] == "tanh":
        if f > 0.10:
            return (f"{label}: {percent(f)} of outputs saturated (std {s:.2f}): too many; the "
                    "gradient through those is nearly killed (1 - t² ≈ 0). Shrink the weights "
                    "before it or normalize (batch norm).")
        if s < 0.4:
            return (f"{label}: std {s:.2f}, outputs squashed toward 0: the signal shrinks; the "
                    "gain before it is too small.")
        return (f"{label}: std {s:.2f}, {percent(f)} saturated: healthy (the guide: std ≈ 0.65, "
                "≤ 5 % saturated).")
    return (f"{label}: {percent(f)} of outputs in the flat region ({FLAT_REGION[a['kind']]}), std "
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
    for name, w in snaps[0].weights.items():
        v = np.nanmean([s.updates[name] for s in snaps])
        word = ("too high: lr is large for this parameter" if v > -2 else
                "too low: it barely moves" if v < -4 else "near the guide")
        out.append(f"{w.get('label', name)}: log10 update:data {v:+.2f} ({word}).")
    return out


def ladder_table(rows: Sequence[LadderRow], markdown: bool = False) -> str:
    """The init ladder as a table beside the lecture's numbers.

    Parameters
    ----------
    rows : sequence of LadderRow
        The ladder's rows (``run_ladder``).
    markdown : bool, default False
        A markdown table.

    Returns
    -------
    str
        The table.
    """
    headers = ["configuration", "initial loss", "tanh saturated", "tanh std", "train", "val",
               "lecture train", "lecture val", "lecture initial"]
    body = []
    for r in rows:
        t = r.tanh
        lt, lv = LECTURE_LOSSES.get(r.name, (float("nan"),) * 2)
        body.append([r.name, f"{r.init.loss:.4f}", percent(t["saturated"]), f"{t['std']:.3f}",
                     f"{r.losses['train']:.4f}", f"{r.losses['val']:.4f}", f"{lt:.4f}",
                     f"{lv:.4f}", f"≈{LECTURE_INIT_LOSS.get(r.name, math.log(27)):.2f}"])
    return format_table(headers, body, markdown)


def deep_table(rows: Sequence[DeepRow], markdown: bool = False,
               steps: int | None = None) -> str:
    """The deep nets' activation and gradient statistics, layer by layer, at init and after
    training.

    Parameters
    ----------
    rows : sequence of DeepRow
        The deep nets' rows (``run_deep``).
    markdown : bool, default False
        A markdown table.
    steps : int, optional
        The training steps, for the headers.

    Returns
    -------
    str
        The table.
    """
    after = f"after {steps}" if steps else "final"
    headers = ["net", "layer", "std init", "sat init", "grad std init", f"mean {after}",
               f"std {after}", f"sat {after}", f"grad std {after}", "gain (from init)"]
    body = []
    for r in rows:
        for j, (k, a) in enumerate(r.final.activations.items()):
            a0, g, g0 = r.init.activations[k], r.final.gradients[k], r.init.gradients[k]
            body.append([r.name, k.replace(" (Tanh)", ""), f"{a0['std']:.3f}",
                         percent(a0["saturated"]), f"{g0['std']:.2e}", f"{a['mean']:+.3f}",
                         f"{a['std']:.3f}", percent(a["saturated"]), f"{g['std']:.2e}",
                         r.verdict() if j == 0 else ""])
    return format_table(headers, body, markdown)


def lab_tables(check, losses, first, last, dead_init, dead_final, init_batch, steps):
    """The tables of a lab run as [(title, headers, rows)]: the losses, then activations and
    weight gradients at the end and at init."""
    tables = [("Loss", ["quantity", "value"],
               [[f"initial loss ({init_batch} examples)", f"{check.measured:.4f}"],
                [f"expected ln({check.n_classes})", f"{check.expected:.4f}"],
                ["verdict", check.verdict],
                *([["first minibatch loss", f"{first.loss:.4f}"]] if steps else []),
                *[[f"{k} loss (final)", f"{v:.4f}"] for k, v in losses.items()]])]
    for snap in distinct(last, first):
        dead = dead_final if snap is last else dead_init
        tables.append((f"Activations and their gradients {when_taken(snap)}", ACT_HEADERS,
                       _activation_rows(snap, dead)))
    for snap in distinct(last, first):
        tables.append((f"Weight gradients {when_taken(snap)}", WEIGHT_HEADERS, _weight_rows(snap)))
    return tables


def tables_text(tables, markdown=False):
    """``lab_tables``' tables as one plain-text (or markdown) document."""
    if markdown:
        return "".join(f"### {t}\n\n{format_table(h, r, markdown=True)}\n" for t, h, r in tables)
    return "".join(f"{t}\n{format_table(h, r)}\n" for t, h, r in tables)


def lab_report(result, links):
    """The markdown report of a lab run (a ``LabResult``): findings in words, with the figures
    shown from ``links`` (figure name -> URL: a file name next to the report, or a data URI)."""
    probe, check, losses = result.probe, result.loss_check, result.losses
    dead_init, dead_final = result.dead_init, result.dead_final
    steps, every = result.settings["steps"], result.settings["every"]
    first, last = probe.first, probe.last
    cfg = ", ".join(f"{k}={v}" for k, v in result.model.config.items())
    md = ["# fastbn lab report\n\n",
          (f"Model: CharMLP({cfg}), {result.model.num_parameters():,} parameters. {steps:,} "
           f"steps of batch {result.settings['batch_size']}, seed {result.settings['seed']}; "
           f"{len(probe.snapshots)} snapshots (every {every} steps). Final loss: "
           + ", ".join(f"{k} {v:.4f}" for k, v in losses.items()) + ".\n"),
          "\n## Initial loss\n\n", check.explain() + "\n"]

    def fig(key, alt):
        if key in links:
            md.append(f"\n![{alt}]({links[key]})\n\n")
    md.append("\n## Forward pass: activations\n")
    fig("activations", "activation histograms")
    for snap in distinct(last, first):
        md.append(f"{when_taken(snap).capitalize()}:\n\n")
        md += [f"- {_activation_finding(k, a)}\n" for k, a in snap.activations.items()]
        md.append("\n")
    md.append("\n## Backward pass: gradients of the activations\n")
    fig("gradients", "gradient histograms")
    md.append(_gradient_finding(last) + "\n")
    md.append("\n## Weight gradients\n")
    fig("weight_grads", "weight gradient histograms")
    for snap in distinct(last, first):
        gd = {w.get("label", n): w["grad_data"] for n, w in snap.weights.items()}
        hi, lo = max(gd, key=gd.get), min(gd, key=gd.get)
        md.append(f"- {when_taken(snap)}: grad:data from {gd[lo]:.1e} ({lo}) to {gd[hi]:.1e} "
                  f"({hi}), ×{gd[hi] / gd[lo]:.0f}.\n")
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
    if "activations_over_training" in links:
        md.append("\n## Activations over training\n")
        fig("activations_over_training", "activation statistics over training")
    if "loss" in links:
        md.append("\n## Loss\n")
        fig("loss", "training loss")
    if result.files:
        md.append("\n## Numbers\n\nAll tables: [stats.md](stats.md) (plain text: "
                  "[stats.txt](stats.txt)).\n")
    if steps:
        md.append(f"\nProbe cost: {probe.seconds:.2f} s recording within "
                  f"{result.wall_time:.2f} s of training: {100 * result.overhead:.1f} % on top "
                  "of the training steps.\n")
    return "".join(md)


def ladder_report(rows, deep, links, steps=None, deep_steps=None, deep_net=None):
    """(plain text, markdown) of the ladder and deep-net results; figures shown from ``links``
    (figure name -> URL, e.g. the file name next to the report)."""
    text, md = [], ["# The init ladder and the deep net\n"]
    if rows:
        text += [f"The init ladder, {steps:,} steps each\n", ladder_table(rows), "\n"]
        md += [f"\n## The init ladder ({steps:,} steps each)\n\n",
               ("Initial loss and tanh statistics on 1000 training examples at init; train "
                "and val losses in eval mode (running BatchNorm statistics) after training. The "
                "lecture's numbers are after 200,000 steps; its initial loss is about 27 for "
                "the original init and ln 27 = 3.29 once fixed.\n\n"), ladder_table(rows, True)]
        for key, alt in (("ladder_init", "tanh at init"), ("ladder_loss", "ladder loss")):
            if key in links:
                md.append(f"\n![{alt}]({links[key]})\n")
    if deep:
        text += [(f"The deep net ({deep_net['n_layers']} x {deep_net['n_hidden']} tanh), "
                  f"at init and after {deep_steps} steps\n"), deep_table(deep, False, deep_steps),
                 "\n"]
        md += ["\n## The deep net: gains with and without batch norm\n\n",
               (f"{deep_net['n_layers']} tanh layers of {deep_net['n_hidden']}, BatchNorm "
                f"momentum {deep_net['bn_momentum']}, batch 32, lr 0.1 for {deep_steps} steps. "
                "Per tanh layer: std and saturation (|t| > 0.97) of the output and the std of "
                "its gradient dL/d(output), on the first minibatch (init) and the last. Without "
                "batch norm the gain decides: too small and the activations shrink layer by "
                "layer, too large and they saturate; 5/3 keeps them steady. With batch norm "
                "every layer is renormalized and the gain barely matters. The lecture, with "
                "batch norm after 1,000 steps: std 0.63-0.65, 1.7-2.8 % saturated, gradient std "
                "2.0e-3 to 2.6e-3.\n\n"), deep_table(deep, True, deep_steps)]
        for key, url in links.items():
            if key.startswith("deep_"):
                md.append(f"\n![{key}]({url})\n")
        md += [f"\n- {r.name} diverged: {r.diverged}\n" for r in deep if r.diverged]
    return "".join(text), "".join(md)


# ----------------------------------------------------------------------------------------------
# for notebooks: figures as data URIs, the reports' markdown as HTML

def png_base64(fig, dpi=None):
    """A Figure as a base64 PNG (for a ``data:image/png;base64,`` URI)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    return base64.b64encode(buf.getvalue()).decode("ascii")


_IMAGE = re.compile(r"!\[([^\]]*)\]\(([^)]*)\)")
_LINK = re.compile(r"\[([^\]]*)\]\(([^)]*)\)")
_BOLD = re.compile(r"\*\*(.+?)\*\*")


def _inline(text):
    text = html.escape(text, quote=False)
    text = _IMAGE.sub(lambda m: f'<img alt="{m[1]}" src="{m[2]}" style="max-width:100%">', text)
    text = _LINK.sub(lambda m: f'<a href="{m[2]}">{m[1]}</a>', text)
    return _BOLD.sub(r"<strong>\1</strong>", text)


def markdown_to_html(md):
    """HTML of the markdown these reports are written in: headings, paragraphs, bullet lists,
    pipe tables, images, links and bold; nothing else (no dependency on a markdown package)."""
    out, para, items, table = [], [], [], []

    def flush():
        if para:
            out.append(f"<p>{_inline(' '.join(para))}</p>")
        if items:
            out.append("<ul>" + "".join(f"<li>{_inline(i)}</li>" for i in items) + "</ul>")
        if table:
            head, *body = [[c.strip() for c in r.strip().strip("|").split("|")] for r in table
                           if not set(r.replace("|", "").strip()) <= set("-: ")]
            out.append("<table><thead><tr>" + "".join(f"<th>{_inline(c)}</th>" for c in head)
                       + "</tr></thead><tbody>"
                       + "".join("<tr>" + "".join(f"<td>{_inline(c)}</td>" for c in r) + "</tr>"
                                 for r in body) + "</tbody></table>")
        para.clear(), items.clear(), table.clear()

    for line in md.splitlines():
        s = line.strip()
        if not s:
            flush()
        elif s.startswith("#"):
            flush()
            level = min(len(s) - len(s.lstrip("#")) + 1, 6)   # h2 and below inside a notebook
            out.append(f"<h{level}>{_inline(s.lstrip('#').strip())}</h{level}>")
        elif s.startswith("|"):
            if para or items:
                flush()
            table.append(s)
        elif s.startswith("- "):
            if para or table:
                flush()
            items.append(s[2:])
        else:
            if table:
                flush()
            para.append(s)
    flush()
    return '<div class="fastbn-report">' + "\n".join(out) + "</div>"
