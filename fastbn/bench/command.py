"""The benchmark's command line: ``fastbn bench`` (through ``fastbn.cli``) and ``bench/run.py``."""
from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TextIO

from .._bench_options import DEFAULT_OUT, DESCRIPTION, add_arguments
from .runner import STD, one_thread, run
from .targets import load_targets
from .verify import VerificationError

__all__ = ["main", "run_from_args"]


def run_from_args(args: argparse.Namespace, stream: TextIO | None | object = STD,
                  stdout: TextIO | None | object = STD,
                  machine: dict[str, Any] | None = None) -> int:
    """Run with parsed ``add_arguments`` options; returns 0 (raises on failure).

    The targets file (``--targets``) is read and checked before anything runs: a bad one raises
    ValueError (OSError when unreadable). ``machine`` is passed on to ``run``.

    Parameters
    ----------
    args : argparse.Namespace
        Parsed by a parser with ``add_arguments``.
    stream, stdout : file or None, optional
        As ``run``.
    machine : dict, optional
        Passed on to ``run``.

    Returns
    -------
    int
        0.
    """
    repeats = args.repeats if args.repeats is not None else (1 if args.quick else 5)
    targets = load_targets(args.targets)
    torch_mod: Any = None
    if not args.no_torch:
        try:
            torch_mod = importlib.import_module("torch")   # Any: optional
        except ImportError:
            pass                     # run() notes that PyTorch was skipped, and why
    with one_thread(torch_mod):      # the command owns its process: one thread everywhere
        run(args.batch_sizes, args.dtypes, repeats, args.out, use_torch=not args.no_torch,
            use_compiled=not args.no_compiled, full=args.full, quick=args.quick, data=args.data,
            seed=args.seed, targets=targets, machine=machine, stream=stream, stdout=stdout)
    return 0


def main(argv: Sequence[str] | None = None, *, prog: str | None = None,
         out: str | Path = DEFAULT_OUT, targets: str | Path | None = None,
         machine: dict[str, Any] | None = None) -> int:
    """Parse ``argv``, run; returns the exit status (1 with the message on a failure).

    ``out`` and ``targets`` are the defaults of ``--out`` and ``--targets``; ``machine`` is added
    to the machine information (``bench/run.py`` passes the repository's folders and its
    ``git describe``).

    Parameters
    ----------
    argv : sequence of str, optional
        The arguments (default ``sys.argv[1:]``).
    prog : str, optional
        The program's name in the usage line.
    out, targets : str or pathlib.Path, optional
        The defaults of ``--out`` and ``--targets``.
    machine : dict, optional
        Added to the machine information.

    Returns
    -------
    int
        0, or 1 after a one-line message.
    """
    p = argparse.ArgumentParser(prog=prog, description=DESCRIPTION, allow_abbrev=False)
    args = add_arguments(p, out=out, targets=targets).parse_args(argv)
    try:
        return run_from_args(args, machine=machine)
    except (VerificationError, OSError, ImportError, ValueError) as e:
        print(f"{p.prog}: error: {e}", file=sys.stderr)
        return 1
