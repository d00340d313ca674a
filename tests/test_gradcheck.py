"""The gradient checker itself, and the `fastbn gradcheck` command."""
import subprocess
import sys

import numpy as np
import pytest

from fastbn import cli, gradcheck, ops
from fastbn.gradcheck import GradcheckError


def test_passes_a_correct_backward_and_reports_every_input(rng):
    x, w, b = rng.standard_normal((4, 3)), rng.standard_normal((3, 2)), rng.standard_normal(2)
    report = gradcheck((ops.linear_forward, ops.linear_backward), (x, w, b))
    assert [r.input for r in report.rows] == ["x", "w", "b"]
    assert all(r.passed and r.checked == r.total for r in report.rows)
    assert max(r.max_abs_err for r in report.rows) < 1e-7


def test_failure_names_input_index_and_values(rng):
    def bad_backward(dout, cache):
        dx, dw, db = ops.linear_backward(dout, cache)
        dw = dw.copy()
        dw[1, 0] += 0.5                                    # one wrong element
        return dx, dw, db

    args = (rng.standard_normal((4, 3)), rng.standard_normal((3, 2)), rng.standard_normal(2))
    with pytest.raises(GradcheckError, match=r"input 'w' \(3, 2\) at index \(1, 0\)") as e:
        gradcheck((ops.linear_forward, bad_backward), args)
    row = next(r for r in e.value.report.rows if r.input == "w")
    assert row.analytic - row.numeric == pytest.approx(0.5, abs=1e-6)
    report = gradcheck((ops.linear_forward, bad_backward), args, raise_exception=False)
    assert not report.passed and [r.passed for r in report.rows] == [True, False, True]


def test_refuses_float32(rng):
    with pytest.raises(TypeError, match="float64"):
        gradcheck((ops.tanh_forward, ops.tanh_backward), (rng.standard_normal(3).astype("f4"),))


def test_large_inputs_use_a_stated_seeded_subset(rng):
    x = rng.standard_normal((60, 50))
    report = gradcheck((ops.tanh_forward, ops.tanh_backward), (x,), max_elements=100)
    row = report.rows[0]
    assert (row.checked, row.total) == (100, 3000)
    assert "100 of 3000 (seeded subset)" in str(report)


def test_a_subset_still_catches_a_wrong_element_everywhere(rng):
    x = rng.standard_normal(500)
    with pytest.raises(GradcheckError):                   # wrong on every element
        gradcheck((ops.tanh_forward, lambda d, c: d), (x,), max_elements=20)


def test_does_not_modify_inputs(rng):
    x = rng.standard_normal((3, 3))
    keep = x.copy()
    gradcheck((ops.tanh_forward, ops.tanh_backward), (x,))
    np.testing.assert_array_equal(x, keep)


def test_vjp_style_function(rng):
    def f(x):
        t, c = ops.tanh_forward(x)
        return t, lambda d: ops.tanh_backward(d, c)
    assert gradcheck(f, rng.standard_normal(5)).passed


def test_cli_prints_an_all_pass_table(capsys):
    assert cli.main(["gradcheck"]) == 0
    out = capsys.readouterr().out
    for op in ["embedding", "linear", "tanh", "relu", "leaky_relu", "batchnorm",
               "batchnorm_eval", "cross_entropy", "bn-mlp stack"]:
        assert f"\n{op} " in out
    assert "FAIL" not in out and "all pass" in out
    assert "max abs err" in out and "max rel err" in out


def test_cli_exits_1_on_a_broken_op(monkeypatch, capsys):
    monkeypatch.setattr(ops, "tanh_backward", lambda dout, cache: dout)
    assert cli.main(["gradcheck"]) == 1
    out = capsys.readouterr().out
    assert "FAIL" in out and "FAILED" in out


def test_console_entry_point_runs(tmp_path):
    # run outside the source tree, so the installed package is the one imported
    r = subprocess.run([sys.executable, "-m", "fastbn", "gradcheck"], capture_output=True,
                       text=True, timeout=120, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "all pass" in r.stdout


@pytest.mark.parametrize("backward", [
    lambda dout, c: ops.tanh_backward(dout, c) * np.nan,                  # NaN everywhere
    lambda dout, c: np.where(np.arange(c.out.size).reshape(c.out.shape) == 3, np.nan,
                             ops.tanh_backward(dout, c)),                    # one NaN
])
def test_nan_gradients_fail(rng, backward):
    with pytest.raises(GradcheckError):
        gradcheck((ops.tanh_forward, backward), (rng.standard_normal((2, 3)),))


def test_missing_gradients_fail(rng):
    x, w, b = rng.standard_normal((4, 3)), rng.standard_normal((3, 2)), rng.standard_normal(2)
    with pytest.raises(GradcheckError, match="no gradient returned|no gradient for input 'b'"):
        gradcheck((ops.linear_forward, lambda d, c: ops.linear_backward(d, c)[:2]), (x, w, b))
    g, be = np.ones(3), np.zeros(3)
    with pytest.raises(GradcheckError, match="'gamma'"):
        gradcheck((ops.batchnorm_forward, lambda d, c: (ops.batchnorm_backward(d, c)[0], None,
                                                        None)), (x, g, be))


def test_constants_are_declared_by_name(rng):
    x, g, b = rng.standard_normal((5, 3)), rng.standard_normal(3), rng.standard_normal(3)
    rm, rv = rng.standard_normal(3), rng.uniform(0.5, 2, 3)
    fn = (ops.batchnorm_eval_forward, ops.batchnorm_eval_backward)
    report = gradcheck(fn, (x, g, b, rm, rv), constants=("running_mean", "running_var"))
    assert [r.input for r in report.rows] == ["x", "gamma", "beta"]
    with pytest.raises(GradcheckError, match="'running_mean'"):
        gradcheck(fn, (x, g, b, rm, rv))                   # undeclared: they need gradients
    with pytest.raises(ValueError, match="not inputs"):
        gradcheck(fn, (x, g, b, rm, rv), constants=("mean",))


@pytest.mark.parametrize("kw", [{"eps": 0}, {"eps": -1e-6}, {"eps": float("nan")},
                                {"atol": -1.0}])
def test_bad_settings_are_refused(rng, kw):
    with pytest.raises(ValueError):
        gradcheck((ops.tanh_forward, ops.tanh_backward), (rng.standard_normal(3),), **kw)
