"""The report of a benchmark run: results.md (also printed), results.json and the chart."""
import json

import numpy as np

from .._fileio import atomic_save_figure, atomic_write_text
from . import inference
from .chart import draw
from .peers import IMPLS
from .timing import MIN_CPU_SHARE

__all__ = ["CHART", "markdown", "write"]

CHART = "us_per_step.png"


def markdown(res):
    """results.md of the run ``res`` (as ``run`` returns it, or as results.json holds it)."""
    m, s, mod, cpu = res["machine"], res["settings"], res["model"], res["machine"]["cpu"]
    names = list(res["implementations"])
    arch = ", ".join(str(a) for a in dict.fromkeys(m["blas_architecture"].values()))
    out = [f"# {res['title']}"]

    def para(*parts):
        out.extend(["", "".join(parts)])

    para(f"Measured {res['created']} on **{cpu['model']}** ",
         f"({cpu.get('usable_cpus', cpu['logical_cpus'])} usable CPUs, ",
         f"{'/'.join(cpu['flags'])}), everything on **one thread** (BLAS threads ",
         f"{m['blas_threads']}, torch threads {m.get('torch_threads', '-')}). ",
         f"OpenBLAS kernel: **{arch}**; numpy {m['numpy']}, {_blas_version(m)}, torch ",
         f"{m['torch'] or 'not installed'} (BLAS {m.get('torch_blas') or '-'}, ",
         f"{m.get('torch_cpu_capability') or '-'}), Python {m['python']}, fastbn ",
         f"{m['fastbn']}", f" ({m['fastbn_git']})" if m.get("fastbn_git") else "", ".")
    env = {k: v for k, v in m["env"].items() if v is not None}
    if env:
        para("Environment: ", ", ".join(f"`{k}={v}`" for k, v in env.items()), ".")
    para(f"Model: the default BN-MLP, vocab {mod['vocab']}, block {mod['block_size']}, ",
         f"n_embd {mod['n_embd']}, n_hidden {mod['n_hidden']}, {mod['n_layers']} layer, ",
         f"BN momentum {mod['bn_momentum']:g}, {mod['init']} init, {mod['parameters']:,} ",
         "parameters. One step = a random minibatch of the names training set ",
         f"({res['data']['train_examples']:,} examples) + forward + backward + SGD ",
         f"(lr {s['lr']:g}) + BN running statistics.")
    para(f"Median µs/step of {s['repeats']} timed blocks of ~{s['block_seconds']:g} s each, ",
         "after warm-up, the implementations taking turns; (N×) = its time / the fused ",
         "loop's time. Verified before timing: every implementation's losses over ",
         f"{s['verify_steps']} steps and its parameters afterwards agree with the fused step ",
         f"(loss within {s['loss_tol']['float32']['atol']:g} in float32, ",
         f"{s['loss_tol']['float64']['atol']:g} in float64).")
    for note in res["notes"]:
        para(f"Note: {note}")
    for dt in s["dtypes"]:
        peak = res["gemm_peak"][dt]
        head = (["B"] + [IMPLS[k] + " µs" for k in names]
                + ["fused GEMM MFLOP", "fused GFLOP/s", "% of GEMM peak", "floor µs"])
        out += ["", f"## {dt}", "", "| " + " | ".join(head) + " |", "|" + "---:|" * len(head)]
        for r in (r for r in res["results"] if r["dtype"] == dt):
            cells = [str(r["batch_size"])]
            for k in names:
                t = r["impls"][k]
                us = f"{t['us_per_step']:,.1f}" + ("†" if min(t["cpu_share"]) < MIN_CPU_SHARE
                                                   else "")
                cells.append(us if k == "fused" else f"{us} ({t['speedup']:.1f}×)")
            cells += [f"{r['fused_flops'] / 1e6:.2f}" + ("‡" if r["fused_table"] else ""),
                      f"{r['fused_gflops']:.1f}", f"{100 * r['fraction_of_peak']:.0f} %",
                      f"{r['floor_us']:,.1f}"]
            out.append("| " + " | ".join(cells) + " |")
        para(f"GEMM peak ({dt}, {peak['n']}³, one thread): **{peak['gflops']:.1f} GFLOP/s** ",
             f"({_peak_of_kernels(peak)}, numpy.matmul ",
             f"{peak['numpy']['gflops']:.1f}); floor µs = FLOPs / peak.")
        compiles = _compile_times(res, dt, names)
        if compiles:
            para("Compile time, apart from the step times above (s, at each batch size): ",
                 "; ".join(compiles), ".")
    flagged = any(min(t["cpu_share"]) < MIN_CPU_SHARE
                  for r in res["results"] for t in r["impls"].values())
    discarded = sum(t["discarded"] for r in res["results"] for t in r["impls"].values())
    para("Every implementation runs on one thread: a timed block in which the process got less ",
         f"than {MIN_CPU_SHARE:.0%} of a CPU (other processes running) is discarded and timed ",
         f"again; {discarded} blocks were discarded in this run. ",
         "† marks a time whose blocks still include such a block (inflated). " if flagged else "",
         f"Load average at start / end: {_fmt_load(m.get('loadavg_at_start'))} / ",
         f"{_fmt_load(m.get('loadavg_at_end'))}.")
    para(f"FLOPs per step: {res['flops']['formula']}; ",
         f"{res['flops']['per_step_b32'] / 1e6:.2f} MFLOP at B=32. ",
         "‡ From B = 48 the fused step computes the embedding and the first Linear through ",
         "the table E_t = C @ W1[t] (fastbn.fused), so it performs fewer GEMM FLOPs than the ",
         f"other implementations: {res['flops']['fused_table_formula'].split(':')[0]}. ",
         "The fused GFLOP/s, % of peak and floor (µs at GEMM peak) use the FLOPs the fused ",
         "step performs; results.json also has the effective GFLOP/s of the 6-GEMM count.")
    out += _opcalls_md(res.get("opcalls"))
    if res.get("inference"):
        out += inference.markdown(res["inference"])
    full = res["full_training"]
    if full:
        out += ["", "## Full training (`fastbn train` defaults, fused loop)"]
        para(f"`fastbn.train` (the function behind `fastbn train`; path: {full['path']}), ",
             f"{full['steps']:,} steps, float32, batch {full['batch_size']}, lr 0.1 then 0.01 ",
             f"from step 100,000, seed {full['seed']}: **{full['wall_seconds']:.2f} s** in the ",
             f"training loop ({full['us_per_step']:.1f} µs/step; ",
             f"{full['seconds_with_evaluation']:.2f} s with the final evaluation). Then, in eval ",
             f"mode (running BN statistics): train loss {full['losses']['train']:.4f}, val loss ",
             f"{full['losses']['val']:.4f}. CPU share {full['cpu_share']:.2f}",
             f"; {len(full['discarded_attempts'])} preempted attempt(s) discarded"
             if full["discarded_attempts"] else "", ".")
    if res["targets"]:
        out += ["", f"## {res.get('targets_title') or 'Targets'}", "",
                "| target | measured | |", "|---|---:|---|"]
        for t in res["targets"]:
            verdict = "not measured" if t["ok"] is None else ("pass" if t["ok"] else "**FAIL**")
            out.append(f"| {t['target']} | {t['measured'] or '-'} | {verdict} |")
    out.append("")
    if res.get("chart"):
        out += [f"![µs/step vs batch size]({res['chart']})", ""]
    return "\n".join(out)


def _compile_times(res, dt, names):
    """"<peer> 2.41, 0.95 (B = 32, 1024)" for each peer of ``names`` that compiled."""
    rows = [r for r in res["results"] if r["dtype"] == dt]
    out = []
    for k in names:
        secs = [(r["batch_size"], r["impls"][k]["compile_seconds"]) for r in rows
                if "compile_seconds" in r["impls"].get(k, {})]
        if secs:
            out.append(f"{IMPLS[k]} {', '.join(f'{s:.2f}' for _, s in secs)} "
                       f"(B = {', '.join(str(b) for b, _ in secs)})")
    return out


_IMPL_NAMES = {"fastbn": "fastbn", "numpy": "NumPy", "torch": "PyTorch"}


def _opcalls_md(opc):
    """The per-op table's section of results.md (none for a run without it)."""
    if not opc:
        return []
    impls, Bs = opc["impls"], opc["batch_sizes"]
    rows = {(r["op"], r["pass"], r["batch_size"]): r for r in opc["rows"]}
    ops = list(dict.fromkeys((r["op"], r["label"]) for r in opc["rows"]))
    head = ["op", "pass"] + [f"B={B} {_IMPL_NAMES[k]} µs" if k == "fastbn" else
                             f"{_IMPL_NAMES[k]} µs" for B in Bs for k in impls]
    out = ["", f"## One op call ({opc['dtype']})", "",
           f"Median µs per call of {opc['repeats']} timed blocks of ~{opc['block_seconds']:g} s "
           "(timeit, garbage collection off), the implementations taking turns, one thread; "
           "(N×) = its time / fastbn's (above 1: fastbn is faster). fastbn: `fastbn.ops.<op>_"
           "forward` / `_backward` as teaching code calls them (checks, new outputs and the "
           "cache included); NumPy: the op's NumPy expression as `fastbn.reference` writes it "
           "(inline where it is one line: `np.tanh(x)`, `x @ w + b`; the reference function "
           "for batch norm, the embedding's backward and cross-entropy); PyTorch: its function "
           "and the ATen backward op autograd runs, without building a graph. Verified first: "
           "the three agree on every output and gradient. results.json has each statement.",
           "", "| " + " | ".join(head) + " |", "|---|---|" + "---:|" * (len(head) - 2)]
    for op, label in ops:
        for p in ("forward", "backward"):
            cells = [label, p]
            for B in Bs:
                r = rows.get((op, p, B))
                for k in impls:
                    if r is None:
                        cells.append("-")
                        continue
                    t = r["impls"][k]
                    us = f"{t['us']:,.2f}" + ("†" if t["cpu_share"] < MIN_CPU_SHARE else "")
                    base = r["impls"]["fastbn"]["us"]
                    cells.append(us if k == "fastbn" else f"{us} ({t['us'] / base:.1f}×)")
            out.append("| " + " | ".join(cells) + " |")
    return out


def _blas_version(m):
    """The kernels' BLAS package: scipy-openblas32 since fastbn reaches BLAS through it, scipy in
    results measured before (through scipy.linalg.cython_blas)."""
    if "scipy_openblas32" in m:
        return f"scipy-openblas32 {m['scipy_openblas32']}"
    return f"scipy {m['scipy']}"


def _peak_of_kernels(peak):
    """The GEMM peak through the kernels' BLAS, named as the results file names it."""
    if "fastbn" in peak:
        return f"fastbn's BLAS {peak['fastbn']['gflops']:.1f}"
    return f"scipy.linalg.blas {peak['scipy']['gflops']:.1f}"


def _fmt_load(load):
    return "-" if not load else " ".join(f"{v:.2f}" for v in load)


def write(res, out, stdout):
    """Write results.md, results.json and the chart into the folder ``out`` (created); print
    results.md to ``stdout`` unless None. Sets ``res["chart"]`` (the chart's file name or None).
    """
    out.mkdir(parents=True, exist_ok=True)
    fig = draw(res)
    if fig is not None:
        atomic_save_figure(fig, out / CHART, format="png")
        res["chart"] = CHART
    else:
        res["chart"] = None
        res["notes"].append("chart skipped: matplotlib is not installed")
    md = markdown(res)
    atomic_write_text(out / "results.md", md)
    atomic_write_text(out / "results.json",
                      json.dumps(res, indent=1, default=_json_default) + "\n")
    if stdout is not None:
        print(md, file=stdout)


def _json_default(o):
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    raise TypeError(f"not JSON serializable: {type(o).__name__}")
