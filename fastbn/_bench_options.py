"""The benchmark's command-line options, shared by ``fastbn bench`` and ``bench/run.py``.

They live outside ``fastbn.bench`` so that building the ``fastbn`` parser (every command,
``--help`` included) does not import the benchmark; ``fastbn.bench`` takes its defaults from here.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from ._argtypes import nonnegative, positive

__all__ = ["DEFAULT_BATCH_SIZES", "DEFAULT_DTYPES", "DEFAULT_OUT", "DESCRIPTION", "add_arguments"]

DESCRIPTION = ("Verify, then time one training step of the default BN-MLP (fused loop, per-layer "
               "API, NumPy, PyTorch eager, and the compiled peers torch.compile and JAX jit when "
               "installed), one call of each op (fastbn.ops, NumPy, PyTorch) and "
               "inference (eval and sampling: batch norm folded, unfolded, PyTorch eager) on one "
               "thread; write results.md, results.json and a chart into --out.")
DEFAULT_BATCH_SIZES = (32, 256, 1024, 4096)
DEFAULT_DTYPES = ("float32", "float64")
DEFAULT_OUT = "fastbn-bench"        # relative: a folder in the current folder


def batch_sizes(text):
    """Batch sizes ``32,256`` (commas or spaces), each >= 2 (batch norm needs two rows)."""
    try:
        vals = [int(v) for v in text.replace(",", " ").split()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected integers like 32,256, got {text!r}") from None
    if not vals or min(vals) < 2:
        raise argparse.ArgumentTypeError(f"batch sizes must be >= 2, got {text!r}")
    return vals


def dtypes(text):
    """``float32`` and/or ``float64`` (commas or spaces)."""
    vals = text.replace(",", " ").split()
    bad = [v for v in vals if v not in DEFAULT_DTYPES]
    if not vals or bad:
        raise argparse.ArgumentTypeError(f"dtypes are float32 and/or float64, got {text!r}")
    return vals


def add_arguments(p: argparse.ArgumentParser, out: str | Path = DEFAULT_OUT,
                  targets: str | Path | None = None) -> argparse.ArgumentParser:
    """Add the benchmark's options to the argparse parser ``p``; returns ``p``.

    ``out`` and ``targets`` are the defaults of ``--out`` and ``--targets`` (``bench/run.py``
    passes the repository's ``bench/results`` and ``bench/targets.json``).

    Parameters
    ----------
    p : argparse.ArgumentParser
        The parser.
    out : str or pathlib.Path, optional
        The default of ``--out``.
    targets : str or pathlib.Path, optional
        The default of ``--targets``.

    Returns
    -------
    argparse.ArgumentParser
        ``p``.
    """
    p.add_argument("--batch-sizes", type=batch_sizes, default=list(DEFAULT_BATCH_SIZES),
                   metavar="B,B,...", help="batch sizes (default 32,256,1024,4096)")
    p.add_argument("--dtypes", type=dtypes, default=list(DEFAULT_DTYPES),
                   metavar="DT,...", help="float32 and/or float64 (default both)")
    p.add_argument("--repeats", type=positive(), default=None,
                   help="timed blocks per measurement; the median is reported (default 5, "
                        "--quick 1)")
    here = "" if Path(out).is_absolute() else " in the current folder"
    p.add_argument("--out", metavar="DIR", default=str(out),
                   help="results folder, created if needed: results.md, results.json, "
                        f"us_per_step.png (default %(default)s{here})")
    p.add_argument("--targets", metavar="JSON", default=None if targets is None else str(targets),
                   help="targets to judge the run against, listed in results.md (format: "
                        "fastbn.bench.targets; default "
                        f"{'none' if targets is None else '%(default)s'})")
    p.add_argument("--no-torch", action="store_true", help="do not time PyTorch")
    p.add_argument("--no-compiled", action="store_true",
                   help="do not time the compiled peers (torch.compile, JAX jit of a step and "
                        "of a loop)")
    p.add_argument("--full", action="store_true",
                   help="also time the full 200,000-step training (a few seconds)")
    p.add_argument("--quick", action="store_true",
                   help="smoke test: ~10 ms blocks, 1 repeat, small GEMM; not real numbers")
    p.add_argument("--data", metavar="PATH",
                   help="names file (default: $FASTBN_DATA, the user cache, a verified download)")
    p.add_argument("--seed", type=nonnegative, default=None,
                   help="parameter and minibatch seed (default fastbn train's)")
    return p
