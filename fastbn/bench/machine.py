"""The machine a benchmark ran on, as recorded in results.json and summarized in results.md."""
import os
import platform
import re
from pathlib import Path

import numpy as np

__all__ = ["loadavg", "machine_info"]


def _cpu():
    """{"model", "flags" (of the SIMD sets that matter here), "logical_cpus", "usable_cpus"}."""
    info = {"model": platform.processor() or platform.machine(), "flags": []}
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        text = ""
    m = re.search(r"^model name\s*:\s*(.+)$", text, re.MULTILINE)
    if m:
        info["model"] = m.group(1).strip()
    m = re.search(r"^flags\s*:\s*(.+)$", text, re.MULTILINE)
    if m:
        have = set(m.group(1).split())
        info["flags"] = [f for f in ("sse4_2", "avx", "avx2", "fma", "avx512f") if f in have]
    info["logical_cpus"] = os.cpu_count()
    if hasattr(os, "sched_getaffinity"):
        info["usable_cpus"] = len(os.sched_getaffinity(0))
    return info


def loadavg():
    """The 1, 5 and 15 minute load averages, or None where the OS has none."""
    try:
        return list(os.getloadavg())
    except (AttributeError, OSError):
        return None


def machine_info(torch_mod=None, extra=None):
    """What the numbers were measured on: CPU, load, versions, BLAS threads and kernel, the
    OpenBLAS environment, torch's threads and BLAS (``torch_mod``: the torch module or None).

    ``extra`` (a dict, e.g. ``{"fastbn_git": ...}`` from ``bench/run.py``) is added as given.
    """
    from importlib.metadata import version

    import threadpoolctl  # type: ignore[import-untyped]  # (no stubs)

    from .. import __version__
    blas = threadpoolctl.threadpool_info()
    m = {"cpu": _cpu(), "loadavg_at_start": loadavg(), "python": platform.python_version(),
         "platform": platform.platform(),
         "numpy": np.__version__, "scipy_openblas32": version("scipy-openblas32"),
         "threadpoolctl": threadpoolctl.__version__,
         "fastbn": __version__, "fastbn_file": str(Path(__file__).resolve().parents[1]),
         "threadpools": blas,
         "blas_threads": sorted({p["num_threads"] for p in blas}),
         "blas_architecture": {p["filepath"].rsplit("/", 1)[-1]: p.get("architecture")
                               for p in blas if p["user_api"] == "blas"},
         "env": {k: os.environ.get(k) for k in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE",
                                                 "OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS",
                                                 "MKL_NUM_THREADS")}}
    if torch_mod is not None:
        cfg = torch_mod.__config__.show()
        blas_info = re.search(r"BLAS_INFO=(\w+)", cfg)
        cap = re.search(r"CPU capability usage: (\w+)", cfg)
        m["torch"] = torch_mod.__version__
        m["torch_threads"] = torch_mod.get_num_threads()
        m["torch_blas"] = blas_info.group(1) if blas_info else None
        m["torch_cpu_capability"] = cap.group(1) if cap else None
    else:
        m["torch"] = None
    m.update(extra or {})
    return m
