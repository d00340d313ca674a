"""Render recorded measurements into the docs at build time, so a page cannot drift from them.

``{results-json} ../bench/results/results.json``
    the benchmark's tables and the machine, from results.json (``fastbn.bench.report.markdown``,
    the same code that wrote results.md), and its chart drawn by ``fastbn.bench.chart.draw``.
``{results-md} ../bench/results/sweep.md``
    a recorded results file (Markdown) as it is, its headings one level down, without the run's
    pass/fail targets and without a chart it links beside it (the page draws its own).
``{results-change}`../bench/results/divergence_check.md; compiled loop; paired```
    inline: the range, over the rows of the file's table whose second cell begins with the
    given text, of a ratio column, as a change in percent ("+0.2 to +1.1 %"); several files,
    separated by commas, give the range over all of them. Rows whose "min CPU share" is below
    the harness's 0.95 (a preempted call) are left out.

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


# a table's column of the smallest share of a CPU a timed call got, and the share below which
# the benchmark's harness counts a call as preempted (fastbn.bench.timing.MIN_CPU_SHARE)
SHARE, MIN_SHARE = "min CPU share", 0.95


def _ratios(text, row, column):
    lines = [ln.strip() for ln in text.splitlines() if ln.strip().startswith("|")]
    if not lines:
        raise ValueError("no table")
    cells = [[c.strip() for c in ln.strip("|").split("|")] for ln in lines]
    head = cells[0]
    if column not in head:
        raise ValueError(f"no column {column!r} (the columns: {head})")
    k = head.index(column)
    rows = [c for c in cells[2:] if len(c) > 1 and c[1].startswith(row)]
    if not rows:
        raise ValueError(f"no row whose second cell begins with {row!r}")
    if SHARE in head:                   # rows timed while the process was preempted: left out
        j = head.index(SHARE)
        rows = [c for c in rows if float(c[j]) >= MIN_SHARE]
    return [float(c[k].rstrip("×")) for c in rows]


def change_range(texts, row, column):
    """The range of the ratio ``column`` over the rows of the Markdown table of each of
    ``texts`` (one text or several) whose second cell begins with ``row``, as a change in
    percent ("+0.2 to +1.1 %"). A row whose "min CPU share" (when the table has that column)
    is below ``MIN_SHARE`` was timed while the process was preempted and is left out.
    ValueError if a table has no such column or no such row, or no row is left."""
    values = [v for t in ([texts] if isinstance(texts, str) else texts)
              for v in _ratios(t, row, column)]
    if not values:
        raise ValueError(f"every row beginning with {row!r} has a {SHARE} below {MIN_SHARE}")
    lo, hi = ((min(values) - 1) * 100, (max(values) - 1) * 100)

    def pct(x):
        return f"{x:+.1f}".replace("-", "−")
    return f"{pct(lo)} %" if f"{lo:.1f}" == f"{hi:.1f}" else f"{pct(lo)} to {pct(hi)} %"


def results_change_role(name, rawtext, text, lineno, inliner, options=None, content=None):
    env = inliner.document.settings.env
    try:
        where, row, column = (" ".join(part.split()) for part in text.split(";"))
        here = Path(env.doc2path(env.docname)).parent
        paths = [(here / w.strip()).resolve() for w in where.split(",")]
        for path in paths:
            env.note_dependency(str(path))
        shown = change_range([path.read_text() for path in paths], row, column)
    except (ValueError, OSError) as e:
        msg = inliner.reporter.error(f"results-change {text!r}: {e}", line=lineno)
        return [inliner.problematic(rawtext, rawtext, msg)], [msg]
    return [nodes.Text(shown)], []


def setup(app):
    app.add_role("results-change", results_change_role)
    app.add_directive("results-seeds", ResultsSeeds)
    app.add_directive("results-json", ResultsJson)
    app.add_directive("results-md", ResultsMd)
    return {"parallel_read_safe": True, "version": "1"}
