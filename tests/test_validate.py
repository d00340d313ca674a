"""Each scalar option has one check, in ``fastbn._validate``: every entry point that takes the
option (an op, a layer, ``CharMLP``, the fused step, the command line, a sweep's space) refuses a
bad value with that check's words, and no other module spells those words itself."""
import ast
import re
from pathlib import Path

import numpy as np
import pytest

import fastbn
from fastbn import _kernels as K
from fastbn import _validate, nn, ops
from fastbn.cli import main
from fastbn.fused import FusedTrainer
from fastbn.model import CharMLP
from fastbn.sweep.space import Space

VOCAB = ".abcdefghijklmnopqrstuvwxyz"
X = np.random.default_rng(0).standard_normal((8, 5)).astype(np.float32)
G, B = np.ones(5, np.float32), np.zeros(5, np.float32)


def refusal(check, v):
    """The words of ``check`` (a function of fastbn._validate) for ``v``, without a name."""
    with pytest.raises((TypeError, ValueError)) as e:
        check(v, None)
    return e.type, str(e.value)


def raised_in_validate(exc):
    """Whether ``exc``, or the exception it was raised from (a caller re-raising the message
    as another type), was raised in fastbn/_validate.py."""
    while exc is not None:
        tb = exc.__traceback__
        while tb is not None and tb.tb_next is not None:
            tb = tb.tb_next
        if tb is not None and Path(tb.tb_frame.f_code.co_filename).name == "_validate.py":
            return True
        exc = exc.__context__
    return False


def fused_trainer(**bn):
    """A FusedTrainer bound to a CharMLP whose BatchNorms are then given ``bn``'s attributes."""
    model = CharMLP(VOCAB, n_hidden=16, seed=0)
    trainer = FusedTrainer(model, 8)
    for layer in model.batchnorms():
        for k, v in bn.items():
            setattr(layer, k, v)
    ids = np.zeros((8, model.block_size), np.int64)
    return lambda: trainer.step(ids, np.zeros(8, np.int64), 0.1, np.arange(8))


# (option, the check, a bad value, {entry point: (a call, the exception type it raises)})
CASES = [
    ("momentum", _validate.momentum, 1.5, {
        "nn.BatchNorm1d": (lambda v: nn.BatchNorm1d(3, momentum=v), None),
        "CharMLP": (lambda v: CharMLP(VOCAB, bn_momentum=v), None),
        "FusedTrainer.step": (lambda v: fused_trainer(momentum=v)(), None),
        "sweep": (lambda v: Space.parse([f"bn_momentum={v}"]), ValueError),
    }),
    ("eps", _validate.eps, -1.0, {
        "ops.batchnorm_forward": (lambda v: ops.batchnorm_forward(X, G, B, v), None),
        "ops.batchnorm_eval_forward": (
            lambda v: ops.batchnorm_eval_forward(X, G, B, B, G, v), None),
        "nn.BatchNorm1d": (lambda v: nn.BatchNorm1d(3, eps=v), None),
        "CharMLP": (lambda v: CharMLP(VOCAB, bn_eps=v), None),
        "FusedTrainer.step": (lambda v: fused_trainer(eps=v)(), None),
        "sweep": (lambda v: Space.parse([f"bn_eps={v}"]), ValueError),
    }),
    ("unbiased", _validate.unbiased, "yes", {
        "ops.batchnorm_forward": (lambda v: ops.batchnorm_forward(X, G, B, 1e-5, v), None),
        "nn.BatchNorm1d": (lambda v: nn.BatchNorm1d(3, unbiased=v), None),
        "CharMLP": (lambda v: CharMLP(VOCAB, bn_unbiased=v), None),
        "FusedTrainer.step": (lambda v: fused_trainer(unbiased=v)(), ValueError),
    }),
    ("alpha", _validate.alpha, -1.0, {
        "ops.elu_forward": (lambda v: ops.elu_forward(X, v), None),
        "nn.ELU": (lambda v: nn.ELU(v), None),
    }),
    ("alpha", _validate.alpha, "1", {
        "ops.elu_forward": (lambda v: ops.elu_forward(X, v), None),
        "nn.ELU": (lambda v: nn.ELU(v), None),
    }),
    ("negative_slope", _validate.negative_slope, float("inf"), {
        "CharMLP": (lambda v: CharMLP(VOCAB, activation="leaky_relu", negative_slope=v), None),
        "sweep": (lambda v: Space.parse([f"negative_slope={v}"]), ValueError),
    }),
    ("dtype", _validate.float_dtype, np.float16, {
        "nn.Linear": (lambda v: nn.Linear(3, 4, dtype=v), None),
        "nn.BatchNorm1d": (lambda v: nn.BatchNorm1d(3, dtype=v), None),
        "CharMLP": (lambda v: CharMLP(VOCAB, dtype=v), None),
        "comparison.compare": (
            lambda v: fastbn.comparison.compare(ops.tanh_backward, "tanh", dtype=v), None),
        "sweep": (lambda v: Space.parse(["dtype=float16"]), ValueError),
    }),
    ("gain", _validate.finite_positive, -2.0, {
        "CharMLP": (lambda v: CharMLP(VOCAB, gain=v), None),
        "sweep": (lambda v: Space.parse([f"gain={v}"]), ValueError),
    }),
    ("eps of gradcheck", _validate.positive, 0.0, {
        "gradcheck": (lambda v: fastbn.gradcheck(
            (ops.tanh_forward, ops.tanh_backward), (X.astype(np.float64),), eps=v), None),
    }),
    ("n_hidden", _validate.positive_int, 0, {
        "CharMLP": (lambda v: CharMLP(VOCAB, n_hidden=v), None),
        "sweep": (lambda v: Space.parse([f"n_hidden={v}"]), ValueError),
    }),
]


@pytest.mark.parametrize("option, check, bad, entries", CASES,
                         ids=[f"{c[0]}={c[2]!r}" for c in CASES])
def test_every_entry_point_refuses_with_the_one_check(option, check, bad, entries):
    """The same exception type (unless the entry point says another) and the same words, raised
    by fastbn._validate, from each entry point."""
    kind, words = refusal(check, bad)
    for where, (call, raises) in entries.items():
        with pytest.raises(Exception) as e:
            call(bad)
        assert e.type is (raises or kind), (where, e.type, e.value)
        assert str(e.value).endswith(words), (where, str(e.value), words)
        assert raised_in_validate(e.value), where


@pytest.mark.parametrize("argv, check, bad", [
    (["train", "--bn-momentum", "1.5"], _validate.momentum, 1.5),
    (["train", "--steps", "0"], _validate.positive, 0),
    (["gradcheck", "--eps", "inf"], _validate.positive, float("inf")),
    (["gradcheck", "--atol", "-1"], _validate.tolerance, -1.0),
    (["lab", "robustness", "--gains", "1,0"], _validate.finite_positive, 0.0),
    (["lab", "--seed", "-1"], _validate.nonnegative_int, -1),
])
def test_the_command_line_refuses_with_the_one_check(argv, check, bad, capsys):
    """argparse's one-line usage error, in the library's words."""
    _, words = refusal(check, bad)
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert f"argument {argv[-2]}: {words}\n" in err and "Traceback" not in err, err


@pytest.mark.parametrize("call", [
    lambda: K.elu_forward_fast(X, -1.0),
    lambda: K.elu_forward_fast(X, float("nan")),
    lambda: K.elu_forward_fast(X, 1),                      # not a float: ops converts it
    lambda: K.batchnorm_forward_fast(X, G, B, -1.0, False),
    lambda: K.batchnorm_forward_fast(X, G, B, float("nan"), False),
    lambda: K.batchnorm_forward_fast(X, G, B, 1e-5, "yes"),
    lambda: K.batchnorm_forward_fast(X, G, B, 1e-5, np.True_),
    lambda: K.batchnorm_eval_forward_fast(X, G, B, B, G, -1.0),
    lambda: K.leaky_relu_forward_fast(X, 1, "leaky_relu"),
])
def test_the_compiled_path_defers_a_bad_scalar_to_the_check(call):
    """The compiled common case only accepts: an option it does not take comes back (None) to
    the general path of fastbn.ops, which calls fastbn._validate (it raises nothing itself)."""
    assert call() is None


# ----------------------------------------------------------------------------------------------
# the words of each check are spelled in fastbn/_validate.py only

# what a message of a check says (in any string of a module, an f-string's text included)
WORDS = [
    r"must be in \[0, 1\]",                   # momentum
    r"(?<![a-z])eps must be >= 0|\beps >= 0",  # batch norm's eps
    r"momentum must be",
    r"unbiased must be True or False",
    r"alpha must be",
    r"(negative_)?slope must be",
    r"float32 or float64,? got|float32 or float64 array",
    r"must be finite and > 0",
    r"must be a finite number [>]=? 0",
    r"learning rate must be",
]


def strays(source):
    """The strings of the Python ``source`` that spell the words of a check of _validate."""
    out = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            out += [node.value for w in WORDS if re.search(w, node.value)]
    return out


def test_the_words_of_a_check_are_in_validate_only():
    root = Path(fastbn.__file__).parent
    # (fastbn/_opinfo.py is test metadata: its error inputs state the messages the checks must
    # raise, as the tests do; the scan holds it to nothing else)
    found = {str(p.relative_to(root)): strays(p.read_text())
             for p in sorted(root.rglob("*.py")) if p.name not in ("_validate.py", "_opinfo.py")}
    assert {k: v for k, v in found.items() if v} == {}
    assert set(strays((root / "_opinfo.py").read_text())) <= {
        "eps must be >= 0", "alpha must be", "unbiased must be True or False"}
    assert strays((root / "_validate.py").read_text())     # the scan sees the words there


@pytest.mark.parametrize("snippet", [
    'raise ValueError(f"momentum must be in [0, 1], got {m}")',
    'raise ValueError(f"bn_eps must be >= 0, got {e}")',
    'raise TypeError(f"dtype must be float32 or float64, got {dt}")',
    'raise TypeError(f"{name} must be a float32 or float64 array, got dtype {dt}")',
    'raise TypeError(f"unbiased must be True or False, got {u!r}")',
    'raise ValueError(f"alpha must be a finite number >= 0, got {a}")',
    'raise ValueError(f"negative_slope must be finite, got {s}")',
    'raise ValueError(f"gain must be finite and > 0, got {g}")',
    'raise ValueError(f"the learning rate must be finite, got {lr}")',
])
def test_the_scan_finds_a_check_written_again(snippet):
    """A check written again outside _validate.py (as each was before) fails the test above."""
    assert strays(f"def f(m, e, dt, name, u, a, s, g, lr):\n    {snippet}\n")
