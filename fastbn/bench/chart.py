"""The benchmark's chart: µs per step against batch size, one panel per dtype, log-log, with the
floors (the step's GEMM FLOPs at the machine's GEMM peak)."""
from .peers import IMPLS

__all__ = ["draw"]


def draw(res):
    """A matplotlib Figure (Agg canvas) of the run ``res``, or None without matplotlib."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        return None
    dts = res["settings"]["dtypes"]
    fig = Figure(figsize=(5.5 * len(dts) + 0.5, 5.4), dpi=110)
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, len(dts), sharey=True, squeeze=False)[0]
    styles = {"fused": ("tab:red", "o"), "per_layer": ("tab:orange", "s"),
              "numpy": ("tab:blue", "^"), "torch": ("tab:green", "D"),
              "torch_compile": ("tab:olive", "v"), "jax_jit": ("tab:purple", "P"),
              "jax_loop": ("tab:brown", "X")}
    from matplotlib.ticker import FuncFormatter, LogLocator, NullLocator
    for ax, dt in zip(axes, dts):
        rows = sorted((r for r in res["results"] if r["dtype"] == dt),
                      key=lambda r: r["batch_size"])
        Bs = [r["batch_size"] for r in rows]
        for k in res["implementations"]:
            color, marker = styles[k]
            ax.plot(Bs, [r["impls"][k]["us_per_step"] for r in rows], color=color,
                    marker=marker, label=IMPLS[k])
        ax.plot(Bs, [r["floor_6gemm_us"] for r in rows], color="gray", ls=":", lw=1,
                label="floor: the 6-GEMM step at GEMM peak")
        ax.plot(Bs, [r["floor_us"] for r in rows], color="gray", ls="--", lw=1,
                label="floor: the fused step's GEMMs at GEMM peak")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xticks(Bs)
        ax.set_xticklabels([str(b) for b in Bs])
        ax.xaxis.set_minor_locator(NullLocator())
        ax.yaxis.set_major_locator(LogLocator(subs=(1, 2, 5)))
        ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:,.0f}" if v >= 1
                                                   else f"{v:g}"))
        ax.yaxis.set_minor_locator(NullLocator())
        ax.set_xlabel("batch size B")
        ax.set_title(f"{dt} (GEMM peak {res['gemm_peak'][dt]['gflops']:.0f} GFLOP/s)")
        ax.grid(True, which="major", alpha=0.3)
    axes[0].set_ylabel("µs per training step (median, log scale)")
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=3, fontsize=8.5, frameon=False)
    arch = ", ".join(str(a) for a in dict.fromkeys(res["machine"]["blas_architecture"].values()))
    fig.suptitle(f"One training step of the BN-MLP, one thread: {res['machine']['cpu']['model']}, "
                 f"OpenBLAS {arch}")
    fig.tight_layout(rect=(0, 0.1, 1, 1))
    return fig
