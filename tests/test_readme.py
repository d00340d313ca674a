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


def _where_things_are():
    text = README.read_text()
    part = text.split("## Where things are", 1)[1].split("\n## ", 1)[0]
    return part, {p for row in re.findall(r"^\| (.*?) \|", part, re.M)
                  for p in re.findall(r"`([\w./]+)`", row)}


@pytest.mark.skipif(not README.exists(), reason="README.md is not next to the tests")
def test_where_things_are_names_existing_files_and_every_module():
    """The layout table stays true: every path it names exists, and every module and package of
    fastbn/ and every source of csrc/ has a row."""
    root = README.parent
    part, named = _where_things_are()
    assert named, "no 'Where things are' table"
    missing = sorted(p for p in named if not (root / p).exists())
    assert not missing, f"README names files that do not exist: {missing}"
    have = {f"fastbn/{p.name}" for p in (root / "fastbn").glob("*.py")}
    have |= {f"fastbn/{p.name}/" for p in (root / "fastbn").iterdir()
             if p.is_dir() and (p / "__init__.py").exists()}
    have |= {f"csrc/{p.name}" for p in (root / "csrc").iterdir()
             if p.suffix in (".pyx", ".c", ".h") and not p.with_suffix(".pyx").exists()
             or p.suffix == ".pyx"}                           # (not Cython's generated .c)
    unnamed = sorted(have - named - {"fastbn/__init__.py"})
    assert not unnamed, f"README's 'Where things are' has no row for {unnamed}"
    for step in ("csrc/_kernels.pyx", "fastbn/ops.py", "fastbn/reference.py",
                 "fastbn/registry.py"):
        assert step in part.split("**Adding an op**", 1)[1], step


CI_RUN = README.parent / ".ci" / "run"


@pytest.mark.skipif(not CI_RUN.exists(), reason=".ci/run is not next to the tests")
def test_ci_installs_with_the_readmes_set_up_command():
    """A newcomer following the README's set-up gets what CI tests: the README's pip install
    line (first bash block under "Set up") is the one .ci/run runs, extras and all (every time
    it installs fastbn: in its venv, and in the clone at a path with a space and a hyphen)."""
    setup = README.read_text().split("## Set up", 1)[1]
    block = re.search(r"```bash\n(.*?)```", setup, re.S).group(1)
    readme_pip = [ln.split("#")[0].split() for ln in block.splitlines() if "pip install" in ln]
    ci_pip = [ln.split("#")[0].split() for ln in CI_RUN.read_text().splitlines()
              if "pip install" in ln and "torch" not in ln]
    assert len(readme_pip) == 1, readme_pip
    target = readme_pip[0][2:]                      # after "pip install"
    ci_args = [[a for a in c[c.index("install") + 1:] if a != "--quiet"] for c in ci_pip]
    assert ci_args and all(a == target for a in ci_args), (ci_args, target)


@pytest.mark.skipif(not CI_RUN.exists(), reason=".ci/run is not next to the tests")
def test_ci_also_installs_and_tests_from_a_path_with_a_space_and_a_hyphen():
    ci = CI_RUN.read_text()
    clone = re.search(r'git clone --quiet "\$root" "(\$\w+)/([^"]*)"', ci)
    assert clone and " " in clone.group(2) and "-" in clone.group(2), "no clone at an odd path"
    after = ci[clone.end():]
    assert f'cd "{clone.group(1)}/{clone.group(2)}"' in after and "pytest" in after
