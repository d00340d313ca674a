"""The gradient checker itself, and the `fastbn gradcheck` command."""
import subprocess
import sys

import numpy as np
import pytest

from fastbn import cli, gradcheck, ops
from fastbn._opinfo import OPS
from fastbn.gradchecks import GradcheckError


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
    for op in [*OPS, "bn-mlp stack"]:
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


# ----------------------------------------------------------------------------------------------
# titles, reports in notebooks, layers, gradcheck_all

def test_report_is_titled_after_the_checked_function(rng):
    x, g, b = rng.standard_normal((5, 3)), np.ones(3), np.zeros(3)

    def my_batchnorm_backward(dout, cache):
        return ops.batchnorm_backward(dout, cache)
    report = gradcheck((ops.batchnorm_forward, my_batchnorm_backward), (x, g, b))
    assert str(report).startswith("gradcheck my_batchnorm_backward ")
    report = gradcheck((ops.batchnorm_forward, lambda d, c: ops.batchnorm_backward(d, c)),
                       (x, g, b))
    assert str(report).startswith("gradcheck batchnorm_forward (backward: a lambda) ")
    assert gradcheck((ops.tanh_forward, ops.tanh_backward), (x,), name="mine").name == "mine"


def test_report_repr_is_its_short_table_and_renders_in_notebooks(rng):
    report = gradcheck((ops.linear_forward, ops.linear_backward),
                       (rng.standard_normal((4, 3)), rng.standard_normal((3, 2)),
                        rng.standard_normal(2)))
    assert repr(report) == str(report) and len(repr(report)) < 400
    page, md = report._repr_html_(), report._repr_markdown_()
    assert page.count("<tr>") == 4 and page.count("PASS") == 3 and "gradcheck" in page
    assert md.count("\n| ") == 4 and "| w | (3, 2) | all |" in md


def test_a_transposed_weight_gradient_fails_even_with_inputs_from_the_same_seed():
    # dout used to be default_rng(seed)'s first draw: with x drawn the same way, x.T @ dout was
    # symmetric and a transposed dw of a square layer passed
    r = np.random.default_rng(0)
    x, w, b = r.standard_normal((8, 5)), r.standard_normal((5, 5)), r.standard_normal(5)
    report = gradcheck((ops.linear_forward,
                        lambda d, c: (d @ c.w.T, d.T @ c.x, d.sum(0))), (x, w, b),
                       raise_exception=False)
    assert [row.passed for row in report.rows] == [True, False, True]


def test_a_backward_that_writes_into_its_arguments_is_still_checked_right(rng):
    def in_place(dout, cache):
        dx = ops.linear_backward(dout, cache)
        dout *= 0                                     # common, and harmless in a training step
        cache.x[...] = 0
        return dx
    x, w, b = rng.standard_normal((4, 3)), rng.standard_normal((3, 2)), rng.standard_normal(2)
    assert gradcheck((ops.linear_forward, in_place), (x, w, b)).passed


def float64_layers():
    from fastbn import nn
    g = np.random.default_rng(5)
    return {
        "linear": (nn.Linear(4, 3, dtype=np.float64, generator=g), g.standard_normal((5, 4))),
        "batchnorm": (nn.BatchNorm1d(3, dtype=np.float64), g.standard_normal((5, 3))),
        "batchnorm eval": (nn.BatchNorm1d(3, dtype=np.float64).eval(),
                           g.standard_normal((5, 3))),
        "tanh": (nn.Tanh(), g.standard_normal((2, 3))),
        "stack": (nn.Sequential(nn.Embedding(7, 2, dtype=np.float64, generator=g),
                                nn.Linear(6, 4, dtype=np.float64, generator=g),
                                nn.BatchNorm1d(4, dtype=np.float64), nn.Tanh()),
                  g.integers(0, 3, (6, 3))),
    }


def arrays_of(layer):
    """Copies of every array attribute of a layer and its sublayers: parameters, gradients,
    buffers, the kept output."""
    subs = list(layer) if hasattr(layer, "layers") else [layer]
    return {(i, k): np.array(v, copy=True) for i, sub in enumerate(subs)
            for k, v in vars(sub).items() if isinstance(v, np.ndarray)}


@pytest.mark.parametrize("which", ["linear", "batchnorm", "batchnorm eval", "tanh", "stack"])
def test_layers_are_checked_and_left_untouched(which):
    layer, x = float64_layers()[which]
    layer(x)                                   # a forward of its own: out, running statistics
    before = arrays_of(layer)
    report = gradcheck(layer, (x,))
    assert report.passed and report.name == (repr(layer) if which != "stack" else
                                             "Sequential(Embedding, Linear, BatchNorm1d, Tanh)")
    params = [n for n, _ in layer.named_parameters()]
    assert [r.input for r in report.rows] == (params if which == "stack" else ["x"] + params)
    after = arrays_of(layer)
    assert after.keys() == before.keys()
    for k in before:
        np.testing.assert_array_equal(after[k], before[k], err_msg=str(k))


def test_a_broken_layer_backward_fails():
    from fastbn import nn
    layer = nn.Linear(4, 3, dtype=np.float64, generator=1)
    layer._backward = lambda dout, cache: ops.linear_backward(dout, cache)[0] * 1.5
    with pytest.raises(GradcheckError, match="input 'x'"):
        gradcheck(layer, (np.random.default_rng(2).standard_normal((5, 4)),))


def test_float32_layers_and_extra_inputs_are_refused():
    from fastbn import nn
    with pytest.raises(TypeError, match="dtype=np.float64"):
        gradcheck(nn.Linear(3, 2), (np.zeros((4, 3)),))
    with pytest.raises(ValueError, match="one input"):
        gradcheck(nn.Tanh(), (np.zeros(3), np.zeros(3)))


def test_input_names(rng):
    def f(a):
        t, c = ops.tanh_forward(a)
        return t, lambda d: ops.tanh_backward(d, c)
    assert gradcheck(f, (rng.standard_normal(2),)).rows[0].input == "a"
    assert gradcheck(f, (rng.standard_normal(2),), input_names=["z"]).rows[0].input == "z"
    with pytest.raises(ValueError, match="input_names"):
        gradcheck(f, (rng.standard_normal(2),), input_names=["a", "b"])


def test_gradcheck_all_is_the_cli_table(capsys):
    from fastbn.gradchecks import gradcheck_all
    suite = gradcheck_all()
    assert cli.main(["gradcheck"]) == 0
    assert capsys.readouterr().out == str(suite) + "\n"
    assert suite.passed and suite["batchnorm"].passed
    assert repr(suite).endswith("all pass>") and len(repr(suite)) < 200
    assert suite._repr_html_().count("<tr>") == 1 + sum(len(r.rows) for _, r in suite.checks)


def test_gradcheck_all_reports_a_broken_op(monkeypatch):
    from fastbn.gradchecks import gradcheck_all
    monkeypatch.setattr(ops, "tanh_backward", lambda dout, cache: dout)
    suite = gradcheck_all()
    assert not suite.passed and not suite["tanh"].passed and suite["relu"].passed
    assert "FAILED" in str(suite) and "tanh x" in repr(suite) and len(repr(suite)) < 300
