"""The README's teaching example runs and says what it claims."""
import pathlib
import re

import numpy as np
import pytest

README = pathlib.Path(__file__).resolve().parents[1] / "README.md"


@pytest.mark.skipif(not README.exists(), reason="README.md is not next to the tests")
def test_readme_example_runs():
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)
    assert blocks, "README has no python example"
    ns = {}
    exec(compile(blocks[0], str(README), "exec"), ns)
    assert abs(ns["loss"] - np.log(27)) < 0.1               # "≈ ln 27 = 3.29 at this init"
    assert ns["dC"].shape == (27, 10) and ns["dW1"].shape == (30, 200)
