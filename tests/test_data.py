"""Tests for fastbn.data: the names dataset, its splits, and the offline-safe download.

The real names.txt comes from the environment variable FASTBN_DATA (CI sets it); tests that need
it are skipped otherwise. Downloads are tested against a local http.server, never the internet.
"""
import functools
import hashlib
import http.server
import os
import random
import shutil
import socket
import string
import threading
from pathlib import Path

import numpy as np
import pytest

from fastbn import data

REAL_NAMES = os.environ.get("FASTBN_DATA")  # read before any test unsets it


@pytest.fixture
def names_path():
    if not REAL_NAMES:
        pytest.skip("FASTBN_DATA is not set; point it at names.txt to run the real-data tests")
    if not Path(REAL_NAMES).is_file():
        pytest.skip(f"FASTBN_DATA={REAL_NAMES} does not exist")
    return Path(REAL_NAMES)


@pytest.fixture
def names(names_path):
    return data.load_dataset(names_path)


@pytest.fixture
def isolated(tmp_path, monkeypatch):
    """No FASTBN_DATA, an empty cache under tmp_path, no proxies; returns the cache file path."""
    monkeypatch.delenv("FASTBN_DATA", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setenv("no_proxy", "*")
    monkeypatch.setenv("NO_PROXY", "*")
    cached = data.cache_path()
    assert cached == tmp_path / "cache" / "fastbn" / "names.txt"
    return cached


class _Handler(http.server.SimpleHTTPRequestHandler):
    def do_GET(self):
        self.server.requests.append(self.path)
        if self.path == "/truncated":  # announces 1000 bytes, sends 12, closes (HTTP/1.0)
            self.send_response(200)
            self.send_header("Content-Length", "1000")
            self.end_headers()
            self.wfile.write(b"abc\n" * 3)
            return
        super().do_GET()

    def log_message(self, *args):
        pass


@pytest.fixture
def server(tmp_path):
    """A local HTTP server on 127.0.0.1 serving tmp_path/srv; records the paths requested."""
    root = tmp_path / "srv"
    root.mkdir()
    httpd = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(_Handler, directory=str(root))
    )
    httpd.requests = []
    thread = threading.Thread(target=httpd.serve_forever, args=(0.02,), daemon=True)
    thread.start()
    httpd.root = root
    httpd.url = f"http://127.0.0.1:{httpd.server_address[1]}"
    yield httpd
    httpd.shutdown()
    httpd.server_close()
    thread.join(timeout=5)


def _closed_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _files(folder):
    return sorted(p.name for p in Path(folder).iterdir()) if Path(folder).exists() else []


def _naive_build(words, stoi, block_size):
    """The lecture's loop, verbatim."""
    X, Y = [], []
    for w in words:
        context = [0] * block_size
        for ch in w + ".":
            ix = stoi[ch]
            X.append(context)
            Y.append(ix)
            context = context[1:] + [ix]
    return np.array(X, dtype=np.int64).reshape(-1, block_size), np.array(Y, dtype=np.int64)


# ----------------------------------------------------------------------------------------------
# the real names.txt


def test_names_words_and_vocab(names):
    assert len(names.words) == 32033
    assert names.words[:3] == ["emma", "olivia", "ava"]
    assert names.vocab.size == len(names.vocab) == 27
    assert names.vocab.chars == "." + string.ascii_lowercase
    assert names.vocab.stoi["."] == 0
    assert names.vocab.stoi["a"] == 1 and names.vocab.stoi["z"] == 26
    assert names.vocab.itos[26] == "z"


def test_names_split_sizes_shapes_dtypes(names):
    sizes = [len(names.Ytr), len(names.Ydev), len(names.Yte)]
    assert sizes == [182625, 22655, 22866]
    for X, Y in [(names.Xtr, names.Ytr), (names.Xdev, names.Ydev), (names.Xte, names.Yte)]:
        assert X.dtype == np.int64 and Y.dtype == np.int64
        assert X.shape == (len(Y), 3) and Y.ndim == 1
        assert X.min() >= 0 and X.max() < 27 and Y.min() >= 0 and Y.max() < 27
    assert names.block_size == 3
    assert names.split("train")[0] is names.Xtr and names.split("train")[1] is names.Ytr
    assert names.split("val")[0] is names.Xdev and names.split("dev")[1] is names.Ydev
    assert names.split("test")[0] is names.Xte and names.split("test")[1] is names.Yte
    with pytest.raises(ValueError, match="unknown split 'valid'"):
        names.split("valid")


def test_names_split_is_the_lectures_and_deterministic(names, names_path):
    state = random.getstate()
    try:
        words = list(names.words)
        random.seed(42)
        random.shuffle(words)
    finally:
        random.setstate(state)
    n1, n2 = int(0.8 * len(words)), int(0.9 * len(words))
    train, dev, test = data.split_words(names.words)
    assert (train, dev, test) == (words[:n1], words[n1:n2], words[n2:])
    assert len(train) == 25626 and len(dev) == 3203 and len(test) == 3204

    again = data.load_dataset(names_path)
    for field in data.Dataset.__dataclass_fields__:
        va, vb = getattr(names, field), getattr(again, field)
        if isinstance(va, np.ndarray):
            np.testing.assert_array_equal(va, vb)
        else:
            assert va == vb
    np.testing.assert_array_equal(names.Ytr, _naive_build(train, names.vocab.stoi, 3)[1])


def test_names_block_sizes(names_path):
    ds = data.load_dataset(names_path, block_size=8)
    assert ds.Xtr.shape == (182625, 8) and ds.block_size == 8


def test_emma_examples_decode_like_the_lecture(names):
    X, Y = data.build_dataset(["emma"], names.vocab, block_size=3)
    got = [(names.vocab.decode(x), names.vocab.decode([y])) for x, y in zip(X, Y)]
    assert got == [("...", "e"), ("..e", "m"), (".em", "m"), ("emm", "a"), ("mma", ".")]


def test_build_dataset_matches_lecture_loop_on_all_names(names):
    for block_size in (1, 2, 3, 5, 8):
        X, Y = data.build_dataset(names.words, names.vocab, block_size)
        Xn, Yn = _naive_build(names.words, names.vocab.stoi, block_size)
        np.testing.assert_array_equal(X, Xn)
        np.testing.assert_array_equal(Y, Yn)
        assert X.dtype == np.int64 and X.shape == (228146, block_size)


def test_locate_names_downloads_once_into_cache(isolated, server, names_path):
    shutil.copy(names_path, server.root / "names.txt")
    url = server.url + "/names.txt"
    got = data.locate_names(url=url)
    assert got == isolated
    assert data.sha256_file(got) == data.NAMES_SHA256
    assert got.read_bytes() == names_path.read_bytes()
    assert server.requests == ["/names.txt"]
    assert _files(isolated.parent) == ["names.txt"]  # no temp file left behind

    assert data.locate_names(url=url) == isolated
    assert server.requests == ["/names.txt"]  # the second call used the cache
    ds = data.load_dataset()  # the cache is found with no path and no FASTBN_DATA
    assert ds.path == isolated and len(ds.Ytr) == 182625
    assert server.requests == ["/names.txt"]


# ----------------------------------------------------------------------------------------------
# small files written by the tests


def test_custom_word_file(tmp_path):
    f = tmp_path / "words.txt"
    f.write_bytes(b"abc\r\ncab\n\n   \n  xyz  \n")
    words = data.load_words(f)
    assert words == ["abc", "cab", "xyz"]
    vocab = data.Vocab.from_words(words)
    assert vocab.chars == ".abcxyz" and vocab.size == 7
    assert vocab.itos == list(".abcxyz") and vocab.stoi == {c: i for i, c in enumerate(".abcxyz")}
    assert vocab.encode("cab") == [3, 1, 2]
    assert vocab.decode([3, 1, 2, 0]) == "cab."
    assert vocab.decode(np.array([6, 5, 4])) == "zyx"
    assert data.Vocab.from_chars(vocab.chars) == vocab
    assert repr(vocab) == "Vocab('.abcxyz')"

    ds = data.load_dataset(f, block_size=2)
    assert ds.vocab == vocab and ds.words == words and ds.path == f
    assert len(ds.Ytr) + len(ds.Ydev) + len(ds.Yte) == sum(len(w) + 1 for w in words)


def test_unicode_words_and_bom(tmp_path):
    f = tmp_path / "words.txt"
    f.write_bytes("\ufeffzoë\nchloé\nbjörn\n".encode())
    words = data.load_words(f)
    assert words == ["zoë", "chloé", "björn"]
    vocab = data.Vocab.from_words(words)
    assert vocab.itos[0] == "." and vocab.itos[1:] == sorted(set("zoëchloébjörn"))
    X, Y = data.build_dataset(words, vocab, 4)
    Xn, Yn = _naive_build(words, vocab.stoi, 4)
    np.testing.assert_array_equal(X, Xn)
    np.testing.assert_array_equal(Y, Yn)


def test_build_dataset_edge_cases():
    vocab = data.Vocab.from_words(["ab"])
    X, Y = data.build_dataset([], vocab, 3)
    assert X.shape == (0, 3) and Y.shape == (0,) and X.dtype == Y.dtype == np.int64
    X, Y = data.build_dataset(["b"], vocab, 1)
    assert X.tolist() == [[0], [2]] and Y.tolist() == [2, 0]
    for bad in (0, -1, 2.5):
        with pytest.raises(ValueError, match="block_size"):
            data.build_dataset(["ab"], vocab, bad)
    with pytest.raises(ValueError, match="'c' is not in the vocabulary"):
        data.build_dataset(["abc"], vocab, 3)


def test_build_dataset_refuses_a_context_beyond_the_machines_memory(monkeypatch):
    """The estimate comes before any allocation: a context that would need more memory than the
    machine has is a ValueError saying so, not a process the OS ends."""
    vocab = data.Vocab.from_words(["ab"])
    monkeypatch.setattr(data, "_physical_memory", lambda: 2**30)      # a 1 GiB machine
    with pytest.raises(ValueError, match=r"needs about 7 GiB .* more than this machine's 1 GiB"):
        data.build_dataset(["ab"] * 1000, vocab, 180_000)   # 3,000 contexts of 180,000 ids
    X, _ = data.build_dataset(["ab"] * 1000, vocab, 8)       # the usual sizes are untouched
    assert X.shape == (3000, 8)


def test_require_splits_names_the_empty_ones(tmp_path):
    f = tmp_path / "w.txt"
    f.write_text("anna\nbob\notto\nada\nabba\n")          # 4 / 0 / 1 words
    ds = data.load_dataset(f)
    assert ds.require_splits("train", "test") is ds
    with pytest.raises(ValueError, match="holds 5 words: .* its val split is empty"):
        ds.require_splits()
    f.write_text("anna\n")
    with pytest.raises(ValueError, match="its train and val splits are empty"):
        data.load_dataset(f).require_splits()


def test_split_words_is_random_seed_42_shuffle():
    words = [f"w{i}" for i in range(1000)]
    state = random.getstate()
    try:
        expected = list(words)
        random.seed(42)
        random.shuffle(expected)
    finally:
        random.setstate(state)
    before = random.getstate()
    train, dev, test = data.split_words(words)
    assert random.getstate() == before  # the global random state is untouched
    assert words == [f"w{i}" for i in range(1000)]  # the input is not shuffled in place
    assert train + dev + test == expected
    assert (len(train), len(dev), len(test)) == (800, 100, 100)
    assert data.split_words(words, seed=1) != (train, dev, test)


def test_vocab_errors():
    with pytest.raises(ValueError, match="token"):
        data.Vocab.from_chars("abc")
    with pytest.raises(ValueError, match="duplicate"):
        data.Vocab.from_chars(".abca")
    with pytest.raises(ValueError, match="token"):
        data.Vocab.from_words(["a.b"])
    vocab = data.Vocab.from_chars(".ab")
    with pytest.raises(ValueError, match="'q' of 'aqb' is not in the vocabulary"):
        vocab.encode("aqb")
    with pytest.raises(ValueError, match="id 3 is out of range"):
        vocab.decode([1, 3])
    with pytest.raises(ValueError, match="id -1 is out of range"):
        vocab.decode([-1])


def test_load_words_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.txt"):
        data.load_words(tmp_path / "nope.txt")


@pytest.mark.parametrize("content", [b"", b"\n\n  \n\t\n"])
def test_load_words_empty_file(tmp_path, content):
    f = tmp_path / "empty.txt"
    f.write_bytes(content)
    with pytest.raises(ValueError, match="no words") as e:
        data.load_words(f)
    assert str(f) in str(e.value)


def test_load_words_binary_file(tmp_path):
    f = tmp_path / "model.bin"
    f.write_bytes(b"abc\ndef\n\x00\x01\x02\xff\xfe")
    with pytest.raises(ValueError, match="binary") as e:
        data.load_words(f)
    assert f"{f}:3:" in str(e.value)


def test_load_words_invalid_utf8(tmp_path):
    f = tmp_path / "latin1.txt"
    f.write_bytes("anna\nzoë\n".encode("latin-1"))
    with pytest.raises(ValueError, match="not valid UTF-8") as e:
        data.load_words(f)
    assert f"{f}:2:" in str(e.value)


def test_load_words_token_character(tmp_path):
    f = tmp_path / "dots.txt"
    f.write_text("anna\nbob\nj.r.\n")
    with pytest.raises(ValueError, match="reserved") as e:
        data.load_words(f)
    assert f"{f}:3:" in str(e.value) and "'j.r.'" in str(e.value)


def test_load_words_line_too_long(tmp_path):
    f = tmp_path / "long.txt"
    f.write_text("anna\n" + "x" * 21 + "\n")
    assert data.load_words(f, max_len=21)[1] == "x" * 21
    with pytest.raises(ValueError, match="21 characters is longer than max_len=20") as e:
        data.load_words(f, max_len=20)
    assert f"{f}:2:" in str(e.value)


# ----------------------------------------------------------------------------------------------
# locating and downloading, against a local server


def test_locate_names_explicit_path_and_env(tmp_path, monkeypatch, isolated):
    f = tmp_path / "mine.txt"
    f.write_text("abc\n")
    other = tmp_path / "other.txt"
    other.write_text("xyz\n")
    assert data.locate_names(f, download=False) == f
    monkeypatch.setenv("FASTBN_DATA", str(other))
    assert data.locate_names(download=False) == other
    assert data.locate_names(f, download=False) == f  # an explicit path wins over the env var
    with pytest.raises(FileNotFoundError, match="missing.txt"):
        data.locate_names(tmp_path / "missing.txt")
    monkeypatch.setenv("FASTBN_DATA", str(tmp_path / "gone.txt"))
    with pytest.raises(FileNotFoundError, match="FASTBN_DATA=.*gone.txt"):
        data.locate_names()


def test_download_small_file(tmp_path, server, isolated):
    payload = b"abc\ncab\nxyz\n"
    (server.root / "w.txt").write_bytes(payload)
    dest = tmp_path / "new" / "dir" / "w.txt"
    got = data.download(server.url + "/w.txt", dest, sha256=hashlib.sha256(payload).hexdigest())
    assert got == dest and dest.read_bytes() == payload
    assert _files(dest.parent) == ["w.txt"]
    assert server.requests == ["/w.txt"]


def test_download_checksum_mismatch_leaves_nothing(tmp_path, server, isolated):
    payload = b"not the names\n"
    (server.root / "w.txt").write_bytes(payload)
    dest = tmp_path / "dl" / "w.txt"
    with pytest.raises(data.ChecksumError) as e:
        data.download(server.url + "/w.txt", dest, sha256="ab" * 32)
    assert isinstance(e.value, ValueError)
    assert "ab" * 32 in str(e.value) and hashlib.sha256(payload).hexdigest() in str(e.value)
    assert _files(dest.parent) == []

    dest.write_bytes(b"old\n")  # an existing file survives a failed download
    with pytest.raises(data.ChecksumError):
        data.download(server.url + "/w.txt", dest, sha256="ab" * 32)
    assert dest.read_bytes() == b"old\n" and _files(dest.parent) == ["w.txt"]

    (server.root / "names.txt").write_bytes(payload)  # a wrong file behind the names URL
    with pytest.raises(data.ChecksumError, match=data.NAMES_SHA256):
        data.locate_names(url=server.url + "/names.txt")
    assert _files(isolated.parent) == []


def test_download_http_404_leaves_nothing(tmp_path, server, isolated):
    dest = tmp_path / "dl" / "w.txt"
    with pytest.raises(data.DownloadError, match="404") as e:
        data.download(server.url + "/missing.txt", dest)
    assert server.url + "/missing.txt" in str(e.value)
    assert _files(dest.parent) == []

    with pytest.raises(data.DatasetUnavailableError, match="404"):
        data.locate_names(url=server.url + "/names.txt")
    assert _files(isolated.parent) == []


def test_download_truncated_body_leaves_nothing(tmp_path, server, isolated):
    dest = tmp_path / "dl" / "w.txt"
    with pytest.raises(data.DownloadError, match="1000"):
        data.download(server.url + "/truncated", dest, sha256=None)
    assert _files(dest.parent) == []


def test_offline_error_says_how_to_provide_the_file(isolated):
    url = f"http://127.0.0.1:{_closed_port()}/names.txt"
    with pytest.raises(data.DatasetUnavailableError) as e:
        data.locate_names(url=url)
    msg = str(e.value)
    assert isinstance(e.value, OSError)
    assert "FASTBN_DATA" in msg and "--data" in msg and str(isolated) in msg and url in msg
    assert not isolated.exists() and _files(isolated.parent) == []
    with pytest.raises(data.DatasetUnavailableError, match="FASTBN_DATA"):
        data.load_dataset(download=False)


def test_download_disabled_makes_no_request(server, isolated):
    with pytest.raises(data.DatasetUnavailableError, match="downloading is disabled") as e:
        data.locate_names(download=False, url=server.url + "/names.txt")
    assert str(isolated) in str(e.value)
    assert server.requests == []


def test_cached_file_with_wrong_hash_warns_but_is_used(isolated):
    isolated.parent.mkdir(parents=True)
    isolated.write_text("abc\n")
    with pytest.warns(UserWarning, match="not the expected names.txt"):
        assert data.locate_names(download=False) == isolated
