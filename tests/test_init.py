"""Tests for fastbn.init: torch's gains and Kaiming-normal scaling."""
import math

import numpy as np
import pytest

from fastbn import init


@pytest.mark.parametrize("name, param, gain", [
    ("linear", None, 1.0),
    ("identity", None, 1.0),
    ("sigmoid", None, 1.0),
    ("tanh", None, 5 / 3),
    ("relu", None, math.sqrt(2)),
    ("leaky_relu", None, math.sqrt(2 / (1 + 0.01**2))),
    ("leaky_relu", 0.2, math.sqrt(2 / (1 + 0.2**2))),
    ("leaky_relu", 1, 1.0),
    ("selu", None, 0.75),
])
def test_calculate_gain_values(name, param, gain):
    assert init.calculate_gain(name, param) == pytest.approx(gain, rel=1e-15)


def test_calculate_gain_matches_torch(torch):
    for name in ("linear", "sigmoid", "tanh", "relu", "leaky_relu", "selu"):
        assert init.calculate_gain(name) == pytest.approx(torch.nn.init.calculate_gain(name))
    assert init.calculate_gain("leaky_relu", 0.3) == pytest.approx(
        torch.nn.init.calculate_gain("leaky_relu", 0.3))


@pytest.mark.parametrize("alpha", [0.0, 0.5, 1.0, 2.0])
def test_elu_gain_keeps_the_second_moment_of_unit_normal_inputs(alpha):
    """1 / gain**2 = E[elu(z)**2], z ~ N(0, 1), by quadrature; at alpha = 0 it is ReLU's sqrt(2)."""
    z = np.linspace(-12, 12, 480_001)
    elu = np.where(z > 0, z, alpha * np.expm1(np.minimum(z, 0)))
    m2 = np.trapezoid(elu**2 * np.exp(-z**2 / 2) / math.sqrt(2 * math.pi), z)
    gain = init.calculate_gain("elu", alpha)
    assert gain**2 * m2 == pytest.approx(1, rel=1e-9)
    assert init.calculate_gain("elu") == init.calculate_gain("elu", 1.0) == \
        pytest.approx(1.2452, abs=1e-4)
    if alpha == 0:
        assert gain == pytest.approx(init.calculate_gain("relu"), rel=1e-15)


def test_elu_gain_keeps_a_deep_net_at_unit_scale():
    """Why this gain: 20 Linear -> ELU layers without batch norm, W ~ N(0,1) gain/sqrt(fan_in),
    keep the pre-activations' second moment near 1; gain 1 lets it shrink, sqrt(2) grow."""
    from fastbn import ops
    rng = np.random.default_rng(0)

    def last_moment(gain, n=300, layers=20):
        h = rng.standard_normal((500, n))
        for _ in range(layers):
            pre = h @ (rng.standard_normal((n, n)) * gain / math.sqrt(n))
            h, _ = ops.elu_forward(pre)
        return float((pre**2).mean())

    assert 0.8 < last_moment(init.calculate_gain("elu")) < 1.25
    assert last_moment(1.0) < 0.5 and last_moment(math.sqrt(2)) > 2


def test_calculate_gain_errors():
    with pytest.raises(ValueError, match="unsupported nonlinearity 'softplus'"):
        init.calculate_gain("softplus")
    with pytest.raises(ValueError, match="negative_slope"):
        init.calculate_gain("leaky_relu", "0.1")
    with pytest.raises(ValueError, match="negative_slope"):
        init.calculate_gain("leaky_relu", True)
    with pytest.raises(ValueError, match="alpha"):
        init.calculate_gain("elu", "1")


def test_kaiming_std():
    assert init.kaiming_std(30, 5 / 3) == pytest.approx((5 / 3) / math.sqrt(30))
    for bad in (0, -3, 2.5, True):
        with pytest.raises(ValueError, match="fan_in"):
            init.kaiming_std(bad)


def test_kaiming_normal_new_array_scale_and_seed():
    w = init.kaiming_normal((300, 400), gain=5 / 3, generator=0)
    assert w.shape == (300, 400) and w.dtype == np.float32
    # fan_in is shape[0] (fastbn's (fan_in, fan_out) layout); 120,000 draws: std within 1 %
    assert w.std() == pytest.approx((5 / 3) / math.sqrt(300), rel=0.01)
    assert abs(w.mean()) < 0.01
    np.testing.assert_array_equal(w, init.kaiming_normal((300, 400), gain=5 / 3, generator=0))
    base = np.random.default_rng(0).standard_normal((300, 400))
    np.testing.assert_allclose(w, base * (5 / 3) / math.sqrt(300), rtol=1e-6)
    w64 = init.kaiming_normal((300, 400), fan_in=7, generator=0, dtype=np.float64)
    assert w64.dtype == np.float64
    np.testing.assert_allclose(w64, base / math.sqrt(7), rtol=1e-15)


def test_kaiming_normal_fills_an_array_in_place():
    a = np.zeros((50, 20), dtype=np.float64)
    out = init.kaiming_normal(a, gain=math.sqrt(2), generator=np.random.default_rng(3))
    assert out is a
    np.testing.assert_allclose(
        a, np.random.default_rng(3).standard_normal((50, 20)) * math.sqrt(2 / 50), rtol=1e-15)
    with pytest.raises(TypeError, match="float32/float64"):
        init.kaiming_normal(np.zeros(3, dtype=np.int64))
    with pytest.raises(ValueError, match="fan_in"):
        init.kaiming_normal(np.zeros((), dtype=np.float64))
