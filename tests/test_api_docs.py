"""Every public name of the API reference documents itself: a docstring with a summary, every
parameter in a Parameters section, and a Returns section when it returns something (numpydoc's
own validation, the checks the API pages are built from)."""
import ast
import importlib
import inspect
import pathlib
import sys
import types

import pytest

validate = pytest.importorskip("numpydoc.validate", reason="numpydoc (the docs extra) is not "
                               "installed").validate

CONF = pathlib.Path(__file__).resolve().parents[1] / "docs" / "conf.py"


def _api_modules():
    """The modules docs/conf.py gives API pages (its API_MODULES), but the package itself,
    whose names are documented in their own modules."""
    for node in ast.parse(CONF.read_text()).body:
        if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", "") == "API_MODULES":
            return [m for m in ast.literal_eval(node.value) if m != "fastbn"]
    raise AssertionError("docs/conf.py has no API_MODULES")


MODULES = _api_modules()
# numpydoc's codes: no docstring, a parameter not documented, a documented one that does not
# exist, no Returns section although it returns a value
CHECKS = {"GL08", "PR01", "PR02", "RT01"}


def _names(module_name):
    """The module's public callables and their public methods and properties, by full name."""
    module = importlib.import_module(module_name)
    public = getattr(module, "__all__", None) or [   # as docs/conf.py's _public
        n for n, o in vars(module).items() if not n.startswith("_")
        and (inspect.isclass(o) or inspect.isfunction(o)) and o.__module__ == module_name]
    for name in public:
        obj = getattr(module, name)
        if not (inspect.isclass(obj) or inspect.isfunction(obj)):
            continue                                   # constants: documented by the page
        if getattr(obj, "__module__", module_name).split(".")[0] != "fastbn":
            continue
        yield f"{module_name}.{name}"
        if inspect.isclass(obj):
            for attr, value in vars(obj).items():
                if not attr.startswith("_") and (inspect.isfunction(value)
                                                 or isinstance(value, property)):
                    yield f"{module_name}.{name}.{attr}"


def _gaps(module_name):
    gaps = []
    for full in _names(module_name):
        gaps += [f"{full}: {code} {msg}" for code, msg in validate(full)["errors"]
                 if code in CHECKS]
    return gaps


@pytest.mark.parametrize("module_name", MODULES)
def test_public_names_are_documented(module_name):
    gaps = _gaps(module_name)
    assert not gaps, "\n".join(gaps)


def test_every_api_page_is_checked():
    assert {"fastbn.ops", "fastbn.nn", "fastbn.lab"} <= set(MODULES)


def test_the_check_finds_a_gap():
    def undocumented(x, y):
        """Add."""
        return x + y
    mod = types.ModuleType("fastbn._probe_docs")
    mod.undocumented = undocumented
    undocumented.__module__ = mod.__name__
    mod.__all__ = ["undocumented"]
    sys.modules[mod.__name__] = mod
    try:
        gaps = _gaps(mod.__name__)
    finally:
        del sys.modules[mod.__name__]
    assert any("PR01" in g for g in gaps) and any("RT01" in g for g in gaps), gaps
