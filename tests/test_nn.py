"""fastbn.nn layers: the interface, modes, running statistics and agreement with fastbn.ops."""
import numpy as np
import pytest

from fastbn import _kernels, gradcheck, nn, ops
from fastbn._opinfo import NONLINEARITIES, OPS


def stack(dtype=np.float64, seed=0):
    g = np.random.default_rng(seed)
    return nn.Sequential(nn.Embedding(11, 4, dtype=dtype, generator=g),
                         nn.Linear(12, 16, bias=False, dtype=dtype, generator=g),
                         nn.BatchNorm1d(16, dtype=dtype), nn.Tanh(),
                         nn.Linear(16, 11, dtype=dtype, generator=g))


def test_parameters_and_grads_are_aligned():
    net = stack()
    names = [n for n, _ in net.named_parameters()]
    assert names == ["0.weight", "1.weight", "2.gamma", "2.beta", "4.weight", "4.bias"]
    assert [p.shape for p in net.parameters()] == [g.shape for g in net.grads()]
    assert sum(p.size for p in net.parameters()) == 11 * 4 + 12 * 16 + 2 * 16 + 16 * 11 + 11


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_arrays_start_on_a_cache_line(dtype):
    # parameters, gradients and buffers start on 64-byte boundaries (nn.aligned_empty)
    net = stack(dtype)
    arrays = net.parameters() + net.grads() + net.layers[2].buffers()
    assert len(arrays) == 14
    e = nn.aligned_empty((3, 5), np.float32)
    assert e.shape == (3, 5) and e.flags.c_contiguous and e.dtype == np.float32
    if _kernels.SANITIZED:          # exact-size arrays, so that ASan sees any overrun
        assert all(a.base is None for a in arrays + [e])
        return
    for a in arrays:
        assert a.ctypes.data % 64 == 0 and a.flags.c_contiguous and a.dtype == dtype
    assert e.ctypes.data % 64 == 0


def test_seeded_generator_reproduces_weights():
    a, b, c = stack(seed=1), stack(seed=1), stack(seed=2)
    for p, q in zip(a.parameters(), b.parameters()):
        np.testing.assert_array_equal(p, q)
    assert not np.array_equal(a[0].weight, c[0].weight)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_dtype_is_respected(dtype):
    net = stack(dtype)
    assert all(p.dtype == dtype for p in net.parameters())
    out = net(np.zeros((4, 3), dtype=np.int64))
    assert out.dtype == dtype


def test_linear_init_matches_the_lecture():
    lin = nn.Linear(400, 300, generator=0, dtype=np.float64)
    assert lin.weight.shape == (400, 300)
    assert lin.weight.std() == pytest.approx(1 / np.sqrt(400), rel=0.02)
    np.testing.assert_array_equal(lin.bias, 0)
    assert nn.Linear(3, 2, bias=False).bias is None


def test_sequential_backward_equals_the_ops_chain(rng):
    net = stack()
    X = rng.integers(0, 11, (8, 3))
    Y = rng.integers(0, 11, 8)
    loss, c = ops.cross_entropy_forward(net(X), Y)
    dx = net.backward(ops.cross_entropy_backward(1.0, c))
    assert dx is None                                      # indices have no gradient
    C, W1, gamma, beta, W2, b2 = net.parameters()
    from fastbn.gradchecks import mlp_stack
    loss2, backward = mlp_stack(C, W1, gamma, beta, W2, b2, X, Y)
    assert loss == loss2
    for got, want in zip(net.grads(), backward(1.0)):
        np.testing.assert_array_equal(got, want)


def test_layer_gradients_pass_gradcheck(rng):
    """Every layer's backward through the object API, against finite differences."""
    X = rng.integers(0, 11, (8, 3))
    Y = rng.integers(0, 11, 8)

    def fn(*params):
        net = stack()
        for p, v in zip(net.parameters(), params):
            p[...] = v
        loss, c = ops.cross_entropy_forward(net(X), Y)

        def backward(dloss):
            net.backward(ops.cross_entropy_backward(dloss, c))
            return tuple(g.copy() for g in net.grads())
        return loss, backward

    assert gradcheck(fn, [p.copy() for p in stack().parameters()]).passed


def test_batchnorm_running_statistics_update(rng):
    bn = nn.BatchNorm1d(3, momentum=0.25, dtype=np.float64)
    x = rng.standard_normal((10, 3)) * 2 + 5
    bn(x)
    np.testing.assert_allclose(bn.running_mean, 0.75 * 0 + 0.25 * x.mean(0), rtol=1e-14)
    np.testing.assert_allclose(bn.running_var, 0.75 * 1 + 0.25 * x.var(0, ddof=1), rtol=1e-14)


@pytest.mark.parametrize("unbiased", [False, True])
def test_batchnorm_layer_runs_its_variant(rng, unbiased):
    """BatchNorm1d(unbiased=...): the forward and backward of ops with that variant, the running
    statistics the same either way (the unbiased batch variance), the repr says it when True."""
    x = rng.standard_normal((6, 4)) * 2 + 1
    dout = rng.standard_normal((6, 4))
    bn = nn.BatchNorm1d(4, momentum=0.5, unbiased=unbiased, dtype=np.float64)
    bn.gamma[:] = [0.5, 1, 1.5, 2]
    out = bn(x)
    want, c = ops.batchnorm_forward(x, bn.gamma, bn.beta, 1e-5, unbiased=unbiased)
    np.testing.assert_array_equal(out, want)
    assert bn._cache.unbiased is unbiased
    dx = bn.backward(dout)
    wdx, wdg, wdb = ops.batchnorm_backward(dout, c)
    np.testing.assert_array_equal(dx, wdx)
    np.testing.assert_array_equal(bn.dgamma, wdg)
    np.testing.assert_array_equal(bn.dbeta, wdb)
    np.testing.assert_allclose(bn.running_var, 0.5 + 0.5 * x.var(0, ddof=1), rtol=1e-14)
    np.testing.assert_allclose(out.var(0, ddof=1 if unbiased else 0) / bn.gamma**2, 1, rtol=1e-5)
    assert ("unbiased=True" in repr(bn)) == unbiased
    assert repr(nn.BatchNorm1d(4)) == "BatchNorm1d(4, eps=1e-05, momentum=0.1)"
    bn.eval()                                            # eval: running statistics, no variant
    other = nn.BatchNorm1d(4, unbiased=not unbiased, dtype=np.float64).eval()
    for name in ("gamma", "beta", "running_mean", "running_var"):
        getattr(other, name)[...] = getattr(bn, name)
    np.testing.assert_array_equal(bn(x), other(x))


@pytest.mark.parametrize("unbiased", [False, True])
def test_batchnorm_layer_of_each_variant_passes_gradcheck(rng, unbiased):
    layer = nn.BatchNorm1d(3, unbiased=unbiased, dtype=np.float64)
    layer.gamma[:] = [0.5, 1.5, 2.0]
    assert gradcheck(layer, (rng.standard_normal((5, 3)) * 2 + 1,)).passed


def test_batchnorm_eval_uses_and_keeps_running_statistics(rng):
    bn = nn.BatchNorm1d(3, dtype=np.float64)
    bn.running_mean[:] = [1, 2, 3]
    bn.running_var[:] = [4, 1, 0.25]
    bn.eval()
    x = rng.standard_normal((1, 3))                        # one row is fine in eval mode
    out = bn(x)
    np.testing.assert_allclose(out, (x - [1, 2, 3]) / np.sqrt(np.array([4, 1, 0.25]) + 1e-5))
    np.testing.assert_array_equal(bn.running_mean, [1, 2, 3])
    dx = bn.backward(np.ones((1, 3)))
    np.testing.assert_allclose(dx[0], 1 / np.sqrt(np.array([4, 1, 0.25]) + 1e-5))
    bn.train()
    with pytest.raises(ValueError, match="more than 1 value per channel"):
        bn(x)


def test_train_eval_propagate_through_sequential():
    net = stack()
    net.eval()
    assert not net[2].training
    net.train()
    assert net[2].training


def test_out_and_dout_are_kept_for_diagnostics(rng):
    net = stack()
    net(rng.integers(0, 11, (5, 3)))
    np.testing.assert_allclose(net[3].out, np.tanh(net[2].out), rtol=1e-15, atol=1e-16)
    assert net.out.shape == (5, 11)
    dlogits = rng.standard_normal((5, 11))
    net.backward(dlogits)
    assert net[4].dout is dlogits
    np.testing.assert_allclose(net[3].dout, dlogits @ net[4].weight.T, rtol=1e-14)
    np.testing.assert_allclose(net[2].dout, net[3].dout * (1 - net[3].out ** 2), rtol=1e-14)


def test_grads_are_written_in_place_and_zero_grad(rng):
    net = stack()
    grads = net.grads()
    loss, c = ops.cross_entropy_forward(net(rng.integers(0, 11, (6, 3))), rng.integers(0, 11, 6))
    net.backward(ops.cross_entropy_backward(1.0, c))
    assert any(np.abs(g).sum() > 0 for g in grads)         # the list taken before backward
    net.zero_grad()
    assert all(np.all(g == 0) for g in net.grads())


@pytest.mark.parametrize("name", NONLINEARITIES)
def test_activation_layers(rng, name):
    """Each activation's layer computes its op (options passed through) and has no parameters."""
    op = OPS[name]
    x = rng.standard_normal((4, 5))
    for options in ({}, op.sample_options()):
        layer = op.nonlinearity.layer(**options)
        out = layer(x)
        want, _ = op.reference_forward(x, **options)
        np.testing.assert_allclose(out, want, rtol=1e-15)
        d = rng.standard_normal(x.shape)
        _, cache = op.forward(x, **options)
        np.testing.assert_array_equal(layer.backward(d), op.backward(d, cache))
        assert layer.parameters() == [] and layer.grads() == []
        assert repr(layer).startswith(type(layer).__name__ + "(")


@pytest.mark.parametrize("name", NONLINEARITIES)
def test_activation_layers_pass_gradcheck(rng, name):
    op = OPS[name]
    x = rng.standard_normal((6, 5))
    x[np.abs(x) < 1e-3] = 0.5                          # off the kink
    layer = op.nonlinearity.layer(**op.sample_options())
    assert gradcheck(layer, (x,)).passed


@pytest.mark.parametrize("make,exc", [
    (lambda: nn.BatchNorm1d(3, momentum=1.5), ValueError),
    (lambda: nn.BatchNorm1d(3, eps=-1), ValueError),
    (lambda: nn.BatchNorm1d(3, unbiased="yes"), TypeError),
    (lambda: nn.BatchNorm1d(3, unbiased=1), TypeError),
    (lambda: nn.BatchNorm1d(3, 1e-5, 0.1, True), TypeError),     # unbiased is keyword-only
    (lambda: nn.Linear(0, 3), ValueError),
    (lambda: nn.Embedding(3, 2, dtype=np.int32), TypeError),
    (lambda: nn.Tanh().backward(np.ones(3)), RuntimeError),
    (lambda: nn.ELU(-1.0), ValueError),
    (lambda: nn.ELU(float("nan")), ValueError),
    (lambda: nn.Sequential(nn.Tanh(), np.tanh), TypeError),
])
def test_bad_construction_raises(make, exc):
    with pytest.raises(exc):
        make()


def test_collect_lists_the_parameters_and_grads_in_order():
    net = nn.Sequential(nn.Embedding(5, 2), nn.Linear(6, 4), nn.BatchNorm1d(4), nn.Tanh(),
                        nn.Sequential(nn.Linear(4, 3, bias=False), nn.ReLU()))
    params, grads = [], []
    net._collect(params, grads)
    assert [id(p) for p in params] == [id(p) for p in net.parameters()]
    assert [id(g) for g in grads] == [id(g) for g in net.grads()]
    assert len(params) == 6
