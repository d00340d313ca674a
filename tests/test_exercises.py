"""fastbn.exercises: the lecture's exploded forward, its hand-derived backward, and check()."""
import re

import numpy as np
import pytest

from fastbn import exercises as ex
from fastbn import ops
from fastbn.gradchecks import gradcheck

NAMES = ex.INTERMEDIATES + ex.PARAMS


def lecture_in_torch(torch, params, Xb, Yb):
    """makemore part 4's forward pass, as the lecture writes it, in float64 torch with autograd.

    Returns {name: tensor} for every intermediate (grads retained) and parameter, after
    loss.backward().
    """
    t = {k: torch.tensor(v, requires_grad=True) for k, v in params.items()}
    C, W1, b1, W2, b2, bngain, bnbias = (t[k] for k in ex.PARAMS)
    Xb, Yb = torch.tensor(Xb), torch.tensor(Yb)
    n = Xb.shape[0]
    emb = C[Xb]
    embcat = emb.view(emb.shape[0], -1)
    hprebn = embcat @ W1 + b1
    bnmeani = 1/n*hprebn.sum(0, keepdim=True)
    bndiff = hprebn - bnmeani
    bndiff2 = bndiff**2
    bnvar = 1/(n-1)*(bndiff2).sum(0, keepdim=True)
    bnvar_inv = (bnvar + 1e-5)**-0.5
    bnraw = bndiff * bnvar_inv
    hpreact = bngain * bnraw + bnbias
    h = torch.tanh(hpreact)
    logits = h @ W2 + b2
    logit_maxes = logits.max(1, keepdim=True).values
    norm_logits = logits - logit_maxes
    counts = norm_logits.exp()
    counts_sum = counts.sum(1, keepdims=True)
    counts_sum_inv = counts_sum**-1
    probs = counts * counts_sum_inv
    logprobs = probs.log()
    loss = -logprobs[range(n), Yb].mean()
    local = locals()
    inter = {k: local[k] for k in ex.INTERMEDIATES}
    for v in inter.values():
        v.retain_grad()
    loss.backward()
    return {**inter, **t, "loss": loss}


def sum_scale(g):
    """For gradients that are sums of cancelling terms (db1 and dlogit_maxes are zero in exact
    arithmetic), the rounding error scales with the sum of |terms|, not with the result."""
    return {"db1": np.abs(g["dhprebn"]).sum(0).max(),
            "dlogit_maxes": np.abs(g["dnorm_logits"]).sum(1).max()}


@pytest.mark.parametrize("n,repeats", [(2, False), (5, True), (32, False), (32, True)])
def test_backward_matches_torch_autograd_for_every_name(torch, n, repeats):
    params, Xb, Yb = ex.problem(n, seed=n)
    if repeats:                                  # 3 characters for n*3 slots: heavy repetition
        Xb = np.random.default_rng(n).integers(0, 3, Xb.shape)
        assert len(np.unique(Xb)) < Xb.size
    fwd = ex.forward(params, Xb, Yb)
    g = ex.backward(fwd, params)
    tt = lecture_in_torch(torch, params, Xb, Yb)
    assert float(fwd["loss"]) == pytest.approx(tt["loss"].item(), rel=1e-12)
    scale = sum_scale(g)
    for name in NAMES:
        want = tt[name].grad.numpy()
        got = g["d" + name]
        assert got.shape == want.shape and got.dtype == np.float64, name
        s = max(np.abs(want).max(), scale.get("d" + name, 0))
        np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-10 * s, err_msg=name)
        np.testing.assert_allclose(fwd[name] if name in fwd else params[name],
                                   tt[name].detach().numpy(), rtol=1e-12, atol=1e-14,
                                   err_msg=name)


def loss_vjp(*args):
    """The exercise as fn(C, W1, b1, W2, b2, bngain, bnbias, Xb, Yb) -> (loss, backward)."""
    params = dict(zip(ex.PARAMS, args[:7]))
    fwd = ex.forward(params, *args[7:])

    def backward(dloss):
        g = ex.backward(fwd, params)
        return [g["d" + k] * dloss for k in ex.PARAMS]
    return fwd["loss"], backward


@pytest.mark.parametrize("size", [dict(batch_size=8, n_hidden=16), dict(batch_size=2)])
def test_parameter_gradients_match_finite_differences(size):
    params, Xb, Yb = ex.problem(**size, seed=3)
    # gradients here are ~1e-3; float64 differences of a loss ~3 are good to ~1e-10, so the
    # tolerances are far tighter than gradcheck's defaults
    report = gradcheck(loss_vjp, [*params.values(), Xb, Yb], input_names=[*ex.PARAMS, "Xb", "Yb"],
                       atol=1e-8, rtol=1e-6, max_elements=400)
    assert report.passed and [r.input for r in report.rows] == list(ex.PARAMS)


def test_finite_differences_catch_a_wrong_parameter_gradient():
    params, Xb, Yb = ex.problem(8, n_hidden=16, seed=3)

    def broken(*args):
        loss, backward = loss_vjp(*args)
        return loss, lambda d: [g * (1.01 if i == 5 else 1) for i, g in enumerate(backward(d))]
    report = gradcheck(broken, [*params.values(), Xb, Yb], input_names=[*ex.PARAMS, "Xb", "Yb"],
                       atol=1e-8, rtol=1e-6, raise_exception=False)
    assert [r.passed for r in report.rows] == [True] * 5 + [False, True]   # dbngain 1 % off


@pytest.mark.parametrize("n", [2, 7, 32])
def test_one_step_exercises_equal_the_chain(n):
    params, Xb, Yb = ex.problem(n, seed=n)
    fwd = ex.forward(params, Xb, Yb)
    g = ex.backward(fwd, params)
    np.testing.assert_allclose(g["dlogits_fast"], g["dlogits"], rtol=1e-10,
                               atol=1e-12 * np.abs(g["dlogits"]).max())
    np.testing.assert_allclose(g["dhprebn_fast"], g["dhprebn"], rtol=1e-9,
                               atol=1e-12 * np.abs(g["dhprebn"]).max())
    # cross-entropy is fastbn's fused op; its backward is the same closed form
    _, c = ops.cross_entropy_forward(fwd["logits"], Yb)
    np.testing.assert_allclose(ops.cross_entropy_backward(1.0, c), g["dlogits_fast"],
                               rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("n", [2, 8, 32])
def test_the_lecture_batchnorm_is_fastbns_unbiased_one_not_its_default(n):
    """The exploded forward's batch norm is ops.batchnorm_forward(..., unbiased=True), and the
    one-expression dhprebn (and the step-by-step chain) its backward; the default differs."""
    params, Xb, Yb = ex.problem(n, seed=1)
    fwd = ex.forward(params, Xb, Yb)
    g = ex.backward(fwd, params)
    gamma, beta = params["bngain"].ravel(), params["bnbias"].ravel()
    out, c = ops.batchnorm_forward(fwd["hprebn"], gamma, beta, unbiased=True)
    np.testing.assert_allclose(out, fwd["hpreact"], rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(c.invstd, fwd["bnvar_inv"].ravel(), rtol=1e-12)
    dx, dgamma, dbeta = ops.batchnorm_backward(g["dhpreact"], c)
    for want in (g["dhprebn_fast"], g["dhprebn"]):
        np.testing.assert_allclose(dx, want, rtol=1e-9, atol=1e-12 * np.abs(dx).max())
    np.testing.assert_allclose(dgamma, g["dbngain"].ravel(), rtol=1e-12)
    np.testing.assert_allclose(dbeta, g["dbnbias"].ravel(), rtol=1e-12)
    biased, cb = ops.batchnorm_forward(fwd["hprebn"], gamma, beta)
    assert not np.allclose(biased, fwd["hpreact"])                   # 1/n vs 1/(n-1)
    assert not np.allclose(ops.batchnorm_backward(g["dhpreact"], cb)[0], g["dhprebn"])


# ----------------------------------------------------------------------------------------------
# parameters, forward, validation

def test_init_params_is_the_lectures_init():
    p = ex.init_params()
    assert {k: v.shape for k, v in p.items()} == {
        "C": (27, 10), "W1": (30, 64), "b1": (64,), "W2": (64, 27), "b2": (27,),
        "bngain": (1, 64), "bnbias": (1, 64)}
    assert all(v.dtype == np.float64 and np.all(v != 0) for v in p.values())
    # the scales the docstring gives (sample std of ~1000-2000 draws: within 10 %)
    expect = {"C": 1, "W1": (5 / 3) / 30**0.5, "W2": 0.1}
    for k, s in expect.items():
        assert p[k].std() == pytest.approx(s, rel=0.1), k
    assert np.abs(p["bngain"] - 1).max() < 0.5 and np.abs(p["bnbias"]).max() < 0.5
    assert sum(v.size for v in p.values()) == 4137                   # the lecture's count
    q = ex.init_params(dtype=np.float32)
    for k in p:
        np.testing.assert_array_equal(q[k], p[k].astype(np.float32))
        np.testing.assert_array_equal(ex.init_params()[k], p[k])     # seeded
    assert not np.array_equal(ex.init_params(seed=1)["C"], p["C"])
    assert ex.init_params(n_hidden=200)["W1"].shape == (30, 200)


def test_problem_has_repeated_indices_and_the_same_params():
    params, Xb, Yb = ex.problem()
    assert Xb.shape == (32, 3) and Yb.shape == (32,)
    assert len(np.unique(Xb)) < Xb.size
    for k, v in ex.init_params().items():
        np.testing.assert_array_equal(params[k], v)


def test_forward_names_loss_and_readonly():
    params, Xb, Yb = ex.problem()
    fwd = ex.forward(params, Xb, Yb)
    assert list(fwd) == list(ex.INTERMEDIATES) + ["loss"]
    loss, _ = ops.cross_entropy_forward(fwd["logits"], Yb)
    assert float(fwd["loss"]) == pytest.approx(float(loss), rel=1e-12)
    assert fwd["emb"].shape == (32, 3, 10) and fwd["bnvar"].shape == (1, 64)
    np.testing.assert_allclose(fwd["bnvar"].ravel(), fwd["hprebn"].var(0, ddof=1), rtol=1e-12)
    with pytest.raises(ValueError, match="read-only"):
        fwd["probs"][0, 0] = 1
    Xb2 = Xb.copy()
    f2 = ex.forward(params, Xb2, Yb)
    Xb2[:] = 0                                    # the caller's batch is copied
    np.testing.assert_array_equal(f2.Xb, Xb)
    assert len(repr(fwd)) < 200 and "loss" in repr(fwd)
    g = ex.backward(fwd, params)
    assert list(g) == list(ex.GRADIENTS) and len(repr(g)) < 200


def test_float32_runs_in_float32():
    params, Xb, Yb = ex.problem(dtype=np.float32)
    fwd = ex.forward(params, Xb, Yb)
    g = ex.backward(fwd, params)
    assert all(v.dtype == np.float32 for v in list(fwd.values()) + list(g.values()))


@pytest.mark.parametrize("change,err,match", [
    (lambda p, X, Y: (p, X[:1], Y[:1]), ValueError, "n >= 2"),
    (lambda p, X, Y: (p, X + 27, Y), IndexError, "Xb holds"),
    (lambda p, X, Y: (p, X, Y - 30), IndexError, "Yb holds"),
    (lambda p, X, Y: (p, X.astype(float), Y), TypeError, "integer"),
    (lambda p, X, Y: (p, X[:, :2], Y), ValueError, r"shape \(32, 3\)"),
    (lambda p, X, Y: (p, X, Y[:5]), ValueError, r"shape \(32,\)"),
    (lambda p, X, Y: ({k: v for k, v in p.items() if k != "b2"}, X, Y), ValueError, "b2"),
    (lambda p, X, Y: ({**p, "W2": p["W2"].T}, X, Y), ValueError, "W2"),
    (lambda p, X, Y: ({**p, "b1": p["b1"].astype(np.float32)}, X, Y), TypeError, "one dtype"),
    (lambda p, X, Y: ({**p, "C": p["C"].astype(int)}, X, Y), TypeError, "float32 or float64"),
    (lambda p, X, Y: ([1, 2], X, Y), TypeError, "dict"),
])
def test_bad_input_is_a_clear_error(change, err, match):
    with pytest.raises(err, match=match):
        ex.forward(*change(*ex.problem()))


def test_backward_refuses_a_foreign_forward():
    params, Xb, Yb = ex.problem()
    fwd = ex.forward(params, Xb, Yb)
    with pytest.raises(ValueError, match="not made with these params"):
        ex.backward(fwd, ex.init_params(n_hidden=16))
    with pytest.raises(ValueError, match="missing"):
        ex.backward({"emb": fwd["emb"]}, params)
    with pytest.raises(ValueError, match="minibatch"):
        ex.backward(dict(fwd), params)                  # a plain dict lost .Xb/.Yb
    g = ex.backward({**fwd, "Xb": Xb, "Yb": Yb}, params)    # ... which can be given as keys
    np.testing.assert_array_equal(g["dC"], ex.backward(fwd, params)["dC"])


# ----------------------------------------------------------------------------------------------
# check

CMP_LINE = re.compile(r"^(\S+)\s* \| exact: (True |False) \| approximate: (True |False) \| "
                      r"maxdiff: (\S+)(?: \| (.*))?$")


def test_check_passes_the_reference_and_prints_the_lectures_table(capsys):
    params, Xb, Yb = ex.problem()
    g = ex.backward(ex.forward(params, Xb, Yb), params)
    report = ex.check(dict(g))
    assert report.ok and all(r.exact and r.approximate and r.maxdiff == 0 for r in report.rows)
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == len(ex.GRADIENTS)
    for line, name in zip(lines, ex.GRADIENTS):
        m = CMP_LINE.match(line)
        assert m and m.groups()[:4] == (name, "True ", "True ", "0.0"), line
    assert len(repr(report)) < 300 and "ok" in repr(report)
    assert "<table>" in report._repr_html_() and report._repr_html_().count("<tr>") == 29


def test_check_reports_each_kind_of_mistake(capsys):
    params, Xb, Yb = ex.problem()
    g = ex.backward(ex.forward(params, Xb, Yb), params)
    wrong = g["dbnvar"].copy()
    wrong[0, 5] += 1e-3
    student = {
        "dprobs": g["dprobs"],
        "dbnvar": wrong,                                   # one element off
        "dW2": g["dW2"].astype(np.float32),               # float32 values of the right answer
        "dbnmeani": g["dbnmeani"].ravel(),                 # (64,) for (1, 64): the lecture's slip
        "dW1": g["dW1"].T,                                 # transposed
        "dbvnar": g["dbnvar"],                             # a typo
        "dC": None,
        "logits": g["dlogits"],                            # the lecture's cmp label, no "d"
    }
    report = ex.check(student, reference=g, verbose=False)
    assert capsys.readouterr().out == ""
    r = report
    assert r["dprobs"].ok and r["dprobs"].exact
    assert not r["dbnvar"].exact and not r["dbnvar"].approximate and not r["dbnvar"].ok
    assert r["dbnvar"].maxdiff == pytest.approx(1e-3, rel=1e-6) and r["dbnvar"].worst == (0, 5)
    assert not r["dW2"].exact and r["dW2"].approximate and r["dW2"].ok
    assert r["dW2"].maxdiff <= np.abs(g["dW2"]).max() * 2**-24 and "float32" in r["dW2"].note
    assert r["dbnmeani"].exact and not r["dbnmeani"].ok               # values right, shape not
    assert "shape (64,), expected (1, 64)" in r["dbnmeani"].note
    assert not r["dW1"].ok and not r["dW1"].approximate and "shape (64, 30)" in r["dW1"].note
    assert "unknown name" in r["dbvnar"].note and "dbnvar" in r["dbvnar"].note
    assert "not a numeric array" in r["dC"].note and not r["dC"].ok
    assert r["logits"].ok and r["logits"].exact
    assert not report.ok
    # each wrong row says what was most likely done (fastbn.diagnosis; tests/test_diagnosis.py)
    assert r["dW1"].kind == "transposed" and r["dbnmeani"].kind == "keepdims"
    assert r["dbnvar"].kind == "unknown" and "columns 5 (1 of 64)" in r["dbnvar"].diagnosis
    assert all(not row.diagnosis for row in report.rows if row.ok)
    assert report.summary[0].startswith("first wrong step: dbnvar")
    text = repr(report)
    assert len(text) < 300 and "FAIL" in text and "dbnvar" in text
    for line in str(report).splitlines():
        assert CMP_LINE.match(line), line


def test_check_holds_float32_entries_to_the_float32_run():
    params, Xb, Yb = ex.problem(dtype=np.float32)
    g32 = ex.backward(ex.forward(params, Xb, Yb), params)
    report = ex.check(dict(g32), verbose=False)     # the same steps in float32: bit-identical
    assert report.ok and all(r.exact for r in report.rows)
    p64, _, _ = ex.problem()
    g64 = ex.backward(ex.forward(p64, Xb, Yb), p64)
    report = ex.check({"dlogits": g64["dlogits"].astype(np.float32)}, verbose=False)
    assert report["dlogits"].approximate and not report["dlogits"].exact


def test_check_hints_at_the_reference_when_the_problem_differs():
    params, Xb, Yb = ex.problem(16)
    g = ex.backward(ex.forward(params, Xb, Yb), params)
    report = ex.check({"dlogits": g["dlogits"]}, verbose=False)
    assert not report.ok and "reference=backward(fwd, params)" in str(report)
    assert ex.check({"dlogits": g["dlogits"]}, reference=g, verbose=False).ok


def test_check_takes_torch_tensors(torch):
    params, Xb, Yb = ex.problem()
    g = ex.backward(ex.forward(params, Xb, Yb), params)
    report = ex.check({"dh": torch.tensor(g["dh"], requires_grad=True)}, verbose=False)
    assert report.ok and report["dh"].exact


def test_check_refuses_what_is_not_a_dict():
    with pytest.raises(TypeError, match="dict"):
        ex.check([1, 2])
    with pytest.raises(TypeError, match="reference"):
        ex.check({"dh": np.zeros(3)}, reference=[1])
    assert not ex.check({}, verbose=False).ok                  # nothing checked is not a pass
