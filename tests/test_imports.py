"""The import structure of ``fastbn``: no import cycles, and a command line that starts light.

The graph is read from the source of the fastbn this process imports (installed, or built in
place), with ``ast``: an edge A -> B for every ``import``/``from ... import`` of B in A, "top" when
it runs as A is imported (module body, class bodies, module-level if/try/with), "deferred" when
it sits in a function (runs when that is called). ``if TYPE_CHECKING:`` blocks never run and are
left out. Importing ``fastbn.x.y`` also imports its parent packages; those implicit edges are
left out (every submodule has them), but an explicit ``from . import NAME`` of something defined
in a package's ``__init__`` is an edge to that package.

- The top-level graph must be acyclic: a cycle there fails or half-initializes at import time.
- The whole graph must be acyclic too: a deferred import that closes a cycle (A imports B, B
  imports A inside a function) works only because it is deferred, and means the layers are
  tangled (as ``fastbn.cli`` and ``fastbn.bench`` once were). The message lists the deferred
  imports that go back up.
"""
import ast
import importlib.machinery
import os
import subprocess
import sys
from pathlib import Path

import fastbn

PKG = Path(fastbn.__file__).resolve().parent
HEAVY = ("fastbn.bench", "matplotlib", "torch", "dask", "distributed")


# ----------------------------------------------------------------------------------------------
# the graph

def _modules(pkg_dir):
    """{dotted name: (path, is_package)} of the .py files under the package folder."""
    mods = {}
    for f in sorted(pkg_dir.rglob("*.py")):
        parts = list(f.relative_to(pkg_dir.parent).with_suffix("").parts)
        is_pkg = parts[-1] == "__init__"
        mods[".".join(parts[:-1] if is_pkg else parts)] = (f, is_pkg)
    return mods


def _is_extension(pkg_dir, dotted):
    """Whether ``dotted`` names a compiled extension module (e.g. fastbn._kernels)."""
    parts = dotted.split(".")
    folder = pkg_dir.parent.joinpath(*parts[:-1])
    return any((folder / (parts[-1] + sfx)).is_file()
               for sfx in importlib.machinery.EXTENSION_SUFFIXES)


def _is_type_checking(node):
    test = node.test
    return isinstance(node, ast.If) and (
        (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING")
        or (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"))


def import_edges(pkg_dir):
    """[(importer, imported, "top" | "deferred", "file:line")] between the package's modules.

    Imported compiled extensions are leaves and are left out.
    """
    pkg_dir = Path(pkg_dir)
    root = pkg_dir.name
    mods = _modules(pkg_dir)
    edges = []

    def target(name):
        if name in mods:
            return name
        return None if _is_extension(pkg_dir, name) else name

    for name, (path, is_pkg) in mods.items():
        here = name if is_pkg else name.rpartition(".")[0]

        def add(imported, kind, node, name=name, path=path):
            if imported is not None and (imported == root or imported.startswith(root + ".")):
                edges.append((name, imported, kind, f"{path.name}:{node.lineno}"))

        def visit(node, kind, here=here, add=add):
            for child in ast.iter_child_nodes(node):
                if isinstance(child, ast.If) and _is_type_checking(child):
                    for sub in child.orelse:
                        visit(ast.Module(body=[sub], type_ignores=[]), kind)
                    continue
                if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
                    visit(child, "deferred")
                    continue
                if isinstance(child, ast.Import):
                    for alias in child.names:
                        add(target(alias.name), kind, child)
                elif isinstance(child, ast.ImportFrom):
                    if child.level:
                        base = here.split(".")[:len(here.split(".")) - (child.level - 1)]
                        src = ".".join(base + ([child.module] if child.module else []))
                    else:
                        src = child.module or ""
                    for alias in child.names:
                        sub = f"{src}.{alias.name}"
                        if sub in mods or _is_extension(pkg_dir, sub):
                            add(target(sub), kind, child)
                        else:                           # a name defined in the module src
                            add(target(src), kind, child)
                visit(child, kind)

        visit(ast.parse(path.read_text(encoding="utf-8"), str(path)), "top")
    return edges


def cycles(edges):
    """The strongly connected components of more than one module (or with a self-loop)."""
    graph = {}
    for a, b, _, _ in edges:
        graph.setdefault(a, set()).add(b)
        graph.setdefault(b, set())
    index, low, stack, on_stack, out = {}, {}, [], set(), []

    def strongconnect(v):            # Tarjan; the package is small, recursion is fine
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                strongconnect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = set()
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.add(w)
                if w == v:
                    break
            if len(comp) > 1 or v in graph[v]:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            strongconnect(v)
    return out


def _explain(comps, edges):
    lines = []
    for comp in comps:
        lines.append("cycle among " + ", ".join(comp) + ":")
        lines += dict.fromkeys(f"    {a} -> {b} ({kind}, {where})" for a, b, kind, where in edges
                               if a in comp and b in comp)
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------------
# fastbn

def test_top_level_imports_have_no_cycle():
    edges = [e for e in import_edges(PKG) if e[2] == "top"]
    assert len({e[0] for e in edges}) >= 5          # the graph was read (not silently empty)
    comps = cycles(edges)
    assert not comps, "import cycles at import time:\n" + _explain(comps, edges)


def test_no_deferred_import_goes_back_up():
    """A function-level import must not close a cycle: the layers stay a hierarchy."""
    edges = import_edges(PKG)
    assert any(kind == "deferred" for _, _, kind, _ in edges)
    comps = cycles(edges)
    assert not comps, ("imports inside functions that go back up the layering (each closes a "
                       "cycle; move what both need into a lower module):\n"
                       + _explain(comps, edges))


# ----------------------------------------------------------------------------------------------
# the detector itself, on a package with known cycles

def _write_pkg(root, files):
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


def test_the_detector_finds_top_level_and_deferred_cycles(tmp_path):
    pkg = _write_pkg(tmp_path / "p", {
        "__init__.py": "from .a import f\nVERSION = 1\n",
        "a.py": "from . import b\n\ndef f():\n    from .c import g\n",
        "b.py": "import p.leaf\n",
        "c.py": "from .b import x\n\ndef g():\n    from . import a\n",   # deferred: c -> a
        "leaf.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from . import a\n",
        "d.py": "from . import e\n",
        "e.py": "from .d import y\n",                                      # top: d <-> e
        "sub/__init__.py": "from .m import z\n",
        "sub/m.py": "from .. import VERSION\nfrom . import helper\n",      # m -> p, m -> sub
        "_ext" + importlib.machinery.EXTENSION_SUFFIXES[0]: "",
        "uses_ext.py": "from . import _ext\n",
    })
    edges = import_edges(pkg)
    assert ("p.b", "p.leaf", "top", "b.py:1") in edges
    assert ("p.c", "p.a", "deferred", "c.py:4") in edges
    assert ("p.sub.m", "p", "top", "m.py:1") in edges            # a name from p/__init__.py
    assert ("p.sub.m", "p.sub", "top", "m.py:2") in edges
    assert not [e for e in edges if e[0] == "p.leaf"]           # TYPE_CHECKING never runs
    assert not [e for e in edges if e[0] == "p.uses_ext"]       # an extension is a leaf
    top = [e for e in edges if e[2] == "top"]
    assert cycles(top) == [["p.d", "p.e"], ["p.sub", "p.sub.m"]]
    found = cycles(edges)
    assert ["p.a", "p.c"] in found and ["p.d", "p.e"] in found
    assert "p.c -> p.a (deferred, c.py:4)" in _explain(found, edges)
    # a module importing a name that p/__init__ defines, while p/__init__ imports it: a cycle
    _write_pkg(pkg, {"__init__.py": "from .a import f\nfrom .sub import z\nVERSION = 1\n"})
    assert ["p", "p.sub", "p.sub.m"] in cycles(import_edges(pkg))


# ----------------------------------------------------------------------------------------------
# what the command line imports

def _python(code, cwd, **env):
    """Run ``python -c code`` outside the source tree, importing the fastbn this process does."""
    env = dict(os.environ, **env,
               PYTHONPATH=os.pathsep.join([str(PKG.parent), os.environ.get("PYTHONPATH", "")]))
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env=env, cwd=cwd, timeout=180, check=False)


def test_the_cli_parser_imports_no_benchmark_plotting_or_torch(tmp_path):
    """``fastbn --help`` (any command's parsing) loads none of the heavy modules."""
    r = _python("import sys, fastbn.cli as c\nc.build_parser().format_help()\n"
                "assert sys.modules['fastbn'].__file__\n"
                f"print([m for m in {HEAVY!r} if m in sys.modules])", tmp_path)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "[]"


def test_the_check_sees_a_heavy_import(tmp_path):
    """The same probe, after importing the benchmark, names it: the check above can fail."""
    r = _python("import sys, fastbn.cli as c, fastbn.bench\nc.build_parser()\n"
                f"print([m for m in {HEAVY!r} if m in sys.modules])", tmp_path)
    assert r.returncode == 0, r.stderr
    assert "fastbn.bench" in r.stdout


def test_fastbn_train_imports_no_benchmark_or_torch(names_path, tmp_path):
    r = _python("import sys, fastbn.cli as c\n"
                "rc = c.main(['train', '--steps', '20', '--no-plot', '--quiet', '--out', 'run'])\n"
                f"print(rc, [m for m in {HEAVY!r} if m in sys.modules])", tmp_path,
                FASTBN_DATA=names_path)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip().splitlines()[-1] == "0 []"


def test_fastbn_lab_is_reachable_from_import_fastbn_without_loading_it_first(tmp_path):
    r = _python("import sys, fastbn\nassert 'fastbn.lab' not in sys.modules\n"
                "assert fastbn.lab.run_lab.__module__ == 'fastbn.lab.experiments'\nprint('ok')",
                tmp_path)
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stderr


def test_fastbn_and_its_sweep_package_import_no_dask(tmp_path):
    """Dask is imported when a sweep runs, not by ``import fastbn``, ``import fastbn.sweep``,
    ``import fastbn.lab``, nor by listing a sweep's trials (``fastbn sweep --dry-run``)."""
    r = _python("import sys, fastbn, fastbn.sweep, fastbn.lab, fastbn.cli as c\n"
                "rc = c.main(['sweep', '--param', 'lr=0.1,0.2', '--seeds', '2', '--dry-run'])\n"
                "print(rc, [m for m in ('dask', 'distributed') if m in sys.modules])", tmp_path)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip().splitlines()[-1] == "0 []"


def test_fastbn_lab_imports_no_dask(names_path, tmp_path):
    r = _python("import sys, fastbn.cli as c\n"
                "rc = c.main(['lab', '--steps', '20', '--every', '10', '--n-hidden', '16', "
                "'--quiet', '--out', 'lab'])\n"
                "print(rc, [m for m in ('dask', 'distributed', 'torch') if m in sys.modules])",
                tmp_path, FASTBN_DATA=names_path)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip().splitlines()[-1] == "0 []"


def test_no_attribute_of_fastbn_hides_one_of_its_modules():
    """``import fastbn.<name>`` gives the module for every module, and ``fastbn.<name>`` is that
    module too (fastbn.train and fastbn.gradcheck are functions: their modules are named
    training and gradchecks)."""
    import importlib
    import pkgutil
    for info in pkgutil.iter_modules(fastbn.__path__):
        if info.name.startswith("_"):
            continue
        module = importlib.import_module(f"fastbn.{info.name}")
        attr = getattr(fastbn, info.name, module)
        assert attr is module, f"fastbn.{info.name} is {attr!r}, not the module"
    assert callable(fastbn.train) and callable(fastbn.gradcheck)
