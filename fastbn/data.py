"""The character-level names dataset of makemore (Karpathy, "Building makemore", parts 2-4).

One name per line in ``names.txt`` (32,033 names, 228 KB). Each name becomes ``len(name) + 1``
training examples: the ``block_size`` previous characters predict the next one, and the token
``"."`` (id 0) both pads the context at the start of a name and marks its end::

    emma, block_size 3:   ... -> e   ..e -> m   .em -> m   emm -> a   mma -> .

Finding the file (``locate_names``): an explicit path, else ``$FASTBN_DATA``, else the user cache
``$XDG_CACHE_HOME/fastbn/names.txt`` (default ``~/.cache/fastbn/names.txt``), else one download
from ``NAMES_URL`` into that cache, checked against ``NAMES_SHA256`` before it is used.

This module uses only the standard library and NumPy, so it imports without the compiled kernels.

Shapes: N is the number of examples, T = ``block_size`` the context length.
"""
from __future__ import annotations

import os
import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from ._names_file import (  # the constants are fastbn.data's too (fastbn.data.NAMES_URL, ...)
    ENV_VAR,  # noqa: F401
    NAMES_SHA256,  # noqa: F401
    NAMES_URL,  # noqa: F401
    ChecksumError,
    DatasetUnavailableError,
    DownloadError,
    cache_path,
    download,
    locate_names,
    sha256_file,
)

# the functions and classes of its page of the API
__all__ = ["ChecksumError", "DownloadError", "DatasetUnavailableError", "cache_path",
           "sha256_file", "download", "locate_names", "load_words", "Vocab", "build_dataset",
           "split_words", "Dataset", "load_dataset"]

TOKEN = "."  # start/end token, id 0


# ----------------------------------------------------------------------------------------------
# words and vocabulary


def load_words(path: str | os.PathLike[str], *, max_len: int = 1000) -> list[str]:
    """Read a word list: UTF-8 text, one word per line.

    Each line is stripped of surrounding whitespace (so ``\\r\\n`` endings are fine) and blank
    lines are skipped; a leading UTF-8 byte-order mark is ignored. Inner spaces are kept and become
    vocabulary characters.

    Parameters
    ----------
    path : str or os.PathLike
    max_len : int
        Longest allowed word, in characters (a guard against feeding in the wrong file).

    Returns
    -------
    list of str
        The words in file order.

    Raises
    ------
    FileNotFoundError
        No such file.
    ValueError
        The file is binary (NUL bytes) or not UTF-8, a word contains the token ``"."``, a word is
        longer than ``max_len``, or there are no words. The message gives the path and line number.
    """
    path = Path(path)
    if max_len < 1:
        raise ValueError(f"max_len must be >= 1, got {max_len}")
    data = path.read_bytes()
    if b"\x00" in data:
        line = data[: data.index(b"\x00")].count(b"\n") + 1
        raise ValueError(f"{path}:{line}: NUL byte; this looks like a binary file, not a word list")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        raise ValueError(f"{path}:{line}: not valid UTF-8 ({e.reason} at byte {e.start})") from None
    words = []
    for lineno, raw in enumerate(text.split("\n"), start=1):
        word = raw.strip()
        if not word:
            continue
        if TOKEN in word:
            raise ValueError(
                f"{path}:{lineno}: {word[:50]!r} contains {TOKEN!r}, which is reserved as the "
                "start/end token"
            )
        if len(word) > max_len:
            raise ValueError(
                f"{path}:{lineno}: line of {len(word)} characters is longer than "
                f"max_len={max_len} (is this really a word list?)"
            )
        words.append(word)
    if not words:
        raise ValueError(f"{path}: no words (the file is empty or blank)")
    return words


class Vocab:
    """Character <-> id mapping. The token ``"."`` is id 0; the other characters follow.

    ``Vocab.from_words`` sorts the characters (by code point), as the lecture does:
    for names.txt, ``"."`` = 0, ``"a"`` = 1, ..., ``"z"`` = 26, size 27.

    Parameters
    ----------
    itos : sequence of str
        ``itos[i]`` is the character with id ``i``; ``itos[0] == "."``.

    Attributes
    ----------
    itos : list of str
        As given.
    stoi : dict of str to int
        The inverse of ``itos``.
    size : int
        Number of ids, ``len(itos)``.
    """

    def __init__(self, itos):
        itos = list(itos)
        if not itos or itos[0] != TOKEN:
            raise ValueError(f"the first character must be the token {TOKEN!r}, got {itos[:1]}")
        for ch in itos:
            if not isinstance(ch, str) or len(ch) != 1:
                raise ValueError(f"vocabulary entries must be single characters, got {ch!r}")
        if len(set(itos)) != len(itos):
            raise ValueError(f"duplicate characters in vocabulary {''.join(itos)!r}")
        self.itos = itos
        self.stoi = {ch: i for i, ch in enumerate(itos)}
        self.size = len(itos)

    @classmethod
    def from_words(cls, words: Iterable[str]) -> Vocab:
        """Vocabulary of every character in ``words``, sorted, after the token."""
        chars = sorted(set("".join(words)))
        if TOKEN in chars:
            raise ValueError(f"words must not contain the token {TOKEN!r}")
        return cls([TOKEN, *chars])

    @classmethod
    def from_chars(cls, chars: str) -> Vocab:
        """Rebuild from ``chars`` (as saved from ``Vocab.chars``: the token first, then the
        rest)."""
        return cls(chars)

    @property
    def chars(self) -> str:
        """All characters in id order, token included, e.g. ``".abcdefghijklmnopqrstuvwxyz"``."""
        return "".join(self.itos)

    def __len__(self) -> int:
        return self.size

    def __eq__(self, other) -> bool:
        return isinstance(other, Vocab) and self.itos == other.itos

    def __repr__(self) -> str:
        return f"Vocab({self.chars!r})"

    def encode(self, word: str) -> list[int]:
        """Ids of the characters of ``word``. ``"."`` encodes to 0; unknown characters raise.

        Parameters
        ----------
        word : str
            Characters of the vocabulary.

        Returns
        -------
        list of int
            Their ids.

        Raises
        ------
        ValueError
            For a character that is not in the vocabulary.
        """
        try:
            return [self.stoi[ch] for ch in word]
        except KeyError as e:
            raise ValueError(
                f"character {e.args[0]!r} of {word!r} is not in the vocabulary {self.chars!r}"
            ) from None

    def decode(self, ids: Iterable[int]) -> str:
        """Characters of ``ids``, one per id: 0 becomes ``"."`` (nothing is stripped or cut).

        So ``decode([0, 0, 5])`` is ``"..e"`` (a context), and ``decode(encode(w)) == w``.
        Strip the token yourself when turning a sample into a name.

        Parameters
        ----------
        ids : iterable of int
            Ids of the vocabulary.

        Returns
        -------
        str
            The characters.
        """
        out = []
        for i in ids:
            i = int(i)
            if not 0 <= i < self.size:
                raise ValueError(f"id {i} is out of range for a vocabulary of size {self.size}")
            out.append(self.itos[i])
        return "".join(out)


# ----------------------------------------------------------------------------------------------
# examples and splits


def build_dataset(words: Sequence[str], vocab: Vocab, block_size: int = 3,
                  ) -> tuple[np.ndarray, np.ndarray]:
    """Next-character examples from ``words``, exactly as in the lecture.

    Equivalent to (vectorized here, linear in the number of characters)::

        for w in words:
            context = [0] * block_size
            for ch in w + ".":
                ix = stoi[ch]
                X.append(context); Y.append(ix)
                context = context[1:] + [ix]

    Parameters
    ----------
    words : list of str
    vocab : Vocab
        Must contain every character of ``words``.
    block_size : int
        T, the context length.

    Returns
    -------
    X : ndarray of int64, shape (N, T)
        Contexts, N = sum(len(w) + 1 for w in words).
    Y : ndarray of int64, shape (N,)
        The id that follows each context.
    """
    if int(block_size) != block_size or block_size < 1:
        raise ValueError(f"block_size must be a positive integer, got {block_size!r}")
    block_size = int(block_size)
    words = list(words)
    if not words:
        return np.zeros((0, block_size), np.int64), np.zeros(0, np.int64)
    _check_memory(words, block_size)
    # One stream, each word preceded by T tokens and followed by one: "...emma." "...olivia." ...
    pad = TOKEN * block_size
    stream = "".join(pad + w + TOKEN for w in words)
    ids = _encode_array(stream, vocab)  # (L,)
    # Targets are every position except the T padding tokens in front of each word.
    lengths = np.array([len(w) + 1 for w in words], dtype=np.int64)
    counts = np.empty(2 * len(words), dtype=np.int64)
    counts[0::2] = block_size
    counts[1::2] = lengths
    is_target = np.repeat(np.tile([False, True], len(words)), counts)  # (L,)
    pos = np.flatnonzero(is_target)  # (N,)
    windows = sliding_window_view(ids, block_size)  # (L - T + 1, T), windows[s] = ids[s:s+T]
    X = windows[pos - block_size]  # fancy indexing copies: (N, T)
    Y = ids[pos]
    return X, Y


def _physical_memory():
    """Bytes of memory of this machine, or None where the OS does not say."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):
        return None


def _check_memory(words, block_size):
    """ValueError before anything is allocated when the examples of ``words`` at ``block_size``
    would not fit in this machine's memory (X alone is N x T int64; the padded stream, its UTF-32
    encoding and its ids come first), rather than let the OS end the process."""
    n = sum(len(w) + 1 for w in words)                # N examples
    length = n + block_size * len(words)              # L, the padded stream
    need = 8 * n * block_size + 16 * length
    have = _physical_memory()
    if have is not None and need > have:
        raise ValueError(
            f"block_size {block_size:,} needs about {need / 2**30:,.0f} GiB for the "
            f"{n:,} contexts of {len(words):,} words, more than this machine's "
            f"{have / 2**30:,.0f} GiB: choose a smaller context")


def _encode_array(text, vocab):
    """Ids of the characters of ``text`` as an int64 array, via a sorted code-point table."""
    codes = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)  # (L,)
    table = np.array([ord(ch) for ch in vocab.itos], dtype=np.uint32)
    order = np.argsort(table)
    k = np.searchsorted(table[order], codes)
    k = np.minimum(k, len(table) - 1)
    ids = order[k]
    bad = table[ids] != codes
    if bad.any():
        ch = chr(int(codes[np.argmax(bad)]))
        raise ValueError(f"character {ch!r} is not in the vocabulary {vocab.chars!r}")
    return ids.astype(np.int64)


def split_words(words: Sequence[str], seed: int = 42,
                ) -> tuple[list[str], list[str], list[str]]:
    """Shuffle a copy of ``words`` and cut it 80% / 10% / 10%, as the lecture does.

    The shuffle is ``random.Random(seed).shuffle``, which gives the same order as the lecture's
    ``random.seed(42); random.shuffle(words)`` without touching the global random state. The input
    list is not modified.

    Returns
    -------
    train, dev, test : list of str
        ``shuffled[:n1]``, ``shuffled[n1:n2]``, ``shuffled[n2:]`` with ``n1 = int(0.8 * n)`` and
        ``n2 = int(0.9 * n)``.

    Parameters
    ----------
    words : sequence of str
        The words.
    seed : int, default 42
        The shuffle's seed (the lecture's).
    """
    shuffled = list(words)
    random.Random(seed).shuffle(shuffled)
    n1 = int(0.8 * len(shuffled))
    n2 = int(0.9 * len(shuffled))
    return shuffled[:n1], shuffled[n1:n2], shuffled[n2:]


_SPLITS = {"train": "tr", "val": "dev", "dev": "dev", "test": "te"}


@dataclass(repr=False)
class Dataset:
    """names.txt as ready-to-train arrays (see ``load_dataset``).

    ``words`` are all words in file order; ``vocab`` is built from all of them. The splits are
    int64 arrays: ``Xtr`` of shape (Ntr, T) and ``Ytr`` of shape (Ntr,), likewise ``dev`` and
    ``te``.

    Parameters
    ----------
    path : pathlib.Path
        The names file read.
    words : list of str
        All its words, in file order.
    vocab : Vocab
        The characters of all words.
    block_size : int
        T, the context length.
    Xtr, Ytr, Xdev, Ydev, Xte, Yte : numpy.ndarray of int64
        The train, val (dev) and test splits: contexts (N, T) and next characters (N,).
    """

    path: Path
    words: list
    vocab: Vocab
    block_size: int
    Xtr: np.ndarray
    Ytr: np.ndarray
    Xdev: np.ndarray
    Ydev: np.ndarray
    Xte: np.ndarray
    Yte: np.ndarray

    def __repr__(self):
        return (f"Dataset({self.path.name!r}: {len(self.words):,} words, vocabulary "
                f"{self.vocab.size} {self.vocab.chars[:8]!r}{'...' if self.vocab.size > 8 else ''}"
                f", block_size {self.block_size}; examples train {len(self.Xtr):,} / val "
                f"{len(self.Xdev):,} / test {len(self.Xte):,})")

    def require_splits(self, *names: str) -> Dataset:
        """``self`` if each named split (default: train and val) holds examples; ValueError
        naming the empty ones otherwise (a file of a few words leaves the 10 % splits empty:
        there would be nothing to train on, or no validation loss to report or rank by).

        Parameters
        ----------
        *names : str
            Split names (``"train"``, ``"val"``, ``"dev"``, ``"test"``).

        Returns
        -------
        Dataset
            ``self``.

        Raises
        ------
        ValueError
            Naming the empty splits.
        """
        names = names or ("train", "val")
        empty = [n for n in names if not len(self.split(n)[0])]
        if empty:
            n = len(self.words)
            raise ValueError(
                f"{self.path} holds {n:,} word{'s' if n != 1 else ''}: too few to split 80/10/10 "
                f"% (the lecture's split) with examples in every split: its "
                f"{' and '.join(empty)} split{'s are' if len(empty) > 1 else ' is'} empty; give "
                "it more words")
        return self

    def split(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        """``(X, Y)`` of ``"train"``, ``"val"`` (same as ``"dev"``), ``"dev"`` or ``"test"``.

        Parameters
        ----------
        name : {"train", "val", "dev", "test"}
            The split.

        Returns
        -------
        X : numpy.ndarray of int64, shape (N, T)
            Contexts.
        Y : numpy.ndarray of int64, shape (N,)
            Next characters.
        """
        try:
            suffix = _SPLITS[name]
        except KeyError:
            raise ValueError(f"unknown split {name!r}; expected one of {list(_SPLITS)}") from None
        return getattr(self, "X" + suffix), getattr(self, "Y" + suffix)


def load_dataset(path: str | os.PathLike[str] | None = None, block_size: int = 3, *,
                 download: bool = True) -> Dataset:
    """Locate, read, split and encode names.txt; the lecture's setup in one call.

    ``path`` and ``download`` are as in ``locate_names``. The vocabulary comes from all words,
    before the split (``split_words`` with seed 42). For names.txt at ``block_size=3`` the splits
    have 182,625 / 22,655 / 22,866 examples.

    Parameters
    ----------
    path : str or os.PathLike, optional
        The names file (default: ``$FASTBN_DATA``, the user cache, or a verified download).
    block_size : int, default 3
        T, the context length.
    download : bool, default True
        Download (and verify) the file when it is nowhere else.

    Returns
    -------
    Dataset
        The splits, encoded.
    """
    p = locate_names(path, download=download)
    words = load_words(p)
    vocab = Vocab.from_words(words)
    train, dev, test = split_words(words)
    Xtr, Ytr = build_dataset(train, vocab, block_size)
    Xdev, Ydev = build_dataset(dev, vocab, block_size)
    Xte, Yte = build_dataset(test, vocab, block_size)
    return Dataset(p, words, vocab, block_size, Xtr, Ytr, Xdev, Ydev, Xte, Yte)
