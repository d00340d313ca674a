"""``fastbn.fold_batchnorm``: the folded model computes the unfolded model's eval-mode function.

Logits are compared with ``|folded - unfolded| <= rtol * max|unfolded|`` (float64 rtol 1e-12,
float32 1e-5): relative to the logits' scale, because an elementwise relative error is
ill-conditioned at logits near zero (the fold reorders the rounding of ``x @ W`` and the mean:
a logit of 1e-4 made by cancellation moves by the same absolute amount as one of 10).
"""
import re

import numpy as np
import pytest

import fastbn
from fastbn import folding, inference, nn, ops
from fastbn.checkpoint import load, save
from fastbn.cli import main
from fastbn.folding import FoldedCharMLP, fold_batchnorm, fold_linear_bn
from fastbn.fused import FusedTrainer, supports
from fastbn.model import CharMLP

RTOL = {"float32": 1e-5, "float64": 1e-12}
CONFIGS = [
    {},                                                         # the lecture's model
    {"n_layers": 3, "final_bn": True, "n_hidden": 32},          # the deep net's structure
    {"batchnorm": False, "final_bn": True, "n_hidden": 32},     # only the BN on the logits
    {"activation": "relu", "n_hidden": 32},
    {"n_layers": 2, "activation": "elu", "n_hidden": 24, "block_size": 5},
]


def model_with_statistics(config, dtype, seed=0, vocab=".abcdefghij"):
    """A CharMLP whose batch norms have far-from-trivial gamma, beta and running statistics
    (a fresh one has gamma 1, beta 0, mean 0, var 1: folding it would hide a missing term)."""
    m = CharMLP(vocab, dtype=dtype, seed=seed, **config)
    g = np.random.default_rng(seed + 100)
    for bn in m.batchnorms():
        D = bn.gamma.shape[0]
        bn.gamma[...] = g.uniform(0.3, 2.0, D)
        bn.beta[...] = g.normal(0, 0.5, D)
        bn.running_mean[...] = g.normal(0, 2.0, D)
        bn.running_var[...] = g.uniform(0.05, 4.0, D)
    for layer in m.layers:
        if isinstance(layer, nn.Linear) and layer.bias is not None:
            layer.bias[...] = g.normal(0, 0.3, layer.bias.shape)
    return m


def contexts(m, n=300, seed=1):
    return np.random.default_rng(seed).integers(0, m.vocab.size, (n, m.block_size))


def eval_logits(m, X):
    was = m.training
    m.eval()
    out = m.logits(X)
    m.train(was)
    return out


def assert_close_to_scale(got, ref, rtol):
    err = np.max(np.abs(got.astype(np.float64) - ref)) / np.max(np.abs(ref))
    assert err <= rtol, f"max |folded - unfolded| / max |unfolded| = {err:.3g} > {rtol:g}"


def snapshot(m):
    """Everything folding must leave alone: arrays (parameters, gradients, running statistics),
    the mode and the layers' state, as copies."""
    arrays = [a.copy() for a in m.parameters() + m.grads()]
    arrays += [b.copy() for _, b in m.named_buffers()]
    state = [(type(layer), {k: (v.copy() if isinstance(v, np.ndarray) else v)
                            for k, v in vars(layer).items() if k in ("out", "dout")})
             for layer in m.layers]
    return arrays, m.training, state, [id(layer) for layer in m.layers]


def assert_same_snapshot(a, b):
    (arr_a, mode_a, state_a, ids_a), (arr_b, mode_b, state_b, ids_b) = a, b
    assert mode_a == mode_b and ids_a == ids_b
    assert len(arr_a) == len(arr_b)
    for x, y in zip(arr_a, arr_b):
        assert x.dtype == y.dtype and x.tobytes() == y.tobytes()            # bit for bit
    for (ta, da), (tb, db) in zip(state_a, state_b):
        assert ta is tb and da.keys() == db.keys()
        for k in da:
            assert np.array_equal(da[k], db[k])


# ----------------------------------------------------------------------------------------------
# the same function

@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("config", CONFIGS, ids=lambda c: ",".join(f"{k}={v}" for k, v in
                                                                   c.items()) or "default")
def test_folded_logits_losses_and_names_are_the_unfolded_models(config, dtype):
    m = model_with_statistics(config, dtype)
    f = fold_batchnorm(m)
    X = contexts(m)
    Y = np.random.default_rng(2).integers(0, m.vocab.size, X.shape[0])
    ref = eval_logits(m, X).astype(np.float64)
    got = f.logits(X)
    assert got.dtype == m.dtype and got.shape == ref.shape
    assert_close_to_scale(got, ref, RTOL[dtype])
    assert_close_to_scale(f.net(X), ref, RTOL[dtype])       # the layers compute it too
    assert f.evaluate(X, Y) == pytest.approx(m.evaluate(X, Y), rel=RTOL[dtype], abs=0)
    assert float(f.forward(X, Y)) == pytest.approx(m.evaluate(X, Y), rel=RTOL[dtype], abs=0)
    for seed in (0, 1, 2):
        assert f.sample(40, seed=seed) == m.sample(40, seed=seed)
    assert f.uses_table(X.shape[0]) and f.plan(X.shape[0]).table is not None   # with the table
    assert_close_to_scale(fold_batchnorm(m, table=False).logits(X), ref, RTOL[dtype])  # without
    assert not f.batchnorms() and not f.named_buffers()
    n_bn = len(m.batchnorms())
    assert len(f.layers) == len(m.layers) - n_bn
    assert all(layer.bias is not None for layer in f.layers if isinstance(layer, nn.Linear))


def test_a_broken_fold_fails_the_comparison(monkeypatch):
    """The comparison above can fail: a fold that forgets the running mean (or eps) is caught."""
    m = model_with_statistics({}, "float64")
    X = contexts(m)
    ref = eval_logits(m, X)
    real = folding.fold_linear_bn

    class NoMean:                           # the BN with its running mean dropped
        def __init__(self, bn):
            self.__dict__.update(vars(bn))
            self.running_mean = np.zeros_like(bn.running_mean)
    monkeypatch.setattr(folding, "fold_linear_bn", lambda w, b, bn: real(w, b, NoMean(bn)))
    with pytest.raises(AssertionError, match="max"):
        assert_close_to_scale(fold_batchnorm(m).logits(X), ref, RTOL["float64"])

    class BigEps(NoMean):                   # eps ten times too large, mean kept
        def __init__(self, bn):
            self.__dict__.update(vars(bn))
            self.eps = 10 * bn.eps
    monkeypatch.setattr(folding, "fold_linear_bn", lambda w, b, bn: real(w, b, BigEps(bn)))
    with pytest.raises(AssertionError, match="max"):
        assert_close_to_scale(fold_batchnorm(m).logits(X), ref, RTOL["float64"])


def test_fold_linear_bn_is_torchs_fuse_linear_bn_eval(torch):
    """The formula is torch.nn.utils.fusion's (torch stores the weight transposed, (O, I))."""
    from torch.nn.utils.fusion import fuse_linear_bn_eval
    g = np.random.default_rng(3)
    I, O = 7, 5
    for has_bias in (False, True):
        lin = nn.Linear(I, O, bias=has_bias, dtype=np.float64, generator=0)
        bn = nn.BatchNorm1d(O, eps=1e-3, dtype=np.float64)
        lin.weight[...] = g.normal(size=(I, O))
        if has_bias:
            lin.bias[...] = g.normal(size=O)
        bn.gamma[...], bn.beta[...] = g.uniform(0.5, 2, O), g.normal(size=O)
        bn.running_mean[...], bn.running_var[...] = g.normal(size=O), g.uniform(0.1, 3, O)
        tl = torch.nn.Linear(I, O, bias=has_bias).double().eval()
        tb = torch.nn.BatchNorm1d(O, eps=1e-3).double().eval()
        with torch.no_grad():
            tl.weight.copy_(torch.from_numpy(lin.weight.T.copy()))
            if has_bias:
                tl.bias.copy_(torch.from_numpy(lin.bias))
            tb.weight.copy_(torch.from_numpy(bn.gamma))
            tb.bias.copy_(torch.from_numpy(bn.beta))
            tb.running_mean.copy_(torch.from_numpy(bn.running_mean))
            tb.running_var.copy_(torch.from_numpy(bn.running_var))
        fused = fuse_linear_bn_eval(tl, tb)
        w, b = fold_linear_bn(lin.weight, lin.bias, bn)
        np.testing.assert_allclose(w, fused.weight.detach().numpy().T, rtol=1e-14, atol=0)
        np.testing.assert_allclose(b, fused.bias.detach().numpy(), rtol=1e-14, atol=1e-15)


def test_the_fold_is_computed_in_float64_and_rounded_once():
    m = model_with_statistics({}, "float32")
    lin, bn = m.layers[1], m.layers[2]
    w, b = fold_linear_bn(lin.weight, lin.bias, bn)
    s = bn.gamma.astype(np.float64) / np.sqrt(bn.running_var.astype(np.float64) + bn.eps)
    assert w.dtype == b.dtype == np.float32
    assert np.array_equal(w, (lin.weight.astype(np.float64) * s).astype(np.float32))
    assert np.array_equal(b, (bn.beta - bn.running_mean.astype(np.float64) * s)
                          .astype(np.float32))
    with pytest.raises(ValueError, match="cannot fold"):
        fold_linear_bn(lin.weight[:, :5], None, bn)


def test_a_fold_that_is_not_finite_is_refused_with_the_reason():
    m = model_with_statistics({}, "float32")
    bn = m.layers[2]
    bn.eps, bn.running_var[7] = 0.0, 0.0          # eval mode divides by zero at feature 7
    with pytest.raises(ValueError, match="running_var \\+ eps is 0 for feature 7"):
        fold_batchnorm(m)
    bn.running_var[7], bn.running_mean[3] = 1.0, np.nan
    with pytest.raises(ValueError, match="running statistic 2.running_mean holds NaN"):
        fold_batchnorm(m)                           # a diverged model: the array named
    bn.running_mean[3], bn.gamma[0], bn.running_var[0] = 0.0, 3e38, 0.01   # overflows float32
    with pytest.raises(ValueError, match="overflow float32"):
        fold_batchnorm(m)


# ----------------------------------------------------------------------------------------------
# the table: the embedding and the first Linear as one

def test_the_table_is_the_composed_embedding_and_linear():
    """Tab[t] = C @ W1[t*D:(t+1)*D] in float64 (the folded bias in Tab[0]), rounded once."""
    m = model_with_statistics({"block_size": 4, "n_embd": 3, "n_hidden": 16}, "float32")
    f = fold_batchnorm(m, table=True)
    tab = f.plan().table
    C, W, b = (a.astype(np.float64) for a in (f.layers[0].weight, f.layers[1].weight,
                                              f.layers[1].bias))
    want = np.stack([C @ W[3 * t:3 * t + 3] for t in range(4)])
    want[0] += b
    assert tab.dtype == np.float32 and tab.shape == (4, 11, 16) and not tab.flags.writeable
    assert np.array_equal(tab, want.astype(np.float32))


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_a_model_whose_table_would_not_pay_keeps_its_embedding_and_linear(dtype):
    # n_embd 2, n_hidden 1024 and 27 characters: the table would have 3*27*1024 = 82,944
    # entries, 13.4 times the pair's 27*2 + 3*2*1024 = 6,198, and take more than the cache bound
    m = model_with_statistics({"n_embd": 2, "n_hidden": 1024}, dtype,
                              vocab=".abcdefghijklmnopqrstuvwxyz")
    assert 3 * 27 * 1024 * m.dtype.itemsize > inference.TABLE_CACHE_BYTES
    f = fold_batchnorm(m)
    assert f.table is None and not f.uses_table() and not f.uses_table(10**9)
    p = f.plan(10**9)
    assert p.table is None and type(p.steps[0]).__name__ == "_Embed"
    assert "kept apart (a table (3, 27, 1024)" in repr(f)
    assert "13.4x their entries, > 4, and take > 256.0 KiB" in repr(f)
    X = contexts(m, 2000)
    ref = eval_logits(m, X).astype(np.float64)
    assert_close_to_scale(f.logits(X), ref, RTOL[dtype])
    forced = fold_batchnorm(m, table=True)           # the table, asked for: the same function
    assert forced.plan().table is not None and forced.uses_table(1)
    assert_close_to_scale(forced.logits(X), ref, RTOL[dtype])
    assert "(table=True)" in repr(forced)
    assert "kept apart (table=False)" in repr(fold_batchnorm(m, table=False))
    with pytest.raises(TypeError, match="table must be True, False or None"):
        fold_batchnorm(m, table="yes")


def test_a_call_of_few_rows_runs_without_the_table(monkeypatch):
    m = model_with_statistics({}, "float64")                # V = 11
    f = fold_batchnorm(m)
    least = inference.TABLE_MIN_ROWS_PER_V * m.vocab.size
    assert not f.uses_table(least - 1) and f.uses_table(least) and f.uses_table()
    asked = []
    real = folding.Plan
    monkeypatch.setattr(folding, "Plan", lambda model, table: asked.append(table) or
                        real(model, table=table))
    X = contexts(m, least)
    Y = np.zeros(least, np.int64)
    f.logits(X[:-1])
    f.logits(X)
    f.evaluate(X[:5], Y[:5])
    f.evaluate(X, Y)
    f.sample(3, max_len=least // 3 - 1)                     # 3 * max_len rows at most
    f.sample(3, max_len=least // 3 + 1)
    assert asked == [False, True, False, True, False, True]


def test_a_broken_table_fails_the_comparison(monkeypatch):
    """The comparisons above can fail: a table without the folded bias, or whose positions are
    read in the wrong order, is caught."""
    m = model_with_statistics({}, "float64")
    X = contexts(m)
    ref = eval_logits(m, X)
    f = fold_batchnorm(m, table=True)
    assert_close_to_scale(f.logits(X), ref, RTOL["float64"])
    real = inference._Table

    class NoBias:
        def __init__(self, linear):
            self.weight, self.bias = linear.weight, None
    monkeypatch.setattr(inference, "_Table",
                        lambda emb, lin, T, dt: real(emb, NoBias(lin), T, dt))
    with pytest.raises(AssertionError, match="max"):
        assert_close_to_scale(f.logits(X), ref, RTOL["float64"])
    monkeypatch.setattr(inference, "_Table", real)
    real_kernel = inference.K.table_forward

    def reversed_positions(tab, ids, out):
        real_kernel(tab, np.ascontiguousarray(ids[:, ::-1]), out)
    monkeypatch.setattr(inference.K, "table_forward", reversed_positions)
    with pytest.raises(AssertionError, match="max"):
        assert_close_to_scale(f.logits(X), ref, RTOL["float64"])


# ----------------------------------------------------------------------------------------------
# what folding leaves alone, and the decisions

@pytest.mark.parametrize("mode", ["train", "eval"])
def test_the_original_model_is_unchanged_bit_for_bit(mode):
    m = model_with_statistics({"n_layers": 2, "final_bn": True, "n_hidden": 16}, "float32")
    X = contexts(m, 64)
    Y = np.zeros(64, np.int64)
    m.forward(X, Y)                  # layers hold .out, and after backward .dout
    m.backward()
    m.train(mode == "train")
    before = snapshot(m)
    f = fold_batchnorm(m)
    assert_same_snapshot(before, snapshot(m))
    for p in f.parameters():         # nothing shared
        assert not any(np.shares_memory(p, q) for q in m.parameters())
    # and a model folded in training mode folds its running statistics: the eval function
    assert m.training == (mode == "train")
    assert_close_to_scale(f.logits(X), eval_logits(m, X).astype(np.float64), 1e-5)


def test_a_model_without_batch_norm_folds_to_an_equal_copy():
    m = model_with_statistics({"batchnorm": False, "n_hidden": 32}, "float64")
    f = fold_batchnorm(m)
    X = contexts(m, 200)            # fewer rows than a chunk: the same GEMMs, the same numbers
    assert isinstance(f, FoldedCharMLP) and f is not m
    assert [n for n, _ in f.named_parameters()] == [n for n, _ in m.named_parameters()]
    for (_, p), (_, q) in zip(f.named_parameters(), m.named_parameters()):
        assert np.array_equal(p, q) and not np.shares_memory(p, q)
    # its embedding and first Linear run as a table (200 rows >= 8 V): the same up to rounding
    assert f.uses_table(len(X))
    assert_close_to_scale(f.logits(X), eval_logits(m, X), RTOL["float64"])
    # without the table, the layers' arithmetic: bit for bit
    assert np.array_equal(fold_batchnorm(m, table=False).logits(X), eval_logits(m, X))
    g = fold_batchnorm(f)           # folding a folded model: a copy too
    assert np.array_equal(g.logits(X), f.logits(X)) and g is not f


def test_meta_is_copied_and_repr_says_folded():
    m = model_with_statistics({}, "float32", vocab=".abcdefghijklmnopqrstuvwxyz")
    m.meta = {"run": {"steps": 5}, "note": ["a"]}
    f = fold_batchnorm(m)
    assert f.meta == m.meta and f.meta is not m.meta and f.meta["note"] is not m.meta["note"]
    text = repr(f)
    head, summary, *tree = text.splitlines()
    assert head == f"CharMLP(vocab=27, {f.num_parameters():,} parameters, float32, folded"
    least = inference.TABLE_MIN_ROWS_PER_V * 27
    assert summary == ("  folded: 1 BatchNorm1d into the Linear before it; the Embedding and "
                       f"Linear (1) into a table (3, 27, 200), 63.3 KiB, for calls of >= {least} "
                       "rows")
    assert summary.strip() == f"folded: {f.fold_summary()}"
    tree = "\n".join(tree)
    assert "BatchNorm1d" not in tree and "Linear(30, 200, bias=True)" in tree
    # the fold replaces BN's 4 x 200 (gamma, beta and 2 buffers) by a bias of 200
    assert f.num_parameters() == m.num_parameters() - 2 * 200 + 200
    assert repr(m).splitlines()[0].endswith("training mode")     # (the model keeps its mode)


def test_fold_batchnorm_takes_a_charmlp_only():
    with pytest.raises(TypeError, match="CharMLP"):
        fold_batchnorm(nn.Sequential(nn.Linear(2, 2)))
    assert fastbn.fold_batchnorm is fold_batchnorm


# ----------------------------------------------------------------------------------------------
# inference only

def test_a_folded_model_refuses_to_train():
    m = model_with_statistics({}, "float32")
    f = fold_batchnorm(m)
    X, Y = contexts(m, 32), np.zeros(32, np.int64)
    # not a CharMLP: no training method at all, nothing to call by mistake
    assert not isinstance(f, CharMLP)
    for name in ("train", "train_step", "backward", "calibrate_batchnorm", "grads", "zero_grad"):
        assert not hasattr(f, name), name
    with pytest.raises(RuntimeError, match="unfolded model") as e:
        fastbn.train(f, (X, Y), steps=3, quiet=True)
    assert "folded" in str(e.value)
    assert f.forward(X, Y) == ops.cross_entropy_forward(f.logits(X), Y)[0]     # the loss is fine
    assert not f.training and f.eval() is f and not f.training
    ok, why = supports(f)
    assert not ok and "inference" in why
    with pytest.raises(ValueError, match="inference"):
        FusedTrainer(f, 32)
    for p in f.parameters():         # read-only: a hand-written update fails loudly
        with pytest.raises(ValueError, match="read-only"):
            p -= 0.1
    assert supports(m)[0]            # (the unfolded model still trains)


def test_folded_checkpoints_round_trip_and_refuse_training_state(tmp_path):
    m = model_with_statistics({"n_layers": 2, "final_bn": True, "n_hidden": 16}, "float64")
    m.meta = {"run": {"steps": 3}}
    f = fold_batchnorm(m)
    path = save(f, tmp_path / "folded.npz", meta=f.meta)
    g = load(path)
    assert isinstance(g, FoldedCharMLP) and g.folded and not g.training
    assert g.train_state is None and g.meta == m.meta and g.config == m.config
    for (n, p), (k, q) in zip(g.named_parameters(), f.named_parameters()):
        assert n == k and p.dtype == q.dtype and p.tobytes() == q.tobytes()
        assert not p.flags.writeable
    X = contexts(m)
    assert np.array_equal(g.logits(X), f.logits(X))
    assert repr(g) == repr(f)
    with np.load(path) as z:
        assert bool(z["folded"]) and not any(k.startswith("buffer/") for k in z.files)
    # an unfolded checkpoint loads unfolded
    assert type(load(save(m, tmp_path / "plain.npz"))) is CharMLP
    # no training state for a folded model, in either direction
    from fastbn.training import TrainState
    state = TrainState(0, np.array([1, 1], np.uint64), np.zeros(0))
    with pytest.raises(ValueError, match="without a training state"):
        save(f, tmp_path / "x.npz", state=state)
    entries = dict(np.load(path))
    entries.update({"state/step": np.array(0, np.int64),
                    "state/sampler_state": np.array([1, 1], np.uint64),
                    "state/history": np.zeros(0)})
    np.savez(tmp_path / "hostile.npz", **entries)
    with pytest.raises(ValueError, match="holds no training state"):
        load(tmp_path / "hostile.npz")
    entries = dict(np.load(path))
    entries["folded"] = np.array(1.5)
    np.savez(tmp_path / "bad_flag.npz", **entries)
    with pytest.raises(ValueError, match="'folded' should be a bool"):
        load(tmp_path / "bad_flag.npz")
    entries["folded"] = np.array(False)    # unfolded, but its entries are a folded model's
    np.savez(tmp_path / "mismatch.npz", **entries)
    with pytest.raises(ValueError, match="do not match its config"):
        load(tmp_path / "mismatch.npz")


# ----------------------------------------------------------------------------------------------
# the command line: fastbn eval and fastbn sample run the folded model

@pytest.fixture(scope="module")
def checkpoints(names, tmp_path_factory):
    """A float32 and a float64 checkpoint of the lecture's model after 300 steps, the float32
    one also folded: {name: path}."""
    out = tmp_path_factory.mktemp("folding")
    paths = {}
    for dt in ("float32", "float64"):
        m = CharMLP(names.vocab, dtype=dt, seed=5)
        fastbn.train(m, names, steps=300, quiet=True, evaluate=False, seed=6)
        paths[dt] = save(m, out / f"{dt}.npz")
    paths["folded"] = save(fold_batchnorm(load(paths["float32"])), out / "folded.npz")
    return paths


def printed_losses(text):
    return {k: float(v) for k, v in re.findall(r"(train|val|test) (\d+\.\d+)", text)}


@pytest.fixture
def fold_spy(monkeypatch):
    """Records the models fastbn.fold_batchnorm folds (the command line imports it late)."""
    calls = []
    real = folding.fold_batchnorm

    def spy(model):
        calls.append(model)
        return real(model)
    monkeypatch.setattr(folding, "fold_batchnorm", spy)
    return calls


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_cli_eval_prints_the_unfolded_models_losses(checkpoints, names, names_path, dtype,
                                                    fold_spy, capsys):
    assert main(["eval", "--checkpoint", str(checkpoints[dtype]), "--data", names_path]) == 0
    printed = printed_losses(capsys.readouterr().out)
    assert len(fold_spy) == 1                      # it ran the folded model
    m = load(checkpoints[dtype])
    want = {n: m.evaluate(*names.split(n)) for n in ("train", "val", "test")}
    assert printed.keys() == want.keys()
    for k, v in want.items():   # the unfolded loss to 4 decimals, up to float tolerance
        assert abs(printed[k] - v) <= 0.5e-4 + 1e-6, (k, printed[k], v)
    # a folded checkpoint prints the same
    assert main(["eval", "--checkpoint", str(checkpoints["folded"]), "--data", names_path]) == 0
    if dtype == "float32":
        assert printed_losses(capsys.readouterr().out) == printed


def test_cli_eval_calibrates_the_unfolded_model_then_folds(checkpoints, names, names_path,
                                                           fold_spy, capsys):
    assert main(["eval", "--checkpoint", str(checkpoints["float64"]), "--data", names_path,
                 "--calibrate"]) == 0
    text = capsys.readouterr().out
    assert len(fold_spy) == 2
    m = load(checkpoints["float64"])
    m.calibrate_batchnorm(names.Xtr)
    calibrated = printed_losses(text.split("calibrated BN statistics")[1])
    for k, v in calibrated.items():
        assert abs(v - m.evaluate(*names.split(k))) <= 0.5e-4 + 1e-6
    assert main(["eval", "--checkpoint", str(checkpoints["folded"]), "--data", names_path,
                 "--calibrate"]) == 1
    err = capsys.readouterr().err
    assert "fastbn eval: error:" in err and "folded" in err and "unfolded checkpoint" in err


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_cli_sample_prints_the_unfolded_models_names(checkpoints, dtype, fold_spy, capsys):
    m = load(checkpoints[dtype])
    for seed in ("0", "7"):
        assert main(["sample", "--checkpoint", str(checkpoints[dtype]), "-n", "30",
                     "--seed", seed]) == 0
        assert capsys.readouterr().out.splitlines() == m.sample(30, seed=int(seed))
    assert len(fold_spy) == 2
    assert main(["sample", "--checkpoint", str(checkpoints["folded"]), "-n", "30",
                 "--seed", "7"]) == 0
    if dtype == "float32":
        assert capsys.readouterr().out.splitlines() == m.sample(30, seed=7)


def test_cli_train_refuses_to_resume_a_folded_checkpoint(checkpoints, names_path, tmp_path,
                                                        capsys):
    rc = main(["train", "--resume", str(checkpoints["folded"]), "--data", names_path,
               "--out", str(tmp_path), "--quiet"])
    assert rc == 1
    err = capsys.readouterr().err
    assert "fastbn train: error:" in err and "folded" in err and "unfolded checkpoint" in err
    assert not (tmp_path / "model.npz").exists()
