"""The speed benchmark: one training step of the default BN-MLP, timed side by side; and one call
of each op.

The fused loop (``fastbn.fused``), the per-layer API, plain NumPy with manual backprop and
PyTorch eager + autograd each train the lecture's model on random minibatches of the names
training set; ``run`` verifies that they all compute the same steps, then times them on one
thread, then one call of each op of ``fastbn.ops`` against NumPy and PyTorch (``opcalls``), and
writes the report. The parts:

=========== ====================================================================================
peers       the implementations and the benchmarked model (``IMPLS``, ``MODEL``, ``LR``)
verify      every peer against the fused step before anything is timed (``VerificationError``)
timing      blocks of steps on one thread, the median, the GEMM peak, the full training run
opcalls     the per-op table: one call of each op, forward and backward, fastbn vs NumPy vs
            PyTorch, verified then timed (B = 32 and 1024, float32)
flops       the GEMM FLOPs of one step (``step_flops``, ``fused_flops``)
inference   eval examples/s and sampling names/s: folded vs unfolded vs PyTorch eager
machine     what the numbers were measured on
targets     what a run is judged against, when it is given targets (``load_targets``)
report      results.md (also printed), results.json; ``chart`` draws us_per_step.png
runner      ``run``: verify, time, report
command     ``main`` / ``run_from_args``: the command line (``fastbn bench``, ``bench/run.py``)
=========== ====================================================================================

Reported per dtype and batch size: the median µs/step of each peer and ``speedup = peer µs /
fused µs`` (how many times faster the fused loop is); the fused loop's GFLOP/s, share of the
machine's single-core GEMM peak and floor (its GEMM FLOPs at that peak). With ``full``, also the
200,000-step training of the default model as ``fastbn train`` runs it. Then inference, per
dtype: eval throughput over the val split and sampling speed of the model with its batch norm
folded (``fastbn.fold_batchnorm``), unfolded, and in PyTorch eager (``fastbn.bench.inference``).

Outputs (``out``, default ``fastbn-bench`` in the current folder; the repository's
``bench/run.py`` writes its ``bench/results``): ``results.md`` (also printed), ``results.json``,
``us_per_step.png``.
"""
from .._bench_options import DEFAULT_BATCH_SIZES, DEFAULT_DTYPES, DEFAULT_OUT, add_arguments
from .command import main, run_from_args
from .flops import fused_flops, step_flops
from .peers import IMPLS, LR, MODEL
from .report import CHART
from .runner import one_thread, run
from .targets import judge, load_targets
from .timing import FULL_STEPS, MIN_CPU_SHARE, full_training, gemm_peak
from .verify import LOSS_TOL, STATE_TOL, VERIFY_STEPS, VerificationError

__all__ = ["CHART", "DEFAULT_BATCH_SIZES", "DEFAULT_DTYPES", "DEFAULT_OUT", "FULL_STEPS", "IMPLS",
           "LOSS_TOL", "LR", "MIN_CPU_SHARE", "MODEL", "STATE_TOL", "VERIFY_STEPS",
           "VerificationError", "add_arguments", "full_training", "fused_flops", "gemm_peak",
           "judge", "load_targets", "main", "one_thread", "run", "run_from_args", "step_flops"]
