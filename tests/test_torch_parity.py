"""Every output and gradient of fastbn.ops and fastbn.nn against PyTorch autograd.

float64 must agree to 1e-10 relative, float32 to ~1e-5. Skipped (with the reason) without torch.
"""
import numpy as np
import pytest

from fastbn import nn, ops
from fastbn.registry import OPS

F64 = dict(rtol=1e-10, atol=1e-12)
F32 = dict(rtol=1e-5, atol=1e-6)
DTYPES = [np.float64, np.float32]


def tol(dtype):
    return F64 if dtype == np.float64 else F32


def leaf(torch, a):
    return torch.tensor(a, requires_grad=True)


def check(got, want, dtype, scale=None):
    want = want.detach().numpy()
    assert np.asarray(got).dtype == np.dtype(dtype)
    t = dict(tol(dtype))
    if scale is not None:                  # for gradients that are sums of cancelling terms
        t["atol"] = t["rtol"] * scale
    np.testing.assert_allclose(got, want, **t)


@pytest.mark.parametrize("dtype", DTYPES)
def test_embedding(torch, rng, dtype):
    w = rng.standard_normal((27, 10)).astype(dtype)
    idx = rng.integers(0, 6, (32, 3))                     # few rows: many repeats
    out, c = ops.embedding_forward(w, idx)
    tw = leaf(torch, w)
    tout = tw[torch.tensor(idx)].view(32, -1)
    check(out, tout, dtype)
    dout = rng.standard_normal(out.shape).astype(dtype)
    tout.backward(torch.tensor(dout))
    check(ops.embedding_backward(dout, c), tw.grad, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("bias", [True, False])
def test_linear(torch, rng, dtype, bias):
    x = rng.standard_normal((32, 30)).astype(dtype)
    w = rng.standard_normal((30, 200)).astype(dtype)
    b = rng.standard_normal(200).astype(dtype) if bias else None
    out, c = ops.linear_forward(x, w, b)
    tx, tw = leaf(torch, x), leaf(torch, w)
    tb = leaf(torch, b) if bias else None
    tout = tx @ tw + (tb if bias else 0)
    # a dot product's rounding error scales with the sum of |terms|, not with its result
    ax, aw = np.abs(x), np.abs(w)
    check(out, tout, dtype, scale=(ax @ aw).max())
    dout = rng.standard_normal(out.shape).astype(dtype)
    tout.backward(torch.tensor(dout))
    dx, dw, db = ops.linear_backward(dout, c)
    check(dx, tx.grad, dtype, scale=(np.abs(dout) @ aw.T).max())
    check(dw, tw.grad, dtype, scale=(ax.T @ np.abs(dout)).max())
    if bias:
        check(db, tb.grad, dtype)
    else:
        assert db is None


ELEMENTWISE_CALLS = [pytest.param(n, {}, id=n) for n, op in OPS.items() if op.elementwise] + [
    pytest.param(n, op.sample_options(),
                 id=f"{n}({', '.join(f'{k}={v}' for k, v in op.sample_options().items())})")
    for n, op in OPS.items() if op.elementwise and op.options]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name,options", ELEMENTWISE_CALLS)
def test_elementwise(torch, rng, dtype, name, options):
    op = OPS[name]
    x = (2 * rng.standard_normal((32, 200))).astype(dtype)
    x[0, :3] = 0                                            # the kink: torch's convention
    tx = leaf(torch, x)
    out, c = op.forward(x, **options)
    tout = op.torch(torch, tx, **options)
    check(out, tout, dtype)
    dout = rng.standard_normal(x.shape).astype(dtype)
    tout.backward(torch.tensor(dout))
    # a dx read from the saved output (tanh: dout (1 - t^2)) from each side's own output: a few
    # ulp apart in t become ~|dout| * 2|t| * ulp apart in dx where |t| -> 1, so judge on the
    # scale of |dout|
    check(op.backward(dout, c), tx.grad, dtype,
          scale=np.abs(dout).max() if op.grad_from_output else None)


CASES = [pytest.param(name, i, id=label) for name, op in OPS.items()
         for i, (label, _, _) in enumerate(op.cases())]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name,case", CASES)
def test_every_op_on_its_sample_inputs(torch, dtype, name, case):
    """Each op of the registry on its sample arguments (options at their sample values), and
    each variant of it (``batchnorm (unbiased)``: its ``unbiased=True`` passed to both sides),
    against its torch equivalent: the output and the gradient of every differentiable input."""
    op = OPS[name]
    _, arrays, options = op.cases(seed=3, dtype=dtype)[case]
    args = list(arrays.values()) + [o.sample for o in op.options]
    names = list(arrays) + [o.name for o in op.options]
    out, cache = op.forward(*args, **options)
    targs = [leaf(torch, a) if n in op.differentiable else
             torch.tensor(a) if isinstance(a, np.ndarray) else a for n, a in zip(names, args)]
    tout = op.torch(torch, *targs[:len(arrays)], **dict(zip(names[len(arrays):],
                                                            targs[len(arrays):])), **options)
    check(np.asarray(out), tout, dtype)
    dout = 0.7 if np.ndim(out) == 0 else \
        np.random.default_rng(4).standard_normal(np.shape(out)).astype(dtype)
    grads = op.backward(dout, cache)
    grads = grads if isinstance(grads, tuple) else (grads,)
    tout.backward(torch.tensor(dout, dtype=tout.dtype))
    want = [t.grad for n, t in zip(names, targs) if n in op.differentiable]
    assert len([g for g in grads if g is not None]) == len(want)
    for g, w in zip(grads, want):
        check(g, w, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("B,D", [(2, 5), (32, 200), (256, 27)])
def test_batchnorm_training(torch, rng, dtype, B, D):
    x = (rng.standard_normal((B, D)) * 2 + 3).astype(dtype)
    g = rng.uniform(0.5, 1.5, D).astype(dtype)
    b = rng.standard_normal(D).astype(dtype)
    out, c = ops.batchnorm_forward(x, g, b, 1e-5)
    tx, tg, tb = leaf(torch, x), leaf(torch, g), leaf(torch, b)
    rm, rv = torch.zeros(D, dtype=tx.dtype), torch.zeros(D, dtype=tx.dtype)
    tout = torch.nn.functional.batch_norm(tx, rm, rv, tg, tb, training=True, momentum=1.0,
                                          eps=1e-5)
    check(out, tout, dtype)
    check(c.mean, rm, dtype)               # momentum 1: running stats = this batch's stats,
    check(c.var, rv, dtype)                # torch stores the unbiased variance
    dout = rng.standard_normal(x.shape).astype(dtype)
    tout.backward(torch.tensor(dout))
    dx, dg, db = ops.batchnorm_backward(dout, c)
    check(dx, tx.grad, dtype, scale=np.abs(dout * g * c.invstd).max())
    check(dg, tg.grad, dtype, scale=np.abs(dout).sum(0).max())
    check(db, tb.grad, dtype, scale=np.abs(dout).sum(0).max())


def lecture_batchnorm(torch, x, gamma, beta, eps=1e-5):
    """The makemore lecture's batch norm in torch (part 4's forward, without the explosion):
    normalized by the Bessel-corrected variance."""
    mean = x.mean(0, keepdim=True)
    var = 1 / (x.shape[0] - 1) * ((x - mean) ** 2).sum(0, keepdim=True)
    return gamma * (x - mean) * (var + eps) ** -0.5 + beta


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("B,D", [(2, 5), (3, 4), (32, 200), (256, 27)])
def test_unbiased_batchnorm_is_the_lectures(torch, rng, dtype, B, D):
    """unbiased=True against the lecture's formula in torch, and against torch.var(unbiased=True)
    normalization; its cache's statistics are torch's; its gradients are autograd's."""
    x = (rng.standard_normal((B, D)) * 2 + 3).astype(dtype)
    g = rng.uniform(0.5, 1.5, D).astype(dtype)
    b = rng.standard_normal(D).astype(dtype)
    out, c = ops.batchnorm_forward(x, g, b, 1e-5, unbiased=True)
    assert c.unbiased is True
    tx, tg, tb = leaf(torch, x), leaf(torch, g), leaf(torch, b)
    tout = lecture_batchnorm(torch, tx, tg, tb)
    check(out, tout, dtype)
    check(out, OPS["batchnorm"].torch(torch, tx, tg, tb, unbiased=True), dtype)
    check(c.mean, tx.mean(0), dtype)
    check(c.var, torch.var(tx, 0, unbiased=True), dtype)   # what feeds running_var, as ever
    check(c.invstd, 1 / torch.sqrt(torch.var(tx, 0, unbiased=True) + 1e-5), dtype)
    dout = rng.standard_normal(x.shape).astype(dtype)
    tout.backward(torch.tensor(dout))
    dx, dg, db = ops.batchnorm_backward(dout, c)
    check(dx, tx.grad, dtype, scale=np.abs(dout * g * c.invstd).max())
    check(dg, tg.grad, dtype, scale=np.abs(dout).sum(0).max())
    check(db, tb.grad, dtype, scale=np.abs(dout).sum(0).max())
    # and it is not torch's BatchNorm: at these sizes 1/B vs 1/(B-1) is far beyond rounding
    biased = torch.nn.functional.batch_norm(tx, None, None, tg, tb, training=True, eps=1e-5)
    assert not np.allclose(out, biased.detach().numpy(), rtol=1e-3, atol=1e-4)


@pytest.mark.parametrize("dtype", DTYPES)
def test_batchnorm_eval(torch, rng, dtype):
    D = 20
    x = rng.standard_normal((16, D)).astype(dtype)
    g, b, m = (rng.standard_normal(D).astype(dtype) for _ in range(3))
    v = rng.uniform(0.2, 2, D).astype(dtype)
    out, c = ops.batchnorm_eval_forward(x, g, b, m, v, 1e-5)
    tx, tg, tb = leaf(torch, x), leaf(torch, g), leaf(torch, b)
    tout = torch.nn.functional.batch_norm(tx, torch.tensor(m), torch.tensor(v), tg, tb,
                                          training=False, eps=1e-5)
    check(out, tout, dtype)
    dout = rng.standard_normal(x.shape).astype(dtype)
    tout.backward(torch.tensor(dout))
    for got, want in zip(ops.batchnorm_eval_backward(dout, c), (tx.grad, tg.grad, tb.grad)):
        check(got, want, dtype, scale=np.abs(dout).sum(0).max())


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("scale", [1.0, 30.0, 1e4])
def test_cross_entropy(torch, rng, dtype, scale):
    logits = (scale * rng.standard_normal((32, 27))).astype(dtype)
    t = rng.integers(0, 27, 32)
    loss, c = ops.cross_entropy_forward(logits, t)
    tl = leaf(torch, logits)
    tloss = torch.nn.functional.cross_entropy(tl, torch.tensor(t))
    check(loss, tloss, dtype)
    tloss.backward(torch.tensor(0.7, dtype=tl.dtype))
    check(ops.cross_entropy_backward(0.7, c), tl.grad, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_batchnorm1d_running_statistics_follow_torch(torch, rng, dtype):
    D = 12
    ours = nn.BatchNorm1d(D, momentum=0.1, dtype=dtype)
    theirs = torch.nn.BatchNorm1d(D, momentum=0.1, dtype=torch.float64 if dtype == np.float64
                                  else torch.float32)
    for _ in range(5):
        x = (rng.standard_normal((8, D)) * 3 + 1).astype(dtype)
        check(ours(x), theirs(torch.tensor(x)), dtype)
    check(ours.running_mean, theirs.running_mean, dtype)
    check(ours.running_var, theirs.running_var, dtype)
    ours.eval()
    theirs.eval()
    x = rng.standard_normal((4, D)).astype(dtype)
    check(ours(x), theirs(torch.tensor(x)), dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_unbiased_batchnorm1d_running_statistics_and_eval(torch, rng, dtype):
    """BatchNorm1d(unbiased=True): the lecture's normalization, the running statistics torch's
    BatchNorm1d keeps (unbiased variance, momentum the weight of the new batch), eval mode with
    them."""
    D, m = 12, 0.1
    ours = nn.BatchNorm1d(D, momentum=m, unbiased=True, dtype=dtype)
    tdt = torch.float64 if dtype == np.float64 else torch.float32
    theirs = torch.nn.BatchNorm1d(D, momentum=m, dtype=tdt)
    for _ in range(5):
        x = (rng.standard_normal((8, D)) * 3 + 1).astype(dtype)
        tx = torch.tensor(x)
        check(ours(x), lecture_batchnorm(torch, tx, theirs.weight, theirs.bias), dtype)
        theirs(tx)                                  # only for its running statistics
    check(ours.running_mean, theirs.running_mean, dtype)
    check(ours.running_var, theirs.running_var, dtype)
    ours.eval()
    theirs.eval()
    x = rng.standard_normal((4, D)).astype(dtype)
    check(ours(x), theirs(torch.tensor(x)), dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_charmlp_with_bn_unbiased_follows_torch(torch, rng, dtype):
    """CharMLP(bn_unbiased=True): loss and every parameter gradient of one forward/backward
    against the same net in torch autograd with the lecture's batch norm."""
    from fastbn import CharMLP
    from fastbn.data import Vocab

    model = CharMLP(Vocab.from_chars(".abcdefghijklmnopqrstuvwxyz"), n_hidden=50, n_layers=2,
                    bn_unbiased=True, dtype=dtype, seed=1)
    B = 16
    X, Y = rng.integers(0, 27, (B, 3)), rng.integers(0, 27, B)
    loss = model.forward(X, Y)
    model.backward()
    tp = [leaf(torch, p) for p in model.parameters()]
    C, W1, g1, b1, W2, g2, b2, Wout, bout = tp
    h = C[torch.tensor(X)].view(B, -1)
    for W, g, b in ((W1, g1, b1), (W2, g2, b2)):
        h = torch.tanh(lecture_batchnorm(torch, h @ W, g, b))
    tloss = torch.nn.functional.cross_entropy(h @ Wout + bout, torch.tensor(Y))
    tloss.backward()
    check(loss, tloss, dtype)
    for (name, _), grad, t in zip(model.named_parameters(), model.grads(), tp):
        np.testing.assert_allclose(grad, t.grad.numpy(),
                                   **(F64 if dtype == np.float64 else dict(rtol=1e-4, atol=1e-6)),
                                   err_msg=name)
    biased = CharMLP(model.vocab, n_hidden=50, n_layers=2, dtype=dtype, seed=1)
    assert abs(float(biased.forward(X, Y)) - float(loss)) > 1e-4      # the variant mattered


@pytest.mark.parametrize("dtype", DTYPES)
def test_whole_bn_mlp_step(torch, rng, dtype):
    """Embedding -> Linear -> BatchNorm -> tanh -> Linear -> cross-entropy, layer API vs torch."""
    V, D, T, H, B = 27, 10, 3, 200, 32
    g = np.random.default_rng(0)
    emb = nn.Embedding(V, D, dtype=dtype, generator=g)
    l1 = nn.Linear(T * D, H, bias=False, dtype=dtype, generator=g)
    bn = nn.BatchNorm1d(H, dtype=dtype)
    act = nn.Tanh()
    l2 = nn.Linear(H, V, dtype=dtype, generator=g)
    net = nn.Sequential(emb, l1, bn, act, l2)
    X = rng.integers(0, V, (B, T))
    Y = rng.integers(0, V, B)
    logits = net(X)
    loss, c = ops.cross_entropy_forward(logits, Y)
    net.backward(ops.cross_entropy_backward(1.0, c))

    tparams = [leaf(torch, p) for p in net.parameters()]
    C, W1, gamma, beta, W2, b2 = tparams
    h = C[torch.tensor(X)].view(B, -1) @ W1
    h = torch.nn.functional.batch_norm(h, None, None, gamma, beta, training=True)
    tlogits = torch.tanh(h) @ W2 + b2
    tloss = torch.nn.functional.cross_entropy(tlogits, torch.tensor(Y))
    tloss.backward()
    check(loss, tloss, dtype)
    for (name, _), grad, tp in zip(net.named_parameters(), net.grads(), tparams):
        np.testing.assert_allclose(grad, tp.grad.numpy(),
                                   **(F64 if dtype == np.float64 else dict(rtol=1e-4, atol=1e-6)),
                                   err_msg=name)


@pytest.mark.parametrize("dtype,tol", [(np.float64, 1e-10), (np.float32, 2e-4)])
def test_training_follows_torch_step_for_step(torch, dtype, tol):
    """fastbn.train (the compiled loop) and the same SGD in PyTorch autograd, from the same
    parameters on the same minibatches: the losses agree at every step."""
    from fastbn import CharMLP, train
    from fastbn.data import Vocab
    from fastbn.fused import BatchSampler

    g = np.random.default_rng(0)
    X = g.integers(0, 27, size=(4000, 3))
    Y = np.where(g.random(4000) < 0.7, X[:, 2], g.integers(0, 27, 4000))
    model = CharMLP(Vocab.from_chars(".abcdefghijklmnopqrstuvwxyz"), dtype=dtype, seed=1)
    C, W1, gamma, beta, W2, b2 = (torch.tensor(p.copy(), requires_grad=True)
                                  for p in model.parameters())
    rm = torch.zeros(200, dtype=C.dtype)
    rv = torch.ones(200, dtype=C.dtype)
    steps, B, seed = 300, 32, 7
    ours = train(model, (X, Y), steps=steps, batch_size=B, lr_schedule="0:0.1,150:0.01",
                 seed=seed, quiet=True, evaluate=False)
    assert ours.path == "fused"
    sampler = BatchSampler(seed)                     # train's minibatches, drawn again
    theirs = []
    for step in range(steps):
        ix = torch.tensor(sampler.draw(len(X), B))
        h = C[torch.tensor(X)[ix]].view(B, -1) @ W1
        h = torch.nn.functional.batch_norm(h, rm, rv, gamma, beta, training=True,
                                           momentum=0.001)
        loss = torch.nn.functional.cross_entropy(torch.tanh(h) @ W2 + b2, torch.tensor(Y)[ix])
        for p in (C, W1, gamma, beta, W2, b2):
            p.grad = None
        loss.backward()
        with torch.no_grad():
            for p in (C, W1, gamma, beta, W2, b2):
                p -= (0.1 if step < 150 else 0.01) * p.grad
        theirs.append(loss.item())
    np.testing.assert_allclose(ours.history, theirs, rtol=tol, atol=tol)
    bn = model.batchnorms()[0]
    np.testing.assert_allclose(bn.running_mean, rm.numpy(), rtol=10 * tol, atol=10 * tol)
    np.testing.assert_allclose(bn.running_var, rv.numpy(), rtol=10 * tol, atol=10 * tol)
