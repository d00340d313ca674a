"""fastbn._opinfo: one entry per op of fastbn.ops; fastbn.registry: what the runtime reads of an
activation."""
import dataclasses
import inspect
import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from fastbn import _opinfo, comparison, init, lab, model, nn, ops, reference, registry
from fastbn._opinfo import NONLINEARITIES, OPS
from fastbn.bench import opcalls
from fastbn.gradchecks import standard_checks


def test_every_op_of_fastbn_ops_has_one_entry_and_agrees_with_it():
    pairs = sorted(n[:-len("_forward")] for n in ops.__all__ if n.endswith("_forward"))
    assert sorted(OPS) == pairs
    assert all(n + "_backward" in ops.__all__ for n in pairs)
    assert all(hasattr(reference, n + "_forward") and hasattr(reference, n + "_backward")
               for n in pairs)
    assert _opinfo.check_entries() == []


def test_check_entries_finds_an_entry_that_disagrees(monkeypatch):
    bad = _opinfo.OpInfo("tanh", lambda r, d: {"y": np.zeros(3)}, {"B": 1}, torch=None,
                         broken=OPS["tanh"].broken, opcalls=OPS["tanh"].opcalls)
    monkeypatch.setattr(_opinfo, "_OPS", _opinfo._OPS + [bad])
    assert [name for name, _ in _opinfo.check_entries()] == ["tanh"]
    monkeypatch.setattr(_opinfo, "_OPS", _opinfo._OPS + [dataclasses.replace(
        OPS["relu"], opcalls=())])
    assert [name for name, _ in _opinfo.check_entries()] == ["tanh", "relu"]


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
        assert registry.nonlinearity_of(layer) is OPS[n].nonlinearity is registry.ACTIVATIONS[n]
        assert registry.layer_options(OPS[n].nonlinearity, layer) == OPS[n].sample_options()
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
    assert _opinfo.get("tanh") is OPS["tanh"]
    with pytest.raises(ValueError, match="unknown op 'gelu'.*embedding"):
        _opinfo.get("gelu")


def test_what_reads_the_registry():
    assert model.ACTIVATIONS == NONLINEARITIES == registry.NONLINEARITIES
    assert NONLINEARITIES == tuple(n for n, op in OPS.items() if op.nonlinearity is not None)
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


def test_import_fastbn_does_not_load_the_test_metadata():
    """The entries of fastbn._opinfo are test metadata: the runtime (model, init, inference,
    lab) reads fastbn.registry, and gradcheck_all / compare load _opinfo when called."""
    code = ("import sys, fastbn\n"
            "assert 'fastbn._opinfo' not in sys.modules, 'loaded by import fastbn'\n"
            "fastbn.CharMLP('.ab', n_hidden=8, activation='elu', seed=0)\n"
            "fastbn.lab.FLAT_REGION, fastbn.init.calculate_gain('leaky_relu', 0.2)\n"
            "assert 'fastbn._opinfo' not in sys.modules, 'loaded by the runtime'\n"
            "assert 'tanh' in fastbn.comparison.OPS and 'fastbn._opinfo' in sys.modules\n")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).parent)


# the generic tests: every op's entry must reach each of them (by its name in the test ids)
GENERIC = ["tests/test_ops.py::test_gradcheck_standard",
           "tests/test_ops.py::test_gradcheck_catches_broken_backward",
           "tests/test_ops.py::test_float32_agrees_with_float64",
           "tests/test_hostile_ops.py::test_wrong_float_dtype_is_a_type_error",
           "tests/test_hostile_ops.py::test_any_memory_layout_gives_the_result_of_a_contiguous_copy",
           "tests/test_hostile_ops.py::test_every_cache_array_in_any_layout_gives_the_gradient_or_"
           "an_error",
           "tests/test_hostile_ops.py::test_things_that_are_not_caches_are_a_type_error",
           "tests/test_crash_safety.py::test_hostile_call_raises_and_never_crashes",
           "tests/test_torch_parity.py::test_every_op_on_its_sample_inputs"]


def test_every_entry_drives_the_generic_tests_and_the_benchmark_table():
    """Collect the generic tests (pytest --collect-only): each has a case naming every op of
    the registry; every op with error inputs has their test; the property tests have a test of
    each op (elementwise ops share one); the benchmark's per-op table has a row of every op and
    no other, and bench/targets.json names only its rows."""
    root = Path(__file__).parent.parent
    # -P: not the repository folder first on sys.path (its fastbn may be unbuilt: the tests
    # import the installed package)
    out = subprocess.run([sys.executable, "-P", "-m", "pytest", "--collect-only", "-q", "-p",
                          "no:cacheprovider", "tests/test_properties.py",
                          *{g.split("::")[0] for g in GENERIC}],
                         capture_output=True, text=True, cwd=root, check=True).stdout
    ids = [line for line in out.splitlines() if "::" in line]
    for test in GENERIC:
        params = [i.split("[", 1)[1] for i in ids if i.startswith(test + "[")]
        missing = [n for n in OPS
                   if not any(re.search(rf"(?<![a-z_]){n}(?![a-z_])", p) for p in params)]
        assert not missing, f"{test} has no case of {missing}"
    errors = [i for i in ids if "test_error_inputs_raise_their_exception" in i]
    assert {n for n in OPS if OPS[n].error_inputs} == \
        {n for n in OPS if any(f"[{n} (" in i for i in errors)} != set()
    props = "tests/test_properties.py::test_"
    assert all(props + ("elementwise" if op.elementwise else n) in ids for n, op in OPS.items())

    rows = {row.key: n for n, op in OPS.items() for row in op.opcalls}
    assert set(rows.values()) == set(OPS) and list(opcalls.OPS) == list(rows)
    assert [c.name for c in opcalls.cases(4, "float64")] == list(rows)
    targets = json.loads((root / "bench" / "targets.json").read_text(encoding="utf-8"))
    named = {t["op"] for t in targets["targets"] if "op" in t}
    assert named and named <= set(rows), named - set(rows)
