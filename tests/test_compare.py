"""fastbn.compare: a student's backward of one op against fastbn's, plus finite differences."""
import numpy as np
import pytest

from fastbn import compare, reference
from fastbn.comparison import OPS

# -- the student's functions: right ones, and the classic bugs ----------------------------------

def bn_backward(dout, cache):
    """fastbn's (biased) batch norm, from the cache, in one go."""
    B = dout.shape[0]
    dbeta = dout.sum(0)
    dgamma = (dout * cache.xhat).sum(0)
    return cache.gamma * cache.invstd / B * (B * dout - dbeta - cache.xhat * dgamma), dgamma, dbeta


def lecture_bn_backward(dout, cache):
    """The lecture's (Bessel-corrected) batch norm: the n/(n-1) term."""
    B = dout.shape[0]
    dbeta = dout.sum(0)
    dgamma = (dout * cache.xhat).sum(0)
    return (cache.gamma * cache.invstd / B * (B * dout - dbeta - B / (B - 1) * cache.xhat * dgamma),
            dgamma, dbeta)


def bn_backward_from_inputs(dout, x, gamma, beta, eps=1e-5):
    """Step by step from the forward's inputs (call="inputs")."""
    B = x.shape[0]
    mu = x.mean(0)
    xc = x - mu
    var = (xc**2).mean(0)
    inv = (var + eps) ** -0.5
    dxhat = dout * gamma
    dvar = -0.5 * (var + eps) ** -1.5 * (dxhat * xc).sum(0)
    dxc = dxhat * inv + 2 * xc / B * dvar
    return dxc - dxc.sum(0) / B, (dout * xc * inv).sum(0), dout.sum(0)


def linear_backward(dout, cache):
    return dout @ cache.w.T, cache.x.T @ dout, dout.sum(0)


def linear_transposed_dw(dout, cache):
    return dout @ cache.w.T, dout.T @ cache.x, dout.sum(0)


def bn_no_sum_for_dgamma(dout, cache):
    dx, _, dbeta = bn_backward(dout, cache)
    return dx, dout * cache.xhat, dbeta


# ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("op", sorted(OPS))
def test_passes_the_numpy_reference_of_every_op(op, dtype):
    """fastbn.reference's (forward, backward) pairs, CS231n style, graded against the kernels."""
    pair = (getattr(reference, op + "_forward"), getattr(reference, op + "_backward"))
    report = compare(pair, op, dtype=dtype)
    assert report.ok, report
    names = [r.name for r in report.rows]
    assert names[0] == "out" and all(n.startswith("d") for n in names[1:])
    assert all(r.fd.startswith("pass") for r in report.rows[1:])
    assert len(repr(report)) < 600


@pytest.mark.parametrize("B", [2, 3, 64, 1024])
def test_float32_tolerances_hold_at_large_batches(B):
    pair = (reference.batchnorm_forward, reference.batchnorm_backward)
    assert compare(pair, "batchnorm", shapes={"B": B}, dtype=np.float32,
                   finite_differences=False).ok
    pair = (reference.linear_forward, reference.linear_backward)
    assert compare(pair, "linear", shapes={"B": B}, dtype=np.float32,
                   finite_differences=False).ok


@pytest.mark.parametrize("student,call", [(bn_backward, "cache"),
                                          (bn_backward_from_inputs, "inputs")])
@pytest.mark.parametrize("B", [2, 8])
def test_passes_a_correct_batchnorm_backward_in_each_form(student, call, B):
    report = compare(student, "batchnorm", shapes={"B": B}, call=call)
    assert report.ok, report
    assert [r.name for r in report.rows] == ["dx", "dgamma", "dbeta"]
    assert "compare " + student.__name__ in report.title


def test_catches_a_missing_bessel_factor():
    report = compare(lecture_bn_backward, "batchnorm", unbiased=True)
    assert report.ok, report
    wrong = compare(bn_backward, "batchnorm", unbiased=True)      # no B/(B-1)
    assert not wrong.ok
    assert not wrong["dx"].approximate and wrong["dx"].fd_ok is False
    assert wrong["dgamma"].ok and wrong["dbeta"].ok
    assert wrong["dx"].kind == "slip" and "B/(B-1)" in wrong["dx"].diagnosis
    assert wrong["dx"].worst is not None and "unbiased=True" in wrong.title
    assert not compare(lecture_bn_backward, "batchnorm").ok      # and the other way round


def test_catches_a_missing_sum_over_the_batch():
    report = compare(bn_no_sum_for_dgamma, "batchnorm")
    assert not report.ok and report["dx"].ok and report["dbeta"].ok
    row = report["dgamma"]
    assert not row.ok and "shape (8, 6), expected (6,)" in row.note
    assert row.kind == "unsummed" and "axis 0" in row.diagnosis
    assert any("finite differences could not run" in n for n in report.notes)
    assert "FAIL" in repr(report) and "dgamma" in repr(report)


def test_catches_a_transposed_weight_gradient():
    assert compare(linear_backward, "linear").ok
    report = compare(linear_transposed_dw, "linear")               # (O, I) for (I, O)
    assert not report.ok and "shape (5, 7), expected (7, 5)" in report["dw"].note
    square = compare(linear_transposed_dw, "linear", shapes={"I": 5, "O": 5})
    assert not square.ok and not square["dw"].approximate
    assert square["dw"].fd_ok is False                             # finite differences agree
    assert square["dx"].ok and square["db"].ok
    assert square["dw"].kind == "transposed" and "square" in square["dw"].diagnosis
    assert report["dw"].kind == "transposed" and not report["dx"].diagnosis


def test_worst_index_and_values_point_at_the_wrong_element():
    def off_by_one_element(dout, cache):
        dx, dgamma, dbeta = bn_backward(dout, cache)
        dx = dx.copy()
        dx[3, 1] += 0.25
        return dx, dgamma, dbeta
    row = compare(off_by_one_element, "batchnorm")["dx"]
    assert row.worst == (3, 1) and row.maxdiff == pytest.approx(0.25, rel=1e-9)
    assert row.value - row.reference == pytest.approx(0.25, rel=1e-9)


def test_missing_and_extra_gradients_are_reported():
    report = compare(lambda d, c: bn_backward(d, c)[:2], "batchnorm")
    assert report["dbeta"].note == "not returned" and not report.ok
    assert report["dbeta"].fd_ok is False                          # gradcheck: no gradient
    report = compare(lambda d, c: (*linear_backward(d, c), d), "linear")
    assert not report.ok and "returned 4 gradients" in str(report)
    assert "a lambda" in report.title


def test_the_students_exceptions_propagate():
    def broken(dout, cache):
        raise ZeroDivisionError("my bug")
    with pytest.raises(ZeroDivisionError, match="my bug"):
        compare(broken, "tanh")


def test_a_student_cannot_change_the_reference():
    def vandal(dout, cache):
        grads = bn_backward(dout.copy(), cache)
        dout *= 0                                  # scribbles over everything it was given
        cache.xhat[...] = 0
        cache.gamma[...] = 0
        cache.x[...] = 0
        return grads
    assert compare(vandal, "batchnorm").ok


def test_cache_carries_the_forward_inputs_by_name():
    seen = {}

    def spy(dout, cache):
        seen.update(vars(cache))
        return bn_backward(dout, cache)
    compare(spy, "batchnorm", shapes={"B": 4, "D": 3}, finite_differences=False)
    assert {"x", "gamma", "beta", "xhat", "invstd", "mean", "var", "eps"} <= set(seen)
    assert seen["x"].shape == (4, 3) and seen["gamma"].shape == (3,)


def test_options_pass_through():
    def leaky(dout, cache):
        return np.where(cache.x > 0, dout, 0.3 * dout)
    assert compare(leaky, "leaky_relu", negative_slope=0.3).ok
    assert not compare(leaky, "leaky_relu").ok                     # the default slope is 0.01
    assert compare(bn_backward, "batchnorm", eps=0.5).title.count("eps=0.5") == 1


@pytest.mark.parametrize("kw,err,match", [
    ({"op": "softmax"}, ValueError, "unknown op"),
    ({"shapes": {"Q": 3}}, ValueError, "no dimension 'Q'"),
    ({"shapes": {"B": 0}}, ValueError, "positive integer"),
    ({"shapes": (8, 6)}, TypeError, "dict"),
    ({"dtype": np.float16}, TypeError, "float32 or float64"),
    ({"call": "tuple"}, ValueError, "call"),
    ({"slope": 0.1}, TypeError, "no option 'slope'"),
])
def test_bad_arguments_are_clear_errors(kw, err, match):
    args = {"op": "batchnorm", **kw}
    with pytest.raises(err, match=match):
        compare(bn_backward, **args)
    with pytest.raises(TypeError, match="callable"):
        compare(42, "tanh")
    with pytest.raises(TypeError, match="pair"):
        compare((bn_backward,), "tanh")


def test_html_and_repr_are_short_tables():
    report = compare(linear_transposed_dw, "linear", shapes={"I": 5, "O": 5})
    text = repr(report)
    assert text == str(report) and len(text) < 600
    assert text.splitlines()[-1].strip() == "-> FAIL (wrong: dw)"
    page = report._repr_html_()
    assert page.count("<tr>") == 4 and "finite diff." in page and "#cf222e" in page
