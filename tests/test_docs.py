"""What a user reads carries no process narrative: no tracker numbers, no times of runs, no
paths or environment of the machine that built it (README, the docs' pages, the notebooks, the
docstrings, the command line's help). Measurements live in bench/results/ with their date and
machine, and the docs render them from there."""
import ast
import json
import pathlib
import re

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]

NARRATIVE = {
    "a tracker number": re.compile(r"\b(?:issues?|PR|pull request|ticket)s? ?#?\d+", re.I),
    "a time of a run": re.compile(r"\b\d{1,2}:\d{2}(?::\d{2})?(?:[–-]\d{1,2}:\d{2})? ?UTC\b"),
    "a build-machine path": re.compile(r"(?<![\w.~])/(?:work|tmp|root|home)/"),
    "an account of the development": re.compile(
        r"\bthis session\b|\bthe session's\b|\bsessions since\b|\bthis round\b|"
        r"\bduring the development\b|\bat `[0-9a-f]{7,}`|\bcommit [0-9a-f]{7,}\b", re.I),
    "the build machine's environment": re.compile(r"\bthis workplace\b|OPENBLAS_CORETYPE=Haswell"),
}


def _hits(text):
    return [(what, m.group(0)) for what, pat in NARRATIVE.items() for m in pat.finditer(text)]


def _pages():
    pages = [ROOT / "README.md"]
    docs = ROOT / "docs"
    pages += [p for p in docs.rglob("*.md") if "_build" not in p.parts
              and "jupyter_execute" not in p.parts and "_generated" not in p.parts]
    return [p for p in pages if p.exists()]


def test_the_pattern_catches_the_narrative():
    for text in ("the targets of issue 14", "runs at 10:55 UTC", "data /work/shared/names.txt",
                 "a file in /tmp/x", "measured this session", "before, at `ced6abc`",
                 "This workplace sets OPENBLAS_CORETYPE=Haswell"):
        assert _hits(text), text
    for text in ("measured 2026-11-29 on an AMD EPYC", "~/.cache/fastbn/names.txt",
                 "fastbn-run/model.npz", "lr 0:0.1,100000:0.01", "O(B·D) per step"):
        assert not _hits(text), text


@pytest.mark.parametrize("path", _pages(), ids=lambda p: str(p.relative_to(ROOT)))
def test_pages_carry_no_narrative(path):
    hits = _hits(path.read_text())
    assert not hits, f"{path.relative_to(ROOT)}: {hits}"


NOTEBOOKS = sorted((ROOT / "docs" / "notebooks").glob("*.ipynb"))


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebooks_carry_no_narrative(path):
    nb = json.loads(path.read_text())
    text = "\n".join("".join(c.get("source", "")) for c in nb["cells"])
    text += json.dumps([c.get("outputs", []) for c in nb["cells"]])
    assert not _hits(text), _hits(text)


def _docstrings():
    for path in sorted((ROOT / "fastbn").rglob("*.py")):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef,
                                 ast.AsyncFunctionDef)):
                doc = ast.get_docstring(node)
                if doc:
                    yield path, getattr(node, "name", "<module>"), doc


def test_docstrings_carry_no_narrative():
    bad = [(str(p.relative_to(ROOT)), name, hit) for p, name, doc in _docstrings()
           for hit in _hits(doc)]
    assert not bad, bad


def test_cli_help_carries_no_narrative():
    import argparse

    from fastbn.cli import build_parser

    def helps(parser):
        yield parser.format_help()
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for sub in action.choices.values():
                    yield from helps(sub)

    texts = list(helps(build_parser()))
    assert len(texts) > 5
    bad = [hit for t in texts for hit in _hits(t)]
    assert not bad, bad


def test_every_page_is_in_the_site():
    """Each Markdown page of docs/ is reached from the site's index (a page left out would
    fail the -W build as well; this says which, without building)."""
    docs = ROOT / "docs"
    text = "\n".join(p.read_text() for p in docs.rglob("*.md"))
    for page in ["install", "quickstart", "guide/index", "tutorials", "api/index", "cli",
                 "benchmarks", "design", "contributing", "changelog"]:
        assert page in (docs / "index.md").read_text(), page
    for page in ["backprop", "exercise", "model", "lab", "batchnorm", "sweeps", "speed"]:
        assert page in (docs / "guide" / "index.md").read_text(), page
    assert "notebooks/backprop_by_hand" in text and "notebooks/makemore_part3_batchnorm" in text


def test_executed_pages_train_briefly():
    """The site builds on CI's two cores: an executed page trains a few thousand steps at most
    (the lecture's 200,000 are said, not run)."""
    for page in (ROOT / "docs").rglob("*.md"):
        text = page.read_text()
        if "{code-cell}" not in text:
            continue
        cells = re.findall(r"```\{code-cell\}[^\n]*\n(.*?)```", text, re.S)
        for cell in cells:
            for steps in re.findall(r"steps\W{1,3}(\d[\d_]*)", cell):
                assert int(steps.replace("_", "")) <= 5000, (page.name, steps)


def _renderer():
    import importlib.util
    spec = importlib.util.spec_from_file_location(
        "fastbn_results", ROOT / "docs" / "_ext" / "fastbn_results.py")
    mod = importlib.util.module_from_spec(spec)
    pytest.importorskip("sphinx", reason="the docs' extension needs Sphinx: pip install .[docs]")
    spec.loader.exec_module(mod)
    return mod


def test_rendered_results_carry_no_narrative():
    """bench/results/ files keep their full record (targets, commit, clock time); what the docs
    render from them keeps the date and the machine, and no tracker numbers or times of runs."""
    mod = _renderer()
    results = ROOT / "bench" / "results"
    shown = {p.name: "\n".join(mod.render_md(p.read_text())) for p in results.glob("*.md")}
    shown.update({p.name: "\n".join(mod.render_md(p.read_text()))
                  for p in (ROOT / "docs" / "lab").glob("*.md")})
    if (results / "results.json").exists():
        shown["results.json"] = "\n".join(mod.render_json(
            json.loads((results / "results.json").read_text())))
    assert shown
    bad = {name: _hits(text) for name, text in shown.items() if _hits(text)}
    assert not bad, bad
    clock = re.compile(r"\d{4}-\d{2}-\d{2} \d{2}:\d{2}")
    assert not [n for n, t in shown.items() if clock.search(t)]
    assert "2026-11-29" in shown.get("results.json", "2026-11-29")   # the date stays


def test_results_change_renders_the_ratio_range_of_the_rows():
    """{results-change}: a ratio column's range over the rows named, as a change in percent; each
    use on a page names a file, rows and a column that exist."""
    mod = _renderer()
    table = ("| dtype | path | B | after / before |\n|---|---|---:|---:|\n"
             "| float32 | a (x) | 32 | 1.010 |\n| float64 | a (x) | 32 | 0.995 |\n"
             "| float32 | a, y | 32 | 1.500 |\n| float32 | b | 32 | 2.000 |\n")
    assert mod.change_range(table, "a (", "after / before") == "−0.5 to +1.0 %"
    assert mod.change_range(table, "b", "after / before") == "+100.0 %"
    assert mod.change_range([table, table.replace("2.000", "0.900")], "b",
                            "after / before") == "−10.0 to +100.0 %"
    shares = ("| dtype | path | B | after / before | min CPU share |\n|---|---|---:|---:|---:|\n"
              "| float32 | a (x) | 32 | 1.010 | 0.60 |\n| float64 | a (x) | 32 | 0.995 | 0.99 |\n")
    assert mod.change_range(shares, "a (", "after / before") == "−0.5 %"   # 1.010: preempted
    for row, column in (("c", "after / before"), ("a", "paired")):
        with pytest.raises(ValueError):
            mod.change_range(table, row, column)
    uses = 0
    for page in (ROOT / "docs").rglob("*.md"):
        for text in re.findall(r"\{results-change\}`([^`]+)`", page.read_text()):
            where, row, column = (" ".join(part.split()) for part in text.split(";"))
            texts = [(page.parent / w.strip()).read_text() for w in where.split(",")]
            assert mod.change_range(texts, row, column), text
            uses += 1
    assert uses
