"""One entry per op of ``fastbn.ops``: what gradcheck, the tests, the layers, the model and the
lab know about it, in one place (the shape of PyTorch's OpInfo database).

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
- ``nonlinearity`` (:class:`Nonlinearity`, for activations): the ``fastbn.nn`` layer class, the
  Kaiming gain (``fastbn.init.calculate_gain`` reads it) and the lab's flat region, the outputs
  where the local derivative is about 0 (``fastbn.lab.activation_stats``).

Every generic test parametrizes over ``OPS``: adding an op adds one entry here (plus its kernel
pair in ``csrc/_kernels.pyx``, its validating wrapper in ``fastbn/ops.py`` and its reference in
``fastbn/reference.py``), and gradcheck, the hostile-input, crash-safety, property, reference and
PyTorch-parity tests cover it; a nonlinearity is then also a layer of ``CharMLP(activation=...)``
and a kind of the lab.
"""
import inspect
import math
from dataclasses import dataclass, field

import numpy as np

from . import nn, ops, reference

__all__ = ["OPS", "NONLINEARITIES", "Nonlinearity", "OpInfo", "Option", "Variant", "check_entries",
           "get", "layer_options", "nonlinearity_of"]


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
class Nonlinearity:
    """What the layers, the model, ``init`` and the lab need of an activation.

    - ``layer``: its ``fastbn.nn`` class, built as ``layer(**options)`` (the options of the op are
      attributes of the layer, by the same names);
    - ``gain(*options)``: the Kaiming gain, ``sigma_W = gain / sqrt(fan_in)``;
    - ``flat(t, threshold, **options)``: boolean array, where the output ``t`` sits in the flat
      region (local derivative about 0). ``threshold`` is the lab's tanh threshold on ``|t|`` (0.97
      for "saturated", 0.99 for "dead"); an activation whose derivative varies says its flat
      region by the same gradient factor, ``1 - threshold**2`` (0.059, 0.020);
    - ``flat_text(threshold)``: the flat region in words, for figures and reports.
    """

    layer: type
    gain: object
    flat: object
    flat_text: object


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
    nonlinearity: Nonlinearity = None

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


# ----------------------------------------------------------------------------------------------
# the nonlinearities: gains (Kaiming: keep the second moment of the activations), flat regions

def _tanh_flat(t, threshold):
    return np.abs(t) > threshold


def _relu_flat(t, threshold):
    return t == 0


def _leaky_relu_flat(t, threshold, negative_slope=0.01):
    return t < 0


def _leaky_relu_gain(negative_slope=0.01):
    return math.sqrt(2.0 / (1 + negative_slope**2))


def _elu_flat(t, threshold, alpha=1.0):
    # for x <= 0 (t <= 0) the derivative is alpha e^x = t + alpha: flat where it is under tanh's
    # factor at |t| = threshold, 1 - threshold**2 (alpha = 1: x < ln 0.059 = -2.83 for 0.97)
    return (t <= 0) & (t + alpha < 1 - threshold**2)


def _elu_gain(alpha=1.0):
    """torch.nn.init.calculate_gain has no ELU. Kaiming's own argument, the one that gives ReLU
    sqrt(2) and leaky ReLU sqrt(2 / (1 + slope**2)): the gain that keeps the second moment of
    unit-normal pre-activations (what batch norm hands the activation), 1 / sqrt(E[elu(z)**2])
    for z ~ N(0, 1), with, from E[e^(kz); z < 0] = e^(k**2/2) Phi(-k),

        E[elu(z)**2] = 1/2 + alpha**2 (e**2 Phi(-2) - 2 e**(1/2) Phi(-1) + 1/2)

    1.2452 for alpha = 1; sqrt(2) at alpha = 0, where ELU is ReLU."""
    def phi(k):                                 # the normal CDF at -k
        return 0.5 * math.erfc(k / math.sqrt(2))
    m2 = 0.5 + alpha**2 * (math.exp(2) * phi(2) - 2 * math.exp(0.5) * phi(1) + 0.5)
    return 1 / math.sqrt(m2)


def _batchnorm_torch(torch, x, gamma, beta, eps=1e-5, unbiased=False):
    """torch's training-mode batch norm; ``unbiased=True``: the lecture's formula written in torch,
    normalized by ``torch.var(unbiased=True)``."""
    if not unbiased:
        return torch.nn.functional.batch_norm(x, None, None, gamma, beta, training=True, eps=eps)
    var = torch.var(x, 0, unbiased=True)
    return gamma * (x - x.mean(0)) / torch.sqrt(var + eps) + beta


_ELEMENTWISE = {"B": 8, "D": 6}

_OPS = [
    OpInfo("embedding", _embedding_inputs, {"B": 8, "T": 3, "V": 11, "D": 4},
           torch=lambda torch, weight, idx: weight[idx].reshape(idx.shape[0], -1)),
    OpInfo("linear", _linear_inputs, {"B": 8, "I": 7, "O": 5},
           torch=lambda torch, x, w, b=None: x @ w if b is None else x @ w + b,
           variants=(Variant("no bias", drop=("b",)),)),
    OpInfo("tanh", _x, _ELEMENTWISE, torch=lambda torch, x: torch.tanh(x), elementwise=True,
           grad_from_output=True,
           nonlinearity=Nonlinearity(nn.Tanh, lambda: 5.0 / 3, _tanh_flat,
                                     lambda threshold: f"|t| > {threshold:g}")),
    OpInfo("relu", _x_off_kink, _ELEMENTWISE, torch=lambda torch, x: torch.relu(x),
           elementwise=True,
           nonlinearity=Nonlinearity(nn.ReLU, lambda: math.sqrt(2.0), _relu_flat,
                                     lambda threshold: "t == 0")),
    OpInfo("leaky_relu", _x_off_kink, _ELEMENTWISE,
           torch=lambda torch, x, negative_slope=0.01: torch.nn.functional.leaky_relu(
               x, negative_slope),
           options=(Option("negative_slope", 0.1, 0.0, 1.0),), elementwise=True,
           nonlinearity=Nonlinearity(nn.LeakyReLU, _leaky_relu_gain, _leaky_relu_flat,
                                     lambda threshold: "t < 0")),
    OpInfo("elu", _x_off_kink, _ELEMENTWISE,
           torch=lambda torch, x, alpha=1.0: torch.nn.functional.elu(x, alpha),
           options=(Option("alpha", 1.3, 0.0, 2.0),), elementwise=True, grad_from_output=True,
           nonlinearity=Nonlinearity(nn.ELU, _elu_gain, _elu_flat,
                                     lambda threshold: f"t + alpha < {1 - threshold**2:.3g}")),
    OpInfo("batchnorm", _batchnorm_inputs, {"B": 8, "D": 6}, torch=_batchnorm_torch,
           options=(Option("eps", 1e-5, 0.0, 1.0),),
           variants=(Variant("B=2", {"B": 2}), Variant("unbiased", options={"unbiased": True}),
                     Variant("unbiased, B=2", {"B": 2}, options={"unbiased": True}))),
    OpInfo("batchnorm_eval", _batchnorm_eval_inputs, {"B": 8, "D": 6},
           torch=lambda torch, x, gamma, beta, rm, rv, eps=1e-5: torch.nn.functional.batch_norm(
               x, rm, rv, gamma, beta, training=False, eps=eps),
           constants=("running_mean", "running_var"), options=(Option("eps", 1e-5, 0.0, 1.0),)),
    OpInfo("cross_entropy", _cross_entropy_inputs, {"B": 8, "C": 11},
           torch=lambda torch, logits, target: torch.nn.functional.cross_entropy(logits, target)),
]

OPS = {op.name: op for op in _OPS}
NONLINEARITIES = tuple(op.name for op in _OPS if op.nonlinearity is not None)


def check_entries():
    """The entries that disagree with their functions, as ``[(op name, why)]`` (empty when all
    agree; tests/test_registry.py asks for that, so importing fastbn does not pay for it): the
    forward takes the sample arrays then the options, by those names; the constants are
    trailing arrays (gradcheck binds them by keyword); an activation's layer has its options as
    attributes; the reference takes the forward's arguments."""
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
    return bad


def get(name):
    """The entry of op ``name``; ValueError naming the ops otherwise."""
    if name not in OPS:
        raise ValueError(f"unknown op {name!r}; fastbn.ops has {', '.join(OPS)}")
    return OPS[name]


def nonlinearity_of(layer):
    """The entry of the activation a ``fastbn.nn`` layer computes, or None (not an activation)."""
    for name in NONLINEARITIES:
        if isinstance(layer, OPS[name].nonlinearity.layer):
            return OPS[name]
    return None


def layer_options(op, layer):
    """``{option name: value}`` of an activation layer (its attributes of the options' names)."""
    return {o.name: getattr(layer, o.name) for o in op.options}
