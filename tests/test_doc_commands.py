"""The commands and scripts the docs show without running them are real: every ``fastbn ...``
line of a console block is accepted by the command's own parser, and every Python block (the
sweep script, the cluster call) compiles and calls real functions with real keyword arguments.
(The pages' ``{code-cell}`` blocks and the README's example are executed: tests/test_docs.py,
tests/test_readme.py.)"""
import ast
import contextlib
import importlib
import inspect
import io
import pathlib
import re
import shlex

import pytest

from fastbn.cli import build_parser

ROOT = pathlib.Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md"] + sorted(p for p in (ROOT / "docs").rglob("*.md")
                                      if not {"_build", "jupyter_execute"} & set(p.parts))


def _blocks(lang):
    for page in PAGES:
        for m in re.finditer(rf"^```{lang}\n(.*?)^```", page.read_text(), re.S | re.M):
            yield page, m.group(1)


def _commands():
    """Every ``fastbn`` command of a console (or bash) block: (page, the line's arguments)."""
    for lang in ("console", "bash"):
        for page, block in _blocks(lang):
            for line in block.splitlines():
                line = line.removeprefix("$ ").split("  #")[0].split(" # ")[0].strip()
                if line.startswith("fastbn "):
                    yield page, shlex.split(line)[1:]


COMMANDS = list(_commands())


def _id(case):
    page, args = case
    return f"{page.relative_to(ROOT)}: fastbn {' '.join(args)}"


def test_the_docs_show_commands():
    assert len(COMMANDS) >= 5
    assert {args[0] for _, args in COMMANDS} >= {"train", "eval", "sample", "sweep"}


@pytest.mark.parametrize("case", COMMANDS, ids=_id)
def test_a_shown_command_is_accepted_by_the_parser(case):
    _, args = case
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        try:
            build_parser().parse_args(args)
        except SystemExit as e:         # argparse's exit on an unknown or malformed option
            pytest.fail(f"fastbn {' '.join(args)}: {err.getvalue().strip() or e}")


def test_the_parser_check_can_fail():
    with pytest.raises(SystemExit), contextlib.redirect_stderr(io.StringIO()):
        build_parser().parse_args(["train", "--no-such-option"])


PY_BLOCKS = list(_blocks("python"))


def _dotted(node):
    """``a.b.c`` of an attribute chain rooted at a name, or None."""
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    return ".".join([node.id, *reversed(parts)]) if isinstance(node, ast.Name) else None


def _calls(tree):
    """(the called fastbn object, keyword names) of each call of something the block imported
    from fastbn (``from fastbn.sweep import sweep; sweep(...)``, ``fastbn.CharMLP(...)``)."""
    imported = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("fastbn"):
            for alias in node.names:
                imported[alias.asname or alias.name] = f"{node.module}:{alias.name}"
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == "fastbn":
                    imported[alias.asname or alias.name.split(".")[0]] = (
                        alias.name if alias.asname else "fastbn")
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        name = _dotted(node.func)
        if name is None or name.split(".")[0] not in imported:
            continue
        root, *rest = name.split(".")
        where = imported[root]
        module, _, attr = where.partition(":")
        obj = importlib.import_module(module)
        for part in ([attr] if attr else []) + rest:
            obj = getattr(obj, part)       # an AttributeError: the block calls what is not there
        yield name, obj, [k.arg for k in node.keywords if k.arg]


@pytest.mark.parametrize("case", PY_BLOCKS, ids=lambda c: str(c[0].relative_to(ROOT)))
def test_a_shown_script_compiles_and_calls_real_functions(case):
    page, code = case
    tree = ast.parse(code)
    # a block that continues the page's previous one (``sweep(space, ...)`` alone) is checked
    # with the imports of the page's blocks before it
    before = "".join(c for p, c in PY_BLOCKS if p == page).split(code)[0]
    calls = list(_calls(ast.parse(before + code)))
    assert calls or "fastbn" not in code, "a Python block that calls nothing of fastbn"
    for name, fn, keywords in calls:
        try:
            params = inspect.signature(fn).parameters
        except ValueError:                 # a compiled function without a signature
            continue
        if any(p.kind is p.VAR_KEYWORD for p in params.values()):
            continue
        unknown = [k for k in keywords if k not in params]
        assert not unknown, f"{name} has no argument {unknown}"
    assert tree.body


def test_the_script_check_can_fail():
    calls = list(_calls(ast.parse("import fastbn\nfrom fastbn.sweep import sweep\n"
                                  "sweep(1, outt='x')\nfastbn.CharMLP('ab', seed=0)\n")))
    by_name = {name: keywords for name, _, keywords in calls}
    assert by_name == {"sweep": ["outt"], "fastbn.CharMLP": ["seed"]}
    assert "outt" not in inspect.signature(calls[0][1]).parameters
    with pytest.raises(AttributeError):
        list(_calls(ast.parse("import fastbn\nfastbn.no_such_function()\n")))
