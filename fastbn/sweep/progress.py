"""The progress of a sweep: trials done, running, failed, and the time left.

As ``fastbn.train`` chooses (``fastbn._progress.progress_mode``): a tqdm bar on a terminal (its
widget in Jupyter) with the counts in its postfix and tqdm's ETA; a log line per finished trial
when the stream is neither (a file, a CI log); nothing when quiet.
"""
import sys
import time

from .._progress import progress_mode, tqdm_class

__all__ = ["SweepProgress"]


class SweepProgress:
    """Counts and shows a sweep's trials. ``total`` trials, ``done`` of them finished before
    (a resumed sweep)."""

    def __init__(self, total, done=0, quiet=False, stream=None):
        self.stream = sys.stderr if stream is None else stream
        self.mode = progress_mode(quiet, self.stream)
        self.total, self.done0, self.done = total, done, done
        self.running, self.counts, self.reruns = set(), {}, 0
        self.t0 = time.monotonic()
        self.bar = None
        if self.mode == "bar":
            self.bar = tqdm_class(self.stream)(total=total, initial=done, file=self.stream,
                                               unit="trial", dynamic_ncols=True, leave=True,
                                               smoothing=0.1, mininterval=0.2)
            self._postfix()

    def _postfix(self):
        parts = [f"running {len(self.running)}"]
        parts += [f"{k} {v}" for k, v in self.counts.items() if k != "ok"]
        if self.reruns:
            parts.append(f"rerun {self.reruns}")
        self.bar.set_postfix_str(", ".join(parts), refresh=True)

    def started(self, trial, worker, runs):
        self.running.add(trial.id)
        self.reruns += runs > 1
        if self.bar is not None:
            self._postfix()

    def finished(self, trial, row):
        self.running.discard(trial.id)
        self.done += 1
        status = row["status"]
        self.counts[status] = self.counts.get(status, 0) + 1
        if self.bar is not None:
            self.bar.update(1)
            self._postfix()
        elif self.mode == "lines":
            what = (f"val {row['val_loss']:.4f}" if status == "ok"
                    else f"{status}: {row['error']}")
            new = self.done - self.done0
            eta = (time.monotonic() - self.t0) / new * (self.total - self.done)
            self.stream.write(f"[{self.done}/{self.total}] {trial.id} {trial.label()}: {what} "
                              f"({row['trial_time']:.1f} s on {row['worker']}; "
                              f"about {eta:.0f} s left)\n")
            self.stream.flush()

    def note(self, message):
        """A line for the user (a timeout, a restart), above the bar."""
        if self.mode == "off":
            return
        if self.bar is not None:
            self.bar.write(message, file=self.stream)
        else:
            self.stream.write(message + "\n")
            self.stream.flush()

    def close(self):
        if self.bar is not None:
            self.bar.close()
            self.bar = None
