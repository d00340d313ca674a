"""Ctrl-C and SIGTERM between two steps of a loop: ``CatchInterrupt``, which ``fastbn.train``
runs its steps under (see there: the run stops after a complete step, and says so)."""
import signal

__all__ = ["CatchInterrupt"]


class CatchInterrupt:
    """Within the block, SIGINT and SIGTERM set ``caught`` (and ``signum``, the first signal
    caught) instead of raising KeyboardInterrupt or ending the process, so the loop can stop
    between steps (a step cut in half would leave the model half updated).

    Only in the main thread (``signal.signal`` refuses elsewhere), and only where the signal
    would otherwise interrupt the run by default: SIGINT under Python's
    ``signal.default_int_handler`` (a terminal, a Jupyter cell), SIGTERM under ``SIG_DFL`` (the
    operating system's default, which kills the process). Any other handler (the caller's own,
    SIG_IGN, SIG_DFL for SIGINT, one installed from C) is left alone. On exit each previous
    handler is put back if ours is still the one installed, so nested or overlapping blocks
    restore in order and never leave ours behind.
    """

    SIGNALS = ((signal.SIGINT, lambda h: h is signal.default_int_handler),
               (signal.SIGTERM, lambda h: h == signal.SIG_DFL))

    def __enter__(self):
        self.caught = False
        self.signum = None
        self._previous = {}

        def handler(signum, frame):
            if self.signum is None:
                self.signum = signum
            self.caught = True
        self._handler = handler
        try:
            for signum, ours_to_replace in self.SIGNALS:
                if ours_to_replace(signal.getsignal(signum)):
                    self._previous[signum] = signal.signal(signum, handler)
        except ValueError:      # not the main thread (of the main interpreter)
            pass
        return self

    def __exit__(self, *exc):
        for signum, previous in self._previous.items():
            if signal.getsignal(signum) is self._handler:
                signal.signal(signum, previous)
        return False
