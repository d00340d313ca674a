"""Inference in the benchmark: eval throughput and sampling speed, folded vs unfolded vs PyTorch.

The model is the benchmark's (``MODEL``), trained ``TRAIN_STEPS`` steps by ``fastbn.train`` (the
compiled loop, lr 0.1, minibatches from the run's seed) so that its running statistics and the
lengths of its names are those of a model in training, not of a fresh one. Per dtype, two tasks:

- **eval**: the mean loss over the whole val split in eval mode, one call; reported as examples/s
  (val rows / seconds per call).
- **sample**: ``sample(SAMPLE_N, seed)`` (``fastbn sample``'s default n), one call, the same seed
  every call (so every call does the same work); reported as names/s.

The implementations ("peers"):

============== =================================================================================
unfolded       the model as trained, as users call it: ``model.evaluate(X, Y)`` and
               ``model.sample`` (the inference path, ``fastbn.inference.Plan``, batch norm as its
               eval-mode step, ``CHUNK``-row chunks)
folded_bn      ``fastbn.fold_batchnorm(model, table=False)``: batch norm folded into the Linears,
               the embedding and the first Linear kept apart; to show what each fold gains
folded         ``fastbn.fold_batchnorm(model)``: batch norm folded, and the embedding and the
               first Linear as one table when ``fastbn.inference.table_pays`` (the benchmark's
               model: yes, for both tasks)
torch          PyTorch eager under ``torch.no_grad()``: ``C[X].view``, ``@ W1``, eval-mode
               ``F.batch_norm`` (running statistics), ``tanh``, ``@ W2 + b2``; eval takes the
               whole split at once and ``F.cross_entropy``; sampling is ``CharMLP.sample``'s
               algorithm written in torch, with the same uniform draws
============== =================================================================================

Verified before timing: every peer's eval loss agrees with the unfolded model's (``LOSS_TOL``)
and its names are the unfolded model's (in float32 one of the n names may differ: a uniform draw
within rounding of a boundary of the cumulative distribution). Timing: as the training cells
(``fastbn.bench.timing``): peers take turns, blocks of about ``block_seconds``, the median of
``repeats``, a block in which the process got less than ``MIN_CPU_SHARE`` of a CPU timed again.
"""
import statistics
import time

import numpy as np

from .. import _validate
from ..inference import CHUNK
from ..model import MAX_SAMPLE_LEN
from .peers import make_model
from .timing import MIN_CPU_SHARE, _timed

__all__ = ["IMPLS", "LOSS_TOL", "SAMPLE_N", "TARGET_METRICS", "TASKS", "TRAIN_STEPS",
           "check_target", "judge_target", "markdown", "run_inference"]

IMPLS = {
    "unfolded": "fastbn, unfolded",
    "folded_bn": "fastbn, folded, no table",
    "folded": "fastbn, folded",
    "torch": "PyTorch eager, no_grad",
}
TASKS = {"eval": "examples/s", "sample": "names/s"}
TRAIN_STEPS = 5000
QUICK_TRAIN_STEPS, QUICK_EXAMPLES = 200, 4096         # quick=True (not for real numbers)
SAMPLE_N = 20
LOSS_TOL = {"float32": 1e-5, "float64": 1e-10}      # |loss - unfolded loss|


# ----------------------------------------------------------------------------------------------
# the peers: loss() -> float and names() -> [str], each one call of the task

class _FastBN:
    def __init__(self, model, X, Y, seed):
        self.model, self.X, self.Y, self.seed = model, X, Y, seed

    def loss(self):
        return self.model.evaluate(self.X, self.Y)

    def names(self):
        return self.model.sample(SAMPLE_N, seed=self.seed)


class _Torch:
    """The unfolded model in PyTorch eager, eval mode, under no_grad."""

    def __init__(self, model, X, Y, seed):
        import torch
        import torch.nn.functional as F

        from .. import nn
        self.torch, self.F, self.seed = torch, F, seed
        self.vocab, self.T, self.max_len = model.vocab, model.block_size, MAX_SAMPLE_LEN

        def t(a):
            return torch.from_numpy(np.array(a))             # a copy
        self.steps = []
        for layer in model.layers:
            if isinstance(layer, nn.Embedding):
                self.steps.append(("embed", t(layer.weight)))
            elif isinstance(layer, nn.Linear):
                self.steps.append(("linear", t(layer.weight),
                                   None if layer.bias is None else t(layer.bias)))
            elif isinstance(layer, nn.BatchNorm1d):
                self.steps.append(("bn", t(layer.running_mean), t(layer.running_var),
                                   t(layer.gamma), t(layer.beta), layer.eps))
            elif isinstance(layer, nn.Tanh):
                self.steps.append(("tanh",))
            else:
                raise TypeError(f"the torch peer has no {type(layer).__name__}")
        self.X, self.Y = torch.from_numpy(np.array(X)), torch.from_numpy(np.array(Y))

    def _logits(self, x):
        F, torch = self.F, self.torch
        for s in self.steps:
            if s[0] == "embed":
                x = s[1][x].view(x.shape[0], -1)                    # (B, T*D)
            elif s[0] == "linear":
                x = x @ s[1] if s[2] is None else x @ s[1] + s[2]
            elif s[0] == "bn":
                x = F.batch_norm(x, s[1], s[2], s[3], s[4], training=False, eps=s[5])
            else:
                x = torch.tanh(x)
        return x

    def loss(self):
        with self.torch.no_grad():
            return self.F.cross_entropy(self._logits(self.X), self.Y).item()

    def names(self):
        """``CharMLP.sample``'s algorithm, step for step, in torch."""
        torch, n = self.torch, SAMPLE_N
        rng = np.random.default_rng(self.seed)
        ctx = torch.zeros((n, self.T), dtype=torch.int64)
        out = torch.zeros((n, self.max_len), dtype=torch.int64)
        done = torch.zeros(n, dtype=torch.bool)
        with torch.no_grad():
            for t in range(self.max_len):
                logits = self._logits(ctx).double()
                p = torch.exp(logits - logits.max(1, keepdim=True).values)
                cdf = torch.cumsum(p, 1)
                u = torch.from_numpy(rng.random(n)) * cdf[:, -1]
                ix = torch.clamp((cdf <= u[:, None]).sum(1), max=cdf.shape[1] - 1)
                ix[done] = 0
                out[:, t] = ix
                done |= ix == 0
                if bool(done.all()):
                    break
                ctx = torch.cat([ctx[:, 1:], ix[:, None]], 1)
        names = []
        for row in out.tolist():
            row = row[:row.index(0)] if 0 in row else row
            names.append(self.vocab.decode(row))
        return names


# ----------------------------------------------------------------------------------------------
# verify, then time

def _trained(ds, dt, seed, steps):
    from ..training import seed_streams, train
    init_ss, batch_ss = seed_streams(seed)
    model = make_model(ds.vocab, dt, np.random.default_rng(init_ss))
    train(model, (ds.Xtr, ds.Ytr), steps=steps, seed=batch_ss, quiet=True, evaluate=False)
    return model.eval()


def _verify(peers, dt):
    """{peer: {"loss", "loss_diff", "names_differing"}}; raises VerificationError on a mismatch."""
    from .verify import VerificationError
    ref_loss, ref_names = peers["unfolded"].loss(), peers["unfolded"].names()
    out = {}
    for name, peer in peers.items():
        loss, names = peer.loss(), peer.names()
        diff = abs(loss - ref_loss)
        if not diff <= LOSS_TOL[dt]:
            raise VerificationError(f"inference, {dt}: {IMPLS[name]} gives the val loss {loss!r}, "
                                    f"the unfolded model {ref_loss!r} (|diff| {diff:.3g} > "
                                    f"{LOSS_TOL[dt]:g})")
        differ = sum(a != b for a, b in zip(names, ref_names)) + abs(len(names) - len(ref_names))
        if differ > (1 if dt == "float32" else 0):
            raise VerificationError(f"inference, {dt}: {IMPLS[name]} samples other names than "
                                    f"the unfolded model ({differ} of {len(ref_names)} differ: "
                                    f"{names[:3]} vs {ref_names[:3]})")
        out[name] = {"loss": loss, "loss_diff": diff, "names_differing": differ}
    return out


def _time(fns, repeats, block_seconds):
    """{name: {"seconds", "seconds_all", "calls_per_block", "cpu_share", "discarded"}}: the median
    seconds per call of each function, the functions taking turns block by block, in an order
    reversed every repeat (so that none always follows the same one)."""
    calls = {}
    for name, fn in fns.items():
        fn()                                                     # warm-up
        t, _ = _timed(fn)
        calls[name] = max(1, round(block_seconds / max(t, 1e-9)))

    def block(fn, n):
        for _ in range(n):
            fn()
    for name, fn in fns.items():
        _timed(block, fn, calls[name])                           # a warm-up block
    times = {k: [] for k in fns}
    shares = {k: [] for k in fns}
    discarded = dict.fromkeys(fns, 0)
    order = list(fns)
    for r in range(repeats):
        for name in (order if r % 2 == 0 else order[::-1]):
            fn = fns[name]
            while True:
                wall, cpu = _timed(block, fn, calls[name])
                if cpu >= MIN_CPU_SHARE * wall or discarded[name] >= repeats:
                    break
                discarded[name] += 1
                time.sleep(min(0.2, block_seconds))
            times[name].append(wall / calls[name])
            shares[name].append(cpu / wall)
    return {k: {"seconds": statistics.median(times[k]), "seconds_all": times[k],
                "calls_per_block": calls[k], "cpu_share": shares[k],
                "discarded": discarded[k]} for k in fns}


def run_inference(ds, dtypes, seed, repeats, block_seconds, torch_mod=None, quick=False,
                  log=None):
    """Verify, then time eval and sampling of every peer at every dtype. Returns the
    ``"inference"`` section of results.json (see the module docstring). ``quick``: the model
    trains ``QUICK_TRAIN_STEPS`` steps and eval takes the first ``QUICK_EXAMPLES`` val rows."""
    from ..folding import fold_batchnorm
    X, Y = ds.split("val")
    if quick:                          # a smoke run: a short training, a part of the split
        X, Y = X[:QUICK_EXAMPLES], Y[:QUICK_EXAMPLES]
    steps = QUICK_TRAIN_STEPS if quick else TRAIN_STEPS
    names = [k for k in IMPLS if k != "torch" or torch_mod is not None]
    sample_seed = int(seed) % 2**32
    rows, summaries = [], {}
    for dt in dtypes:
        model = _trained(ds, dt, seed, steps)
        folded = {"folded_bn": fold_batchnorm(model, table=False),
                  "folded": fold_batchnorm(model)}
        summaries[dt] = folded["folded"].fold_summary()
        kinds = {"unfolded": (_FastBN, model), "folded_bn": (_FastBN, folded["folded_bn"]),
                 "folded": (_FastBN, folded["folded"]), "torch": (_Torch, model)}
        peers = {k: kinds[k][0](kinds[k][1], X, Y, sample_seed) for k in names}
        ver = _verify(peers, dt)
        if log:
            log(f"inference, {dt}: verified ({len(peers)} implementations agree on the val loss "
                f"and the names)")
        for task, unit in TASKS.items():
            fns = {k: (p.loss if task == "eval" else p.names) for k, p in peers.items()}
            timing = _time(fns, repeats, block_seconds)
            count = X.shape[0] if task == "eval" else SAMPLE_N
            impls = {}
            for k, t in timing.items():
                impls[k] = {**t, "rate": count / t["seconds"]}
            for t in impls.values():
                t["speedup"] = t["rate"] / impls["unfolded"]["rate"]
            rows.append({"dtype": dt, "task": task, "unit": unit, "impls": impls,
                         "verification": {k: v for k, v in ver.items()}})
            for k, v in impls.items():
                if log:
                    log(f"  {task:<6} {IMPLS[k]:<34} {v['rate']:12,.0f} {unit} "
                        f"({v['speedup']:.2f}x; {repeats} x {v['calls_per_block']} calls, CPU "
                        f"share >= {min(v['cpu_share']):.2f}, {v['discarded']} blocks discarded)")
    return {"train_steps": steps, "split": "val", "examples": int(X.shape[0]),
            "sample_n": SAMPLE_N, "sample_seed": sample_seed,
            "chunks": {"unfolded": f"{CHUNK} rows", "folded_bn": f"{CHUNK} rows",
                       "folded": f"{CHUNK} rows", "torch": "the whole split in one call"},
            "folded": summaries,
            "loss_tol": LOSS_TOL, "implementations": {k: IMPLS[k] for k in names},
            "results": rows}


# ----------------------------------------------------------------------------------------------
# targets and the report

# metric -> its keys besides the bound (fastbn.bench.targets reads this table)
TARGET_METRICS = {"inference_rate": {"dtype", "task", "peer"},
                  "inference_speedup": {"dtype", "task", "peer"}}


def check_target(t, where):
    """The inference target ``t`` checked (``peer`` defaults to "folded"); ValueError if bad."""
    out = dict(t)
    missing = {"dtype", "task"} - set(t)
    if missing:
        raise ValueError(f"{where}: metric {t['metric']} needs {', '.join(sorted(missing))}")
    try:
        _validate.float_dtype_name(t["dtype"])
    except ValueError as e:
        raise ValueError(f"{where}: {e}") from None
    if t["task"] not in TASKS:
        raise ValueError(f"{where}: task must be one of {', '.join(TASKS)}, got {t['task']!r}")
    out["peer"] = t.get("peer", "folded")
    allowed = [k for k in IMPLS if t["metric"] != "inference_speedup" or k != "unfolded"]
    if out["peer"] not in allowed:
        raise ValueError(f"{where}: peer must be one of {', '.join(allowed)}, got "
                         f"{out['peer']!r}")
    return out


def judge_target(res, t, op, bound):
    """(value or None, text, format) of the inference target ``t`` in the run ``res``."""
    inf = res.get("inference")
    cell = None
    for r in (inf or {}).get("results", []):
        if r["dtype"] == t["dtype"] and r["task"] == t["task"]:
            cell = r["impls"].get(t["peer"])
    where = f"{t['dtype']} {t['task']}: {IMPLS[t['peer']]}"
    if t["metric"] == "inference_rate":
        return (cell and cell["rate"], f"{where} {op} {bound:,g} {TASKS[t['task']]}",
                "{:,.0f} " + TASKS[t["task"]])
    return (cell and cell["speedup"], f"{where} {op} {bound:g}x the unfolded model's "
                                      f"{TASKS[t['task']]}", "{:.2f}x")


def markdown(inf):
    """The lines of results.md's inference section."""
    names = list(inf["implementations"])
    out = ["", "## Inference (eval mode)", "",
           f"The benchmark's model trained {inf['train_steps']:,} steps. eval: the mean loss over "
           f"the {inf['split']} split ({inf['examples']:,} examples) in one call; sample: "
           f"{inf['sample_n']} names in one call (seed {inf['sample_seed']}). Rows per chunk: "
           + "; ".join(f"{IMPLS[k]}: {v}" for k, v in inf["chunks"].items() if k in names)
           + ". Folded: " + "; ".join(f"{dt}, {v}" for dt, v in inf.get("folded", {}).items())
           + ". Verified first: every implementation's loss is the unfolded model's (within "
           f"{inf['loss_tol']['float32']:g} in float32, {inf['loss_tol']['float64']:g} in "
           "float64) and so are its names. Median of the timed blocks; (N×) = its rate / the "
           "unfolded model's.", "",
           "| dtype | task | " + " | ".join(IMPLS[k] for k in names) + " |",
           "|---|---|" + "---:|" * len(names)]
    flagged = False
    for r in inf["results"]:
        cells = []
        for k in names:
            t = r["impls"][k]
            mark = "†" if min(t["cpu_share"]) < MIN_CPU_SHARE else ""
            flagged |= bool(mark)
            cells.append(f"{t['rate']:,.0f}{mark} ({t['speedup']:.2f}×)")
        out.append(f"| {r['dtype']} | {r['task']} ({r['unit']}) | " + " | ".join(cells) + " |")
    if flagged:
        out += ["", f"† a timed block in which the process got less than {MIN_CPU_SHARE:.0%} of "
                    "a CPU is among those kept (other processes running): that rate is "
                    "deflated; the implementations took turns, so their ratios less so."]
    return out
