"""The Examples sections of the public docstrings run and print what they show."""
import doctest
import importlib
import pkgutil

import pytest

import fastbn

# every module of the package (a module without examples attempts none and passes)
MODULES = sorted(m.name for m in pkgutil.walk_packages(fastbn.__path__, "fastbn.")
                 if m.name.rsplit(".", 1)[-1] != "__main__")
# these carry examples: a change that loses them fails here
WITH_EXAMPLES = {"fastbn.ops", "fastbn.gradchecks", "fastbn.comparison", "fastbn.nn", "fastbn.init",
                 "fastbn.checkpoint", "fastbn.exercises"}


def test_the_modules_with_examples_are_walked():
    assert WITH_EXAMPLES <= set(MODULES)


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.NORMALIZE_WHITESPACE, verbose=False)
    if name in WITH_EXAMPLES:
        assert result.attempted > 0, f"{name} has no docstring examples"
    assert result.failed == 0
