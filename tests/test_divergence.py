"""One definition of divergence, the same on both training paths and on every CPU.

A run diverges at step s when the loss, a hidden pre-activation or the logits of step s is not
finite (the step is not applied), or when a parameter or a running statistic is not finite after
step s's update (the step is applied). Every divergence here is made certain by construction, in
any summation order and with or without FMA, never by one CPU's overflow pattern: values
injected at a known step, sums of all-positive terms that exceed the largest float, variances
beyond it by many orders of magnitude, or a learning rate that is +inf once rounded to float32.
"""
import pickle

import numpy as np
import pytest

import fastbn
from fastbn import CharMLP, data
from fastbn.cli import main
from fastbn.fused import BatchSampler
from fastbn.training import TrainingDiverged, train

VOCAB = data.Vocab.from_chars(".abcdefghijklmnopqrstuvwxyz")
SPECIAL = 26            # 'z': in the context of one row of the data only
B = 8
SEED = 5
PATHS = [pytest.param(True, id="fused"), pytest.param(False, id="per-layer")]
DTYPES = [pytest.param(np.float32, id="float32"), pytest.param(np.float64, id="float64")]


def dataset(N=64, targets=None):
    """(X, Y): random contexts of ids 1..25, row 17 with SPECIAL in its first position."""
    rng = np.random.default_rng(0)
    X = rng.integers(1, SPECIAL, size=(N, 3))
    Y = rng.integers(1, SPECIAL, size=N) if targets is None else np.full(N, targets)
    X[17, 0] = SPECIAL
    return X, Y


def first_step_with_row(row, N=64, seed=SEED):
    """The first step whose minibatch (BatchSampler(seed), as train draws it) holds ``row``."""
    s = BatchSampler(seed)
    for step in range(10_000):
        if row in s.draw(N, B):
            return step
    raise AssertionError("never drawn")


def model(dtype, **kw):
    return CharMLP(VOCAB, n_embd=4, n_hidden=16, dtype=dtype, seed=0, **kw)


def run(m, XY, fused, **kw):
    """train(...) that must diverge: the exception."""
    with pytest.raises(TrainingDiverged) as e:
        train(m, XY, batch_size=B, seed=SEED, quiet=True, fused=fused, evaluate=False,
              **{"steps": 200, "lr_schedule": 0.1, "every": 1, **kw})
    return e.value


def state(m):
    return [a.copy() for a in m.parameters()] + [b.copy() for _, b in m.named_buffers()]


def reference(dtype, XY, fused, steps, **kw):
    """The state of a run of ``steps`` good steps (what a step not applied leaves)."""
    m = model(dtype, **kw)
    train(m, XY, steps=steps, batch_size=B, seed=SEED, quiet=True, fused=fused, evaluate=False,
          lr_schedule=0.1)
    return state(m)


def assert_same(a, b):
    assert len(a) == len(b)
    for x, y in zip(a, b):
        assert x.tobytes() == y.tobytes()


def inject_at(step, fn):
    """A callback (every step) that calls fn(model) after step ``step``'s update."""
    def cb(s, loss, lr):
        if s == step:
            fn()
    return cb


# ----------------------------------------------------------------------------------------------
# the four kinds, on both paths and both dtypes

@pytest.mark.parametrize("fused", PATHS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_a_hidden_preactivation_overflow_mid_run(dtype, fused):
    """Row 17 alone holds SPECIAL, whose embedding is BIG, and W_0 >= 1 everywhere: the row's
    pre-BN sums hold n_embd = 4 positive terms >= BIG * 0.5 (W_0 moves by far less than 0.5 in
    the steps before), each pair beyond the largest float: +inf in any order. Batch norm turns
    that into NaN: the first step that draws row 17 diverges, not applied, on both paths."""
    XY = dataset()
    expect = first_step_with_row(17)
    assert expect >= 2                      # mid-run (mid-chunk on the fused path)
    big = 3e38 if dtype == np.float32 else 1e308

    def prepare(m):
        m.layers[0].weight[SPECIAL] = big
        m.layers[1].weight[...] = np.abs(m.layers[1].weight) + 1
        return m
    m = prepare(model(dtype))
    e = run(m, XY, fused)
    assert e.step == expect and e.divergence.kind == "pre-activation"
    assert not e.divergence.applied
    assert str(e).startswith(f"training diverged at step {expect} (lr 0.1): the output of "
                             "layer 2 (BatchNorm1d), the input of the tanh, is not finite")
    ref = prepare(model(dtype))
    train(ref, XY, steps=expect, batch_size=B, seed=SEED, quiet=True, fused=fused,
          evaluate=False, lr_schedule=0.1)
    assert_same(state(m), state(ref))       # the state after step expect - 1
    assert m.training                       # the mode it was in


@pytest.mark.filterwarnings("ignore:overflow encountered in cast")     # the float32 loss
@pytest.mark.parametrize("fused", PATHS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_the_loss_alone_not_finite(dtype, fused):
    """Every target is class 1; after step 5 the output bias is +BIG for class 0 and -BIG for
    the others. The logits stay finite (|h @ W| is small), but every example's loss is
    logit_0 - logit_1 = 2 BIG, beyond the largest float of the dtype (the float32 loss is
    rounded to float32, as the per-layer path has it): step 6 diverges, not applied."""
    XY = dataset(targets=1)
    big = 3e38 if dtype == np.float32 else 1e308
    m = model(dtype)

    def poison():
        m.layers[-1].bias[...] = -big
        m.layers[-1].bias[0] = big
    e = run(m, XY, fused, callback=inject_at(5, poison))
    assert e.step == 6 and e.divergence.kind == "loss" and not e.divergence.applied
    assert str(e).startswith("training diverged at step 6 (lr 0.1): the loss is inf")
    got, ref = state(m), reference(dtype, XY, fused, 6)
    bias = [i for i, (n, _) in enumerate(m.named_parameters()) if n == "4.bias"][0]
    assert np.array_equal(got[bias], np.where(np.arange(27) == 0, big, -big).astype(dtype))
    del got[bias], ref[bias]
    assert_same(got, ref)                   # step 6 not applied, running statistics included


@pytest.mark.parametrize("fused", PATHS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_a_logit_of_minus_infinity(dtype, fused):
    """An output bias of -inf for class 0, never a target: its logits are -inf, softmax gives it
    0 and the loss stays finite; the logits are not, so step 4 diverges, not applied."""
    XY = dataset(targets=1)
    m = model(dtype)
    e = run(m, XY, fused, callback=inject_at(3, lambda: m.layers[-1].bias.__setitem__(0,
                                                                                     -np.inf)))
    assert e.step == 4 and e.divergence.kind == "logits" and not e.divergence.applied
    assert "the logits (the output of layer 4, Linear) are not finite" in str(e)


@pytest.mark.parametrize("fused", PATHS)
def test_a_parameter_after_the_update_float32(fused):
    """lr 1e39 rounds to +inf in float32, so lr * g is +-inf (NaN where g is 0) and every
    parameter is non-finite after step 7's update, whatever the arithmetic: step 7 diverges,
    applied (the model holds that update)."""
    XY = dataset()
    m = model(np.float32)
    e = run(m, XY, fused, lr_schedule="0:0.1,7:1e39")
    assert e.step == 7 and e.divergence.kind == "parameter" and e.divergence.applied
    assert str(e) == ("training diverged at step 7 (lr 1e+39): weight of layer 0 is not "
                      "finite; the model holds the state after this step's update")
    assert not any(np.isfinite(p).all() for p in m.parameters())


@pytest.mark.parametrize("fused", PATHS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_a_parameter_nan_where_the_forward_never_reads(dtype, fused):
    """The embedding of SPECIAL, in no context of this data, set to NaN after step 4: every
    forward stays finite, but the update leaves the parameter NaN (NaN - lr * 0): step 5
    diverges, applied."""
    X, Y = dataset()
    X = X[np.arange(len(X)) != 17]
    m = model(dtype)
    e = run(m, (X, Y[:len(X)]), fused,
            callback=inject_at(4, lambda: m.layers[0].weight.__setitem__(SPECIAL, np.nan)))
    assert e.step == 5 and e.divergence.kind == "parameter" and e.divergence.applied
    assert "weight of layer 0 is not finite" in str(e)
    assert np.isnan(m.layers[0].weight[SPECIAL]).all()
    assert np.isfinite(np.delete(m.layers[0].weight, SPECIAL, axis=0)).all()


@pytest.mark.parametrize("fused", PATHS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_a_running_variance_overflow(dtype, fused):
    """W_0 scaled by 1e25 (float32) or 1e160 (float64) after step 2: the pre-BN values spread by
    that scale over a batch of distinct contexts, so the squared deviations reach ~1e50
    (~1e320), the batch variance is beyond the largest float by ten orders of magnitude and
    running_var becomes +inf, while batch norm's output stays finite: step 3 diverges,
    applied."""
    XY = dataset()
    m = model(dtype)
    scale = 1e25 if dtype == np.float32 else 1e160
    e = run(m, XY, fused, callback=inject_at(2, lambda: m.layers[1].weight.__imul__(scale)))
    assert e.step == 3 and e.divergence.kind == "running statistic" and e.divergence.applied
    assert str(e) == ("training diverged at step 3 (lr 0.1): running_var of layer 2 is not "
                      "finite; the model holds the state after this step's update")
    assert np.isinf(m.layers[2].running_var).any()
    assert all(np.isfinite(p).all() for p in m.parameters())


def test_without_batchnorm_an_infinite_preactivation_stops_the_run():
    """The case a finite loss hid: embedding 1, W_0 = 3e38 (30 positive terms per sum, +inf in
    any order); tanh(+inf) is 1, its gradient 0, and the loss stays finite. It diverges at the
    first step, not applied (the per-layer path: the fused one needs batch norm)."""
    XY = dataset()
    for dtype, big in ((np.float32, 3e38), (np.float64, 1e308)):
        m = model(dtype, batchnorm=False)
        m.layers[0].weight[...] = 1
        m.layers[1].weight[...] = big
        before = state(m)
        e = run(m, XY, "auto")
        assert e.step == 0 and e.divergence.kind == "pre-activation"
        assert "the output of layer 1 (Linear), the input of the tanh, is not finite" in str(e)
        assert_same(state(m), before)


def test_a_huge_learning_rate_raises():
    """fastbn.train(m, data, lr_schedule=1e39) on float32 (1e39 is +inf in float32) raises, on
    both paths, at step 0; the model then refuses to sample, evaluate or be saved."""
    XY = dataset()
    for fused in (True, False):
        m = model(np.float32)
        e = run(m, XY, fused, lr_schedule=1e39)
        assert e.step == 0 and isinstance(e, FloatingPointError)
        again = pickle.loads(pickle.dumps(e))           # as from a worker process
        assert (again.step, again.lr, str(again)) == (0, 1e39, str(e))
        with pytest.raises(ValueError, match="sample: the model's parameter 0.weight holds NaN"):
            m.sample(5)
        with pytest.raises(ValueError, match="evaluate: the model's parameter 0.weight"):
            m.evaluate(*XY)


# ----------------------------------------------------------------------------------------------
# the compiled trainer's own calls

def test_the_fused_trainer_reports_the_step_within_a_run():
    X, Y = dataset()
    expect = first_step_with_row(17)
    m = model(np.float32)
    m.layers[0].weight[SPECIAL] = 3e38
    m.layers[1].weight[...] = np.abs(m.layers[1].weight) + 1
    t = fastbn.fused.FusedTrainer(m, B)
    done, losses = t.run(X, Y, 100, 0.1, BatchSampler(SEED))
    assert done == expect and t.divergence.kind == "pre-activation"
    assert np.isfinite(losses[:done]).all()
    # the step API: a pre-activation that is not finite is reported, nothing is updated
    before = state(m)
    rows = np.arange(B) + 17 - 3
    t.step(X, Y, 0.1, rows)
    assert t.divergence.kind == "pre-activation"
    assert_same(state(m), before)
    t.step(X, Y, 0.1, np.arange(B))         # without row 17: a good step
    assert t.divergence is None


# ----------------------------------------------------------------------------------------------
# saving, sampling, evaluating a model that is not finite

@pytest.mark.parametrize("where", ["param", "buffer", "negative variance"])
def test_save_refuses_what_load_would_refuse(tmp_path, where):
    m = model(np.float32)
    good = tmp_path / "model.npz"
    fastbn.save(m, good)
    before = good.read_bytes()
    if where == "param":
        m.layers[1].weight[0, 0] = np.inf
        match = r"parameter 1.weight holds NaN or infinite values"
    elif where == "buffer":
        m.layers[2].running_var[3] = np.nan
        match = r"running statistic 2.running_var holds NaN or infinite values"
    else:
        m.layers[2].running_var[3] = -1
        match = "2.running_var has negative variances"
    with pytest.raises(ValueError, match=match):
        fastbn.save(m, good)
    assert good.read_bytes() == before      # the good file is left as it was
    fastbn.load(good)


def test_sample_and_evaluate_refuse_a_non_finite_model_folded_too():
    X, Y = dataset()
    m = model(np.float32)
    m.layers[2].running_var[0] = np.inf
    with pytest.raises(ValueError, match="sample: .*2.running_var holds NaN"):
        m.sample(3)
    with pytest.raises(ValueError, match="evaluate: .*2.running_var"):
        m.evaluate(X, Y)
    folded = fastbn.fold_batchnorm(model(np.float32))   # fold_batchnorm refuses a NaN model
    bias = folded.layers[-1].bias                        # (read-only: inference only)
    bias.setflags(write=True)
    bias[2] = np.nan
    with pytest.raises(ValueError, match="sample: the model's parameter"):
        folded.sample(3)
    with pytest.raises(ValueError, match="evaluate: the model's parameter"):
        folded.evaluate(X, Y)


@pytest.mark.parametrize("layer, attr", [(2, "gamma"), (2, "running_mean"), (4, "bias")])
def test_fold_batchnorm_names_what_is_not_finite(layer, attr):
    """Folding a diverged model says which array is not finite (a NaN gamma was reported as
    "running_var + eps is 1.00001 for feature 0", a finite value)."""
    m = model(np.float32)
    getattr(m.layers[layer], attr)[1] = np.nan
    with pytest.raises(ValueError, match=rf"fold_batchnorm: the model's .* {layer}.{attr} holds"):
        fastbn.fold_batchnorm(m)


# ----------------------------------------------------------------------------------------------
# the command line

def test_a_diverged_cli_run_keeps_the_folders_good_checkpoint(tmp_path, capsys):
    """`fastbn train --out r --force` over a folder holding a good checkpoint (--force lets the
    run replace it when it ends well, never before): the run diverges at step
    20 (lr 1e39 is +inf in float32: every parameter is non-finite after that update, on every
    CPU), exits 1 with one line and no traceback, and r/model.npz is the good one, untouched."""
    words = tmp_path / "words.txt"
    words.write_text("\n".join(["anna", "bob", "otto", "ada", "abba", "nan"] * 20) + "\n")
    out = tmp_path / "r"
    common = ["train", "--data", str(words), "--steps", "40", "--batch-size", "8",
              "--n-hidden", "16", "--out", str(out), "--quiet", "--no-plot"]
    assert main(common) == 0
    capsys.readouterr()
    good = (out / "model.npz").read_bytes()
    assert main(common[:-4] + ["--lr-schedule", "0:0.1,20:1e39", "--out", str(out), "--force",
                               "--quiet", "--no-plot"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert err.startswith("fastbn train: error: training diverged at step 20 (lr 1e+39): "
                          "weight of layer 0 is not finite")
    assert f"{out / 'model.npz'} is left as it was" in err
    assert (out / "model.npz").read_bytes() == good
    m = fastbn.load(out / "model.npz")
    assert m.meta["complete"] and np.isfinite(m.evaluate(*data.load_dataset(
        words, block_size=3).split("train")))
