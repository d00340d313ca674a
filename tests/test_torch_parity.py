"""Every output and gradient of fastbn.ops and fastbn.nn against PyTorch autograd.

float64 must agree to 1e-10 relative; float32 within the rounding error of the computation
(``check``). Skipped (with the reason) without torch.
"""
import math

import numpy as np
import pytest

from fastbn import nn, ops
from fastbn._opinfo import OPS

F64 = dict(rtol=1e-10, atol=1e-12)
F32_RTOL = 1e-5         # ~84 ulp: two libm's (ours, torch's vectorized one) of tanh, exp, log
EPS32 = float(np.finfo(np.float32).eps)
DTYPES = [np.float64, np.float32]


def rounding32(n, size):
    """The float32 rounding allowance of a value computed through a reduction of ``n`` terms
    (a sum, a mean, a dot product) of quantities up to ``size`` in magnitude (the terms and the
    partial sums: the sum of the terms' absolute values bounds both).

    Each operation rounds by up to eps/2 of what it computes. Summed in whatever order and
    blocking each library (and its thread count) chooses, the errors of n additions add up like
    a random walk: about sqrt(n) eps/2 size (n eps/2 size at worst). 8 sqrt(n) eps size is 16
    times the typical error: no summation order reaches it in practice, and a wrong result (a
    missing term, 1/B for 1/(B-1), a wrong sign) is off by far more.
    """
    return 8 * EPS32 * math.sqrt(n) * size


def leaf(torch, a):
    return torch.tensor(a, requires_grad=True)


def check(got, want, dtype, scale=None, n=1, size=None):
    """``got`` (ours) against ``want`` (torch's tensor).

    float64: rtol 1e-10, atol 1e-12, or 1e-10 * ``scale`` for results that are sums of
    cancelling terms (``scale``: the sum of the terms' absolute values).
    float32: rtol 1e-5 (elementwise functions) and atol ``rounding32(n, size)``: the result
    comes from reductions of ``n`` terms up to ``size`` (default ``scale``, else the largest
    |want|; n = 1 for an elementwise op).
    """
    want = want.detach().numpy()
    assert np.asarray(got).dtype == np.dtype(dtype)
    if dtype == np.float64:
        t = dict(F64)
        if scale is not None:
            t["atol"] = t["rtol"] * scale
    else:
        if size is None:
            size = scale if scale is not None else float(np.abs(want).max(initial=0))
        t = dict(rtol=F32_RTOL, atol=rounding32(n, size))
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
    # each row of the gradient sums the rows of dout that picked it
    sums = np.zeros_like(w)
    np.add.at(sums, idx, np.abs(dout).reshape(32, 3, 10))
    check(ops.embedding_backward(dout, c), tw.grad, dtype, n=np.bincount(idx.ravel()).max(),
          size=sums.max())


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
    B, K = x.shape
    H = w.shape[1]
    check(out, tout, dtype, scale=(ax @ aw).max() + (np.abs(b).max() if bias else 0), n=K + 1)
    dout = rng.standard_normal(out.shape).astype(dtype)
    tout.backward(torch.tensor(dout))
    dx, dw, db = ops.linear_backward(dout, c)
    check(dx, tx.grad, dtype, scale=(np.abs(dout) @ aw.T).max(), n=H)
    check(dw, tw.grad, dtype, scale=(ax.T @ np.abs(dout)).max(), n=B)
    if bias:
        check(db, tb.grad, dtype, n=B, size=np.abs(dout).sum(0).max())
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
    # a reduction of these ops runs along one dimension of an input (linear: K or B; batch
    # norm: B; cross-entropy: the classes, then the batch; embedding: repeats of an index, at
    # most B T); the terms are up to the largest |value| of the inputs and of what is compared
    dims = [a.shape for a in arrays.values() if isinstance(a, np.ndarray)]
    reduce_n = max([d for shape in dims for d in shape] + [int(np.prod(s)) for s in dims
                                                             if name == "embedding"])
    big = max(float(np.abs(a).max()) for a in arrays.values() if isinstance(a, np.ndarray))
    check(np.asarray(out), tout, dtype, n=reduce_n,
          size=max(big, float(np.abs(tout.detach().numpy()).max())))
    dout = 0.7 if np.ndim(out) == 0 else \
        np.random.default_rng(4).standard_normal(np.shape(out)).astype(dtype)
    grads = op.backward(dout, cache)
    grads = grads if isinstance(grads, tuple) else (grads,)
    tout.backward(torch.tensor(dout, dtype=tout.dtype))
    want = [t.grad for n, t in zip(names, targs) if n in op.differentiable]
    assert len([g for g in grads if g is not None]) == len(want)
    for g, w in zip(grads, want):
        check(g, w, dtype, n=reduce_n, size=max(big, float(np.abs(w.numpy()).max())))


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
    sizes = bn_sizes(x, g, b, c)
    check(out, tout, dtype, n=B, size=sizes["out"])
    check(c.mean, rm, dtype, n=B, size=sizes["mean"])   # momentum 1: running stats = this
    check(c.var, rv, dtype, n=B, size=sizes["var"])     # batch's; torch's variance is unbiased
    dout = rng.standard_normal(x.shape).astype(dtype)
    tout.backward(torch.tensor(dout))
    dx, dg, db = ops.batchnorm_backward(dout, c)
    check(dx, tx.grad, dtype, scale=np.abs(dout * g * c.invstd).max(), n=B,
          size=sizes["dx"](dout))
    check(dg, tg.grad, dtype, scale=np.abs(dout).sum(0).max(), n=B,
          size=sizes["dgamma"](dout))
    check(db, tb.grad, dtype, scale=np.abs(dout).sum(0).max(), n=B)


def bn_sizes(x, g, b, c):
    """The magnitudes a batch norm's float32 results are computed from (see ``rounding32``):
    the mean sums |x|; the variance (x - mean)^2; the output g (x - mean) invstd + b carries the
    error of the mean at the scale of |x| g invstd; dgamma sums |dout xhat|; dx combines dout
    with the batch sums of dout and of dout xhat, at the scale of g invstd."""
    x = x.astype(np.float64)
    xhat = np.abs(x - x.mean(0)) * c.invstd
    gi = np.abs(g) * c.invstd
    return {"mean": np.abs(x).max(),
            "var": ((x - x.mean(0)) ** 2).sum(0).max() / max(len(x) - 1, 1),
            "out": (np.abs(x) * gi + np.abs(b)).max(),
            "dgamma": lambda d: (np.abs(d) * xhat).sum(0).max(),
            "dx": lambda d: (gi * (np.abs(d) + np.abs(d).mean(0)
                                   + xhat * (np.abs(d) * xhat).mean(0))).max()}


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
    sizes = bn_sizes(x, g, b, c)
    check(out, tout, dtype, n=B, size=sizes["out"])
    check(out, OPS["batchnorm"].torch(torch, tx, tg, tb, unbiased=True), dtype, n=B,
          size=sizes["out"])
    check(c.mean, tx.mean(0), dtype, n=B, size=sizes["mean"])
    # what feeds running_var, as ever
    check(c.var, torch.var(tx, 0, unbiased=True), dtype, n=B, size=sizes["var"])
    invstd = 1 / torch.sqrt(torch.var(tx, 0, unbiased=True) + 1e-5)
    check(c.invstd, invstd, dtype, n=B, size=float(invstd.detach().abs().max()))
    dout = rng.standard_normal(x.shape).astype(dtype)
    tout.backward(torch.tensor(dout))
    dx, dg, db = ops.batchnorm_backward(dout, c)
    check(dx, tx.grad, dtype, scale=np.abs(dout * g * c.invstd).max(), n=B,
          size=sizes["dx"](dout))
    check(dg, tg.grad, dtype, scale=np.abs(dout).sum(0).max(), n=B,
          size=sizes["dgamma"](dout))
    check(db, tb.grad, dtype, scale=np.abs(dout).sum(0).max(), n=B)
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
        check(got, want, dtype, scale=np.abs(dout).sum(0).max(), n=len(x))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("scale", [1.0, 30.0, 1e4])
def test_cross_entropy(torch, rng, dtype, scale):
    logits = (scale * rng.standard_normal((32, 27))).astype(dtype)
    t = rng.integers(0, 27, 32)
    loss, c = ops.cross_entropy_forward(logits, t)
    tl = leaf(torch, logits)
    tloss = torch.nn.functional.cross_entropy(tl, torch.tensor(t))
    # the loss: a log-sum-exp over the classes (at the scale of the largest logit), then a mean
    # over the batch; its gradient: the softmax, whose denominator sums the classes
    B, C = logits.shape
    check(loss, tloss, dtype, n=B + C, size=float(np.abs(logits).max()))
    tloss.backward(torch.tensor(0.7, dtype=tl.dtype))
    check(ops.cross_entropy_backward(0.7, c), tl.grad, dtype, n=C)


@pytest.mark.parametrize("dtype", DTYPES)
def test_batchnorm1d_running_statistics_follow_torch(torch, rng, dtype):
    D = 12
    ours = nn.BatchNorm1d(D, momentum=0.1, dtype=dtype)
    theirs = torch.nn.BatchNorm1d(D, momentum=0.1, dtype=torch.float64 if dtype == np.float64
                                  else torch.float32)
    big = 0.0
    for _ in range(5):
        x = (rng.standard_normal((8, D)) * 3 + 1).astype(dtype)
        big = max(big, float(np.abs(x).max()))
        check(ours(x), theirs(torch.tensor(x)), dtype, n=8, size=out_size(ours, x))
    # five momentum updates of the statistics of 8 rows
    check(ours.running_mean, theirs.running_mean, dtype, n=8 * 5, size=big)
    check(ours.running_var, theirs.running_var, dtype, n=8 * 5, size=big ** 2)
    ours.eval()
    theirs.eval()
    x = rng.standard_normal((4, D)).astype(dtype)
    check(ours(x), theirs(torch.tensor(x)), dtype, n=8 * 5, size=out_size(ours, x, eval=True))


def out_size(bn, x, eval=False):
    """The scale of a BatchNorm1d's output (``bn_sizes``'s "out"): |x| g invstd + |beta|, with
    the batch's variance or the running one."""
    var = bn.running_var if eval else x.astype(np.float64).var(0)
    return float((np.abs(x) * np.abs(bn.gamma) / np.sqrt(var + bn.eps) + np.abs(bn.beta)).max())


@pytest.mark.parametrize("dtype", DTYPES)
def test_unbiased_batchnorm1d_running_statistics_and_eval(torch, rng, dtype):
    """BatchNorm1d(unbiased=True): the lecture's normalization, the running statistics torch's
    BatchNorm1d keeps (unbiased variance, momentum the weight of the new batch), eval mode with
    them."""
    D, m = 12, 0.1
    ours = nn.BatchNorm1d(D, momentum=m, unbiased=True, dtype=dtype)
    tdt = torch.float64 if dtype == np.float64 else torch.float32
    theirs = torch.nn.BatchNorm1d(D, momentum=m, dtype=tdt)
    big = 0.0
    for _ in range(5):
        x = (rng.standard_normal((8, D)) * 3 + 1).astype(dtype)
        big = max(big, float(np.abs(x).max()))
        tx = torch.tensor(x)
        check(ours(x), lecture_batchnorm(torch, tx, theirs.weight, theirs.bias), dtype, n=8,
              size=out_size(ours, x))
        theirs(tx)                                  # only for its running statistics
    check(ours.running_mean, theirs.running_mean, dtype, n=8 * 5, size=big)
    check(ours.running_var, theirs.running_var, dtype, n=8 * 5, size=big ** 2)
    ours.eval()
    theirs.eval()
    x = rng.standard_normal((4, D)).astype(dtype)
    check(ours(x), theirs(torch.tensor(x)), dtype, n=8 * 5, size=out_size(ours, x, eval=True))


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
        np.testing.assert_allclose(grad, t.grad.numpy(), err_msg=name,
                                   **net_tolerance(dtype, t.grad.numpy(), B, 50, 27))
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
        np.testing.assert_allclose(grad, tp.grad.numpy(), err_msg=name,
                                   **net_tolerance(dtype, tp.grad.numpy(), B, H, V))


def net_tolerance(dtype, want, B, H, V):
    """A parameter gradient of a whole net: float64 F64; float32 the rounding of its chain of
    reductions (the softmax over V classes, the backward matmuls over H or V, batch norm and
    the weight gradients over the B rows: ``rounding32(B + H + V, max |grad|)``), with rtol
    1e-4: a relative rounding error of the forward (the batch statistics) reaches every
    gradient, amplified by the backward's 1/std factors."""
    if dtype == np.float64:
        return F64
    return dict(rtol=1e-4, atol=rounding32(B + H + V, float(np.abs(want).max())))


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
