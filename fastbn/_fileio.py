"""Atomic file writes: a reader, a crash or a power loss sees the old file or the new one, never
a part of either. Every file fastbn writes (checkpoints, the downloaded names.txt, figures,
reports) goes through ``atomic_write``::

    with atomic_write(path, "wb") as f:     # f: a temporary file next to path
        np.savez(f, **arrays)
    # here path holds exactly what was written, durably

What it does, in order:

1. creates the folder of ``path`` if needed;
2. creates a temporary file in that folder (same file system, so the rename below is atomic)
   under a fresh random name with ``O_CREAT | O_EXCL``: two threads or processes writing the same
   target never share a temporary file;
3. creates it with permissions 0o666, which the kernel reduces by the umask (and the folder's
   default ACL), exactly as ``open(path, "w")`` would for a new file. The umask is never read or
   changed (``os.umask`` is process-wide and racy between threads);
4. hands it to the caller; on a clean exit flushes it, ``fsync``\\ s it, renames it over ``path``
   (``os.replace``) and ``fsync``\\ s the folder, so the rename itself survives a power loss (where
   the OS can sync a folder: Windows cannot, and is skipped silently);
5. on any failure, the caller's exception, ``KeyboardInterrupt`` included, or its own, deletes the
   temporary file and re-raises: ``path`` keeps its previous content (or stays absent). An
   ``OSError`` that names no file (a write refused: a full disk, ``EFBIG`` under a file-size
   limit) is raised again as the same error naming ``path``, so a message says which file.

The file gets a new inode: the permissions are those of a new file (the umask's), not those of
the file it replaces, and a symlink at ``path`` is replaced by the file, not followed.

This module imports only the standard library (no matplotlib: ``atomic_save_figure`` only calls
``fig.savefig``).
"""
import contextlib
import errno
import os
import secrets
from pathlib import Path

__all__ = ["atomic_save_figure", "atomic_write", "atomic_write_text"]

_MODES = {"w": "w", "wt": "w", "wb": "wb"}

# errors with which an OS refuses to fsync a folder (rather than failing to write it): Windows
# cannot open one (EACCES), some file systems do not sync them (EINVAL, ENOTSUP)
_REFUSED = {errno.EACCES, errno.EPERM, errno.EINVAL, errno.EISDIR, errno.EBADF,
            getattr(errno, "ENOTSUP", errno.EINVAL), getattr(errno, "EOPNOTSUPP", errno.EINVAL),
            getattr(errno, "ENOSYS", errno.EINVAL)}


@contextlib.contextmanager
def atomic_write(path, mode="wb", *, encoding="utf-8", newline=None):
    """Write ``path`` atomically and durably: ``with atomic_write(path, "wb") as f: ...``.

    Parameters
    ----------
    path : str or os.PathLike
        The target. Its folder is created if needed.
    mode : "wb" (default), "w" or "wt"
        Binary or text. Do not close ``f`` in the block; the context manager does.
    encoding, newline : text mode only
        As for ``open``; the encoding is UTF-8 unless given (never the locale's).

    Yields
    ------
    file object
        A new temporary file in the folder of ``path``, mode 0o666 less the umask.

    Raises
    ------
    ValueError
        ``mode`` is not one of the above.
    OSError
        The folder or the file cannot be written (the temporary file is removed).
    Any exception of the block is re-raised after the temporary file is removed; ``path`` is
    then untouched.
    """
    if mode not in _MODES:
        raise ValueError(f"atomic_write mode must be 'wb', 'w' or 'wt', got {mode!r}")
    binary = mode == "wb"
    path = Path(path)
    folder = path.parent
    _make_folder(folder)
    fd, tmp = _create_temp(folder, path.name)
    try:
        f = os.fdopen(fd, _MODES[mode], **({} if binary else
                                            {"encoding": encoding, "newline": newline}))
    except BaseException:
        os.close(fd)
        _unlink(tmp)
        raise
    try:
        with f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:
        _unlink(tmp)
        if e.filename is None and e.errno is not None:
            # a failed write (a full disk, a file-size limit) names no file: say where (an
            # error of the caller's own, errno None, goes on as it is)
            raise OSError(e.errno, e.strerror, str(path)) from e
        raise
    except BaseException:
        _unlink(tmp)
        raise
    _fsync_folder(folder)


def atomic_write_text(path, text, encoding="utf-8"):
    """Write the string ``text`` to ``path`` atomically (``atomic_write``). Returns the Path."""
    with atomic_write(path, "w", encoding=encoding) as f:
        f.write(text)
    return Path(path)


def atomic_save_figure(fig, path, **savefig_kw):
    """``fig.savefig`` into ``path`` atomically (``atomic_write``). Returns the Path.

    ``fig`` is a matplotlib Figure (this module never imports matplotlib). The format is
    ``savefig_kw["format"]`` if given, else the suffix of ``path`` (".svg", ".pdf", ...), else
    PNG. If ``savefig`` raises, no temporary file is left and ``path`` keeps its old content.
    """
    path = Path(path)
    fmt = savefig_kw.pop("format", None) or path.suffix.lstrip(".").lower() or "png"
    with atomic_write(path, "wb") as f:
        fig.savefig(f, format=fmt, **savefig_kw)
    return path


def _create_temp(folder, name):
    """(fd, path) of a new file ``.<name>.<random>.tmp`` in ``folder``, created exclusively with
    mode 0o666 (the kernel applies the umask). Like ``tempfile.mkstemp``, but mkstemp's mode is
    always 0o600."""
    flags = (os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
             | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_BINARY", 0)
             | getattr(os, "O_NOINHERIT", 0))
    for _ in range(100):
        tmp = folder / f".{name}.{secrets.token_hex(8)}.tmp"
        try:
            return os.open(tmp, flags, 0o666), tmp
        except FileExistsError:     # 64 random bits: only by an astronomically rare chance
            continue
    raise FileExistsError(errno.EEXIST, "no free temporary file name", str(folder))


def _make_folder(folder):
    """``folder.mkdir(parents=True, exist_ok=True)``, and each folder it creates made durable
    by syncing the folder that holds it."""
    missing = []
    f = folder
    while not f.is_dir():
        missing.append(f)
        if f.parent == f:
            break
        f = f.parent
    for f in reversed(missing):
        try:
            f.mkdir()
        except FileExistsError:
            if not f.is_dir():      # a file in the way: let mkdir's error say so
                raise
            continue                # another thread or process made it first
        _fsync_folder(f.parent)


def _fsync_folder(folder):
    """fsync a folder, so that a rename or a new entry in it survives a power loss. Skipped
    silently where the OS refuses (Windows cannot open a folder)."""
    try:
        fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError as e:
        if e.errno in _REFUSED:
            return
        raise
    try:
        os.fsync(fd)
    except OSError as e:
        if e.errno not in _REFUSED:
            raise
    finally:
        os.close(fd)


def _unlink(path):
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
