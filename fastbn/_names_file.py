"""Finding names.txt (``fastbn.data.locate_names``): an explicit path, else ``$FASTBN_DATA``, else
the user cache ``$XDG_CACHE_HOME/fastbn/names.txt`` (default ``~/.cache/fastbn/names.txt``), else
one download from ``NAMES_URL`` into that cache, checked against ``NAMES_SHA256`` before it is
used. The names are ``fastbn.data``'s (this module holds its file-finding half). Standard library
only.
"""
from __future__ import annotations

import hashlib
import http.client
import os
import urllib.error
import urllib.request
import warnings
from pathlib import Path

from ._fileio import atomic_write

__all__ = ["ENV_VAR", "NAMES_SHA256", "NAMES_URL", "ChecksumError", "DatasetUnavailableError",
           "DownloadError", "cache_path", "download", "locate_names", "sha256_file"]

NAMES_URL = "https://raw.githubusercontent.com/karpathy/makemore/master/names.txt"
NAMES_SHA256 = "0a30b5557f192f32ab962680889aac5f6fda0f4cecf40a6d0b5694f58ea8cc4d"
ENV_VAR = "FASTBN_DATA"

_CHUNK = 1 << 16


class ChecksumError(ValueError):
    """A file's SHA-256 is not the expected one."""


class DownloadError(OSError):
    """A download failed (network, HTTP status, or a truncated body)."""


class DatasetUnavailableError(OSError):
    """names.txt is neither given, nor cached, nor downloadable; the message says how to
    provide it."""



def cache_path() -> Path:
    """Where the downloaded names.txt lives: ``$XDG_CACHE_HOME/fastbn/names.txt``.

    ``XDG_CACHE_HOME`` defaults to ``~/.cache`` when unset or empty.

    Returns
    -------
    pathlib.Path
        The file's path (it may not exist yet).
    """
    root = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(root) / "fastbn" / "names.txt"


def sha256_file(path: str | os.PathLike[str]) -> str:
    """Hex SHA-256 of the file at ``path``.

    Parameters
    ----------
    path : str or os.PathLike
        The file.

    Returns
    -------
    str
        64 hexadecimal digits.
    """
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(_CHUNK), b""):
            h.update(chunk)
    return h.hexdigest()


def download(url: str, dest: str | os.PathLike[str], sha256: str | None = NAMES_SHA256,
             timeout: float = 30) -> Path:
    """Download ``url`` to ``dest`` atomically, after checking its SHA-256.

    The body is streamed into a temporary file next to ``dest`` (``fastbn._fileio.atomic_write``:
    same folder, so the final ``os.replace`` is an atomic rename, synced), hashed on the way, and
    moved into place only if the hash is ``sha256``. On any failure the temporary file is
    deleted: ``dest`` is never left holding a partial or wrong file (an existing ``dest`` is
    untouched). Threads or processes downloading to the same ``dest`` at once each write their
    own temporary file; the last rename wins, and every one is a complete, checked file. The
    file's permissions are those of any new file (0o666 less the umask).

    Parameters
    ----------
    url : str
        Anything ``urllib.request.urlopen`` accepts (http, https, file).
    dest : str or os.PathLike
        Final path; its folder is created if needed.
    sha256 : str or None
        Expected hex digest (case-insensitive). ``None`` skips the check.
    timeout : float
        Seconds for the connection and for each read.

    Returns
    -------
    Path
        ``dest``.

    Raises
    ------
    DownloadError
        Network failure, HTTP error status, or fewer bytes than the Content-Length announced.
    ChecksumError
        The downloaded bytes hash to something other than ``sha256``.
    """
    dest = Path(dest)
    with atomic_write(dest, "wb") as out:    # removed on any failure below: dest untouched
        h = hashlib.sha256()
        received = 0
        try:
            with urllib.request.urlopen(url, timeout=timeout) as resp:
                expected_len = resp.headers.get("Content-Length")
                for chunk in iter(lambda: resp.read(_CHUNK), b""):
                    out.write(chunk)
                    h.update(chunk)
                    received += len(chunk)
        except (OSError, http.client.HTTPException) as e:
            # urllib.error.HTTPError/URLError, timeouts and resets are OSErrors.
            raise DownloadError(f"could not download {url}: {_reason(e)}") from e
        if expected_len is not None and received != int(expected_len):
            raise DownloadError(
                f"could not download {url}: got {received} bytes, "
                f"the server announced {expected_len} (connection cut?)"
            )
        actual = h.hexdigest()
        if sha256 is not None and actual != sha256.lower():
            raise ChecksumError(
                f"SHA-256 mismatch for {url}: expected {sha256.lower()}, got {actual} "
                f"({received} bytes); the file was not saved"
            )
    return dest


_download = download  # locate_names has a parameter called ``download``


def _reason(e: BaseException) -> str:
    if isinstance(e, urllib.error.HTTPError):
        return f"HTTP {e.code} {e.reason}"
    if isinstance(e, urllib.error.URLError):
        return str(e.reason)
    return f"{type(e).__name__}: {e}"


def _how_to_provide(cached: Path, url: str) -> str:
    return (
        "Provide names.txt in one of these ways:\n"
        "  - pass its path: --data PATH (or path=... in Python)\n"
        f"  - set the environment variable {ENV_VAR}=/path/to/names.txt\n"
        f"  - place it at {cached}\n"
        f"It can be downloaded from {url}"
    )


def locate_names(path: str | os.PathLike[str] | None = None, *, download: bool = True,
                 url: str = NAMES_URL) -> Path:
    """Find names.txt, downloading it into the user cache if needed.

    Lookup order:

    1. ``path`` if given (it must exist);
    2. the environment variable ``FASTBN_DATA`` if set and non-empty (it must exist);
    3. the cache, ``$XDG_CACHE_HOME/fastbn/names.txt`` (default ``~/.cache/fastbn/names.txt``);
    4. a download from ``url`` into the cache, verified against ``NAMES_SHA256``
       (``download=True``).

    Files from 1 and 2 are used as given (they may be any word list). A cached file is used as is,
    but its SHA-256 is checked on every call (about 1 ms): on a mismatch a ``UserWarning`` says so
    and how to re-download. It is not an error, since a file may have been placed there by hand.

    Parameters
    ----------
    path : str or os.PathLike, optional
        Explicit file, e.g. from the ``--data`` option.
    download : bool
        Whether step 4 may run.
    url : str
        Where to download from (a mirror of names.txt; the hash is always ``NAMES_SHA256``).

    Returns
    -------
    Path

    Raises
    ------
    FileNotFoundError
        ``path`` or ``$FASTBN_DATA`` names a file that does not exist.
    DatasetUnavailableError
        Not cached, and downloading is disabled or failed (offline, HTTP error...).
    ChecksumError
        The downloaded file is not names.txt (nothing is saved).
    """
    if path is not None:
        p = Path(path).expanduser()
        if not p.is_file():
            raise FileNotFoundError(f"names file not found: {p}")
        return p
    env = os.environ.get(ENV_VAR)
    if env:
        p = Path(env).expanduser()
        if not p.is_file():
            raise FileNotFoundError(f"{ENV_VAR}={env} but there is no such file: {p}")
        return p
    cached = cache_path()
    if cached.is_file():
        actual = sha256_file(cached)
        if actual != NAMES_SHA256:
            warnings.warn(
                f"{cached} is not the expected names.txt (SHA-256 {actual}, expected "
                f"{NAMES_SHA256}); using it as is. Delete it to download it again.",
                stacklevel=2,
            )
        return cached
    if not download:
        raise DatasetUnavailableError(
            f"names.txt is not cached at {cached} and downloading is disabled.\n"
            + _how_to_provide(cached, url)
        )
    try:
        return _download(url, cached, sha256=NAMES_SHA256)
    except DownloadError as e:
        raise DatasetUnavailableError(
            f"names.txt is not cached and the download failed ({e}).\n"
            + _how_to_provide(cached, url)
        ) from e
