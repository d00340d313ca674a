"""What a sweep found, in numbers and words: configurations ranked by val loss (mean ± sd over
their seeds), and ``OUT/report.md``.

A configuration (a *point*) is a trial without its seed. Its val loss is the mean over the seeds
whose trial finished ("ok"); sd is the sample standard deviation over them (ddof 1; none for a
single seed). Points where no seed finished rank last.
"""
from __future__ import annotations

import base64
import io
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from .space import PARAMS, short_label

__all__ = ["Point", "markdown_report", "points_table", "summarize"]


@dataclass
class Point:
    """One configuration of the sweep and its trials' outcome."""

    params: dict[str, Any]              # name -> value
    trials: list[Any] = field(repr=False)   # [(Trial, row)], rows of the finished trials
    val: list[float] = field(default_factory=list)
    train: list[float] = field(default_factory=list)
    diverged: int = 0
    failed: int = 0

    @staticmethod
    def _ms(xs: Sequence[float]) -> tuple[float, float]:
        if not xs:
            return math.nan, math.nan
        m = sum(xs) / len(xs)
        sd = math.sqrt(sum((x - m) ** 2 for x in xs) / (len(xs) - 1)) if len(xs) > 1 else \
            math.nan
        return m, sd

    @property
    def val_mean(self) -> float:
        return self._ms(self.val)[0]

    @property
    def val_sd(self) -> float:
        return self._ms(self.val)[1]

    @property
    def train_mean(self) -> float:
        return self._ms(self.train)[0]

    @property
    def train_sd(self) -> float:
        return self._ms(self.train)[1]

    def label(self) -> str:
        return " ".join(f"{k}={short_label(PARAMS[k], v)}" for k, v in self.params.items()) or \
            "defaults"


def summarize(trials, rows):
    """[Point] of the trials that have a row (``rows``: trial id -> row), best val loss first."""
    points = {}
    for t in trials:
        row = rows.get(t.id)
        if row is None:
            continue
        key = tuple((k, t.text(k)) for k in t.params)
        p = points.setdefault(key, Point(dict(t.params), []))
        p.trials.append((t, row))
        if row["status"] == "ok":
            p.val.append(row["val_loss"])
            p.train.append(row["train_loss"])
        elif row["status"] == "diverged":
            p.diverged += 1
        else:
            p.failed += 1
    return sorted(points.values(), key=lambda p: (not p.val, p.val_mean if p.val else 0))


def _pm(m, sd, digits=4):
    if math.isnan(m):
        return "—"
    return f"{m:.{digits}f}" + (f" ± {sd:.{digits}f}" if not math.isnan(sd) else "")


def points_table(points, names, limit=None):
    """Markdown table of the points: rank, the parameters ``names``, seeds, val and train loss
    (mean ± sd), diverged and failed trials."""
    head = ["rank", *names, "seeds ok", "val loss", "train loss", "diverged", "failed"]
    lines = ["| " + " | ".join(head) + " |",
             "|" + "|".join("---:" if h not in names else "---" for h in head) + "|"]
    for i, p in enumerate(points[:limit] if limit else points, start=1):
        vals = [short_label(PARAMS[n], p.params[n]) if n in p.params else "" for n in names]
        lines.append("| " + " | ".join([
            str(i), *vals, f"{len(p.val)}/{len(p.trials)}", _pm(p.val_mean, p.val_sd),
            _pm(p.train_mean, p.train_sd), str(p.diverged), str(p.failed)]) + " |")
    return "\n".join(lines)


def _png_data_uri(fig):
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def markdown_report(result, links=None, top=20):
    """The report of a ``SweepResult`` as markdown; figures linked by ``links`` (name -> file
    name or URI), else embedded as PNG data URIs."""
    if links is None:
        links = {k: _png_data_uri(f) for k, f in result.figures.items()}
    names = result.param_names()
    swept = result.swept()
    points = result.points()
    counts = result.counts()
    lines = [f"# Sweep: {result.description}", ""]
    done = sum(counts.values())
    ran = f" Ran on {result.cluster}" if result.cluster else ""
    if ran and result.wall_time:
        ran += f" in {result.wall_time:.1f} s"
    lines.append(f"{done} of {len(result.trials)} trials finished"
                 + (" (interrupted: resume to run the rest)" if done < len(result.trials)
                    else "")
                 + ": " + (", ".join(f"{v} {k}" for k, v in counts.items()) or "none") + "."
                 + (ran + " (this run)." if ran else ""))
    if result.data_text:
        lines.append(f"Data: {result.data_text}.")
    lines += ["", "Losses are in eval mode after training; val loss is the mean over the seeds "
                  "that finished, ± their sample standard deviation.", ""]
    lines += ["## Best configurations first", ""]
    lines.append(points_table(points, names, top))
    if len(points) > top:
        lines.append(f"\n({len(points) - top} more configurations in results.csv)")
    per = [k for k in links if k.startswith("val_vs_")]
    maps = [k for k in links if k.startswith("heatmap_")]
    if per:
        lines += ["", "## Val loss against each swept parameter", ""]
        lines += [f"![val loss against {k[7:]}]({links[k]})" for k in per]
    if maps:
        lines += ["", "## Two parameters at a time", "",
                  "Each cell: the mean val loss over seeds of the best configuration with those "
                  "two values (best over the other swept parameters, if any). Colors stop at "
                  "ln(vocabulary size), the loss of a uniform guess.", ""]
        lines += [f"![{k[8:]}]({links[k]})" for k in maps]
    bad = [(t, r) for p in points for t, r in p.trials if r["status"] != "ok"]
    if bad:
        lines += ["", "## Diverged and failed trials", "",
                  "| trial | configuration | seed | status | error |", "|---|---|---:|---|---|"]
        for t, r in bad:
            err = r["error"].replace("|", "\\|")
            lines.append(f"| {t.id} | {t.label(seed=False)} | {t.seed} | {r['status']} | "
                         f"{err} |")
    if not swept:
        lines += ["", "No parameter takes more than one value: the table is the spread over "
                      "seeds."]
    return "\n".join(lines) + "\n"
