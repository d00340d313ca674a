"""Sphinx configuration of fastbn's documentation (``python -m sphinx -W -b html docs OUT``)."""
import os
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE / "_ext"))
# `python -m sphinx` run from the repository root puts the root first on sys.path, where the
# source folder fastbn/ (without its compiled kernels, unless built in place) would hide the
# installed package: document the installed one then
if not any((ROOT / "fastbn").glob("_kernels*.so")):
    sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != ROOT]

import fastbn  # noqa: E402  (the installed package, with its compiled kernels)

project = "fastbn"
author = "the fastbn authors"
copyright = "the fastbn authors"
release = version = fastbn.__version__

extensions = [
    "myst_nb",                  # Markdown pages (myst-parser) and executed notebooks
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.mathjax",
    "numpydoc",
    "sphinxarg.ext",            # the CLI page, from fastbn.cli.build_parser()
    "fastbn_results",           # docs/_ext: benchmark tables and chart from bench/results/
]

source_suffix = {".rst": "restructuredtext", ".md": "myst-nb", ".ipynb": "myst-nb"}
exclude_patterns = ["_build", "**.ipynb_checkpoints", "lab/*.md", "lab/robustness/**",
                    "_generated/*.md"]

# MyST
myst_enable_extensions = ["colon_fence", "dollarmath", "deflist"]
myst_heading_anchors = 3

# myst-nb: every notebook and every {code-cell} page runs at build time; an error fails the build
nb_execution_mode = "force"
nb_execution_timeout = 300
nb_execution_raise_on_error = True
nb_execution_in_temp = True          # a page that writes a file writes it in a temporary folder
nb_execution_show_tb = True
nb_merge_streams = True

# API reference
autosummary_generate = True
autosummary_imported_members = False
autodoc_default_options = {"members": True, "show-inheritance": False}
autodoc_typehints = "none"            # numpydoc sections carry the types
autodoc_member_order = "bysource"
numpydoc_show_class_members = False
numpydoc_class_members_toctree = False
numpydoc_validation_checks = set()
add_module_names = False

html_theme = "pydata_sphinx_theme"
html_title = f"fastbn {release}"
html_theme_options = {
    "navigation_with_keys": False,
    "show_toc_level": 2,
    "secondary_sidebar_items": ["page-toc"],
}
html_context = {"default_mode": "light"}

os.environ.setdefault("MPLBACKEND", "Agg")

# ---------------------------------------------------------------------------------------------
# The API reference: one page per public module, listing every name of its ``__all__`` (written
# here, at every build, so that a new public name gets its page without anyone editing the docs)

import importlib  # noqa: E402
import inspect  # noqa: E402
import shutil  # noqa: E402
import types  # noqa: E402

API_MODULES = {
    "fastbn": "The package: the model, training, checkpoints, gradcheck and grading.",
    "fastbn.ops": "The functional API: a forward/backward pair per op.",
    "fastbn.nn": "Torch-like layers built on the ops.",
    "fastbn.init": "Gains and Kaiming-normal initialization.",
    "fastbn.data": "The names dataset: finding, verifying and encoding it.",
    "fastbn.reference": "The same ops in plain NumPy: the test oracle, the NumPy baseline.",
    "fastbn.exercises": "The lecture's backprop exercise: every intermediate, by hand.",
    "fastbn.comparison": "Grading your backward of one op against fastbn's.",
    "fastbn.diagnosis": "Naming the mistake in a wrong gradient: the error signatures.",
    "fastbn.registry": "One entry per activation: its layer, Kaiming gain and flat region.",
    "fastbn.model": "The makemore MLP, ``CharMLP``.",
    "fastbn.training": "``train``: minibatch SGD on either path, checkpoints and resume.",
    "fastbn.checkpoint": "Saving and loading models.",
    "fastbn.fused": "The compiled training loop, and when it applies.",
    "fastbn.folding": "Batch norm folded into the Linears, for inference.",
    "fastbn.inference": "The eval-mode path ``evaluate`` and ``sample`` run.",
    "fastbn.lab": "The laboratory: the diagnostics of why deep nets train or fail.",
    "fastbn.sweep": "Many training runs over a space of options and seeds, on Dask.",
    "fastbn.bench": "The speed benchmark.",
}


def _kind(obj):
    if isinstance(obj, types.ModuleType):
        return "module"
    if inspect.isclass(obj):
        return "exception" if issubclass(obj, BaseException) else "class"
    if callable(obj):
        return "function"
    return "data"


def _public(mod):
    """``__all__``, or else the functions and classes the module defines without a leading _."""
    if hasattr(mod, "__all__"):
        return list(mod.__all__)
    return [n for n, o in vars(mod).items() if not n.startswith("_")
            and (inspect.isclass(o) or inspect.isfunction(o))
            and getattr(o, "__module__", None) == mod.__name__]


def _write_api(out):
    out.mkdir(exist_ok=True)
    # autosummary writes a page per public name here at every build: the pages of names that no
    # longer exist must not linger (a stale page fails the build)
    shutil.rmtree(out / "generated", ignore_errors=True)
    index = ["API reference", "=============", "",
             "Every public name (each module's ``__all__``), generated from its docstring.", "",
             ".. toctree::", "   :maxdepth: 1", ""]
    for modname, blurb in API_MODULES.items():
        mod = importlib.import_module(modname)
        index.append(f"   {modname}")
        groups = {}
        for name in _public(mod):
            obj = getattr(mod, name)
            groups.setdefault(_kind(obj), []).append(name)
        lines = [modname, "=" * len(modname), "", f".. automodule:: {modname}",
                 "   :no-members:", "", blurb, ""]
        titles = {"class": "Classes", "function": "Functions", "exception": "Exceptions",
                  "data": "Constants", "module": "Modules"}
        for kind in ("class", "function", "exception", "data", "module"):
            names = groups.get(kind)
            if not names:
                continue
            lines += [titles[kind], "-" * len(titles[kind]), ""]
            if kind == "module":
                lines += [f"- :mod:`{modname}.{n}`" if f"{modname}.{n}" in API_MODULES
                          else f"- ``{modname}.{n}``" for n in names] + [""]
                continue
            if kind == "data":
                for n in names:
                    lines += [f".. autodata:: {modname}.{n}", "   :no-value:", ""]
                continue
            lines += [".. autosummary::", "   :toctree: generated", "   :nosignatures:", ""]
            lines += [f"   {n}" for n in names] + [""]
        text = "\n".join(lines)
        page = out / f"{modname}.rst"
        if not page.exists() or page.read_text() != text:
            page.write_text(text)
    text = "\n".join(index) + "\n"
    page = out / "index.rst"
    if not page.exists() or page.read_text() != text:
        page.write_text(text)


_write_api(HERE / "api")
