"""The progress of long work: a tqdm bar, periodic log lines, or nothing.

``progress_mode`` chooses, as ``fastbn.train`` does and the sweep and the benchmark follow: a bar
on a terminal or in a Jupyter kernel (``tqdm_class``: the notebook widget there, when ipywidgets
is installed), log lines on any other stream (a file, a CI log), nothing when quiet. tqdm is
imported when a bar is made.
"""
import sys

__all__ = ["Progress", "in_jupyter", "progress_mode", "tqdm_class"]


class Progress:
    """Progress of a run: a tqdm bar (rate, ETA, running loss), periodic log lines, or nothing.

    mode "bar": ``tqdm`` on a terminal, its widget in a Jupyter kernel (``tqdm.notebook``, when
    ipywidgets is installed; the text bar otherwise), refreshed at most 10 times a second;
    "lines": one line every ``log_every`` steps (the lecture's ``print(f'{i:7d}/{max_steps:7d}:
    {loss:.4f}')``); "off": silent.
    """

    def __init__(self, total, mode, stream, log_every, initial=0):
        self.total, self.mode, self.stream, self.log_every = total, mode, stream, log_every
        self.avg = None
        self.bar = None
        if mode == "bar":
            self.bar = tqdm_class(stream)(total=total, initial=initial, file=stream,
                                          unit="step", mininterval=0.1, smoothing=0.1,
                                          dynamic_ncols=True, leave=True)

    def update(self, step, loss, lr):
        # running loss: exponential moving average over ~100 steps
        self.avg = loss if self.avg is None else 0.99 * self.avg + 0.01 * loss
        if self.bar is not None:
            self.bar.update(1)
            if self.bar.n == self.total or self.bar.n % 256 == 0:
                self.bar.set_postfix_str(f"loss {self.avg:.4f} lr {lr:g}", refresh=False)
        elif self.mode == "lines" and (step % self.log_every == 0 or step + 1 == self.total):
            self.stream.write(f"{step:7d}/{self.total:7d}: loss {loss:.4f} "
                              f"(running {self.avg:.4f}) lr {lr:g}\n")
            self.stream.flush()

    def close(self):
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def in_jupyter():
    """True inside a Jupyter kernel (where stderr is not a terminal but a bar still renders)."""
    ip = sys.modules.get("IPython")
    try:
        return ip is not None and "IPKernelApp" in ip.get_ipython().config
    except Exception:                      # no running IPython
        return False


def tqdm_class(stream):
    if in_jupyter() and stream in (sys.stderr, sys.stdout):
        try:
            import ipywidgets  # type: ignore[import-not-found]  # noqa: F401  (the widget)
            from tqdm.notebook import tqdm  # type: ignore[import-untyped]  # (no stubs)
            return tqdm
        except ImportError:
            pass
    from tqdm import tqdm  # type: ignore[import-untyped]  # (no stubs)
    return tqdm


def progress_mode(quiet, stream):
    if quiet:
        return "off"
    isatty = getattr(stream, "isatty", None)
    if (isatty is not None and isatty()) or (in_jupyter() and stream in (sys.stderr,
                                                                          sys.stdout)):
        return "bar"
    return "lines"
