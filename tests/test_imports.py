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
- The graph of the subpackages stands on its own too: with each subpackage (``fastbn.lab``,
  ``fastbn.sweep``, ...) taken as one node, and each top-level module as its own, it is acyclic:
  the laboratory may run sweeps, but then the sweep may not draw with the laboratory's code
  (what both need lives in a module below both).
- No module imports another module's private names (``from .x import _name``, ``x._name``):
  what modules share has a public name, in a private module (``fastbn._figures``) if it is not
  part of the API.
- No module of fastbn is over ``MAX_LINES`` lines.
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


def package_of(module, root="fastbn"):
    """The node of ``module`` in the graph of subpackages: its subpackage right below ``root``
    (``fastbn.lab.plots`` -> ``fastbn.lab``), or the module itself at the top level."""
    parts = module.split(".")
    return ".".join(parts[:2]) if len(parts) > 2 else module


def package_edges(pkg_dir):
    """The import edges between subpackages (and top-level modules), within one left out."""
    root = Path(pkg_dir).name
    subpackages = {name for name, (_, is_pkg) in _modules(Path(pkg_dir)).items()
                   if is_pkg and name.count(".") == 1}
    out = []
    for a, b, kind, where in import_edges(pkg_dir):
        pa, pb = package_of(a, root), package_of(b, root)
        if pa != pb:
            out.append((pa, pb, kind, f"{where} ({a} -> {b})"))
    assert subpackages, "no subpackage found"
    return out


def test_subpackages_do_not_import_each_other_both_ways():
    edges = package_edges(PKG)
    assert ("fastbn.lab", "fastbn.sweep") in {(a, b) for a, b, _, _ in edges}   # (it reads)
    comps = cycles(edges)
    assert not comps, ("subpackages that import each other (move what both use into a module "
                       "below both, e.g. fastbn/_figures.py):\n" + _explain(comps, edges))


def test_the_sweep_stands_without_the_laboratory():
    """The laboratory runs its experiments as sweeps; the sweep never imports the laboratory."""
    bad = [e for e in import_edges(PKG)
           if e[0].startswith("fastbn.sweep") and e[1].startswith("fastbn.lab")]
    assert not bad, bad


# ----------------------------------------------------------------------------------------------
# private names stay in their module

# (module, name) pairs still imported from outside their module while a change removes them;
# empty: every shared name is public (in a private module where it is not API)
PENDING: set[tuple[str, str]] = set()


def _private(name):
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def private_reach_ins(pkg_dir):
    """[(importer, (module, name), "file:line")]: every private name of one of the package's
    modules that another module uses, by ``from module import _name`` or as ``module._name``
    after binding the module (``import p.module as m``, ``from p import module``). A private
    *module* (``from . import _kernels``, ``from ._figures import new_figure``) is no reach-in:
    its public names are what it is for."""
    pkg_dir = Path(pkg_dir)
    root = pkg_dir.name
    mods = _modules(pkg_dir)

    def is_module(dotted):
        return dotted in mods or _is_extension(pkg_dir, dotted)

    out = []
    for name, (path, is_pkg) in mods.items():
        here = name if is_pkg else name.rpartition(".")[0]
        tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
        bound = {}                                  # local name -> module of the package
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom):
                if node.level:
                    base = here.split(".")[:len(here.split(".")) - (node.level - 1)]
                    src = ".".join(base + ([node.module] if node.module else []))
                else:
                    src = node.module or ""
                if src != root and not src.startswith(root + "."):
                    continue
                for alias in node.names:
                    if is_module(f"{src}.{alias.name}"):
                        bound[alias.asname or alias.name] = f"{src}.{alias.name}"
                    elif _private(alias.name):
                        out.append((name, (src, alias.name), f"{path.name}:{node.lineno}"))
            elif isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.name == root or alias.name.startswith(root + "."):
                        if alias.asname:
                            bound[alias.asname] = alias.name
                        else:                       # `import p.x` binds p
                            bound[root] = root
        for node in ast.walk(tree):
            if not (isinstance(node, ast.Attribute) and _private(node.attr)):
                continue
            chain, value = [node.attr], node.value     # p.x._name: the chain x, _name
            while isinstance(value, ast.Attribute):
                chain.insert(0, value.attr)
                value = value.value
            if not (isinstance(value, ast.Name) and value.id in bound):
                continue
            module = bound[value.id]
            for attr in chain:
                if not _private(attr):
                    if is_module(f"{module}.{attr}"):
                        module = f"{module}.{attr}"
                        continue
                    break                                 # a public object: its attributes
                if not is_module(f"{module}.{attr}") and module != name:
                    out.append((name, (module, attr), f"{path.name}:{node.lineno}"))
                break
    return out


def test_no_module_imports_the_private_names_of_another():
    found = private_reach_ins(PKG)
    bad = [r for r in found if r[1] not in PENDING]
    assert not bad, ("private names used outside their module (give what modules share a "
                     "public name, in a private module if it is not API):\n"
                     + "\n".join(f"    {a} uses {m}.{n} ({w})" for a, (m, n), w in bad))
    # the allowlist holds only what is still there (it shrinks to nothing)
    assert PENDING >= {r[1] for r in found}
    stale = PENDING - {r[1] for r in found}
    assert not stale, f"no longer reached into, remove from PENDING: {sorted(stale)}"


# ----------------------------------------------------------------------------------------------
# module size

MAX_LINES = 500
# Modules still over MAX_LINES, each with its reason; a module leaves the list when it is split.
TOO_LONG = {
    "ops.py": "being split into its op families in a change of its own",
    "model.py": "being reworked (a model description) in a change of its own",
    "gradchecks.py": "being reworked with the op registry in a change of its own",
    "nn.py": "its scalar checks are being edited in a change of their own (then: by layer family)",
    "comparison.py": "grading one op, with its numpydoc examples; to split after the op registry",
    "exercises.py": "one exercise: every intermediate of the lecture's forward and its check",
    "sweep/space.py": "its value checks are being edited in a change of their own",
    "_opinfo.py": "the test metadata of every op, one entry each; to split by op family",
    "training.py": "over 500 with its numpydoc sections (274 lines of code): the loop of train()",
    "fused.py": "over 500 with its numpydoc sections (301 lines of code): FusedTrainer",
    "lab/experiments.py": "over 500 with its numpydoc sections (256 lines of code)",
}


def test_no_module_is_over_max_lines():
    lengths = {str(f.relative_to(PKG)): len(f.read_text(encoding="utf-8").splitlines())
               for f in PKG.rglob("*.py")}
    long = {f: n for f, n in lengths.items() if n > MAX_LINES and f not in TOO_LONG}
    assert not long, f"modules over {MAX_LINES} lines (split them by job): {long}"
    assert set(TOO_LONG) <= set(lengths)
    short = [f for f in TOO_LONG if lengths[f] <= MAX_LINES]
    assert not short, f"no longer over {MAX_LINES} lines, remove from TOO_LONG: {short}"


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


def test_the_detector_finds_subpackages_that_import_each_other(tmp_path):
    pkg = _write_pkg(tmp_path / "p", {
        "__init__.py": "",
        "top.py": "from .one import a\n",
        "one/__init__.py": "",
        "one/a.py": "from ..two.b import f\n",                   # one -> two
        "one/c.py": "",
        "two/__init__.py": "",
        "two/b.py": "def f():\n    from ..one import c\n",    # two -> one (deferred)
    })
    assert not cycles(import_edges(pkg))              # no cycle between the modules themselves
    edges = package_edges(pkg)
    assert ("p.top", "p.one", "top", "top.py:1 (p.top -> p.one.a)") in edges
    assert cycles(edges) == [["p.one", "p.two"]]


def test_the_detector_finds_private_reach_ins(tmp_path):
    pkg = _write_pkg(tmp_path / "p", {
        "__init__.py": "from . import a\n",
        "a.py": "_x = 1\ny = 2\n\ndef _f():\n    return _x\n",
        "_priv.py": "name = 1\n_hidden = 2\n",
        "ok.py": ("from . import _priv, a\nfrom ._priv import name\nfrom .a import y\n"
                  "import p.a as pa\nprint(a.y, pa.y, _priv.name, a.__name__, y._z)\n"),
        "bad.py": ("from .a import _x\nfrom ._priv import _hidden\nfrom . import a\n"
                   "import p.a\nimport p._priv as pp\n"
                   "print(a._f, p.a._x, pp._hidden)\n"),
        "sub/__init__.py": "",
        "sub/m.py": "from .. import a as b\nfrom ..a import _f\nprint(b._x)\n",
    })
    found = private_reach_ins(pkg)
    assert not [r for r in found if r[0] == "p.ok"]
    assert sorted((a, m, n) for a, (m, n), _ in found) == [
        ("p.bad", "p._priv", "_hidden"), ("p.bad", "p._priv", "_hidden"), ("p.bad", "p.a", "_f"),
        ("p.bad", "p.a", "_x"), ("p.bad", "p.a", "_x"),
        ("p.sub.m", "p.a", "_f"), ("p.sub.m", "p.a", "_x")]


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
