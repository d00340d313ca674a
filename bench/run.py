#!/usr/bin/env python
"""Benchmark one training step of the default BN-MLP: fused loop, per-layer API, NumPy, PyTorch.

The repository's wrapper of ``fastbn.bench`` (``fastbn bench`` is the installed one); ``--help``
lists the options. Unlike ``fastbn bench`` it writes the repository's figures, bench/results/,
judges the run against the project's targets, bench/targets.json, and records the checkout's
``git describe``. It times the fastbn of this checkout when that is built in place
(``python setup.py build_ext --inplace``), else the installed one; results.json records which
(``machine.fastbn_file``; the git description only when it is this checkout).

    python bench/run.py --full            # all batch sizes and dtypes, + 200,000-step training
    python bench/run.py --quick --no-torch --batch-sizes 32 --dtypes float32 --out /tmp/b  # smoke
"""
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if any((ROOT / "fastbn").glob("_kernels*.so")) or any((ROOT / "fastbn").glob("_kernels*.pyd")):
    sys.path.insert(0, str(ROOT))

import fastbn  # noqa: E402  (after choosing which fastbn to import)
from fastbn.bench import main  # noqa: E402


def git_describe():
    """``git describe --always --dirty`` of this checkout, or None (no git, not a checkout)."""
    try:
        r = subprocess.run(["git", "describe", "--always", "--dirty"], cwd=ROOT, check=False,
                           capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return (r.stdout.strip() or None) if r.returncode == 0 else None


def machine():
    """What to add to results.json's machine: the git description of the fastbn timed."""
    if Path(fastbn.__file__).resolve().parent != ROOT / "fastbn":
        return {}           # an installed fastbn: this checkout's commit says nothing about it
    return {"fastbn_git": git_describe()}


if __name__ == "__main__":
    sys.exit(main(prog="bench/run.py", out=ROOT / "bench" / "results",
                  targets=ROOT / "bench" / "targets.json", machine=machine()))
