"""Every public object a notebook user meets prints short: shapes, sizes and the few numbers that
matter, never a whole array or word list (the default model and dataset)."""
import numpy as np
import pytest

import fastbn
from fastbn import CharMLP, exercises, lab, nn, ops

SHORT = 400        # characters: "a few hundred"


def _short(obj, limit=SHORT):
    text = repr(obj)
    assert len(text) < limit, f"{type(obj).__name__} repr is {len(text)} characters:\n{text}"
    return text


@pytest.fixture(scope="module")
def trained(names):
    model = CharMLP(names.vocab, seed=0)
    return model, fastbn.train(model, names, steps=300, quiet=True)


def test_dataset(names):
    text = _short(names)
    assert "182,625" in text and "22,655" in text and "vocabulary 27" in text


def test_model_and_train_result(trained):
    model, result = trained
    text = _short(model)
    assert "12,097 parameters" in text and "Linear(30, 200, bias=False)" in text
    assert "6,000 params" in text and "training mode" in text
    text = _short(result)
    assert "300 steps" in text and "val " in text


@pytest.mark.parametrize("layer", [
    nn.Embedding(27, 10), nn.Linear(30, 200), nn.BatchNorm1d(200), nn.Tanh(), nn.ReLU(),
    nn.LeakyReLU(0.1), nn.Sequential(nn.Linear(4, 3), nn.Tanh())], ids=lambda m: type(m).__name__)
def test_layers(layer):
    _short(layer, 200)


def test_caches_show_shapes_not_values():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((32, 200)).astype(np.float32)
    g, b = np.ones(200, np.float32), np.zeros(200, np.float32)
    caches = [ops.batchnorm_forward(x, g, b)[1], ops.tanh_forward(x)[1],
              ops.linear_forward(x, rng.standard_normal((200, 27)).astype(np.float32))[1],
              ops.embedding_forward(x[:27, :10], rng.integers(0, 27, (32, 3)))[1],
              ops.cross_entropy_forward(x[:, :27], rng.integers(0, 27, 32))[1]]
    for c in caches:
        text = _short(c, 250)
        assert text.startswith(f"Cache({c.op}:")
    assert "xhat=float32[32, 200]" in repr(caches[0])


def test_lab_objects(names):
    res = lab.run_lab(names, steps=40, every=20)
    for obj in (res, res.probe, res.probe.last, res.loss_check):
        _short(obj)


def test_gradcheck_exercises_and_compare_reports():
    x = np.random.default_rng(0).standard_normal((6, 5))
    _short(fastbn.gradcheck((ops.tanh_forward, ops.tanh_backward), (x,)))
    params, Xb, Yb = exercises.problem()
    ref = exercises.backward(exercises.forward(params, Xb, Yb), params)
    _short(exercises.check({"dlogits": ref["dlogits"], "dh": ref["dh"]}, verbose=False))
    _short(fastbn.compare(ops.tanh_backward, "tanh"))


def test_reports_print_their_table_in_a_terminal(names, capsys):
    """What returns a report prints it: ``print(x)`` (``str``) is the table a notebook shows,
    while ``repr`` stays a short summary."""
    suite = fastbn.gradcheck_all()
    text = str(suite)
    assert text.splitlines()[0].split()[:3] == ["op", "input", "checked"]
    assert "batchnorm" in text and "bn-mlp stack" in text and text.endswith("all pass")
    assert len(text.splitlines()) == sum(len(r.rows) for _, r in suite.checks) + 4
    report = fastbn.compare(ops.tanh_backward, "tanh")
    assert str(report).startswith("compare tanh_backward with fastbn tanh")
    assert str(report).splitlines()[-1] == "  -> ok"

    from fastbn.sweep import Space, sweep
    space = Space({"lr": [0.05, 0.1], "steps": 50}, seeds=2)
    res = sweep(space, names, workers=0, quiet=True)            # in this process, no Dask
    lines = str(res).splitlines()
    assert lines[0] == space.describe()
    assert lines[1].startswith("4 of 4 trials finished (4 ok)")
    assert lines[2] == "best configurations (val loss, mean ± sd over seeds):"
    assert lines[3].startswith("  1. lr=") and "(2 of 2 seeds)" in lines[3]
    assert len(lines) == 5
    print(res)
    assert capsys.readouterr().out.splitlines() == lines
