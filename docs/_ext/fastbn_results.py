"""Render recorded measurements into the docs at build time, so a page cannot drift from them.

``{results-json} ../bench/results/results.json``
    the benchmark's tables and the machine, from results.json (``fastbn.bench.report.markdown``,
    the same code that wrote results.md), and its chart drawn by ``fastbn.bench.chart.draw``.
``{results-md} ../bench/results/sweep.md``
    a recorded results file (Markdown) as it is, its headings one level down, without the run's
    pass/fail targets and without a chart it links beside it (the page draws its own).

Paths are relative to the page. Images a results file links are rewritten to its folder.
"""
import copy
import json
import re
from pathlib import Path

from docutils import nodes
from docutils.statemachine import StringList
from sphinx.util.docutils import SphinxDirective

GENERATED = "_generated"


def _demote(lines):
    return ["#" + ln if ln.startswith("#") else ln for ln in lines]


def _without_section(lines, prefix):
    out, skipping = [], False
    for ln in lines:
        if ln.startswith("#"):
            skipping = ln.lstrip("#").strip().startswith(prefix)
        if not skipping:
            out.append(ln)
    return out


def _clean(text):
    # a build's short commit hash after a version ("fastbn 0.1.0 (a7f86fe)") is not for readers
    # and the clock time of a run is in the file; a reader needs its date
    text = re.sub(r"(\d{4}-\d{2}-\d{2}) \d{2}:\d{2}(?::\d{2})?(?: ?[+-]\d{4}| UTC)?", r"\1", text)
    return re.sub(r" \([0-9a-f]{7,40}\)", "", text)


def render_md(text):
    """The lines of a results file as a page shows them: no comments, no title, no targets."""
    text = re.sub(r"<!--.*?-->\n?", "", text, flags=re.S)
    lines = [ln for ln in _clean(text).splitlines() if not ln.startswith("# ")]
    lines = _without_section(lines, "Targets")
    return [ln for ln in lines if "us_per_step.png" not in ln]


def render_json(res):
    """The lines of results.json as the benchmarks page shows them (without the chart)."""
    from fastbn.bench import report
    shown = copy.deepcopy(res)
    shown["targets"] = []
    shown["chart"] = None
    shown["machine"]["fastbn_git"] = None
    lines = _clean(report.markdown(shown)).splitlines()
    return _demote([ln for ln in lines if not ln.startswith("# ")])


class _Results(SphinxDirective):
    required_arguments = 1
    has_content = False

    def _path(self):
        here = Path(self.env.doc2path(self.env.docname)).parent
        path = (here / self.arguments[0]).resolve()
        self.env.note_dependency(str(path))
        return path

    def _parse(self, lines):
        node = nodes.container(classes=["fastbn-results"])
        self.state.nested_parse(StringList(lines, source=self.arguments[0]),
                                self.content_offset, node)
        return [node]


class ResultsJson(_Results):
    def run(self):
        from fastbn.bench import chart
        path = self._path()
        res = json.loads(path.read_text())
        lines = render_json(res)
        out = Path(self.env.srcdir) / GENERATED
        out.mkdir(exist_ok=True)
        png = out / (path.stem + "_us_per_step.png")
        fig = chart.draw(res)
        fig.savefig(png)
        lines += ["", f"![µs per training step against batch size](/{GENERATED}/{png.name})", ""]
        return self._parse(lines)


class ResultsMd(_Results):
    def run(self):
        path = self._path()
        lines = render_md(path.read_text())
        src = Path(self.env.srcdir).resolve()
        try:
            rel = path.parent.relative_to(src).as_posix()
        except ValueError:
            rel = None

        def image(m):
            target = m.group(2)
            if rel is None or "://" in target or target.startswith("/"):
                return m.group(0)
            return f"{m.group(1)}(/{rel}/{target})"
        lines = [re.sub(r"(!\[[^\]]*\])\(([^)]+)\)", image, ln) for ln in lines]
        return self._parse(_demote(lines))


class ResultsSeeds(_Results):
    """A seeds file of ``bench/seeds.sh`` (one ``seed S loss: train T  val V  test X`` line per
    seed) as a table of the losses' mean, standard deviation, minimum and maximum."""

    def run(self):
        import statistics
        path = self._path()
        runs = [dict(re.findall(r"(train|val|test) (\d+\.\d+)", ln))
                for ln in path.read_text().splitlines() if ln.startswith("seed")]
        if not runs:
            raise self.error(f"no seed lines in {path}")
        lines = [f"{len(runs)} seeds, losses in eval mode after the full run:", "",
                 "| split | mean | sd | min | max |", "|---|---:|---:|---:|---:|"]
        for split in ("train", "val", "test"):
            v = [float(r[split]) for r in runs]
            lines.append(f"| {split} | {statistics.mean(v):.4f} | {statistics.stdev(v):.4f} | "
                         f"{min(v):.4f} | {max(v):.4f} |")
        return self._parse(lines + [""])


def setup(app):
    app.add_directive("results-seeds", ResultsSeeds)
    app.add_directive("results-json", ResultsJson)
    app.add_directive("results-md", ResultsMd)
    return {"parallel_read_safe": True, "version": "1"}
