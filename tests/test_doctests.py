"""The Examples sections of the public docstrings run and print what they show."""
import doctest

import pytest

from fastbn import comparison, gradchecks, ops

MODULES = [ops, gradchecks, comparison]


@pytest.mark.parametrize("module", MODULES, ids=lambda m: m.__name__)
def test_docstring_examples(module):
    result = doctest.testmod(module, optionflags=doctest.NORMALIZE_WHITESPACE, verbose=False)
    assert result.attempted > 0, f"{module.__name__} has no docstring examples"
    assert result.failed == 0
