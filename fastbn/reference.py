"""The ops of ``fastbn.ops`` in plain NumPy: the test oracle and the NumPy baseline.

Same names, arguments and return values as ``fastbn.ops`` (caches are plain tuples), written the
way a student writes them, one NumPy expression per line, with no validation. The tests hold the
compiled kernels to these; the benchmark times them as the NumPy peer.
"""
from __future__ import annotations

from typing import Any

import numpy as np


def embedding_forward(weight: np.ndarray, idx: np.ndarray) -> tuple[np.ndarray, Any]:
    """(V, D), (B, T) -> (B, T*D): ``weight[idx]`` concatenated per row.

    Parameters
    ----------
    weight : numpy.ndarray, shape (V, D)
        The table.
    idx : array_like of int, shape (B, T)
        Row indices.

    Returns
    -------
    out : numpy.ndarray, shape (B, T*D)
        ``weight[idx].reshape(B, -1)``.
    cache : tuple
        ``(idx, weight.shape)``.
    """
    idx = np.asarray(idx)
    out = weight[idx].reshape(idx.shape[0], -1)
    return out, (idx, weight.shape)


def embedding_backward(dout: np.ndarray, cache: Any) -> np.ndarray:
    """Scatter-add of dout rows into a (V, D) table; repeated indices accumulate (np.add.at).

    Parameters
    ----------
    dout : numpy.ndarray, shape (B, T*D)
        The gradient of the output.
    cache : tuple
        :func:`embedding_forward`'s.

    Returns
    -------
    numpy.ndarray, shape (V, D)
        ``dweight``.
    """
    idx, wshape = cache
    dweight = np.zeros(wshape, dtype=dout.dtype)
    np.add.at(dweight, idx.reshape(-1), dout.reshape(idx.size, wshape[1]))
    return dweight


def linear_forward(x: np.ndarray, w: np.ndarray,
                   b: np.ndarray | None = None) -> tuple[np.ndarray, Any]:
    """(B, I) @ (I, O) + (O,) -> (B, O).

    Parameters
    ----------
    x : numpy.ndarray, shape (B, I)
        The input.
    w : numpy.ndarray, shape (I, O)
        The weight.
    b : numpy.ndarray, shape (O,), optional
        The bias.

    Returns
    -------
    out : numpy.ndarray, shape (B, O)
        ``x @ w + b``.
    cache : tuple
        ``(x, w, has_bias)``.
    """
    out = x @ w
    if b is not None:
        out = out + b
    return out, (x, w, b is not None)


def linear_backward(dout: np.ndarray, cache: Any,
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """``dx = dout @ w.T``, ``dw = x.T @ dout``, ``db = dout.sum(0)``.

    Parameters
    ----------
    dout : numpy.ndarray, shape (B, O)
        The gradient of the output.
    cache : tuple
        :func:`linear_forward`'s.

    Returns
    -------
    dx : numpy.ndarray, shape (B, I)
    dw : numpy.ndarray, shape (I, O)
    db : numpy.ndarray, shape (O,), or None without a bias
    """
    x, w, has_bias = cache
    return dout @ w.T, x.T @ dout, (dout.sum(0) if has_bias else None)


def tanh_forward(x: np.ndarray) -> tuple[np.ndarray, Any]:
    """``t = tanh(x)``; the cache is ``t`` (the backward reads the output).

    Parameters
    ----------
    x : numpy.ndarray
        Any shape.

    Returns
    -------
    out : numpy.ndarray
        ``tanh(x)``.
    cache : numpy.ndarray
        ``out``.
    """
    t = np.tanh(x)
    return t, t


def tanh_backward(dout: np.ndarray, cache: Any) -> np.ndarray:
    """``dout * (1 - t**2)``.

    Parameters
    ----------
    dout : numpy.ndarray
        The gradient of the output.
    cache : numpy.ndarray
        ``t``, the forward's output.

    Returns
    -------
    numpy.ndarray
        ``dx``, of the shape of ``dout``.
    """
    return dout * (1 - cache**2)


def relu_forward(x: np.ndarray) -> tuple[np.ndarray, Any]:
    """``max(x, 0)``; the cache is ``x``.

    Parameters
    ----------
    x : numpy.ndarray
        Any shape.

    Returns
    -------
    out : numpy.ndarray
        ``max(x, 0)``.
    cache : numpy.ndarray
        ``x``.
    """
    return np.maximum(x, 0), x


def relu_backward(dout: np.ndarray, cache: Any) -> np.ndarray:
    """``dout`` where ``x > 0``, 0 elsewhere (0 at the kink).

    Parameters
    ----------
    dout : numpy.ndarray
        The gradient of the output.
    cache : numpy.ndarray
        ``x``.

    Returns
    -------
    numpy.ndarray
        ``dx``.
    """
    return np.where(cache > 0, dout, 0)


def leaky_relu_forward(x: np.ndarray, negative_slope: float = 0.01,
                       ) -> tuple[np.ndarray, Any]:
    """``x`` where ``x >= 0``, ``negative_slope * x`` elsewhere.

    Parameters
    ----------
    x : numpy.ndarray
        Any shape.
    negative_slope : float, default 0.01
        The slope of the negative side.

    Returns
    -------
    out : numpy.ndarray
        Of the shape of ``x``.
    cache : tuple
        ``(x, negative_slope)``.
    """
    return np.where(x >= 0, x, negative_slope * x), (x, negative_slope)


def leaky_relu_backward(dout: np.ndarray, cache: Any) -> np.ndarray:
    """``dout`` where ``x > 0``, ``negative_slope * dout`` elsewhere.

    Parameters
    ----------
    dout : numpy.ndarray
        The gradient of the output.
    cache : tuple
        :func:`leaky_relu_forward`'s.

    Returns
    -------
    numpy.ndarray
        ``dx``.
    """
    x, slope = cache
    return np.where(x > 0, dout, slope * dout)


def elu_forward(x: np.ndarray, alpha: float = 1.0) -> tuple[np.ndarray, Any]:
    """``x`` where x > 0, ``alpha * (exp(x) - 1)`` elsewhere (expm1: no cancellation near 0).

    Parameters
    ----------
    x : numpy.ndarray
        Any shape.
    alpha : float, default 1.0
        The negative side saturates at ``-alpha``.

    Returns
    -------
    out : numpy.ndarray
        Of the shape of ``x``.
    cache : tuple
        ``(x, alpha)``.
    """
    return np.where(x > 0, x, alpha * np.expm1(np.minimum(x, 0))), (x, alpha)


def elu_backward(dout: np.ndarray, cache: Any) -> np.ndarray:
    """From the input: 1 where x > 0, ``alpha * exp(x)`` elsewhere.

    Parameters
    ----------
    dout : numpy.ndarray
        The gradient of the output.
    cache : tuple
        :func:`elu_forward`'s.

    Returns
    -------
    numpy.ndarray
        ``dx``.
    """
    x, alpha = cache
    return np.where(x > 0, dout, dout * alpha * np.exp(np.minimum(x, 0)))


def batchnorm_forward(x: np.ndarray, gamma: np.ndarray, beta: np.ndarray, eps: float = 1e-5,
                      unbiased: bool = False) -> tuple[np.ndarray, Any]:
    """Training mode: normalize by the biased variance (/ B), or with ``unbiased`` the
    Bessel-corrected one (/ (B - 1), the lecture's); the cache carries the unbiased one.

    Parameters
    ----------
    x : numpy.ndarray, shape (B, D)
        The input.
    gamma, beta : numpy.ndarray, shape (D,)
        Scale and shift.
    eps : float, default 1e-5
        Added to the variance.
    unbiased : bool, default False
        Normalize with the Bessel-corrected variance.

    Returns
    -------
    out : numpy.ndarray, shape (B, D)
        ``gamma * (x - mean) / sqrt(var + eps) + beta``.
    cache : tuple
        ``(xhat, gamma, invstd, mean, unbiased variance, unbiased)``.
    """
    mean = x.mean(0)
    var = x.var(0, ddof=1 if unbiased else 0)
    invstd = 1.0 / np.sqrt(var + eps)
    xhat = (x - mean) * invstd
    out = gamma * xhat + beta
    var_unbiased = x.var(0, ddof=1)
    return out, (xhat, gamma, invstd, mean, var_unbiased, bool(unbiased))


def batchnorm_backward(dout: np.ndarray, cache: Any,
                       ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``dx = gamma * invstd / B * (B * dout - dbeta - c * xhat * dgamma)``, ``c = B/(B-1)``
    for the unbiased variant and 1 otherwise; ``dgamma = sum(dout * xhat)``, ``dbeta = sum(dout)``.

    Parameters
    ----------
    dout : numpy.ndarray, shape (B, D)
        The gradient of the output.
    cache : tuple
        :func:`batchnorm_forward`'s.

    Returns
    -------
    dx : numpy.ndarray, shape (B, D)
    dgamma, dbeta : numpy.ndarray, shape (D,)
    """
    xhat, gamma, invstd, _, _, unbiased = cache
    B = dout.shape[0]
    dbeta = dout.sum(0)
    dgamma = (dout * xhat).sum(0)
    c = B / (B - 1) if unbiased else 1.0          # B / n, n the variance's divisor
    dx = gamma * invstd / B * (B * dout - dbeta - c * xhat * dgamma)
    return dx, dgamma, dbeta


def batchnorm_eval_forward(x: np.ndarray, gamma: np.ndarray, beta: np.ndarray,
                           running_mean: np.ndarray, running_var: np.ndarray,
                           eps: float = 1e-5) -> tuple[np.ndarray, Any]:
    """Eval mode: normalize with the running statistics.

    Parameters
    ----------
    x : numpy.ndarray, shape (B, D)
        The input.
    gamma, beta : numpy.ndarray, shape (D,)
        Scale and shift.
    running_mean, running_var : numpy.ndarray, shape (D,)
        The statistics normalized with (constants: no gradient).
    eps : float, default 1e-5
        Added to the variance.

    Returns
    -------
    out : numpy.ndarray, shape (B, D)
        ``gamma * (x - running_mean) / sqrt(running_var + eps) + beta``.
    cache : tuple
        ``(xhat, gamma, invstd)``.
    """
    invstd = 1.0 / np.sqrt(running_var + eps)
    xhat = (x - running_mean) * invstd
    return gamma * xhat + beta, (xhat, gamma, invstd)


def batchnorm_eval_backward(dout: np.ndarray, cache: Any,
                            ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """An affine map's gradient: ``dx = dout * gamma * invstd``.

    Parameters
    ----------
    dout : numpy.ndarray, shape (B, D)
        The gradient of the output.
    cache : tuple
        :func:`batchnorm_eval_forward`'s.

    Returns
    -------
    dx : numpy.ndarray, shape (B, D)
    dgamma, dbeta : numpy.ndarray, shape (D,)
    """
    xhat, gamma, invstd = cache
    return dout * gamma * invstd, (dout * xhat).sum(0), dout.sum(0)


def cross_entropy_forward(logits: np.ndarray, target: np.ndarray) -> tuple[np.floating, Any]:
    """Mean of ``logsumexp(l) - l[target]`` with the max subtracted first.

    Parameters
    ----------
    logits : numpy.ndarray, shape (B, C)
        Unnormalized log-probabilities.
    target : array_like of int, shape (B,)
        The right class of each row.

    Returns
    -------
    loss : numpy.floating
        The mean negative log-likelihood, of the logits' dtype.
    cache : tuple
        ``(probs, target)``.
    """
    target = np.asarray(target)
    shifted = logits - logits.max(1, keepdims=True)
    e = np.exp(shifted)
    s = e.sum(1, keepdims=True)
    probs = e / s
    logp = shifted - np.log(s)
    B = logits.shape[0]
    loss = -logp[np.arange(B), target].mean()
    return logits.dtype.type(loss), (probs, target)


def cross_entropy_backward(dloss: np.ndarray, cache: Any) -> np.ndarray:
    """``(softmax(logits) - onehot(target)) * dloss / B``.

    Parameters
    ----------
    dloss : float
        The gradient of the loss (1 for the loss itself).
    cache : tuple
        :func:`cross_entropy_forward`'s.

    Returns
    -------
    numpy.ndarray, shape (B, C)
        ``dlogits``.
    """
    probs, target = cache
    B = probs.shape[0]
    d = probs.copy()
    d[np.arange(B), target] -= 1
    return d * (dloss / B)
