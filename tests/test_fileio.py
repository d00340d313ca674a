"""Tests for fastbn._fileio: atomic writes with the umask's permissions, durable, thread-safe,
leaving nothing behind on failure; and that every writer of fastbn uses it.

Permissions under a given umask are checked in subprocesses (the umask is process-wide: the test
process never changes it).
"""
import errno
import json
import os
import stat
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

import fastbn
from fastbn import CharMLP, checkpoint, data
from fastbn._fileio import atomic_save_figure, atomic_write, atomic_write_text
from fastbn.training import plot_history

ROOT = str(Path(fastbn.__file__).resolve().parents[1])
ENV = dict(os.environ, PYTHONPATH=ROOT)     # children start in ROOT: from the repository root,
#                                             python -c would import the unbuilt source tree


def new_file_mode(folder):
    """The permissions open() gives a new file in ``folder`` in this process (umask and default
    ACL applied), read from a real file rather than from the umask."""
    probe = Path(folder) / "probe-by-open"
    with open(probe, "wb"):
        pass
    mode = stat.S_IMODE(probe.stat().st_mode)
    probe.unlink()
    return mode


def only(folder, *names):
    """The folder holds exactly these files: no temporary file was left behind."""
    assert sorted(p.name for p in Path(folder).iterdir()) == sorted(names)


# ----------------------------------------------------------------------------------------------
# permissions

_MODES_SCRIPT = r"""
import json, os, stat, sys
from pathlib import Path
os.umask(int(sys.argv[1], 8))       # this subprocess's own umask
import numpy as np
from fastbn import CharMLP, checkpoint, data
from fastbn._fileio import atomic_write, atomic_write_text
from fastbn.training import plot_history

out = Path(sys.argv[2])
src = out / "src.txt"
src.write_text("emma\nolivia\n")
atomic_write_text(out / "a.txt", "x")
with atomic_write(out / "b.bin", "wb") as f:
    f.write(b"y")
checkpoint.save(CharMLP(data.Vocab.from_chars(".ab"), n_hidden=4, seed=0), out / "m.npz")
data.download(src.as_uri(), out / "names.txt", sha256=None)
written = ["a.txt", "b.bin", "m.npz", "names.txt"]
try:
    import matplotlib  # noqa: F401
except ImportError:
    pass
else:
    plot_history(np.ones(10), out / "loss.png")
    written.append("loss.png")
modes = {n: stat.S_IMODE((out / n).stat().st_mode) for n in written}
umask_after = os.umask(0)
print(json.dumps({"modes": modes, "umask_after": umask_after}))
"""


@pytest.mark.skipif(os.name != "posix", reason="POSIX permissions")
@pytest.mark.parametrize("umask, expected", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_files_get_the_permissions_of_the_umask(tmp_path, umask, expected):
    p = subprocess.run([sys.executable, "-c", _MODES_SCRIPT, oct(umask), str(tmp_path)],
                       env=ENV, cwd=ROOT, capture_output=True, text=True, timeout=120,
                       check=False)
    assert p.returncode == 0, p.stderr
    res = json.loads(p.stdout)
    assert res["umask_after"] == umask          # read-only: the process umask is unchanged
    assert len(res["modes"]) >= 4
    for name, mode in res["modes"].items():
        assert mode == expected, f"{name}: {oct(mode)} under umask {oct(umask)}"


def test_the_umask_is_never_touched(tmp_path, monkeypatch):
    def no_umask(*a):
        raise AssertionError("os.umask is process-wide; fastbn must not call it")
    monkeypatch.setattr(os, "umask", no_umask)
    atomic_write_text(tmp_path / "a.txt", "x")
    checkpoint.save(CharMLP(data.Vocab.from_chars(".ab"), n_hidden=4, seed=0), tmp_path / "m")
    assert (tmp_path / "a.txt").read_text() == "x"


def test_same_mode_as_open_in_this_process(tmp_path):
    path = atomic_write_text(tmp_path / "a.txt", "x")
    assert stat.S_IMODE(path.stat().st_mode) == new_file_mode(tmp_path)


# ----------------------------------------------------------------------------------------------
# content, modes, folders

def test_text_and_binary(tmp_path):
    with atomic_write(tmp_path / "t.txt", "w") as f:
        f.write("µs\n")
    assert (tmp_path / "t.txt").read_bytes() == "µs\n".replace("\n", os.linesep).encode("utf-8")
    with atomic_write(tmp_path / "b.bin") as f:         # "wb" by default
        f.write(b"\x00\xff")
    assert (tmp_path / "b.bin").read_bytes() == b"\x00\xff"
    atomic_write_text(tmp_path / "t.txt", "second")     # replaces
    assert (tmp_path / "t.txt").read_text() == "second"
    only(tmp_path, "t.txt", "b.bin")


@pytest.mark.parametrize("mode", ["a", "r+", "ab", "x", "w+"])
def test_bad_mode(tmp_path, mode):
    with pytest.raises(ValueError, match="mode"):
        with atomic_write(tmp_path / "f", mode):
            pass
    only(tmp_path)


def test_creates_missing_folders(tmp_path):
    atomic_write_text(tmp_path / "a" / "b" / "c.txt", "x")
    assert (tmp_path / "a" / "b" / "c.txt").read_text() == "x"


def test_a_file_in_the_way_of_the_folder(tmp_path):
    (tmp_path / "a").write_text("not a folder")
    with pytest.raises(OSError):
        atomic_write_text(tmp_path / "a" / "c.txt", "x")
    assert (tmp_path / "a").read_text() == "not a folder"


# ----------------------------------------------------------------------------------------------
# failure leaves the old file and no temporary file

@pytest.mark.parametrize("exc", [ValueError("bad"), OSError(errno.ENOSPC, "disk full"),
                                 KeyboardInterrupt()])
def test_failure_keeps_the_old_file_and_removes_the_temporary(tmp_path, exc):
    path = tmp_path / "f.bin"
    path.write_bytes(b"old")
    with pytest.raises(type(exc)):
        with atomic_write(path, "wb") as f:
            f.write(b"new, partly written" * 1000)
            f.flush()
            raise exc
    assert path.read_bytes() == b"old"
    only(tmp_path, "f.bin")


def test_failure_without_an_old_file_leaves_nothing(tmp_path):
    with pytest.raises(RuntimeError):
        with atomic_write(tmp_path / "f.bin") as f:
            f.write(b"x")
            raise RuntimeError
    only(tmp_path)


def test_a_failing_rename_removes_the_temporary(tmp_path):
    (tmp_path / "d").mkdir()                  # a folder where the file should go
    with pytest.raises(OSError):
        atomic_write_text(tmp_path / "d", "x")
    only(tmp_path, "d")
    assert (tmp_path / "d").is_dir()


class _FailingFigure:
    """Writes part of a figure, then fails, as savefig can (a bad format, a full disk)."""

    def savefig(self, f, format=None):
        f.write(b"\x89PNG partial")
        raise RuntimeError("savefig failed")


def test_a_failing_savefig_leaves_no_temporary_file(tmp_path):
    path = tmp_path / "fig.png"
    path.write_bytes(b"old figure")
    with pytest.raises(RuntimeError, match="savefig failed"):
        atomic_save_figure(_FailingFigure(), path)
    assert path.read_bytes() == b"old figure"
    only(tmp_path, "fig.png")


def test_plot_history_failure_leaves_no_temporary_file(tmp_path, monkeypatch):
    mfig = pytest.importorskip("matplotlib.figure")
    path = tmp_path / "loss.png"
    plot_history(np.exp(-np.linspace(0, 1, 50)), path)
    old = path.read_bytes()
    assert old.startswith(b"\x89PNG")

    def failing(self, fname, **kw):
        fname.write(b"\x89PNG partial")
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(mfig.Figure, "savefig", failing)
    with pytest.raises(OSError, match="No space"):
        plot_history(np.ones(50), path)
    assert path.read_bytes() == old
    only(tmp_path, "loss.png")


def test_figure_format_from_the_suffix(tmp_path):
    mfig = pytest.importorskip("matplotlib.figure")
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    fig = mfig.Figure()
    FigureCanvasAgg(fig)
    fig.add_subplot().plot([0, 1])
    assert b"<svg" in atomic_save_figure(fig, tmp_path / "f.svg").read_bytes()[:1000]
    assert atomic_save_figure(fig, tmp_path / "f.png").read_bytes().startswith(b"\x89PNG")
    assert atomic_save_figure(fig, tmp_path / "g", format="png").read_bytes()[:4] == b"\x89PNG"
    only(tmp_path, "f.svg", "f.png", "g")


def test_helper_does_not_import_matplotlib():
    code = ("import sys, fastbn._fileio, fastbn.checkpoint, fastbn.data, fastbn.training; "
            "assert 'matplotlib' not in sys.modules, 'imported matplotlib'")
    p = subprocess.run([sys.executable, "-c", code], env=ENV, cwd=ROOT, capture_output=True,
                       text=True, timeout=60, check=False)
    assert p.returncode == 0, p.stderr


# ----------------------------------------------------------------------------------------------
# durability: the file and its folder are synced

def test_file_and_folder_are_synced(tmp_path, monkeypatch):
    path = tmp_path / "f.bin"
    synced = []
    real_fsync = os.fsync

    def fsync(fd):
        st = os.fstat(fd)
        synced.append(("dir" if stat.S_ISDIR(st.st_mode) else "file", path.exists()))
        real_fsync(fd)
    monkeypatch.setattr(os, "fsync", fsync)
    with atomic_write(path) as f:
        f.write(b"x")
    # the file before the rename (path not there yet), its folder after it
    assert synced == [("file", False), ("dir", True)]


def test_new_folders_are_synced_into_their_parents(tmp_path, monkeypatch):
    dirs = []
    real_fsync = os.fsync

    def fsync(fd):
        if stat.S_ISDIR(os.fstat(fd).st_mode):
            dirs.append(os.fstat(fd).st_ino)
        real_fsync(fd)
    monkeypatch.setattr(os, "fsync", fsync)
    atomic_write_text(tmp_path / "a" / "b" / "f.txt", "x")
    inode = {p: p.stat().st_ino for p in (tmp_path, tmp_path / "a", tmp_path / "a" / "b")}
    assert dirs == [inode[tmp_path], inode[tmp_path / "a"], inode[tmp_path / "a" / "b"]]


def test_a_folder_that_cannot_be_synced_is_skipped(tmp_path, monkeypatch):
    """As on Windows, where a folder cannot be opened: the write still succeeds."""
    real_open = os.open

    def refuse_folders(path, flags, *a, **kw):
        if os.path.isdir(path):
            raise PermissionError(errno.EACCES, "Permission denied", str(path))
        return real_open(path, flags, *a, **kw)
    monkeypatch.setattr(os, "open", refuse_folders)
    atomic_write_text(tmp_path / "f.txt", "x")
    assert (tmp_path / "f.txt").read_text() == "x"
    only(tmp_path, "f.txt")


def test_a_real_folder_sync_error_is_raised(tmp_path, monkeypatch):
    real_fsync = os.fsync

    def fsync(fd):
        if stat.S_ISDIR(os.fstat(fd).st_mode):
            raise OSError(errno.EIO, "Input/output error")
        real_fsync(fd)
    monkeypatch.setattr(os, "fsync", fsync)
    with pytest.raises(OSError, match="Input/output"):
        atomic_write_text(tmp_path / "f.txt", "x")


# ----------------------------------------------------------------------------------------------
# threads writing one target

def test_threads_writing_one_target(tmp_path):
    """Eight threads write the same file five times each while a reader reads it: no collision,
    no error, every read and the final file are one complete write."""
    path = tmp_path / "shared.bin"
    n, size, rounds = 8, 1 << 18, 5
    start = threading.Barrier(n + 1)
    errors, seen = [], []
    done = threading.Event()

    def writer(i):
        try:
            start.wait()
            for _ in range(rounds):
                with atomic_write(path, "wb") as f:
                    for _ in range(8):              # in pieces, so the writes interleave
                        f.write(bytes([i]) * (size // 8))
        except BaseException as e:                  # noqa: B036 - reported below
            errors.append(e)

    def reader():
        start.wait()
        while not done.is_set():
            try:
                b = path.read_bytes()
            except FileNotFoundError:
                continue
            seen.append((len(b), len(set(b))))

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(n)]
    r = threading.Thread(target=reader)
    for t in [*threads, r]:
        t.start()
    for t in threads:
        t.join()
    done.set()
    r.join()
    assert errors == []
    final = path.read_bytes()
    assert len(final) == size and len(set(final)) == 1 and final[0] in range(n)
    assert seen and all(s == (size, 1) for s in seen)
    only(tmp_path, "shared.bin")


# ----------------------------------------------------------------------------------------------
# writes under a file-size limit (RLIMIT_FSIZE): every write fails with EFBIG past the limit, as
# on a full disk or a quota; the previous file stays whole, and a command says so in one line

_LIMITED = r"""
import resource, signal, sys
if __name__ == "__main__":        # (a Dask worker process imports this file again: not there)
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)      # the write fails with EFBIG instead
    _, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (int(sys.argv[1]), hard))
    if sys.argv[2] == "-c":
        exec(sys.argv[3])
    else:
        from fastbn.cli import main
        sys.exit(main(sys.argv[2:]))
"""

pytestmark_fsize = pytest.mark.skipif(sys.platform == "win32", reason="RLIMIT_FSIZE is POSIX")


def limited(tmp_path, limit, *args, timeout=180):
    """Run ``fastbn ARGS`` (or ``-c CODE``) in a child whose files may not exceed ``limit``
    bytes; returns the CompletedProcess."""
    script = tmp_path / "limited.py"
    script.write_text(_LIMITED)
    return subprocess.run([sys.executable, str(script), str(limit), *map(str, args)], env=ENV,
                          cwd=tmp_path, capture_output=True, text=True, timeout=timeout,
                          check=False)


def one_error_line(p, command):
    lines = [ln for ln in p.stderr.splitlines() if ln.strip()]
    assert p.returncode == 1, p.stderr
    assert "Traceback" not in p.stderr and len(lines) == 1, p.stderr
    assert lines[0].startswith(f"fastbn {command}: error: ") and "File too large" in lines[0]
    return lines[0]


@pytest.fixture
def word_file(tmp_path):
    g = np.random.default_rng(1)
    letters = np.array(list("abcdefghijklmnopqrstuvwxyz"))
    path = tmp_path / "words.txt"
    path.write_text("\n".join("".join(g.choice(letters, g.integers(3, 8)))
                              for _ in range(2000)) + "\n")
    return path


@pytestmark_fsize
def test_save_past_a_file_size_limit_keeps_the_previous_checkpoint(tmp_path):
    vocab = data.Vocab.from_chars(".abcdefghijklmnopqrstuvwxyz")
    path = tmp_path / "model.npz"
    old = CharMLP(vocab, seed=0, n_hidden=16)
    checkpoint.save(old, path)
    limit = path.stat().st_size + 1000       # the old file fits, the bigger new one does not
    code = (f"import errno\nfrom fastbn import CharMLP, save\nfrom fastbn.data import Vocab\n"
            f"m = CharMLP(Vocab.from_chars({vocab.chars!r}), seed=1, n_hidden=200)\n"
            f"try:\n    save(m, {str(path)!r})\nexcept OSError as e:\n"
            f"    print(errno.errorcode[e.errno], e.filename, e)\n")
    p = limited(tmp_path, limit, "-c", code)
    assert p.returncode == 0, p.stderr
    assert p.stdout.split()[:2] == ["EFBIG", str(path)], p.stdout   # it says which file
    back = checkpoint.load(path)                                     # the old one, whole
    assert all(np.array_equal(a, b) for a, b in zip(back.parameters(), old.parameters()))
    only(tmp_path, "model.npz", "limited.py")


TRAIN = ["--batch-size", "16", "--n-hidden", "24", "--seed", "3", "--quiet"]


@pytestmark_fsize
def test_a_periodic_checkpoint_past_the_limit_keeps_the_previous_one(tmp_path, word_file):
    from fastbn.cli import main
    ref = tmp_path / "ref"
    assert main(["train", "--data", str(word_file), "--steps", "2000", *TRAIN, "--no-plot",
                 "--out", str(ref)]) == 0
    # the checkpoint of step 2000 fits; that of step 4000 (16 kB more of loss history) does not
    limit = (ref / "model.npz").stat().st_size + 4000
    out = tmp_path / "run"
    p = limited(tmp_path, limit, "train", "--data", word_file, "--steps", 6000, *TRAIN,
                "--checkpoint-every", 2000, "--no-plot", "--out", out)
    line = one_error_line(p, "train")
    assert f"cannot save the checkpoint {out / 'model.npz'} at step 4,000" in line
    m = checkpoint.load(out / "model.npz")
    assert m.train_state.step == 2000 and not m.meta.get("complete")
    only(out, "model.npz")


@pytestmark_fsize
def test_a_loss_plot_past_the_limit_is_one_line_and_the_checkpoint_is_saved(tmp_path, word_file):
    from fastbn.cli import main
    ref = tmp_path / "ref"
    assert main(["train", "--data", str(word_file), "--steps", "300", *TRAIN, "--out",
                 str(ref)]) == 0
    ckpt, png = (ref / "model.npz").stat().st_size, (ref / "loss.png").stat().st_size
    assert png > ckpt + 4000
    out = tmp_path / "run"
    p = limited(tmp_path, ckpt + 2000, "train", "--data", word_file, "--steps", 300, *TRAIN,
                "--out", out)
    line = one_error_line(p, "train")
    assert f"cannot write the loss plot {out / 'loss.png'}" in line and "checkpoint is saved" \
        in line
    assert checkpoint.load(out / "model.npz").meta["complete"]
    only(out, "model.npz")


@pytestmark_fsize
def test_sweep_results_past_the_limit_keep_the_previous_file(tmp_path, word_file):
    pytest.importorskip("distributed", reason="the sweep needs Dask: pip install 'fastbn[sweep]'")
    from fastbn.cli import main
    from fastbn.sweep.results import ResultsFile
    from fastbn.sweep.run import load_sweep
    args = ["sweep", "--data", word_file, "--param", "lr=0.05,0.1,0.2,0.3", "--param",
            "steps=100", "--param", "n_hidden=8", "--workers", 1, "--quiet"]
    out = tmp_path / "out"
    ref = tmp_path / "ref"
    p = limited(tmp_path, 10**7, *args, "--out", ref)
    assert p.returncode == 0, p.stderr
    meta, results = (ref / "sweep.json").stat().st_size, (ref / "results.csv").read_text()
    header = len(results.splitlines()[0]) + 1
    limit = max(meta, header) + 20          # sweep.json and the header fit, four rows do not
    assert len(results) > limit
    p = limited(tmp_path, limit, *args, "--out", out)
    line = one_error_line(p, "sweep")
    assert str(out / "results.csv") in line, line
    spaces, _, _ = load_sweep(out)
    trials = spaces[0].trials()
    rows = ResultsFile(out / "results.csv", list(spaces[0].params)).load(trials)
    assert len(rows) < 4                   # what was written before stays whole
    assert not [f for f in out.iterdir() if f.name.endswith(".tmp")]
    # and it resumes, without the limit
    assert main(["sweep", "--resume", str(out), "--workers", "1", "--quiet"]) == 0
    assert len((out / "results.csv").read_text().splitlines()) == 5
