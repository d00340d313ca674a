"""Layers: torch-like objects over ``fastbn.ops``, for models and teaching code.

Every layer has the same small interface:

- ``layer(x)`` runs the forward (training or eval mode), keeps the cache for backward and the
  output as ``layer.out`` (the diagnostics read it);
- ``layer.backward(dout)`` keeps ``dout`` as ``layer.dout`` (the gradient of ``.out``, for the
  diagnostics), returns the gradient of the input and stores the gradients of the
  parameters (written in place into the arrays ``grads()`` returns, by the ops' ``out=``, so a
  list taken once stays valid; they are overwritten, not accumulated: each backward follows its
  own forward);
- ``parameters()`` and ``grads()`` return aligned lists of arrays, ``named_parameters()`` the
  parameters with names; ``zero_grad()`` zeroes the gradients;
- ``train()`` / ``eval()`` switch mode (only BatchNorm1d behaves differently).

Layers take ``dtype=`` (float32 by default) and, where they initialize weights, ``generator=``: a
``numpy.random.Generator``, an int seed, or None for fresh entropy.
"""
from __future__ import annotations

from typing import Any, TypeVar

import numpy as np
from numpy.typing import ArrayLike, DTypeLike

from . import _kernels, _validate, ops
from ._arrays import aligned_copy
from ._arrays import aligned_empty as aligned_empty  # nn.aligned_empty, public

_M = TypeVar("_M", bound="Module")

__all__ = ["Module", "Embedding", "Linear", "BatchNorm1d", "Tanh", "ReLU", "LeakyReLU", "ELU",
           "Sequential"]


def _rng(generator):
    if isinstance(generator, np.random.Generator):
        return generator
    return np.random.default_rng(generator)


class Module:
    """Base class: mode, parameter bookkeeping, and the forward/backward protocol."""

    training = True
    # attribute names of parameters; gradients live at "d" + name
    _param_names: tuple[str, ...] = ()

    def __call__(self, x: ArrayLike) -> np.ndarray:
        self.out, self._cache = self.forward(x)
        return self.out

    def forward(self, x: ArrayLike) -> tuple[np.ndarray, Any]:  # pragma: no cover - each has one
        """The layer's forward as its op computes it, without keeping anything.

        ``layer(x)`` calls it and keeps both results (``layer.out``, and the cache for
        :meth:`backward`).

        Parameters
        ----------
        x : array_like
            The input; its shape is given by each layer.

        Returns
        -------
        out : numpy.ndarray
            The output.
        cache : object
            What the op's backward needs (a ``fastbn.ops.Cache``).
        """
        raise NotImplementedError

    def backward(self, dout: ArrayLike) -> Any:
        """Gradient of the input given the gradient of the output; stores the parameters' grads.

        The gradients of the parameters are written into the arrays :meth:`grads` returns
        (overwritten, not accumulated). ``dout`` is kept as ``layer.dout`` (no copy).

        Parameters
        ----------
        dout : array_like
            The gradient of the loss with respect to ``layer.out``, of its shape.

        Returns
        -------
        numpy.ndarray or None
            The gradient with respect to the input of the last forward, of its shape (None for
            :class:`Embedding`, whose integer input has no gradient).

        Raises
        ------
        RuntimeError
            When no forward ran before.
        """
        cache = getattr(self, "_cache", None)
        if cache is None:
            raise RuntimeError(f"{type(self).__name__}.backward called before a forward")
        self.dout = dout          # the gradient of .out, kept for diagnostics (no copy)
        return self._backward(dout, cache)

    def _backward(self, dout, cache):  # pragma: no cover
        raise NotImplementedError

    def named_parameters(self) -> list[tuple[str, np.ndarray]]:
        """The parameters with their names, ``[("weight", array), ...]``.

        Returns
        -------
        list of (str, numpy.ndarray)
            The arrays themselves (not copies), in a fixed order.
        """
        return [(n, getattr(self, n)) for n in self._param_names]

    def parameters(self) -> list[np.ndarray]:
        """The parameters, in the order of :meth:`named_parameters`.

        Returns
        -------
        list of numpy.ndarray
            The arrays themselves; an update in place (``p -= lr * g``) trains the layer.
        """
        return [p for _, p in self.named_parameters()]

    def grads(self) -> list[np.ndarray]:
        """The parameters' gradients, aligned with :meth:`parameters`.

        Returns
        -------
        list of numpy.ndarray
            One array per parameter, of its shape; :meth:`backward` writes into these arrays,
            so a list taken once stays valid.
        """
        return [getattr(self, "d" + n) for n in self._param_names]

    def _collect(self, params, grads):
        """Append ``parameters()`` to ``params`` and ``grads()`` to ``grads``, in one pass (the
        per-layer step's update reads both every step)."""
        for n in self._param_names:
            params.append(getattr(self, n))
            grads.append(getattr(self, "d" + n))

    def zero_grad(self) -> None:
        """Set every gradient of :meth:`grads` to 0, in place."""
        for g in self.grads():
            g[...] = 0

    def train(self: _M, mode: bool = True) -> _M:
        """Switch training mode on (or off with ``mode=False``), as ``torch.nn.Module.train``.

        Parameters
        ----------
        mode : bool, default True
            Training mode (batch statistics in :class:`BatchNorm1d`) or eval mode.

        Returns
        -------
        Module
            The layer itself, so ``layer.train()`` can be chained.
        """
        self.training = bool(mode)
        return self

    def eval(self: _M) -> _M:
        """Switch to eval mode: ``self.train(False)``.

        Returns
        -------
        Module
            The layer itself.
        """
        return self.train(False)

    def _init_grads(self):
        for n in self._param_names:
            setattr(self, "d" + n, aligned_copy(np.zeros_like(getattr(self, n))))


class Embedding(Module):
    """A lookup table of ``num_embeddings`` vectors of size ``embedding_dim``.

    ``weight``: (V, D), initialized N(0, 1) (as torch and the lecture's ``C = torch.randn``).
    Input: integer indices (B, T); output: (B, T*D), the T vectors concatenated (the lecture's
    ``C[X].view(B, -1)``), or (B, D) for 1-D indices. ``backward`` returns None (indices have no
    gradient) and stores ``dweight``.

    Parameters
    ----------
    num_embeddings : int
        V, the number of rows (the vocabulary size).
    embedding_dim : int
        D, the size of each vector.
    dtype : {numpy.float32, numpy.float64}, default numpy.float32
        The dtype of the weight and of the output.
    generator : numpy.random.Generator, int or None, optional
        The source of the initial weight (an int is a seed; None draws fresh entropy).

    Examples
    --------
    >>> import numpy as np
    >>> from fastbn import nn
    >>> emb = nn.Embedding(27, 10, generator=0)
    >>> emb(np.array([[0, 5, 13]])).shape
    (1, 30)
    """

    _param_names = ("weight",)

    def __init__(self, num_embeddings: int, embedding_dim: int, *, dtype: DTypeLike = np.float32,
                 generator: int | np.random.Generator | None = None) -> None:
        V = _validate.positive_int(num_embeddings, "num_embeddings")
        D = _validate.positive_int(embedding_dim, "embedding_dim")
        dt = _validate.float_dtype(dtype)
        self.weight = aligned_copy(_rng(generator).standard_normal((V, D)).astype(dt))
        self._init_grads()

    def forward(self, idx: ArrayLike) -> tuple[np.ndarray, Any]:
        """Look up the rows: ``fastbn.ops.embedding_forward(self.weight, idx)``.

        Parameters
        ----------
        idx : array_like of int, shape (B, T) or (B,)
            Row indices, each in [0, V).

        Returns
        -------
        out : numpy.ndarray, shape (B, T*D) or (B, D)
            The looked-up rows, the T of a row of ``idx`` concatenated.
        cache : fastbn.ops.Cache
            For :meth:`backward`.
        """
        return ops.embedding_forward(self.weight, idx)

    def _backward(self, dout, cache):
        ops.embedding_backward(dout, cache, out=self.dweight)
        return None

    def __repr__(self):
        return f"Embedding({self.weight.shape[0]}, {self.weight.shape[1]})"


class Linear(Module):
    """``out = x @ weight + bias`` with ``weight`` of shape (fan_in, fan_out), as the lecture.

    Init (the lecture's ``Linear``): weight ~ N(0, 1) / sqrt(fan_in), bias 0. ``fastbn.init``
    rescales for other schemes. Input (B, fan_in), output (B, fan_out).

    Parameters
    ----------
    fan_in : int
        I, the size of each input row.
    fan_out : int
        O, the size of each output row.
    bias : bool, default True
        Whether the layer has a bias (a Linear followed by batch norm does not need one).
    dtype : {numpy.float32, numpy.float64}, default numpy.float32
        The dtype of the parameters and of the output.
    generator : numpy.random.Generator, int or None, optional
        The source of the initial weight (an int is a seed; None draws fresh entropy).

    Examples
    --------
    >>> import numpy as np
    >>> from fastbn import nn
    >>> lin = nn.Linear(30, 200, bias=False, generator=0)
    >>> lin(np.ones((32, 30), np.float32)).shape
    (32, 200)
    >>> lin
    Linear(30, 200, bias=False)
    """

    def __init__(self, fan_in: int, fan_out: int, bias: bool = True, *,
                 dtype: DTypeLike = np.float32,
                 generator: int | np.random.Generator | None = None) -> None:
        fan_in = _validate.positive_int(fan_in, "fan_in")
        fan_out = _validate.positive_int(fan_out, "fan_out")
        dt = _validate.float_dtype(dtype)
        w = _rng(generator).standard_normal((fan_in, fan_out)) / np.sqrt(fan_in)
        self.weight = aligned_copy(w.astype(dt))
        self.bias = aligned_copy(np.zeros(fan_out, dtype=dt)) if bias else None
        self._param_names = ("weight", "bias") if bias else ("weight",)
        self._init_grads()

    def forward(self, x: ArrayLike) -> tuple[np.ndarray, Any]:
        """``x @ weight + bias``: ``fastbn.ops.linear_forward``.

        Parameters
        ----------
        x : array_like, shape (B, fan_in)
            The input, of the layer's dtype.

        Returns
        -------
        out : numpy.ndarray, shape (B, fan_out)
            The output.
        cache : fastbn.ops.Cache
            For :meth:`backward`.
        """
        return ops.linear_forward(x, self.weight, self.bias)

    def _backward(self, dout, cache):
        db = self.dbias if self.bias is not None else None
        dx, _, _ = ops.linear_backward(dout, cache, out=(None, self.dweight, db))
        return dx

    def __repr__(self):
        fan_in, fan_out = self.weight.shape
        return f"Linear({fan_in}, {fan_out}, bias={self.bias is not None})"


class BatchNorm1d(Module):
    """Batch normalization over the batch axis of (B, dim) inputs, as ``torch.nn.BatchNorm1d``.

    Parameters ``gamma`` (ones) and ``beta`` (zeros); buffers ``running_mean`` (zeros) and
    ``running_var`` (ones). Training mode normalizes with the batch statistics (biased variance,
    as torch; ``unbiased=True``: the Bessel-corrected one, / (B - 1), as the makemore lecture
    does, see ``fastbn.ops.batchnorm_forward``) and updates the buffers as torch does:
    ``running = (1 - momentum) * running + momentum * batch_stat``, with the **unbiased** batch
    variance whichever variant normalizes; ``momentum`` is the weight of the new batch.
    Eval mode normalizes with the buffers and does not change them.

    Parameters
    ----------
    dim : int
        D, the number of features (columns of the input).
    eps : float, default 1e-5
        Added to the variance before its square root; >= 0.
    momentum : float, default 0.1
        The weight of the new batch in the running statistics, in [0, 1] (torch's convention:
        the lecture's 0.001 is ``momentum=0.001``).
    unbiased : bool, default False
        Normalize with the Bessel-corrected batch variance, as the makemore lecture does.
    dtype : {numpy.float32, numpy.float64}, default numpy.float32
        The dtype of the parameters, the buffers and the output.

    Examples
    --------
    >>> import numpy as np
    >>> from fastbn import nn
    >>> bn = nn.BatchNorm1d(200, momentum=0.001)
    >>> x = np.random.default_rng(0).standard_normal((32, 200)).astype(np.float32)
    >>> out = bn(x)
    >>> bool(abs(out.mean()) < 1e-6), bool(abs(out.std() - 1) < 1e-3)
    (True, True)
    >>> bn
    BatchNorm1d(200, eps=1e-05, momentum=0.001)
    """

    _param_names = ("gamma", "beta")

    def __init__(self, dim: int, eps: float = 1e-5, momentum: float = 0.1, *,
                 unbiased: bool = False, dtype: DTypeLike = np.float32) -> None:
        dim = _validate.positive_int(dim, "dim")
        eps, momentum = _validate.eps(eps), _validate.momentum(momentum)
        dt = _validate.float_dtype(dtype)
        self.eps, self.momentum = eps, momentum
        self.unbiased = _validate.unbiased(unbiased)
        self.gamma = aligned_copy(np.ones(dim, dtype=dt))
        self.beta = aligned_copy(np.zeros(dim, dtype=dt))
        self.running_mean = aligned_copy(np.zeros(dim, dtype=dt))
        self.running_var = aligned_copy(np.ones(dim, dtype=dt))
        self._init_grads()

    def forward(self, x: ArrayLike) -> tuple[np.ndarray, Any]:
        """Normalize ``x``; in training mode also update the running statistics.

        Training mode: ``fastbn.ops.batchnorm_forward`` with the batch's statistics, then
        ``running = (1 - momentum) * running + momentum * batch_stat``. Eval mode:
        ``fastbn.ops.batchnorm_eval_forward`` with the running statistics.

        Parameters
        ----------
        x : array_like, shape (B, dim)
            The input, of the layer's dtype (B >= 2 in training mode).

        Returns
        -------
        out : numpy.ndarray, shape (B, dim)
            ``gamma * (x - mean) / sqrt(var + eps) + beta``.
        cache : fastbn.ops.Cache
            For :meth:`backward`.
        """
        if not self.training:
            return ops.batchnorm_eval_forward(x, self.gamma, self.beta, self.running_mean,
                                              self.running_var, self.eps)
        out, cache = ops.batchnorm_forward(x, self.gamma, self.beta, self.eps, self.unbiased)
        # running = (1 - m) running + m batch, in one compiled call when it can (the same
        # numbers: _kernels.batchnorm_running_update)
        m = self.momentum
        if not _kernels.batchnorm_running_update(self.running_mean, self.running_var,
                                                 cache.mean, cache.var, m):
            self.running_mean *= 1 - m
            self.running_mean += m * cache.mean
            self.running_var *= 1 - m
            self.running_var += m * cache.var
        return out, cache

    def _backward(self, dout, cache):
        out = (None, self.dgamma, self.dbeta)
        if cache.op == "batchnorm":
            dx, _, _ = ops.batchnorm_backward(dout, cache, out=out)
        else:
            dx, _, _ = ops.batchnorm_eval_backward(dout, cache, out=out)
        return dx

    def buffers(self) -> list[np.ndarray]:
        """The running statistics, ``[running_mean, running_var]``.

        Returns
        -------
        list of numpy.ndarray
            The two arrays themselves, each of shape (dim,).
        """
        return [self.running_mean, self.running_var]

    def __repr__(self):
        return (f"BatchNorm1d({self.gamma.shape[0]}, eps={self.eps:g}, momentum={self.momentum:g}"
                + (", unbiased=True)" if self.unbiased else ")"))


class Tanh(Module):
    """``tanh`` elementwise; backward ``dout * (1 - out**2)``."""

    def forward(self, x: ArrayLike) -> tuple[np.ndarray, Any]:
        """``tanh(x)`` elementwise: ``fastbn.ops.tanh_forward``.

        Parameters
        ----------
        x : array_like
            Any shape, float32 or float64.

        Returns
        -------
        out : numpy.ndarray
            Of the shape and dtype of ``x``.
        cache : fastbn.ops.Cache
            For :meth:`backward`.
        """
        return ops.tanh_forward(x)

    def _backward(self, dout, cache):
        return ops.tanh_backward(dout, cache)

    def __repr__(self):
        return "Tanh()"


class ReLU(Module):
    """``max(x, 0)`` elementwise."""

    def forward(self, x: ArrayLike) -> tuple[np.ndarray, Any]:
        """``max(x, 0)`` elementwise: ``fastbn.ops.relu_forward``.

        Parameters
        ----------
        x : array_like
            Any shape, float32 or float64.

        Returns
        -------
        out : numpy.ndarray
            Of the shape and dtype of ``x``.
        cache : fastbn.ops.Cache
            For :meth:`backward`.
        """
        return ops.relu_forward(x)

    def _backward(self, dout, cache):
        return ops.relu_backward(dout, cache)

    def __repr__(self):
        return "ReLU()"


class LeakyReLU(Module):
    """``x if x >= 0 else negative_slope * x`` elementwise.

    Parameters
    ----------
    negative_slope : float, default 0.01
        The slope for negative inputs (torch's default).
    """

    def __init__(self, negative_slope: float = 0.01) -> None:
        self.negative_slope = float(negative_slope)

    def forward(self, x: ArrayLike) -> tuple[np.ndarray, Any]:
        """``fastbn.ops.leaky_relu_forward(x, self.negative_slope)``.

        Parameters
        ----------
        x : array_like
            Any shape, float32 or float64.

        Returns
        -------
        out : numpy.ndarray
            Of the shape and dtype of ``x``.
        cache : fastbn.ops.Cache
            For :meth:`backward`.
        """
        return ops.leaky_relu_forward(x, self.negative_slope)

    def _backward(self, dout, cache):
        return ops.leaky_relu_backward(dout, cache)

    def __repr__(self):
        return f"LeakyReLU(negative_slope={self.negative_slope:g})"


class ELU(Module):
    """``x if x > 0 else alpha * (exp(x) - 1)`` elementwise (Clevert et al. 2015): no dead units,
    as LeakyReLU, and a smooth negative side that saturates at -alpha.

    Parameters
    ----------
    alpha : float, default 1.0
        The value the negative side saturates at, negated; finite and >= 0.
    """

    def __init__(self, alpha: float = 1.0) -> None:
        self.alpha = _validate.alpha(alpha)

    def forward(self, x: ArrayLike) -> tuple[np.ndarray, Any]:
        """``fastbn.ops.elu_forward(x, self.alpha)``.

        Parameters
        ----------
        x : array_like
            Any shape, float32 or float64.

        Returns
        -------
        out : numpy.ndarray
            Of the shape and dtype of ``x``.
        cache : fastbn.ops.Cache
            For :meth:`backward`.
        """
        return ops.elu_forward(x, self.alpha)

    def _backward(self, dout, cache):
        return ops.elu_backward(dout, cache)

    def __repr__(self):
        return f"ELU(alpha={self.alpha:g})"


class Sequential(Module):
    """Layers applied in order; backward runs them in reverse.

    Parameters are named ``"<index>.<name>"`` as in torch (``"1.weight"``). Indexing, ``len``
    and iteration reach the layers.

    Parameters
    ----------
    *layers : Module
        The layers, in the order the forward applies them.

    Examples
    --------
    >>> import numpy as np
    >>> from fastbn import nn
    >>> net = nn.Sequential(nn.Linear(4, 8, generator=0), nn.Tanh(), nn.Linear(8, 3, generator=1))
    >>> net(np.ones((2, 4), np.float32)).shape
    (2, 3)
    >>> [name for name, _ in net.named_parameters()]
    ['0.weight', '0.bias', '2.weight', '2.bias']
    """

    def __init__(self, *layers: Module) -> None:
        for i, layer in enumerate(layers):
            if not isinstance(layer, Module):
                raise TypeError(f"layer {i} is not a fastbn.nn.Module: {layer!r}")
        self.layers = list(layers)

    def __call__(self, x: ArrayLike) -> np.ndarray:
        out: Any = x
        for layer in self.layers:
            out = layer(out)
        self.out = out
        return out

    def backward(self, dout: ArrayLike) -> Any:
        """Run every layer's backward, last layer first.

        Parameters
        ----------
        dout : array_like
            The gradient of the loss with respect to the last layer's output.

        Returns
        -------
        numpy.ndarray or None
            The gradient with respect to the first layer's input (None when it is an
            :class:`Embedding`).
        """
        for layer in reversed(self.layers):
            dout = layer.backward(dout)
        return dout

    def named_parameters(self) -> list[tuple[str, np.ndarray]]:
        """Every layer's parameters, named ``"<index>.<name>"``.

        Returns
        -------
        list of (str, numpy.ndarray)
            The arrays themselves, layer by layer.
        """
        return [(f"{i}.{n}", p) for i, layer in enumerate(self.layers)
                for n, p in layer.named_parameters()]

    def parameters(self) -> list[np.ndarray]:
        """Every layer's parameters, in the order of :meth:`named_parameters`.

        Returns
        -------
        list of numpy.ndarray
            The arrays themselves.
        """
        return [p for layer in self.layers for p in layer.parameters()]

    def _collect(self, params, grads):
        for layer in self.layers:
            if isinstance(layer, Sequential):
                layer._collect(params, grads)
                continue
            for n in layer._param_names:            # Module._collect, inline (a call a layer)
                params.append(getattr(layer, n))
                grads.append(getattr(layer, "d" + n))

    def grads(self) -> list[np.ndarray]:
        """Every layer's gradients, aligned with :meth:`parameters`.

        Returns
        -------
        list of numpy.ndarray
            The arrays the layers' backward write into.
        """
        return [g for layer in self.layers for g in layer.grads()]

    def train(self, mode: bool = True) -> Sequential:
        """Switch every layer to training mode (or to eval mode with ``mode=False``).

        Parameters
        ----------
        mode : bool, default True
            Training mode or eval mode.

        Returns
        -------
        Sequential
            The container itself.
        """
        self.training = bool(mode)
        for layer in self.layers:
            layer.train(mode)
        return self

    def __getitem__(self, i):
        return self.layers[i]

    def __len__(self):
        return len(self.layers)

    def __iter__(self):
        return iter(self.layers)

    def __repr__(self):
        rows = [(f"({i}): {layer!r}", sum(p.size for _, p in layer.named_parameters()))
                for i, layer in enumerate(self.layers)]
        width = max((len(r) for r, _ in rows), default=0)
        inner = "".join(f"\n  {r:<{width}}  {n:>7,} params" if n else f"\n  {r}"
                        for r, n in rows)
        return f"Sequential({inner}\n)"
