#!/usr/bin/env python
"""Benchmark one training step of the default BN-MLP: fused loop, per-layer API, NumPy, PyTorch.

A thin wrapper of ``fastbn.bench`` (also ``fastbn bench``); ``--help`` lists the options. It times
the fastbn of this checkout when that is built in place (``python setup.py build_ext --inplace``),
else the installed one; results.json records which (``machine.fastbn_file``).

    python bench/run.py --full            # all batch sizes and dtypes, + 200,000-step training
    python bench/run.py --quick --no-torch --batch-sizes 32 --dtypes float32   # smoke test
"""
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if any((ROOT / "fastbn").glob("_kernels*.so")) or any((ROOT / "fastbn").glob("_kernels*.pyd")):
    sys.path.insert(0, str(ROOT))

from fastbn.bench import main  # noqa: E402  (after choosing which fastbn to import)

if __name__ == "__main__":
    sys.exit(main())
