"""One entry per op of ``fastbn.ops``: what gradcheck, the tests and the benchmark know about it,
in one place (the shape of PyTorch's OpInfo database). Test metadata: ``import fastbn`` does not
load this module (``fastbn.gradcheck_all``, ``fastbn.compare``, the tests and the benchmark
import it when they need it); what the runtime needs of an activation (its layer, gain and flat
region) is ``fastbn.registry``.

An :class:`OpInfo` names the op; its forward and backward are ``fastbn.ops.<name>_forward`` /
``_backward`` and its NumPy reference ``fastbn.reference.<name>_forward`` / ``_backward``
(looked up when asked for, so a patched op is the one checked). It carries

- ``inputs(rng, dims)``: sample inputs, ``{argument name: array}`` in the forward's order (float64
  floats, int64 indices), at dimension sizes named by the letters of ``fastbn.ops`` (B batch,
  T context, V vocabulary, D features, I fan_in, O fan_out, C classes); ``dims`` the defaults.
  The awkward cases live here: ReLU-like inputs stay off the kink (finite differences must not
  straddle it), an embedding batch repeats rows (24 lookups in 11 rows), ``variants`` adds the
  cases gradcheck and the PyTorch-parity test run besides the default (linear without bias,
  batch norm at B = 2, the lecture's batch norm, ``unbiased=True``, at B = 8 and B = 2);
- ``constants``: floating inputs that get no gradient (eval batch norm's running statistics);
- ``options``: scalar options after the arrays, with the value the tests pass and the range
  property tests draw from;
- ``torch(torch, *args, **options)``: the same computation in PyTorch (``torch`` is passed in:
  fastbn never imports it), for the parity tests; a variant's ``options`` are passed to it too;
- ``elementwise``: the op takes an array of any shape;
- ``grad_from_output``: the backward reads the forward's output (tanh: 1 - t²), so a forward a
  few ulp away from another implementation's moves the gradient by a few ulp of ``|dout|``;
- ``broken``: a deliberately wrong backward, which gradcheck must fail;
- ``error_inputs(dims)``: bad calls (:class:`ErrorInput`: wrong shapes, dtypes, indices, options)
  with the exception type and message each must raise;
- ``opcalls``: the op's rows of the benchmark's per-op table (:class:`OpCall`);
- ``nonlinearity``: for an activation, its ``fastbn.registry`` entry.

Every generic test parametrizes over ``OPS``: adding an op adds one entry here (plus its kernel
pair in ``csrc/_kernels.pyx``, its validating wrapper in ``fastbn/ops.py`` and its reference in
``fastbn/reference.py``), and gradcheck, the hostile-input, crash-safety, property, reference and
PyTorch-parity tests and the benchmark's per-op table cover it; a nonlinearity, with its
``fastbn.registry`` entry and its layer, is then also a layer of ``CharMLP(activation=...)`` and
a kind of the lab.
"""
import inspect
import re
from dataclasses import dataclass, field

import numpy as np

from . import ops, reference, registry

__all__ = ["OPS", "NONLINEARITIES", "ErrorInput", "OpCall", "OpInfo", "Option", "Variant",
           "check_entries", "get"]


@dataclass(frozen=True)
class Option:
    """A scalar option of a forward: ``sample`` is the value the tests pass, [``low``, ``high``]
    the range property tests draw from."""

    name: str
    sample: float
    low: float
    high: float


@dataclass(frozen=True)
class Variant:
    """A gradcheck case besides the default one: ``label`` (shown as ``"<op> (<label>)"``),
    dimension sizes that differ, array arguments left out (trailing optional ones), and
    ``options``, keyword options of the forward that are not numbers to draw (batch norm's
    ``unbiased=True``): passed to the forward, its NumPy reference and its ``torch`` function."""

    label: str
    dims: dict = field(default_factory=dict)
    drop: tuple = ()
    options: dict = field(default_factory=dict)


@dataclass(frozen=True)
class ErrorInput:
    """A bad call of a forward and what it must raise (OpInfo's ``error_inputs_func``): the sample
    arguments in ``dtype`` with those of ``replace`` (``{argument or option name: value}``)
    swapped in and the keyword ``options`` added; ``exc`` the exception type, ``match`` a regex
    of its message."""

    label: str
    replace: dict
    exc: type
    match: str
    options: dict = field(default_factory=dict)
    dtype: object = np.float64


@dataclass(frozen=True)
class OpCall:
    """A row of the benchmark's per-op table (``fastbn.bench.opcalls``): the op at the model's
    shapes, at the table's batch size B.

    ``key`` names the row (``bench/targets.json`` says it as ``"op"``), ``label`` is shown;
    ``dims`` are the sizes besides B, ``drop`` the trailing arrays left out (linear without
    bias), ``options`` the forward's scalar options by name. ``numpy(a)`` and
    ``torch(torch, a)`` give the peers, ``{pass: (function of no arguments, its text)}``, from
    ``a``: the sample arrays by name, the options, the upstream gradient ``d`` and fastbn's
    forward output ``out``."""

    key: str
    label: str
    dims: dict
    numpy: object
    torch: object
    drop: tuple = ()
    options: dict = field(default_factory=dict)


@dataclass(frozen=True)
class OpInfo:
    """One op of ``fastbn.ops`` (see the module docstring for the fields)."""

    name: str
    inputs: object
    dims: dict
    torch: object
    constants: tuple = ()
    options: tuple = ()
    variants: tuple = ()
    elementwise: bool = False
    grad_from_output: bool = False
    broken: object = None
    error_inputs: object = None
    opcalls: tuple = ()

    @property
    def nonlinearity(self):
        """The activation's runtime entry (``fastbn.registry.ACTIVATIONS``), or None."""
        return registry.ACTIVATIONS.get(self.name)

    # the functions, by name: a test that patches fastbn.ops.<name>_backward is seen here
    @property
    def forward(self):
        return getattr(ops, self.name + "_forward")

    @property
    def backward(self):
        return getattr(ops, self.name + "_backward")

    @property
    def reference_forward(self):
        return getattr(reference, self.name + "_forward")

    @property
    def reference_backward(self):
        return getattr(reference, self.name + "_backward")

    def _dims(self, dims):
        """The default dimension sizes, with those of ``dims`` this op has (others ignored)."""
        return {**self.dims, **{k: int(v) for k, v in dims.items() if k in self.dims}}

    def arrays(self, dtype=np.float64, seed=0, **dims):
        """The sample arrays, ``{name: array}`` in the forward's order; floats cast to ``dtype``,
        indices int64. ``dims`` may name sizes of other ops too (ignored)."""
        rng = np.random.default_rng(seed)
        return {k: v.astype(dtype) if np.issubdtype(v.dtype, np.floating) else v
                for k, v in self.inputs(rng, self._dims(dims)).items()}

    def args(self, dtype=np.float64, seed=0, **dims):
        """The forward's positional arguments: the sample arrays, then each option's sample."""
        return list(self.arrays(dtype, seed, **dims).values()) + [o.sample for o in self.options]

    @property
    def arg_names(self):
        """Names of ``args()``: the arrays', then the options'."""
        return list(self.arrays()) + [o.name for o in self.options]

    @property
    def float_positions(self):
        """Positions in ``args()`` of the floating arrays (constants included)."""
        return [i for i, a in enumerate(self.arrays().values())
                if np.issubdtype(a.dtype, np.floating)]

    @property
    def index_positions(self):
        """Positions in ``args()`` of the integer (index) arrays."""
        return [i for i, a in enumerate(self.arrays().values())
                if np.issubdtype(a.dtype, np.integer)]

    @property
    def differentiable(self):
        """Names of the floating arrays that get a gradient, in the order backward returns them."""
        return [n for n, a in self.arrays().items()
                if np.issubdtype(a.dtype, np.floating) and n not in self.constants]

    def sample_options(self):
        """``{option name: sample value}``."""
        return {o.name: o.sample for o in self.options}

    def error_cases(self, **dims):
        """The error inputs at these dimension sizes: ``[(label, args, options, exc, match)]``,
        ``args`` the forward's positional arguments, ``options`` its keyword ones."""
        d = self._dims(dims)
        out = []
        for e in self.error_inputs(d) if self.error_inputs else ():
            args = dict(zip(self.arg_names, self.args(e.dtype, **d)))
            args.update(e.replace)
            out.append((f"{self.name} ({e.label})", list(args.values()), dict(e.options), e.exc,
                        e.match))
        return out

    def cases(self, seed=0, dtype=np.float64):
        """The gradcheck cases: ``[(label, arrays, options)]``, the default (no options) then
        each variant (its ``options``, keyword arguments of the forward)."""
        out = [(self.name, self.arrays(dtype, seed), {})]
        for v in self.variants:
            arrays = self.arrays(dtype, seed, **v.dims)
            out.append((f"{self.name} ({v.label})",
                        {k: a for k, a in arrays.items() if k not in v.drop}, dict(v.options)))
        return out


# ----------------------------------------------------------------------------------------------
# the sample inputs (float64; the same draws fastbn.compare has always made)

def _off_kink(x):
    x[np.abs(x) < 1e-3] = 0.5            # finite differences must not straddle the kink at 0
    return x


def _embedding_inputs(r, d):
    return {"weight": r.standard_normal((d["V"], d["D"])),
            "idx": r.integers(0, d["V"], (d["B"], d["T"]))}


def _linear_inputs(r, d):
    return {"x": r.standard_normal((d["B"], d["I"])), "w": r.standard_normal((d["I"], d["O"])),
            "b": r.standard_normal(d["O"])}


def _x(r, d):
    return {"x": r.standard_normal((d["B"], d["D"]))}


def _x_off_kink(r, d):
    return {"x": _off_kink(r.standard_normal((d["B"], d["D"])))}


def _batchnorm_inputs(r, d):
    return {"x": 2 * r.standard_normal((d["B"], d["D"])) + 1,
            "gamma": r.uniform(0.5, 2, d["D"]), "beta": r.standard_normal(d["D"])}


def _batchnorm_eval_inputs(r, d):
    return {"x": r.standard_normal((d["B"], d["D"])), "gamma": r.uniform(0.5, 2, d["D"]),
            "beta": r.standard_normal(d["D"]), "running_mean": r.standard_normal(d["D"]),
            "running_var": r.uniform(0.5, 2, d["D"])}


def _cross_entropy_inputs(r, d):
    return {"logits": 2 * r.standard_normal((d["B"], d["C"])),
            "target": r.integers(0, d["C"], d["B"])}


def _batchnorm_torch(torch, x, gamma, beta, eps=1e-5, unbiased=False):
    """torch's training-mode batch norm; ``unbiased=True``: the lecture's formula written in torch,
    normalized by ``torch.var(unbiased=True)``."""
    if not unbiased:
        return torch.nn.functional.batch_norm(x, None, None, gamma, beta, training=True, eps=eps)
    var = torch.var(x, 0, unbiased=True)
    return gamma * (x - x.mean(0)) / torch.sqrt(var + eps) + beta


# ----------------------------------------------------------------------------------------------
# error inputs: bad calls of each forward, at the dimension sizes ``d`` of the call, and what each
# must raise (the generic hostile-input and crash-safety tests run every one)

def _shape(shape):
    """A regex of ``shape`` as a message prints it, e.g. of (6, 5)."""
    return re.escape(str(tuple(shape)))


_EPS = [-1e-12, -1.0, float("nan"), float("-inf")]
_NOT_BOOLS = ["yes", "False", 1, 0, 1.0, None, [True], np.array([True]), np.array(True)]
_TWO_ROWS = "Expected more than 1 value per channel when training"


def _eps_errors():
    return [ErrorInput(f"eps={e}", {"eps": e}, ValueError, "eps must be >= 0") for e in _EPS]


def _embedding_errors(d):
    B, T, V, D = d["B"], d["T"], d["V"], d["D"]
    return [
        ErrorInput("weight 1-D", {"weight": np.ones(V)}, ValueError,
                   f"weight must be 2-D, got shape {_shape((V,))}"),
        ErrorInput("weight 3-D", {"weight": np.ones((V, D, 1))}, ValueError,
                   f"weight must be 2-D, got shape {_shape((V, D, 1))}"),
        ErrorInput("idx 3-D", {"idx": np.zeros((B, T, 1), np.int64)}, ValueError,
                   f"idx must be .*got shape {_shape((B, T, 1))}"),
        ErrorInput("idx 0-D", {"idx": np.array(3)}, ValueError, r"idx must be .*got shape \(\)"),
        ErrorInput("idx float", {"idx": np.array([[0.0, 1.0]])}, TypeError, "idx"),
        ErrorInput("idx past the table", {"idx": np.array([[0, V]])}, IndexError, f"holds {V}"),
        ErrorInput("idx negative", {"idx": np.array([[-1, 0]])}, IndexError, "holds -1"),
    ]


def _linear_errors(d):
    B, I, O = d["B"], d["I"], d["O"]
    return [
        ErrorInput("x 1-D", {"x": np.ones(I)}, ValueError,
                   f"x must be 2-D, got shape {_shape((I,))}"),
        ErrorInput("x of another width", {"x": np.ones((B, I - 1))}, ValueError,
                   f"{_shape((B, I - 1))}.*{_shape((I, O))}"),
        ErrorInput("w 3-D", {"w": np.ones((I, O, 1))}, ValueError,
                   f"w must be 2-D, got shape {_shape((I, O, 1))}"),
        ErrorInput("w transposed", {"w": np.ones((O, I))}, ValueError,
                   f"{_shape((B, I))}.*{_shape((O, I))}"),
        ErrorInput("b 2-D", {"b": np.ones((1, O))}, ValueError,
                   f"b must be 1-D, got shape {_shape((1, O))}"),
        ErrorInput("b of another length", {"b": np.ones(O + 1)}, ValueError,
                   f"b must have shape {_shape((O,))}, got {_shape((O + 1,))}"),
    ]


def _alpha_errors(d):
    return [ErrorInput(f"alpha={a!r}", {"alpha": a},
                       TypeError if a is None or isinstance(a, (str, bool)) else ValueError,
                       "alpha must be")
            for a in [-0.1, -1.0, float("nan"), float("inf"), "1", None, True]]


def _batchnorm_errors(d):
    B, D = d["B"], d["D"]
    return [
        ErrorInput("x 1-D", {"x": np.ones(B)}, ValueError,
                   f"x must be 2-D, got shape {_shape((B,))}"),
        ErrorInput("x 3-D", {"x": np.ones((B, D, 1))}, ValueError,
                   f"x must be 2-D, got shape {_shape((B, D, 1))}"),
        ErrorInput("gamma of another length", {"gamma": np.ones(D - 1)}, ValueError,
                   f"gamma must have shape {_shape((D,))}, got {_shape((D - 1,))}"),
        ErrorInput("beta 2-D", {"beta": np.ones((D, 1))}, ValueError,
                   f"beta must be 1-D, got shape {_shape((D, 1))}"),
        *[ErrorInput(f"B={n}", {"x": np.ones((n, D), np.float32)}, ValueError, _TWO_ROWS,
                     dtype=np.float32) for n in (0, 1)],
        *[ErrorInput(f"B={n}, unbiased", {"x": np.ones((n, D))}, ValueError, _TWO_ROWS,
                     {"unbiased": True}) for n in (0, 1)],
        *_eps_errors(),
        *[ErrorInput(f"unbiased={u!r}", {}, TypeError, "unbiased must be True or False",
                     {"unbiased": u}) for u in _NOT_BOOLS],
    ]


def _batchnorm_eval_errors(d):
    D = d["D"]
    return [
        ErrorInput("gamma of another length", {"gamma": np.ones(D + 1)}, ValueError,
                   f"gamma must have shape {_shape((D,))}, got {_shape((D + 1,))}"),
        ErrorInput("beta of another length", {"beta": np.ones(D - 1)}, ValueError,
                   f"beta must have shape {_shape((D,))}, got {_shape((D - 1,))}"),
        ErrorInput("running_mean of another length", {"running_mean": np.ones(D - 1)},
                   ValueError,
                   f"running_mean must have shape {_shape((D,))}, got {_shape((D - 1,))}"),
        ErrorInput("running_var 2-D", {"running_var": np.ones((1, D))}, ValueError,
                   f"running_var must be 1-D, got shape {_shape((1, D))}"),
        *_eps_errors(),
    ]


def _cross_entropy_errors(d):
    B, C = d["B"], d["C"]
    return [
        ErrorInput("logits 1-D", {"logits": np.ones(C)}, ValueError,
                   f"logits must be 2-D, got shape {_shape((C,))}"),
        ErrorInput("target short", {"target": np.zeros(B - 1, np.int64)}, ValueError,
                   f"target must have shape {_shape((B,))}.*got {_shape((B - 1,))}"),
        ErrorInput("target 2-D", {"target": np.zeros((B, 1), np.int64)}, ValueError,
                   f"target must have shape {_shape((B,))}.*got {_shape((B, 1))}"),
        *[ErrorInput(f"logits {shape}", {"logits": np.ones(shape),
                                          "target": np.zeros(shape[0], np.int64)},
                     ValueError, "at least one row and one class.*" + _shape(shape))
          for shape in [(0, C), (B, 0), (0, 0)]],
        ErrorInput("target float", {"target": np.full(B, 0.5)}, TypeError, "target"),
        ErrorInput("target past the classes", {"target": np.full(B, C + 2)}, IndexError,
                   f"holds {C + 2}"),
    ]


# ----------------------------------------------------------------------------------------------
# the benchmark's rows (fastbn.bench.opcalls): each op at the model's shapes (width 200, a
# vocabulary of 27, 3 characters of context, 10 embedding dimensions), its NumPy expression as
# fastbn.reference writes it (inline where it is one line) and its PyTorch function and the ATen
# backward op autograd would run. ``a`` holds the sample arrays by name, the options, the upstream
# gradient ``d`` and fastbn's forward output ``out``; each function returns {pass: (callable,
# text)}.

_H, _V, _T, _D = 200, 27, 3, 10


def _np_tanh(a):
    x, d, t = a.x, a.d, a.out
    return {"forward": (lambda: np.tanh(x), "np.tanh(x)"),
            "backward": (lambda: d * (1 - t**2), "d * (1 - t**2)")}


def _torch_tanh(torch, a):
    xt, dt, tt = (torch.from_numpy(v) for v in (a.x, a.d, a.out))
    aten = torch.ops.aten
    return {"forward": (lambda: torch.tanh(xt), "torch.tanh(xt)"),
            "backward": (lambda: aten.tanh_backward(dt, tt), "aten.tanh_backward(dt, tt)")}


def _np_relu(a):
    x, d = a.x, a.d
    return {"forward": (lambda: np.maximum(x, 0), "np.maximum(x, 0)"),
            "backward": (lambda: np.where(x > 0, d, 0), "np.where(x > 0, d, 0)")}


def _torch_relu(torch, a):
    xt, dt = torch.from_numpy(a.x), torch.from_numpy(a.d)
    aten = torch.ops.aten
    return {"forward": (lambda: torch.relu(xt), "torch.relu(xt)"),
            "backward": (lambda: aten.threshold_backward(dt, xt, 0),
                         "aten.threshold_backward(dt, xt, 0)")}


def _np_leaky_relu(a):
    x, d, s = a.x, a.d, a.negative_slope
    return {"forward": (lambda: np.where(x >= 0, x, s * x), f"np.where(x >= 0, x, {s} * x)"),
            "backward": (lambda: np.where(x > 0, d, s * d), f"np.where(x > 0, d, {s} * d)")}


def _torch_leaky_relu(torch, a):
    xt, dt, s = torch.from_numpy(a.x), torch.from_numpy(a.d), a.negative_slope
    F, aten = torch.nn.functional, torch.ops.aten
    return {"forward": (lambda: F.leaky_relu(xt, s), f"F.leaky_relu(xt, {s})"),
            "backward": (lambda: aten.leaky_relu_backward(dt, xt, s, False),
                         f"aten.leaky_relu_backward(dt, xt, {s}, False)")}


def _np_elu(a):
    x, d, al = a.x, a.d, a.alpha
    return {"forward": (lambda: np.where(x > 0, x, al * np.expm1(np.minimum(x, 0))),
                        f"np.where(x > 0, x, {al} * np.expm1(np.minimum(x, 0)))"),
            "backward": (lambda: np.where(x > 0, d, d * al * np.exp(np.minimum(x, 0))),
                         f"np.where(x > 0, d, d * {al} * np.exp(np.minimum(x, 0)))")}


def _torch_elu(torch, a):
    xt, dt, al = torch.from_numpy(a.x), torch.from_numpy(a.d), a.alpha
    F, aten = torch.nn.functional, torch.ops.aten
    return {"forward": (lambda: F.elu(xt, al), f"F.elu(xt, {al})"),
            "backward": (lambda: aten.elu_backward(dt, al, 1, 1, False, xt),
                         f"aten.elu_backward(dt, {al}, 1, 1, False, xt)")}


def _np_embedding(a):
    weight, idx, d, B = a.weight, a.idx, a.d, a.idx.shape[0]
    rc = reference.embedding_forward(weight, idx)[1]
    R = reference
    return {"forward": (lambda: weight[idx].reshape(B, -1), "weight[idx].reshape(B, -1)"),
            "backward": (lambda: R.embedding_backward(d, rc), "R.embedding_backward(d, rc)")}


def _torch_embedding(torch, a):
    wt, it, dt = (torch.from_numpy(v) for v in (a.weight, a.idx, a.d))
    (B, T), (V, D) = a.idx.shape, a.weight.shape
    aten = torch.ops.aten
    return {"forward": (lambda: wt[it].view(B, -1), "wt[it].view(B, -1)"),
            "backward": (lambda: aten.embedding_dense_backward(dt.view(B, T, D), it, V, -1, False),
                         f"aten.embedding_dense_backward(dt.view(B, {T}, {D}), it, {V}, -1, "
                         "False)")}


def _np_linear(a):
    x, w, d, b = a.x, a.w, a.d, getattr(a, "b", None)
    if b is None:
        return {"forward": (lambda: x @ w, "x @ w"),
                "backward": (lambda: (d @ w.T, x.T @ d), "d @ w.T, x.T @ d")}
    return {"forward": (lambda: x @ w + b, "x @ w + b"),
            "backward": (lambda: (d @ w.T, x.T @ d, d.sum(0)), "d @ w.T, x.T @ d, d.sum(0)")}


def _torch_linear(torch, a):
    xt, wt, dt = (torch.from_numpy(v) for v in (a.x, a.w, a.d))
    if getattr(a, "b", None) is None:
        return {"forward": (lambda: xt @ wt, "xt @ wt"),
                "backward": (lambda: (dt @ wt.T, xt.T @ dt), "dt @ wt.T, xt.T @ dt")}
    bt = torch.from_numpy(a.b)
    return {"forward": (lambda: torch.addmm(bt, xt, wt), "torch.addmm(bt, xt, wt)"),
            "backward": (lambda: (dt @ wt.T, xt.T @ dt, dt.sum(0)),
                         "dt @ wt.T, xt.T @ dt, dt.sum(0)")}


def _np_batchnorm(a):
    x, gamma, beta, d, R = a.x, a.gamma, a.beta, a.d, reference
    rc = R.batchnorm_forward(x, gamma, beta)[1]
    return {"forward": (lambda: R.batchnorm_forward(x, gamma, beta),
                        "R.batchnorm_forward(x, gamma, beta)"),
            "backward": (lambda: R.batchnorm_backward(d, rc), "R.batchnorm_backward(d, rc)")}


def _torch_batchnorm(torch, a):
    aten = torch.ops.aten
    xt, gt, bt, dt = (torch.from_numpy(v) for v in (a.x, a.gamma, a.beta, a.d))
    _, sm, si = aten.native_batch_norm(xt, gt, bt, None, None, True, 0.1, 1e-5)
    return {"forward": (lambda: aten.native_batch_norm(xt, gt, bt, None, None, True, 0.1, 1e-5),
                        "aten.native_batch_norm(xt, gt, bt, None, None, True, 0.1, 1e-5)"),
            "backward": (lambda: aten.native_batch_norm_backward(
                dt, xt, gt, None, None, sm, si, True, 1e-5, [True, True, True]),
                "aten.native_batch_norm_backward(dt, xt, gt, None, None, sm, si, True, 1e-5, "
                "[True, True, True])")}


def _np_batchnorm_eval(a):
    x, g, b, m, v, d, R = a.x, a.gamma, a.beta, a.running_mean, a.running_var, a.d, reference
    rc = R.batchnorm_eval_forward(x, g, b, m, v)[1]
    return {"forward": (lambda: R.batchnorm_eval_forward(x, g, b, m, v),
                        "R.batchnorm_eval_forward(x, gamma, beta, running_mean, running_var)"),
            "backward": (lambda: R.batchnorm_eval_backward(d, rc),
                         "R.batchnorm_eval_backward(d, rc)")}


def _torch_batchnorm_eval(torch, a):
    aten = torch.ops.aten
    xt, gt, bt, mt, vt, dt = (torch.from_numpy(v) for v in (
        a.x, a.gamma, a.beta, a.running_mean, a.running_var, a.d))
    return {"forward": (lambda: aten.native_batch_norm(xt, gt, bt, mt, vt, False, 0.1, 1e-5),
                        "aten.native_batch_norm(xt, gt, bt, rm, rv, False, 0.1, 1e-5)"),
            "backward": (lambda: aten.native_batch_norm_backward(
                dt, xt, gt, mt, vt, None, None, False, 1e-5, [True, True, True]),
                "aten.native_batch_norm_backward(dt, xt, gt, rm, rv, None, None, False, 1e-5, "
                "[True, True, True])")}


def _np_cross_entropy(a):
    logits, target, R = a.logits, a.target, reference
    rc = R.cross_entropy_forward(logits, target)[1]
    return {"forward": (lambda: R.cross_entropy_forward(logits, target),
                        "R.cross_entropy_forward(logits, target)"),
            "backward": (lambda: R.cross_entropy_backward(1.0, rc),
                         "R.cross_entropy_backward(1.0, rc)")}


def _torch_cross_entropy(torch, a):
    aten, F = torch.ops.aten, torch.nn.functional
    lt, yt = torch.from_numpy(a.logits), torch.from_numpy(a.target)
    ls = aten._log_softmax(lt, 1, False)
    _, tw = aten.nll_loss_forward(ls, yt, None, 1, -100)
    one = torch.tensor(1.0, dtype=lt.dtype)
    return {"forward": (lambda: F.cross_entropy(lt, yt), "F.cross_entropy(lt, yt)"),
            "backward": (lambda: aten._log_softmax_backward_data(
                aten.nll_loss_backward(one, ls, yt, None, 1, -100, tw), ls, 1, ls.dtype),
                "aten._log_softmax_backward_data(aten.nll_loss_backward(one, ls, yt, None, 1, "
                "-100, tw), ls, 1, ls.dtype)")}


def _activation_call(name, numpy, torch, options=None, text=""):
    return (OpCall(name, f"{name.replace('_', ' ')} ({_H}{text})", {"D": _H}, numpy=numpy,
                   torch=torch, options=options or {}),)


# ----------------------------------------------------------------------------------------------
# the entries

_ELEMENTWISE = {"B": 8, "D": 6}

_OPS = [
    OpInfo("embedding", _embedding_inputs, {"B": 8, "T": 3, "V": 11, "D": 4},
           torch=lambda torch, weight, idx: weight[idx].reshape(idx.shape[0], -1),
           error_inputs=_embedding_errors,
           opcalls=(OpCall("embedding", f"embedding ({_V}×{_D}, {_T} characters)",
                           {"V": _V, "T": _T, "D": _D}, numpy=_np_embedding,
                           torch=_torch_embedding),),
           broken=lambda dout, c: np.zeros(c.weight_shape)),
    OpInfo("linear", _linear_inputs, {"B": 8, "I": 7, "O": 5},
           torch=lambda torch, x, w, b=None: x @ w if b is None else x @ w + b,
           variants=(Variant("no bias", drop=("b",)),), error_inputs=_linear_errors,
           opcalls=(OpCall("linear_hidden", f"linear, hidden ({_T * _D}→{_H})",
                           {"I": _T * _D, "O": _H}, drop=("b",), numpy=_np_linear,
                           torch=_torch_linear),
                    OpCall("linear_output", f"linear, output ({_H}→{_V}, +b)",
                           {"I": _H, "O": _V}, numpy=_np_linear, torch=_torch_linear)),
           broken=lambda dout, c: (dout @ c.w.T, c.x.T @ dout, dout.mean(0))),  # mean, not sum
    OpInfo("tanh", _x, _ELEMENTWISE, torch=lambda torch, x: torch.tanh(x), elementwise=True,
           grad_from_output=True, opcalls=_activation_call("tanh", _np_tanh, _torch_tanh),
           broken=lambda dout, c: dout * (1 - c.out)),  # forgot the square
    OpInfo("relu", _x_off_kink, _ELEMENTWISE, torch=lambda torch, x: torch.relu(x),
           elementwise=True, opcalls=_activation_call("relu", _np_relu, _torch_relu),
           broken=lambda dout, c: dout),  # passes through x < 0
    OpInfo("leaky_relu", _x_off_kink, _ELEMENTWISE,
           torch=lambda torch, x, negative_slope=0.01: torch.nn.functional.leaky_relu(
               x, negative_slope),
           options=(Option("negative_slope", 0.1, 0.0, 1.0),), elementwise=True,
           opcalls=_activation_call("leaky_relu", _np_leaky_relu, _torch_leaky_relu,
                                    {"negative_slope": 0.01}, ", slope 0.01"),
           broken=lambda dout, c: np.where(c.x > 0, dout, 0.0)),  # forgot the slope
    OpInfo("elu", _x_off_kink, _ELEMENTWISE,
           torch=lambda torch, x, alpha=1.0: torch.nn.functional.elu(x, alpha),
           options=(Option("alpha", 1.3, 0.0, 2.0),), elementwise=True, grad_from_output=True,
           error_inputs=_alpha_errors,
           opcalls=_activation_call("elu", _np_elu, _torch_elu, {"alpha": 1.0}, ", alpha 1"),
           broken=lambda dout, c: np.where(c.out > 0, dout, dout * c.out)),  # forgot + alpha
    OpInfo("batchnorm", _batchnorm_inputs, {"B": 8, "D": 6}, torch=_batchnorm_torch,
           options=(Option("eps", 1e-5, 0.0, 1.0),),
           variants=(Variant("B=2", {"B": 2}), Variant("unbiased", options={"unbiased": True}),
                     Variant("unbiased, B=2", {"B": 2}, options={"unbiased": True})),
           error_inputs=_batchnorm_errors,
           opcalls=(OpCall("batchnorm", f"batch norm ({_H})", {"D": _H}, numpy=_np_batchnorm,
                           torch=_torch_batchnorm),),
           # ignores the mean and variance paths
           broken=lambda dout, c: (dout * c.gamma * c.invstd, (dout * c.xhat).sum(0),
                                   dout.sum(0))),
    OpInfo("batchnorm_eval", _batchnorm_eval_inputs, {"B": 8, "D": 6},
           torch=lambda torch, x, gamma, beta, rm, rv, eps=1e-5: torch.nn.functional.batch_norm(
               x, rm, rv, gamma, beta, training=False, eps=eps),
           constants=("running_mean", "running_var"), options=(Option("eps", 1e-5, 0.0, 1.0),),
           error_inputs=_batchnorm_eval_errors,
           opcalls=(OpCall("batchnorm_eval", f"batch norm, eval ({_H})", {"D": _H},
                           numpy=_np_batchnorm_eval, torch=_torch_batchnorm_eval),),
           broken=lambda dout, c: (dout * c.gamma,                     # forgot invstd
                                   (dout * c.xhat).sum(0), dout.sum(0))),
    OpInfo("cross_entropy", _cross_entropy_inputs, {"B": 8, "C": 11},
           torch=lambda torch, logits, target: torch.nn.functional.cross_entropy(logits, target),
           error_inputs=_cross_entropy_errors,
           opcalls=(OpCall("cross_entropy", f"cross-entropy ({_V} classes)", {"C": _V},
                           numpy=_np_cross_entropy, torch=_torch_cross_entropy),),
           broken=lambda dl, c: dl * c.probs / c.probs.shape[0]),  # forgot the one-hot
]

OPS = {op.name: op for op in _OPS}
NONLINEARITIES = registry.NONLINEARITIES


def check_entries():
    """The entries that disagree with their functions, as ``[(op name, why)]`` (empty when all
    agree; tests/test_registry.py asks for that): the forward takes the sample arrays then the
    options, by those names; the constants are trailing arrays (gradcheck binds them by
    keyword); an activation's layer has its options as attributes, and its runtime entry
    (``fastbn.registry``) names the same options; the reference takes the forward's arguments;
    every entry has a broken backward and a row of the benchmark."""
    bad = []
    for op in _OPS:
        names, params = op.arg_names, list(inspect.signature(op.forward).parameters)
        ref = list(inspect.signature(op.reference_forward).parameters)
        arrays = list(op.arrays())
        if params[:len(names)] != names or ref[:len(names)] != names:
            bad.append((op.name, f"arguments {names}, forward {params}, reference {ref}"))
        if op.constants and arrays[-len(op.constants):] != list(op.constants):
            bad.append((op.name, f"constants {op.constants} are not the last arrays {arrays}"))
        if op.nonlinearity is not None:
            layer = op.nonlinearity.layer()
            if not all(hasattr(layer, o.name) for o in op.options):
                bad.append((op.name, f"{type(layer).__name__} lacks an option attribute"))
            if op.nonlinearity.options != tuple(o.name for o in op.options):
                bad.append((op.name, f"fastbn.registry's options {op.nonlinearity.options} "
                                     f"are not the op's {[o.name for o in op.options]}"))
        if op.broken is None or not op.opcalls:
            bad.append((op.name, "no deliberately broken backward or no benchmark row"))
    return bad


def get(name):
    """The entry of op ``name``; ValueError naming the ops otherwise."""
    if name not in OPS:
        raise ValueError(f"unknown op {name!r}; fastbn.ops has {', '.join(OPS)}")
    return OPS[name]

