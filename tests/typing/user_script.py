"""A student's script over fastbn's typed public API; tests/test_typing.py runs mypy --strict on
it (it is never imported by the tests)."""
import pathlib

import numpy as np
from numpy.typing import NDArray

import fastbn
from fastbn import (
    CharMLP,
    TrainResult,
    compare,
    exercises,
    gradcheck,
    gradcheck_all,
    nn,
    ops,
    reference,
)
from fastbn.comparison import Report
from fastbn.data import Dataset, Vocab, load_dataset
from fastbn.folding import FoldedCharMLP
from fastbn.gradchecks import GradcheckReport, GradcheckSuite
from fastbn.lab import LossCheck, Probe, Snapshot, initial_loss_check
from fastbn.sweep import Space, SweepResult, sweep
from fastbn.training import TrainState, parse_lr_schedule


def my_tanh_backward(dout: NDArray[np.float64], cache: ops.Cache) -> NDArray[np.float64]:
    t: NDArray[np.float64] = cache.out
    return dout * (1 - t**2)


def main() -> None:
    rng = np.random.default_rng(0)
    x = rng.standard_normal((8, 4))
    out, cache = ops.batchnorm_forward(x, np.ones(4), np.zeros(4), eps=1e-5, unbiased=True)
    dx, dgamma, dbeta = ops.batchnorm_backward(np.ones_like(out), cache)
    print(dx.shape, dgamma.shape, dbeta.shape)
    logits, c1 = ops.linear_forward(x, rng.standard_normal((4, 3)))
    loss, c2 = ops.cross_entropy_forward(logits, np.array([0, 1, 2, 0, 1, 2, 0, 1]))
    dlogits = ops.cross_entropy_backward(1.0, c2)
    dh, dw, db = ops.linear_backward(dlogits, c1)
    print(float(loss), dh.shape, dw.shape, db is None)
    ref_out, _ = reference.tanh_forward(x)

    report: GradcheckReport = gradcheck((ops.tanh_forward, my_tanh_backward), (x,),
                                        raise_exception=False)
    suite: GradcheckSuite = gradcheck_all(seed=0)
    print(report.passed, suite.passed, str(suite).splitlines()[0], ref_out.shape)

    layer = nn.BatchNorm1d(4, dtype=np.float64).train()
    y = layer(x)
    grads: list[np.ndarray] = layer.grads()
    print(y.shape, len(grads), len(layer.parameters()))

    params, Xb, Yb = exercises.problem(batch_size=32)
    fwd = exercises.forward(params, Xb, Yb)
    ref = exercises.backward(fwd, params)
    graded: Report = exercises.check({"dlogprobs": ref["dlogprobs"]}, verbose=False)
    one: Report = compare(my_tanh_backward, "tanh", shapes={"B": 2})
    print(graded.ok, one.ok, one.verdict())

    vocab: Vocab = Vocab.from_words(["emma", "olivia"])
    ids: list[int] = vocab.encode("emma")
    print(vocab.decode(ids), fastbn.__version__)
    ds: Dataset = load_dataset(download=False)
    X, Y = ds.split("val")
    print(X.shape, Y.shape)

    model: CharMLP = CharMLP(ds.vocab, block_size=3, n_hidden=50, seed=0)
    result: TrainResult = fastbn.train(model, ds, steps=100, batch_size=32,
                                       lr_schedule=parse_lr_schedule("0:0.1,50:0.01"),
                                       quiet=True, fused="auto")
    state: TrainState | None = result.state
    val: float = model.evaluate(X, Y)
    names: list[str] = model.sample(5, seed=0)
    step_loss: float = model.train(True).train_step(X[:32], Y[:32], lr=0.1)
    print(result.losses.get("val"), result.us_per_step, val, names, step_loss)

    path: pathlib.Path = fastbn.save(model, "model.npz", meta={"note": "typed"}, state=state)
    back: CharMLP | FoldedCharMLP = fastbn.load(path)
    folded: FoldedCharMLP = fastbn.fold_batchnorm(back, table=None)
    print(folded.fold_summary(), folded.eval().evaluate(X, Y), back.train_state)


def lab_and_sweep(ds: Dataset, model: CharMLP) -> None:
    """The laboratory's probe and a sweep over two learning rates (not run by main)."""
    probe = Probe(model, every=10)
    fastbn.train(model, ds, steps=20, callback=probe, every=probe.every, fused=False)
    last: Snapshot = probe.last
    check: LossCheck = initial_loss_check(3.3, ds.vocab.size)
    result: SweepResult = sweep(Space({"lr": [0.03, 0.1]}, seeds=2), ds, workers=0, quiet=True)
    print(last.step, check.verdict, [p.label() for p in result.best(2)])


if __name__ == "__main__":
    main()
