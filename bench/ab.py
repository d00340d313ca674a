"""What the A/B scripts of this folder share: the build before a change, imported beside this one.

``python bench/inference_ab.py --before DIR`` (and ``divergence_ab.py``) time the fastbn built in
place in another checkout against this one, in one process, pair by pair.
"""
import importlib
import shutil
import sys
from pathlib import Path


def load_before(checkout, tmp, submodules=()):
    """The fastbn built in place in ``checkout``, imported as ``fastbn_before``.

    The package is copied to ``tmp/fastbn_before`` (so both builds can be imported at once) and
    ``submodules`` (names such as ``"bench.peers"``) are imported with it. Exits with a one-line
    message when ``checkout`` holds no built kernels. Import ``fastbn`` (this build) first: the
    copied kernels import their package by its own name while they initialize.
    """
    src = Path(checkout) / "fastbn"
    if not any(src.glob("_kernels*.so")):
        raise SystemExit(f"{src}: no built _kernels (python setup.py build_ext --inplace there)")
    shutil.copytree(src, Path(tmp) / "fastbn_before")
    sys.path.insert(1, str(tmp))
    before = importlib.import_module("fastbn_before")
    for name in submodules:
        importlib.import_module(f"fastbn_before.{name}")
    return before
