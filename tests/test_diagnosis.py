"""fastbn.diagnosis: every error signature names the bug it stands for, in the part-4 chain and
in compare's ops; right answers get no diagnosis, unexplained errors get a location; the first
wrong step of the chain is named and what only follows from it is marked."""
from types import SimpleNamespace

import numpy as np
import pytest

from fastbn import compare
from fastbn import exercises as ex
from fastbn.diagnosis import SIGNATURES, Knowledge, Tolerance, diagnose, locate

DTYPES = [np.float64, np.float32]


# -- the chain: a student's backward with one step replaced, the rest computed from it ----------

def student(bugs, dtype=np.float64, n=32, **sizes):
    """Every gradient of the chain, computed the right way from the student's upstream ones,
    except the steps in ``bugs`` ({name: e -> the buggy array})."""
    params, Xb, Yb = ex.problem(n, dtype=dtype, **sizes)
    g = ex.backward(ex.forward(params, Xb, Yb), params)
    e = SimpleNamespace(**vars(g.steps))
    for k in ex.GRADIENTS:
        try:
            setattr(e, k, bugs[k](e) if k in bugs else ex.STEPS[k](e))
        except ValueError:              # a wrong shape upstream that does not broadcast
            setattr(e, k, g[k])
    return {k: getattr(e, k) for k in ex.GRADIENTS}, g


def graded(bugs, dtype=np.float64, **sizes):
    got, g = student(bugs, dtype, **sizes)
    return ex.check(got, reference=g, verbose=False)


CHAIN_BUGS = [
    # (the step, the bug, the signature, words the sentence must hold)
    ("dcounts", lambda e: e.counts_sum_inv * e.dprobs, "missing_branch", "through counts_sum"),
    ("dbndiff", lambda e: e.bnvar_inv * e.dbnraw, "missing_branch", "through bndiff2"),
    ("dhprebn", lambda e: e.dbndiff.copy(), "missing_branch", "through bnmeani"),
    ("dlogits", lambda e: ex.STEPS["dlogits"].parts[1][1](e), "missing_branch",
     "through norm_logits"),
    ("dbndiff2", lambda e: 1.0 / e.n * np.ones_like(e.bndiff2) * e.dbnvar, "factor",
     "(n-1)/n"),
    ("dlogprobs", lambda e: ex.STEPS["dlogprobs"](e) * e.n, "factor", "is n = 32 ×"),
    ("dbnmeani", lambda e: e.dbndiff.sum(0, keepdims=True), "factor", "sign is flipped"),
    ("db2", lambda e: e.dlogits.mean(0), "factor", "1/n"),
    ("dW1", lambda e: e.dhprebn.T @ e.embcat, "transposed", "transpose"),
    ("dcounts_sum_inv", lambda e: (e.counts * e.dprobs).sum(1), "keepdims", "keepdims"),
    ("dbnmeani", lambda e: (-e.dbndiff).sum(0), "keepdims", "keepdims"),
    ("dbngain", lambda e: e.bnraw * e.dhpreact, "unsummed", "axis 0"),
    ("db2", lambda e: e.dlogits, "unsummed", "axis 0"),
    ("db1", lambda e: e.dhprebn[0], "one_row", "row 0"),
    ("dbnbias", lambda e: e.dhpreact[-1:], "one_row", "row 31"),
    ("dW2", lambda e: e.h[5:6].T @ e.dlogits[5:6], "one_row", "row 5"),
    ("dcounts_sum_inv", lambda e: (e.counts * e.dprobs).sum(0, keepdims=True), "wrong_axis",
     "axis 0"),
    ("dhpreact", lambda e: (1.0 - e.hpreact**2) * e.dh, "slip", "1 - hpreact**2"),
    ("dprobs", lambda e: (1.0 / e.logprobs) * e.dlogprobs, "slip", "output logprobs"),
    ("dbnvar", lambda e: (-0.5 * e.bnvar_inv**-1.5) * e.dbnvar_inv, "slip", "output bnvar_inv"),
    ("dcounts_sum", lambda e: (-e.counts_sum_inv**-2) * e.dcounts_sum_inv, "slip", "output"),
    ("dlogprobs", lambda e: ex._pick_columns(e), "slip", "[:, Yb]"),
    ("dC", lambda e: ex._embed(e, accumulate=False), "slip", "np.add.at"),
    ("dlogits_fast", lambda e: ex._softmax_minus_onehot(e, rows=slice(None)), "slip",
     "[:, Yb]"),
    ("dhprebn_fast", lambda e: ex.STEPS["dhprebn_fast"].slips[0][1](e), "slip", "biased"),
    ("dhprebn_fast", lambda e: (ex.BN_PATHS[0][1](e) + ex.BN_PATHS[2][1](e)), "missing_branch",
     "through the mean"),
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("step,bug,kind,words", CHAIN_BUGS,
                         ids=[f"{s}-{k}-{i}" for i, (s, _, k, _) in enumerate(CHAIN_BUGS)])
def test_each_chain_bug_is_named(step, bug, kind, words, dtype):
    report = graded({step: bug}, dtype)
    row = report[step]
    assert not row.ok, row
    assert row.kind == kind, (row.kind, row.diagnosis)
    assert words in row.diagnosis, row.diagnosis
    assert row.diagnosis.startswith("first wrong step: ") == (len(report.failures()) > 1)
    assert report.summary[0].startswith(f"first wrong step: {step}: ")
    assert f"| {row.diagnosis}" in str(report)               # the cmp line carries it


def test_a_transpose_of_a_square_gradient_is_seen():
    # n_hidden = vocab_size: W2 is square, and dW2 = dlogits.T @ h keeps the shape
    report = graded({"dW2": lambda e: e.dlogits.T @ e.h}, n_hidden=27)
    row = report["dW2"]
    assert row.shape == row.expected == (27, 27) and not row.ok
    assert row.kind == "transposed" and "square" in row.diagnosis


@pytest.mark.parametrize("dtype", DTYPES)
def test_the_first_wrong_step_and_what_follows_from_it(dtype):
    report = graded({"dcounts": lambda e: e.counts_sum_inv * e.dprobs}, dtype)
    order = [r.name for r in report.rows]
    first = order.index("dcounts")
    assert all(r.ok and not r.diagnosis for r in report.rows[:first])
    assert report["dcounts"].kind == "missing_branch"
    later = [r for r in report.rows[first + 1:] if not r.ok]
    assert len(later) > 15
    assert all(r.kind == "follows" and r.follows == "dcounts" for r in later), \
        [(r.name, r.kind) for r in later]
    assert report["dnorm_logits"].diagnosis.startswith("follows from your dcounts")
    assert "(first wrong step: dcounts)" in report["dh"].diagnosis
    assert report.summary[1].startswith("wrong only because of dcounts: dnorm_logits")
    assert report["dlogits_fast"].ok                          # independent of the chain
    page = report._repr_html_()
    assert "<th>diagnosis</th>" in page and "wrong only because of dcounts" in page
    assert page.count("<tr>") == len(report.rows) + 1
    assert all(line.startswith(r.name) for line, r in zip(str(report).splitlines(),
                                                          report.rows))


def test_the_figure_colours_every_step():
    import matplotlib
    matplotlib.use("Agg")
    from matplotlib.figure import Figure
    report = graded({"dhpreact": lambda e: (1.0 - e.hpreact**2) * e.dh})
    fig = report.figure()
    assert isinstance(fig, Figure)
    boxes = {t.get_text(): t.get_bbox_patch().get_facecolor() for t in fig.axes[0].texts}
    assert set(boxes) == set(ex.GRADIENTS)
    colours = {boxes["dh"], boxes["dhpreact"], boxes["dbnraw"]}
    assert len(colours) == 3                         # right, wrong, follows
    assert len(fig.axes[0].patches) == sum(len(v) for v in report.graph.values())


def test_a_second_own_error_after_the_first_is_named_too():
    report = graded({"dcounts": lambda e: e.counts_sum_inv * e.dprobs,
                     "dhpreact": lambda e: (1.0 - e.hpreact**2) * e.dh})
    assert report["dlogits"].kind == "follows"
    row = report["dhpreact"]
    assert row.kind == "slip" and row.follows == ""
    assert row.diagnosis.startswith("besides your wrong dh: the tanh derivative")
    assert report["dbnraw"].follows == "dhpreact"
    assert report.summary[0].startswith("first wrong step: dcounts")
    assert any(s.startswith("also wrong in its own step: dhpreact") for s in report.summary)


def test_a_wrong_shape_upstream_that_broadcasts_downstream_is_followed():
    report = graded({"dcounts_sum_inv": lambda e: (e.counts * e.dprobs).sum(1)})
    assert report["dcounts_sum_inv"].kind == "keepdims"
    row = report["dcounts_sum"]                  # (n,1) * (n,) broadcasts to (n, n)
    assert row.shape == (32, 32) and row.kind == "follows" and row.follows == "dcounts_sum_inv"


@pytest.mark.parametrize("dtype", DTYPES)
def test_right_answers_get_no_diagnosis(dtype):
    got, g = student({}, dtype)
    report = ex.check(got, verbose=False)
    assert report.ok and report.summary == []
    assert all(r.diagnosis == "" and r.kind == "" and r.status == "exact" for r in report.rows)
    page = report._repr_html_()
    assert "diagnosis" not in page


def test_random_errors_get_no_signature_and_their_location():
    rng = np.random.default_rng(1)

    def noisy(e):
        dh = ex.STEPS["dh"](e).copy()
        dh[[3, 17]] += rng.standard_normal((2, dh.shape[1])) * 0.01
        return dh
    report = graded({"dh": noisy})
    row = report["dh"]
    assert row.kind == "unknown" and "no known signature" in row.diagnosis
    assert "128 of 2048 elements are off" in row.diagnosis
    assert "rows 3, 17 (2 of 32)" in row.diagnosis and "(64 of 64)" in row.diagnosis
    # a buggy downstream of it still follows from it
    assert report["dhpreact"].kind == "follows"


def test_a_signature_must_hold_to_tolerance_not_roughly():
    want = np.random.default_rng(0).standard_normal((8, 6))
    tol = Tolerance(1e-5, 1e-8)
    assert diagnose(8 * want, want, Knowledge(scalars={"n": 8}), tol).kind == "factor"
    near = 8 * want * (1 + 1e-3 * np.random.default_rng(1).standard_normal(want.shape))
    d = diagnose(near, want, Knowledge(scalars={"n": 8}), tol)
    assert d.kind == "unknown" and d.text.startswith("no known signature")
    assert diagnose(want.T * (1 + 1e-4), want, None, tol).kind == "unknown"
    assert diagnose(want[:, :5], want, None, tol).kind == "unknown"          # another size


def test_signatures_are_documented_with_their_formula():
    assert [s.__name__ for s in SIGNATURES] == ["keepdims", "unsummed", "wrong_axis",
                                                "transposed", "missing_branch", "slip",
                                                "one_row", "factor"]
    for s in SIGNATURES:
        assert "≈" in s.__doc__ and "Parameters" in s.__doc__, s.__name__


def test_locate_names_rows_columns_and_the_worst_element():
    want = np.zeros((4, 5))
    got = want.copy()
    got[2, 3] = 0.5
    text = locate(got, want, Tolerance())
    assert text == ("1 of 20 elements are off, rows 2 (1 of 4), columns 3 (1 of 5); "
                    "max |diff| 0.5 at (2, 3), 5e+07 of max |reference|")


# -- compare's ops ---------------------------------------------------------------------------

def bn(dout, cache, k=1.0, mean=True):
    B = dout.shape[0]
    dbeta, dgamma = dout.sum(0), (dout * cache.xhat).sum(0)
    dx = cache.gamma * cache.invstd / B * (B * dout - (dbeta if mean else 0)
                                           - k * cache.xhat * dgamma)
    return dx, dgamma, dbeta


def lin(dout, cache):
    return dout @ cache.w.T, cache.x.T @ dout, dout.sum(0)


def ce(dout, cache):
    B, C = cache.probs.shape
    return (cache.probs - np.eye(C)[cache.target]) / B * dout


OP_BUGS = [
    # (op, the student's backward, compare's options, the gradient, signature, words)
    ("linear", lambda d, c: (lin(d, c)[0], d.T @ c.x, d.sum(0)), {}, "dw", "transposed",
     "transpose"),
    ("linear", lambda d, c: (lin(d, c)[0], d.T @ c.x, d.sum(0)), {"shapes": {"I": 5, "O": 5}},
     "dw", "transposed", "square"),
    ("linear", lambda d, c: (lin(d, c)[0], lin(d, c)[1], d), {}, "db", "unsummed", "axis 0"),
    ("linear", lambda d, c: (lin(d, c)[0], lin(d, c)[1], d[2]), {}, "db", "one_row", "row 2"),
    ("linear", lambda d, c: (lin(d, c)[0], c.x.T @ d / d.shape[0], d.sum(0)), {}, "dw",
     "factor", "1/B"),
    ("linear", lambda d, c: (-lin(d, c)[0], *lin(d, c)[1:]), {}, "dx", "factor", "sign"),
    ("linear", lambda d, c: (d @ c.w, *lin(d, c)[1:]), {"shapes": {"I": 5, "O": 5}}, "dx",
     "slip", "w.T"),
    ("batchnorm", lambda d, c: bn(d, c, k=d.shape[0] / (d.shape[0] - 1)), {}, "dx", "slip",
     "unbiased (÷(B-1)) variance's"),
    ("batchnorm", lambda d, c: bn(d, c), {"unbiased": True}, "dx", "slip",
     "biased (÷B) variance's"),
    ("batchnorm", lambda d, c: bn(d, c, mean=False), {}, "dx", "missing_branch",
     "through the mean"),
    ("batchnorm", lambda d, c: (bn(d, c)[0], d * c.xhat, d.sum(0)), {}, "dgamma", "unsummed",
     "axis 0"),
    ("batchnorm", lambda d, c: (*bn(d, c)[:2], d[-1]), {}, "dbeta", "one_row", "row 7"),
    ("batchnorm", lambda d, c: (bn(d, c)[0], bn(d, c)[1] * 8 / 7, d.sum(0)), {}, "dgamma",
     "factor", "is B/(B-1) = 1.14286 × the reference everywhere: the unbiased variance's"),
    ("batchnorm", lambda d, c: (*bn(d, c)[:2], d.sum(0, keepdims=True)), {}, "dbeta",
     "keepdims", "an axis the tensor does not have"),
    ("tanh", lambda d, c: (1 - c.x**2) * d, {}, "dx", "slip", "1 - x**2"),
    ("tanh", lambda d, c: 1 - c.out**2, {}, "dx", "slip", "multiply it by the upstream"),
    ("tanh", lambda d, c: (c.out**2 - 1) * d, {}, "dx", "factor", "sign is flipped"),
    ("cross_entropy", lambda d, c: ce(d, c) * c.probs.shape[0], {}, "dlogits", "factor",
     "is B = 8 ×"),
    ("cross_entropy", lambda d, c: ce(d, c) / d, {}, "dlogits", "factor", "1/dout"),
    ("cross_entropy", lambda d, c: ce(1.0, c) * c.probs.shape[0], {}, "dlogits", "slip",
     "without the upstream scalar"),
    ("embedding", None, {}, "dweight", "slip", "np.add.at"),
]


def embedding_assigned(dout, cache):
    dw = np.zeros(cache.weight_shape, dtype=dout.dtype)
    dw[cache.idx] = dout.reshape(cache.idx.shape + (-1,))
    return dw


def cross_entropy_scattered(dout, cache):
    B = cache.probs.shape[0]
    d = cache.probs.copy()
    d[:, cache.target] -= 1
    return d / B * dout


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("op,fn,kw,name,kind,words", OP_BUGS,
                         ids=[f"{o}-{n}-{k}-{i}" for i, (o, _, _, n, k, _) in enumerate(OP_BUGS)])
def test_each_op_bug_is_named(op, fn, kw, name, kind, words, dtype):
    fn = embedding_assigned if fn is None else fn
    report = compare(fn, op, dtype=dtype, finite_differences=False, **kw)
    row = report[name]
    assert not row.ok and row.kind == kind, (row.kind, row.diagnosis)
    assert words in row.diagnosis, row.diagnosis
    assert f"why: {row.diagnosis}" in str(report)
    assert "<th>diagnosis</th>" in report._repr_html_()
    assert all(r.ok == (r.diagnosis == "") for r in report.rows)


@pytest.mark.parametrize("dtype", DTYPES)
def test_a_scatter_into_the_wrong_rows_is_named(dtype):
    row = compare(cross_entropy_scattered, "cross_entropy", dtype=dtype)["dlogits"]
    assert row.kind == "slip" and "[:, target]" in row.diagnosis


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("op,fn,kw", [("linear", lin, {}), ("batchnorm", bn, {}),
                                      ("batchnorm", lambda d, c: bn(d, c, k=8 / 7),
                                       {"unbiased": True}), ("tanh", None, {}),
                                      ("cross_entropy", ce, {})])
def test_right_op_answers_get_no_diagnosis(op, fn, kw, dtype):
    from fastbn import ops
    fn = ops.tanh_backward if fn is None else fn
    report = compare(fn, op, dtype=dtype, **kw)
    assert report.ok and all(r.diagnosis == "" for r in report.rows), report
    assert "why:" not in str(report)


def test_a_random_op_error_is_located():
    def off(dout, cache):
        dx, dgamma, dbeta = bn(dout, cache)
        dx = dx.copy()
        dx[:, 4] += 0.3
        return dx, dgamma, dbeta
    row = compare(off, "batchnorm")["dx"]
    assert row.kind == "unknown"
    assert "8 of 48 elements are off" in row.diagnosis and "columns 4 (1 of 6)" in row.diagnosis


def test_nothing_is_diagnosed_for_right_answers(monkeypatch):
    """The diagnosis runs only on wrong arrays: right answers cost what they did."""
    import fastbn.comparison as comparison
    import fastbn.diagnosis as diagnosis

    def refuse(*args, **kwargs):
        raise AssertionError("diagnosed a right answer")
    monkeypatch.setattr(comparison, "diagnose", refuse)
    monkeypatch.setattr(comparison, "op_knowledge", refuse)
    monkeypatch.setattr(diagnosis, "diagnose", refuse)
    got, g = student({})
    assert ex.check(got, verbose=False).ok
    assert compare(lin, "linear").ok and compare(bn, "batchnorm").ok
    with pytest.raises(AssertionError, match="diagnosed"):
        compare(lambda d, c: (-lin(d, c)[0], *lin(d, c)[1:]), "linear")
