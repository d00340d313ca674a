"""fastbn.registry: one entry per op of fastbn.ops, and what the rest of fastbn reads from it."""
import inspect

import numpy as np
import pytest

from fastbn import comparison, init, lab, model, nn, ops, reference, registry
from fastbn.gradchecks import standard_checks
from fastbn.registry import NONLINEARITIES, OPS


def test_every_op_of_fastbn_ops_has_one_entry_and_agrees_with_it():
    pairs = sorted(n[:-len("_forward")] for n in ops.__all__ if n.endswith("_forward"))
    assert sorted(OPS) == pairs
    assert all(n + "_backward" in ops.__all__ for n in pairs)
    assert all(hasattr(reference, n + "_forward") and hasattr(reference, n + "_backward")
               for n in pairs)
    assert registry.check_entries() == []


def test_check_entries_finds_an_entry_that_disagrees(monkeypatch):
    bad = registry.OpInfo("tanh", lambda r, d: {"y": np.zeros(3)}, {"B": 1}, torch=None)
    monkeypatch.setattr(registry, "_OPS", registry._OPS + [bad])
    assert [name for name, _ in registry.check_entries()] == ["tanh"]


def test_every_activation_layer_of_fastbn_nn_is_a_nonlinearity_of_the_registry():
    def parameter_free(cls):               # builds without arguments and has no parameters
        try:
            return not cls().parameters()
        except TypeError:
            return False

    layers = {c for _, c in inspect.getmembers(nn, inspect.isclass)
              if issubclass(c, nn.Module) and c not in (nn.Module, nn.Sequential)
              and parameter_free(c)}
    assert layers == {OPS[n].nonlinearity.layer for n in NONLINEARITIES}
    for n in NONLINEARITIES:
        layer = OPS[n].nonlinearity.layer(**OPS[n].sample_options())
        assert registry.nonlinearity_of(layer) is OPS[n]
        assert registry.layer_options(OPS[n], layer) == OPS[n].sample_options()
    assert registry.nonlinearity_of(nn.Linear(2, 3)) is None


def test_sample_arguments_follow_dims_dtype_and_seed():
    op = OPS["linear"]
    x, w, b = op.args(np.float32, seed=3, B=2, I=4, O=5, V=99)       # V: not linear's, ignored
    assert (x.shape, w.shape, b.shape) == ((2, 4), (4, 5), (5,))
    assert x.dtype == w.dtype == b.dtype == np.float32
    np.testing.assert_array_equal(op.args(seed=3, B=2, I=4, O=5)[0].astype(np.float32), x)
    assert not np.array_equal(op.args(seed=4)[0], op.args(seed=3)[0])
    emb = OPS["embedding"].args(np.float32)
    assert emb[1].dtype == np.int64 and emb[0].dtype == np.float32
    assert OPS["leaky_relu"].args()[-1] == 0.1 and OPS["batchnorm"].args()[-1] == 1e-5
    assert OPS["batchnorm_eval"].differentiable == ["x", "gamma", "beta"]
    assert OPS["cross_entropy"].float_positions == [0] and OPS["cross_entropy"].index_positions \
        == [1]


def test_samples_of_relu_like_ops_stay_off_the_kink():
    for name in ("relu", "leaky_relu"):
        for seed in range(20):
            x = OPS[name].args(seed=seed, B=64, D=64)[0]
            assert np.abs(x).min() >= 1e-3


def test_gradcheck_cases_are_every_op_then_its_variants():
    labels = [label for op in OPS.values() for label, _, _ in op.cases()]
    assert labels[:3] == ["embedding", "linear", "linear (no bias)"]
    assert "batchnorm (B=2)" in labels and len(labels) == len(OPS) + 4
    assert list(OPS["linear"].cases()[1][1]) == ["x", "w"]
    assert OPS["batchnorm"].cases()[1][1]["x"].shape[0] == 2
    bn = {label: (arrays["x"].shape[0], options) for label, arrays, options in
          OPS["batchnorm"].cases()}
    assert bn == {"batchnorm": (8, {}), "batchnorm (B=2)": (2, {}),
                  "batchnorm (unbiased)": (8, {"unbiased": True}),
                  "batchnorm (unbiased, B=2)": (2, {"unbiased": True})}
    assert all(options == {} for op in OPS.values() if op.name != "batchnorm"
               for _, _, options in op.cases())
    assert OPS["batchnorm"].cases(dtype=np.float32)[2][1]["gamma"].dtype == np.float32
    checks = standard_checks()
    assert [c[0] for c in checks] == labels + ["bn-mlp stack"]


def test_a_variants_options_reach_the_forward_of_the_gradcheck():
    """standard_checks binds a variant's options: the unbiased cases run the unbiased forward
    (its cache says so), the others the default one."""
    seen = []
    for label, fn, inputs in standard_checks():
        if label.startswith("batchnorm ") or label == "batchnorm":
            _, cache = fn[0](*inputs)
            assert cache.unbiased == ("unbiased" in label), label
            seen.append(label)
    assert len(seen) == 4


def test_get_and_unknown_names():
    assert registry.get("tanh") is OPS["tanh"]
    with pytest.raises(ValueError, match="unknown op 'gelu'.*embedding"):
        registry.get("gelu")


def test_what_reads_the_registry():
    assert model.ACTIVATIONS == NONLINEARITIES
    assert set(comparison.OPS) == set(OPS)
    assert set(lab.FLAT_REGION) == set(NONLINEARITIES)
    for n in NONLINEARITIES:
        assert init.calculate_gain(n) == OPS[n].nonlinearity.gain()
    with pytest.raises(ValueError, match="unsupported nonlinearity 'batchnorm'"):
        init.calculate_gain("batchnorm")                 # an op, but not an activation


def test_a_patched_op_is_the_one_the_registry_gives(monkeypatch):
    def fake(dout, cache):
        return dout

    monkeypatch.setattr(ops, "tanh_backward", fake)
    assert OPS["tanh"].backward is fake
