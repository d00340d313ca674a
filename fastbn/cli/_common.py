"""What the commands of ``fastbn`` share: one-line failures (``Fail``), reading the names file,
checking that the output folder can be written."""
import tempfile

__all__ = ["SCHEDULE_HELP", "Fail", "check_trainable", "check_writable", "load_data"]


def _one_line(text):
    """A message of several lines as one: a list ("...:" then "  - item" lines) becomes
    "...: item; item", and the lines after it join as sentences."""
    out, in_list = "", False
    for line in (s.strip() for s in str(text).splitlines()):
        if not line:
            continue
        item = line.startswith("- ")
        if not out:
            out = line
        elif item:
            out += (" " if out.endswith(":") else "; ") + line[2:]
        else:
            out += (". " if in_list and not out.endswith(".") else " ") + line
        in_list = item
    return out


class Fail(Exception):
    """A runtime failure (not a usage error): printed as 'fastbn CMD: error: ...', exit 1, on
    one line (a message of several lines is joined)."""

    def __init__(self, message):
        super().__init__(_one_line(message))


def load_data(path, block_size):
    from .. import data
    try:
        return data.load_dataset(path, block_size=block_size)
    except (OSError, ValueError) as e:   # missing file, offline, bad word list, checksum
        raise Fail(str(e)) from e


def check_trainable(ds):
    """The data must leave something to train on and a validation loss to report: its training
    and validation splits (80 % and 10 % of the words, the lecture's split) may not be empty."""
    try:
        return ds.require_splits("train", "val")
    except ValueError as e:
        raise Fail(str(e)) from e


def check_writable(out):
    """Create the folder ``out`` and write a temporary file in it, before any training: a
    folder that cannot be written would lose the whole run."""
    try:
        out.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=out):
            pass
    except OSError as e:
        raise Fail(f"cannot write to the output folder {out}: {e.strerror or e}") from e


SCHEDULE_HELP = ("0.1, then 0.01 from half the steps on: the lecture's 0:0.1,100000:0.01 for its "
                 "200,000 steps, scaled to a shorter or longer run")
