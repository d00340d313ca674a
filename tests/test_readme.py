"""The README is the front door: one screen, its example prints what it shows, its numbers come
from the results files, and CI installs what it says."""
import contextlib
import io
import json
import os
import pathlib
import re

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
CI_RUN = ROOT / ".ci" / "run"
RESULTS = ROOT / "bench" / "results" / "results.json"

pytestmark = pytest.mark.skipif(not README.exists(), reason="README.md is not next to the tests")


def _text():
    return README.read_text()


def test_readme_is_one_screen():
    assert len(_text().splitlines()) <= 150


def _example():
    """The README's python block and the text block right after it (its output)."""
    m = re.search(r"```python\n(.*?)```\s*\n(?:[^`\n]*\n)*?```text\n(.*?)```", _text(), re.S)
    assert m, "README has no python example followed by its output"
    return m.group(1), m.group(2)


def test_readme_example_prints_what_it_shows(names_path, monkeypatch, tmp_path):
    """The shown output (sample names included) is what the code prints, not a paste."""
    code, shown = _example()
    monkeypatch.setenv("FASTBN_DATA", str(names_path))
    monkeypatch.chdir(tmp_path)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(code, str(README), "exec"), {"__name__": "__readme__"})
    assert out.getvalue() == shown, (
        "README's example output differs from what it prints; replace the text block with:\n"
        + out.getvalue())


def _pip_lines(text):
    return [ln.split("#")[0].split() for ln in text.splitlines()
            if "pip install" in ln and "torch" not in ln]


def test_ci_installs_what_the_readme_says():
    """Every install .ci/run makes is one of the README's pip install commands, and .ci/run runs
    each of them (CI's torch install, the parity reference of the tests, aside): a newcomer
    following the README gets what CI tests and builds. The set-up's is ".[test]"."""
    if not CI_RUN.exists():
        pytest.skip(".ci/run is not next to the tests")
    blocks = "\n".join(re.findall(r"```bash\n(.*?)```", _text(), re.S))
    readme = [c[c.index("install") + 1:] for c in _pip_lines(blocks)]
    ci = [[a for a in c[c.index("install") + 1:] if a != "--quiet"]
          for c in _pip_lines(CI_RUN.read_text())]
    assert readme and ci, (readme, ci)
    assert all(c in readme for c in ci), f"CI installs what the README does not say: {ci}"
    assert all(r in ci for r in readme), f"the README says installs CI does not run: {readme}"
    setup = _text().split("## Set up", 1)[1].split("\n## ", 1)[0]
    assert _pip_lines(setup) and all(c[c.index("install") + 1:] == ['".[test]"']
                                     for c in _pip_lines(setup)), setup


def test_ci_also_installs_and_tests_from_a_path_with_a_space_and_a_hyphen():
    if not CI_RUN.exists():
        pytest.skip(".ci/run is not next to the tests")
    ci = CI_RUN.read_text()
    clone = re.search(r'git clone --quiet "\$root" "(\$\w+)/([^"]*)"', ci)
    assert clone and " " in clone.group(2) and "-" in clone.group(2), "no clone at an odd path"
    after = ci[clone.end():]
    assert f'cd "{clone.group(1)}/{clone.group(2)}"' in after and "pytest" in after


def test_ci_builds_the_docs_as_the_readme_says():
    if not CI_RUN.exists():
        pytest.skip(".ci/run is not next to the tests")
    m = re.search(r"python -m sphinx -W --keep-going -b html docs \S+", _text())
    assert m, "README does not say how to build the docs"
    assert "python -m sphinx -W --keep-going -b html docs " in CI_RUN.read_text()


@pytest.mark.skipif(not RESULTS.exists(), reason="no bench/results/results.json")
def test_readme_speed_is_the_recorded_run():
    """The headline numbers are those of bench/results/results.json, with its date and machine."""
    res = json.loads(RESULTS.read_text())
    row = next(r for r in res["results"] if r["dtype"] == "float32" and r["batch_size"] == 32)
    speed = _text().split("## Speed", 1)[1].split("\n## ", 1)[0]
    speed = " ".join(speed.split())
    impl = row["impls"]
    assert f"**{impl['fused']['us_per_step']:.1f} µs**" in speed
    assert f"**{impl['torch']['speedup']:.1f}×** faster than PyTorch" in speed
    assert f"**{impl['numpy']['speedup']:.1f}×** faster than NumPy" in speed
    assert f"took {res['full_training']['wall_seconds']:.2f} s" in speed
    assert res["created"][:10] in speed
    assert res["machine"]["cpu"]["model"] in speed
    assert ("AVX-512" in speed) == ("avx512f" in res["machine"]["cpu"]["flags"])
    for arch in set(res["machine"]["blas_architecture"].values()):
        assert arch in speed


def test_readme_links_exist():
    for target in re.findall(r"\]\(([^)#]+)\)", _text()):
        if "://" not in target:
            assert (ROOT / target).exists(), target


def test_where_things_are_names_existing_files_and_every_module():
    """The design page's layout table stays true: every path it names exists, and every module
    and package of fastbn/ and every source of csrc/ has a row."""
    design = (ROOT / "docs" / "design.md").read_text()
    part = design.split("## Where things are", 1)[1].split("\n## ", 1)[0]
    named = {p for row in re.findall(r"^\| (.*?) \|", part, re.M)
             for p in re.findall(r"`([\w./]+)`", row)}
    assert named, "no 'Where things are' table"
    missing = sorted(p for p in named if not (ROOT / p).exists())
    assert not missing, f"docs/design.md names files that do not exist: {missing}"
    have = {f"fastbn/{p.name}" for p in (ROOT / "fastbn").glob("*.py")}
    have |= {f"fastbn/{p.name}/" for p in (ROOT / "fastbn").iterdir()
             if p.is_dir() and (p / "__init__.py").exists()}
    have |= {f"csrc/{p.name}" for p in (ROOT / "csrc").iterdir()
             if p.suffix in (".pyx", ".c", ".h") and not p.with_suffix(".pyx").exists()
             or p.suffix == ".pyx"}                           # (not Cython's generated .c)
    unnamed = sorted(have - named - {"fastbn/__init__.py"})
    assert not unnamed, f"docs/design.md's 'Where things are' has no row for {unnamed}"
    adding = design.split("## Adding an op", 1)[1]
    for step in ("csrc/_kernels.pyx", "fastbn/ops.py", "fastbn/reference.py",
                 "fastbn/_opinfo.py", "fastbn/registry.py", "fastbn/nn.py"):
        assert step in adding, step


if __name__ == "__main__":          # print the README example's output, to paste after a change
    code, _ = _example()
    os.chdir(ROOT)
    exec(compile(code, str(README), "exec"), {"__name__": "__readme__"})
