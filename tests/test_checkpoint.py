"""Tests for fastbn.checkpoint: round trip, atomic save, and refusal of bad files."""
import io
import json
import os
import re
import warnings
import zipfile
from pathlib import Path

import numpy as np
import pytest

import fastbn
from fastbn import CharMLP, checkpoint, data
from fastbn.model import ACTIVATIONS

REAL_NAMES = os.environ.get("FASTBN_DATA")
VOCAB = data.Vocab(".abcdef")


def trained(dtype=np.float32, **kw):
    """A small model a few SGD steps away from its init (buffers moved too)."""
    m = CharMLP(VOCAB, n_embd=4, n_hidden=8, dtype=dtype, seed=0, **kw)
    rng = np.random.default_rng(0)
    for _ in range(5):
        X, Y = rng.integers(0, 7, (16, 3)), rng.integers(0, 7, 16)
        m.train_step(X, Y, 0.1)
    return m


def batch(n=64):
    rng = np.random.default_rng(9)
    return rng.integers(0, 7, (n, 3)), rng.integers(0, 7, n)


@pytest.mark.parametrize("kw", [{}, {"dtype": np.float64},
                                {"n_layers": 2, "final_bn": True, "activation": "relu"},
                                {"batchnorm": False, "init": "fix_tanh"},
                                {"bn_unbiased": True}, {"bn_unbiased": True, "n_layers": 2,
                                                        "final_bn": True}]
                         + [{"activation": a} for a in ACTIVATIONS if a != "tanh"])
def test_round_trip_same_everything(tmp_path, kw):
    m = trained(**kw)
    path = fastbn.save(m, tmp_path / "m.npz", meta={"steps": 5, "losses": {"val": 2.1}})
    assert path == tmp_path / "m.npz"
    m2 = fastbn.load(path)
    assert m2.config == m.config and m2.vocab == m.vocab and m2.dtype == m.dtype
    assert not m2.training and m2.meta == {"steps": 5, "losses": {"val": 2.1}}
    for (n1, a), (n2, b) in zip(m.named_parameters() + m.named_buffers(),
                                m2.named_parameters() + m2.named_buffers()):
        assert n1 == n2
        np.testing.assert_array_equal(a, b)
    X, Y = batch()
    assert m.evaluate(X, Y) == m2.evaluate(X, Y)
    assert m.sample(10, seed=1) == m2.sample(10, seed=1)


def test_round_trip_on_names(tmp_path):
    if not REAL_NAMES or not Path(REAL_NAMES).is_file():
        pytest.skip("FASTBN_DATA is not set; point it at names.txt to run the real-data tests")
    ds = data.load_dataset(REAL_NAMES)
    m = CharMLP(ds.vocab, seed=0)
    fastbn.train(m, ds, steps=300, quiet=True, evaluate=False)
    m2 = fastbn.load(fastbn.save(m, tmp_path / "names.npz"))
    for split in ("train", "val", "test"):
        assert m.evaluate(*ds.split(split)) == m2.evaluate(*ds.split(split))
    assert m.sample(20, seed=3) == m2.sample(20, seed=3)


def test_save_is_atomic_and_leaves_no_temp_files(tmp_path, monkeypatch):
    path = tmp_path / "sub" / "m.npz"
    fastbn.save(trained(), path)
    assert sorted(p.name for p in path.parent.iterdir()) == ["m.npz"]
    before = path.read_bytes()

    def crash(*a, **k):
        raise KeyboardInterrupt   # e.g. Ctrl-C in the middle of writing
    monkeypatch.setattr(np, "savez", crash)
    with pytest.raises(KeyboardInterrupt):
        fastbn.save(trained(dtype=np.float64), path)
    assert path.read_bytes() == before
    assert sorted(p.name for p in path.parent.iterdir()) == ["m.npz"]


def test_save_overwrites(tmp_path):
    path = tmp_path / "m.npz"
    fastbn.save(trained(), path)
    fastbn.save(trained(dtype=np.float64), path)
    assert fastbn.load(path).dtype == np.float64


def test_save_needs_a_charmlp(tmp_path):
    with pytest.raises(TypeError, match="CharMLP"):
        fastbn.save(object(), tmp_path / "x.npz")


# ----------------------------------------------------------------------------------------------
# refusing bad files

def entries(m):
    out = {"format_version": np.array(checkpoint.FORMAT_VERSION),
           "config": np.array(json.dumps(m.config)), "chars": np.array(m.vocab.chars),
           "dtype": np.array(m.dtype.name), "meta": np.array("{}")}
    out.update({f"param/{n}": p for n, p in m.named_parameters()})
    out.update({f"buffer/{n}": b for n, b in m.named_buffers()})
    return out


def write(tmp_path, d):
    path = tmp_path / "bad.npz"
    np.savez(path, **d)
    return path


def test_entries_helper_matches_save(tmp_path):
    m = trained()
    saved = np.load(checkpoint.save(m, tmp_path / "m.npz"))
    assert sorted(saved.files) == sorted(entries(m))


def _edit(key, value):
    def f(d):
        d[key] = value
    return f


def _drop(key):
    def f(d):
        del d[key]
    return f


def _config(**change):
    def f(d):
        cfg = json.loads(str(d["config"]))
        cfg.update(change)
        d["config"] = np.array(json.dumps(cfg))
    return f


@pytest.mark.parametrize("change, match", [
    (_edit("format_version", np.array(2)), "format version 2 is not supported"),
    (_edit("format_version", np.array("1")), "format_version should be an integer"),
    (_drop("param/1.weight"), r"missing \['param/1.weight'\]"),
    (_drop("buffer/2.running_var"), r"missing \['buffer/2.running_var'\]"),
    (_drop("chars"), r"missing entries \['chars'\]"),
    (_edit("param/9.weight", np.zeros(3, np.float32)), r"unexpected \['param/9.weight'\]"),
    (_config(n_hidden=9), r"param/1.weight has shape \(12, 8\), but the config needs \(12, 9\)"),
    (_config(n_embd=5), "shape"),
    (_config(batchnorm=False), "missing"),
    (_config(colour="red"), "does not make a model"),
    (_config(activation="gelu"), "does not make a model"),
    (_edit("config", np.array("{not json")), "not valid JSON"),
    (_edit("config", np.array("[1, 2]")), "JSON objects"),
    (_edit("chars", np.array(".abcdefg")), "shape"),
    (_edit("chars", np.array("abc")), "vocabulary 'abc' is not valid"),
    (_edit("dtype", np.array("float16")), "float32 or float64"),
    (_edit("dtype", np.array("float64")), "dtype float32, but the checkpoint's dtype is float64"),
    (_edit("param/0.weight", np.full((7, 4), np.nan, np.float32)), "NaN or infinite"),
    (_edit("buffer/2.running_var", -np.ones(8, np.float32)), "negative variances"),
    (_edit("meta", np.array(3.0)), "should be a string"),
])
def test_load_refuses_inconsistent_checkpoints(tmp_path, change, match):
    d = entries(trained())
    change(d)
    with pytest.raises(ValueError, match=match):
        checkpoint.load(write(tmp_path, d))


def test_load_refuses_pickled_objects_without_running_them(tmp_path):
    d = entries(trained())
    d["meta"] = np.array([{"a": 1}], dtype=object)     # saved with pickle
    with pytest.raises(ValueError, match="not a valid fastbn checkpoint.*allow_pickle"):
        checkpoint.load(write(tmp_path, d))


def test_load_refuses_truncated_and_non_npz_files(tmp_path):
    good = checkpoint.save(trained(), tmp_path / "good.npz").read_bytes()
    cut = tmp_path / "cut.npz"
    cut.write_bytes(good[: len(good) // 2])
    with pytest.raises(ValueError, match="not a valid fastbn checkpoint"):
        checkpoint.load(cut)
    text = tmp_path / "text.npz"
    text.write_text("hello")
    with pytest.raises(ValueError, match="not a valid fastbn checkpoint"):
        checkpoint.load(text)
    plain = tmp_path / "plain.npy"
    np.save(plain, np.zeros(3))
    with pytest.raises(ValueError, match="not a valid fastbn checkpoint"):
        checkpoint.load(plain)
    # a zip member that is not a valid .npy
    z = tmp_path / "zip.npz"
    with zipfile.ZipFile(z, "w") as f:
        f.writestr("config.npy", b"garbage")
    with pytest.raises(ValueError, match="not a valid fastbn checkpoint"):
        checkpoint.load(z)
    with pytest.raises(FileNotFoundError, match="checkpoint not found"):
        checkpoint.load(tmp_path / "missing.npz")


def test_load_error_messages_say_what_is_wrong_once(tmp_path):
    plain = tmp_path / "plain.npz"
    with open(plain, "wb") as f:
        np.save(f, np.zeros(3))
    with pytest.raises(ValueError) as e:
        checkpoint.load(plain)
    assert str(e.value).count("not a valid fastbn checkpoint") == 1
    assert "single .npy array" in str(e.value)


# ----------------------------------------------------------------------------------------------
# a hostile file cannot make load allocate what the file does not hold

@pytest.mark.parametrize("change, match", [
    # within the bounds: refused by the shapes, which the config is compared with before building
    ({"n_hidden": 10**9}, r"param/1.weight has shape \(12, 8\), but the config needs "
                          r"\(12, 1000000000\)"),
    ({"block_size": 10**8}, r"param/1.weight has shape \(12, 8\), but the config needs "
                            r"\(400000000, 8\)"),
    ({"n_embd": 2**31 - 1}, r"param/0.weight has shape \(7, 4\)"),
    # out of bounds or of the wrong type
    ({"n_hidden": 10**12}, r"n_hidden must be an integer in \[1, 2,147,483,647\]"),
    ({"n_layers": 10**9}, r"n_layers must be an integer in \[1, 10,000\]"),
    ({"block_size": 0}, "block_size must be an integer"),
    ({"n_embd": "4"}, "n_embd must be an integer"),
    ({"n_hidden": 8.0}, "n_hidden must be an integer"),
    ({"n_hidden": True}, "n_hidden must be an integer"),
    ({"batchnorm": "yes"}, "batchnorm must be true or false"),
    ({"bn_unbiased": 1}, "bn_unbiased must be true or false"),
    ({"bn_unbiased": "unbiased"}, "bn_unbiased must be true or false"),
    ({"bn_unbiased": None}, "bn_unbiased must be true or false"),
    ({"bn_momentum": float("nan")}, r"bn_momentum must be a number in \[0, 1\]"),
    ({"bn_eps": -1.0}, "bn_eps must be a number >= 0"),
    ({"negative_slope": float("inf")}, "negative_slope must be a number finite"),
    ({"init": "xavier"}, "init must be one of"),
    ({"gain": -1.0}, "gain must be null or a number > 0"),
    ({"gain": 2.0, "init": "fix_tanh"}, "with init 'kaiming'"),
])
def test_load_checks_the_config_before_building_the_model(tmp_path, monkeypatch, change, match):
    """A 5 KB file claiming n_hidden = 10**9 once made load allocate 89 GiB: now the config's
    values and the shapes they imply are checked first, and no CharMLP is ever built."""
    d = entries(trained())
    _config(**change)(d)
    path = write(tmp_path, d)

    def no_model(*a, **k):
        raise AssertionError("load built a model from a config it had not checked")
    monkeypatch.setattr(checkpoint, "CharMLP", no_model)
    with pytest.raises(ValueError, match="not a valid fastbn checkpoint: ") as e:
        checkpoint.load(path)
    assert re.search(match, str(e.value)), str(e.value)


def test_config_without_optional_keys_takes_the_defaults(tmp_path):
    """A config missing keys gets CharMLP's defaults (gain: None), as CharMLP(**config) did."""
    m = trained()
    d = entries(m)
    cfg = dict(m.config)
    del cfg["gain"]
    d["config"] = np.array(json.dumps(cfg))
    assert checkpoint.load(write(tmp_path, d)).config == m.config


def test_bn_unbiased_round_trips_and_keeps_training_the_same_variant(tmp_path):
    """A model with bn_unbiased saved and loaded: the config and every BatchNorm say so, and a
    training step of the loaded model equals one of the original (the unbiased normalization,
    not the default one)."""
    m = trained(bn_unbiased=True)
    path = fastbn.save(m, tmp_path / "m.npz")
    m2, biased = fastbn.load(path), fastbn.load(path)
    assert m2.config["bn_unbiased"] is True
    assert all(bn.unbiased for bn in m2.batchnorms()) and "unbiased=True" in repr(m2)
    for bn in biased.batchnorms():
        bn.unbiased = False
    X, Y = batch(16)
    m.train(), m2.train(), biased.train()
    loss = m.train_step(X, Y, 0.1)
    assert m2.train_step(X, Y, 0.1) == loss
    for a, b in zip(m.parameters(), m2.parameters()):
        np.testing.assert_array_equal(a, b)
    assert biased.train_step(X, Y, 0.1) != loss           # the variant is what was restored


def old_format_checkpoint(tmp_path, m):
    """A checkpoint as fastbn wrote it before bn_unbiased existed: format version 1, the config
    without the key, the arrays by the same names (built here, not a committed binary)."""
    cfg = {k: v for k, v in m.config.items() if k != "bn_unbiased"}
    d = entries(m)
    d["config"] = np.array(json.dumps(cfg, sort_keys=True))
    d["meta"] = np.array(json.dumps({"steps": 5}))
    return write(tmp_path, d)


@pytest.mark.parametrize("kw", [{}, {"n_layers": 2, "final_bn": True}, {"batchnorm": False}])
def test_checkpoints_written_before_bn_unbiased_load_as_biased(tmp_path, kw):
    m = trained(**kw)
    path = old_format_checkpoint(tmp_path, m)
    with np.load(path) as z:
        assert "bn_unbiased" not in str(z["config"]) and int(z["format_version"]) == 1
    old = fastbn.load(path)
    assert old.config == m.config and old.config["bn_unbiased"] is False
    assert not any(bn.unbiased for bn in old.batchnorms())
    for (n1, a), (n2, b) in zip(m.named_parameters() + m.named_buffers(),
                                old.named_parameters() + old.named_buffers()):
        assert n1 == n2
        np.testing.assert_array_equal(a, b)
    X, Y = batch()
    assert old.evaluate(X, Y) == m.evaluate(X, Y)
    old.train(), m.train()
    assert old.train_step(X[:16], Y[:16], 0.1) == m.train_step(X[:16], Y[:16], 0.1)


@pytest.mark.parametrize("kw", [{}, {"batchnorm": False}, {"final_bn": True, "n_layers": 3},
                                {"final_bn": True, "batchnorm": False, "block_size": 5},
                                {"activation": "leaky_relu", "n_layers": 2}])
def test_layout_is_the_models(kw):
    """The shapes load expects from a config are those of the model the config builds."""
    m = CharMLP(VOCAB, n_embd=3, n_hidden=6, seed=0, **kw)
    want = [(f"param/{n}", p.shape) for n, p in m.named_parameters()]
    want += [(f"buffer/{n}", b.shape) for n, b in m.named_buffers()]
    assert checkpoint._layout(m.config, VOCAB.size) == want


def _npy_header(shape, descr="<f4"):
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": descr, "fortran_order": False,
                                               "shape": shape})
    return buf.getvalue()


def _add_member(path, name, payload, compress=zipfile.ZIP_STORED):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")       # zipfile warns about duplicate names
        with zipfile.ZipFile(path, "a", compression=compress) as z:
            z.writestr(name, payload)
    return path


def test_load_reads_no_array_whose_header_the_file_does_not_back(tmp_path):
    """A member whose .npy header claims (10**12,) float32 and holds nothing once made load
    allocate 3.6 TiB; every header is now checked against the member's size first."""
    d = entries(trained())
    del d["param/1.weight"]
    path = _add_member(write(tmp_path, d), "param/1.weight.npy", _npy_header((10**12,)))
    with pytest.raises(ValueError, match=r"declares float32 of shape \(1000000000000,\) "
                                         r"\(4,000,000,000,000 bytes\), but holds 0 bytes"):
        checkpoint.load(path)
    path = _add_member(write(tmp_path, d), "param/1.weight.npy", _npy_header((12, 8)) + b"x")
    with pytest.raises(ValueError, match="holds 1 bytes"):
        checkpoint.load(path)


def test_load_refuses_a_zip_bomb_and_odd_members(tmp_path):
    d = entries(trained())
    d["param/1.weight"] = np.zeros((12, 8 * 10**5), np.float32)      # 38 MB of zeros
    bomb = tmp_path / "bomb.npz"
    np.savez_compressed(bomb, **d)
    assert bomb.stat().st_size < 10**6
    with pytest.raises(ValueError, match="claims to inflate from"):
        checkpoint.load(bomb)
    good = tmp_path / "compressed.npz"                # an honest compressed file loads
    np.savez_compressed(good, **entries(trained()))
    assert checkpoint.load(good).config == trained().config


@pytest.mark.parametrize("name, payload, match", [
    ("readme.txt", b"hello", r"member 'readme.txt' is not a .npy array"),
    ("config.npy", b"garbage", r"entry 'config' is not a readable .npy array"),
    ("chars.npy", _npy_header((), "|O") + b"x" * 8, "pickled Python objects"),
    ("param/0.weight.npy", _npy_header((2,), [("a", "<f4")]) + b"x" * 8, "not a plain number"),
    ("meta.npy", _npy_header((), "<U2") + "{}".encode("utf-32-le"), "'meta' appears twice"),
])
def test_load_refuses_odd_members(tmp_path, name, payload, match):
    d = entries(trained())
    if name != "meta.npy":
        d.pop(name[:-4], None)
    path = _add_member(write(tmp_path, d), name, payload)
    with pytest.raises(ValueError, match=match):
        checkpoint.load(path)
