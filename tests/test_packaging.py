"""What the sdist and the wheel are built from: the license, the manifest, setup.py.

(Building them takes minutes; these check, cheaply, what made a build go wrong: a missing
license, a manifest pattern that matches nothing (setuptools warns), Cython run whenever
setup.py is loaded instead of once, when the extension is built.)
"""
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.skipif(not (ROOT / "setup.py").exists(),
                                reason="the repository's setup.py is not next to the tests")


def test_the_license_is_mit_and_ships_in_the_sdist_and_the_wheel():
    tomllib = pytest.importorskip("tomllib", reason="reading pyproject.toml needs Python 3.11")
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    text = (ROOT / "LICENSE").read_text(encoding="utf-8")
    assert project["license"] == "MIT" and text.startswith("MIT License\n")
    assert "Copyright (c) 2026 The fastbn developers" in text
    assert "LICENSE" in project["license-files"]
    assert re.search(r"^include .*\bLICENSE\b", (ROOT / "MANIFEST.in").read_text(), re.M)


def test_every_manifest_pattern_matches_a_file():
    """setuptools warns "no files found matching ..." for a pattern that matches nothing."""
    for line in (ROOT / "MANIFEST.in").read_text().splitlines():
        words = line.split("#")[0].split()
        if not words:
            continue
        if words[0] == "include":
            for name in words[1:]:
                assert (ROOT / name).is_file(), line
        elif words[0] == "recursive-include":
            folder = ROOT / words[1]
            for pattern in words[2:]:
                assert list(folder.rglob(pattern)), f"{line}: nothing matches {pattern}"
        else:
            assert words[0] in ("include", "recursive-include"), f"unexpected: {line}"


def test_loading_setup_py_runs_no_cython():
    """Cython runs in build_ext (once per build), not when setup.py is loaded (each step of a
    build loads it: the sdist, the wheel's requirements, the wheel)."""
    code = ("import runpy, sys, setuptools\n"
            "seen = {}\n"
            "setuptools.setup = lambda **kw: seen.update(kw)\n"
            "runpy.run_path('setup.py')\n"
            "ext = seen['ext_modules'][0]\n"
            "print('Cython.Build' in sys.modules, seen['cmdclass']['build_ext'].__name__,\n"
            "      [s for s in ext.sources if s.endswith('.pyx')])\n")
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                       timeout=120, check=False)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split(None, 2) == ["False", "cython_build_ext",
                                       "['csrc/_kernels.pyx']\n"], r.stdout
