"""The ops of ``fastbn.ops`` in plain NumPy: the test oracle and the NumPy baseline.

Same names, arguments and return values as ``fastbn.ops`` (caches are plain tuples), written the
way a student writes them, one NumPy expression per line, with no validation. The tests hold the
compiled kernels to these; the benchmark times them as the NumPy peer.
"""
from __future__ import annotations

from typing import Any

import numpy as np


def embedding_forward(weight: np.ndarray, idx: np.ndarray) -> tuple[np.ndarray, Any]:
    """(V, D), (B, T) -> (B, T*D): ``weight[idx]`` concatenated per row."""
    idx = np.asarray(idx)
    out = weight[idx].reshape(idx.shape[0], -1)
    return out, (idx, weight.shape)


def embedding_backward(dout: np.ndarray, cache: Any) -> np.ndarray:
    """Scatter-add of dout rows into a (V, D) table; repeated indices accumulate (np.add.at)."""
    idx, wshape = cache
    dweight = np.zeros(wshape, dtype=dout.dtype)
    np.add.at(dweight, idx.reshape(-1), dout.reshape(idx.size, wshape[1]))
    return dweight


def linear_forward(x: np.ndarray, w: np.ndarray,
                   b: np.ndarray | None = None) -> tuple[np.ndarray, Any]:
    """(B, I) @ (I, O) + (O,) -> (B, O)."""
    out = x @ w
    if b is not None:
        out = out + b
    return out, (x, w, b is not None)


def linear_backward(dout: np.ndarray, cache: Any,
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    x, w, has_bias = cache
    return dout @ w.T, x.T @ dout, (dout.sum(0) if has_bias else None)


def tanh_forward(x: np.ndarray) -> tuple[np.ndarray, Any]:
    t = np.tanh(x)
    return t, t


def tanh_backward(dout: np.ndarray, cache: Any) -> np.ndarray:
    return dout * (1 - cache**2)


def relu_forward(x: np.ndarray) -> tuple[np.ndarray, Any]:
    return np.maximum(x, 0), x


def relu_backward(dout: np.ndarray, cache: Any) -> np.ndarray:
    return np.where(cache > 0, dout, 0)


def leaky_relu_forward(x: np.ndarray, negative_slope: float = 0.01,
                       ) -> tuple[np.ndarray, Any]:
    return np.where(x >= 0, x, negative_slope * x), (x, negative_slope)


def leaky_relu_backward(dout: np.ndarray, cache: Any) -> np.ndarray:
    x, slope = cache
    return np.where(x > 0, dout, slope * dout)


def elu_forward(x: np.ndarray, alpha: float = 1.0) -> tuple[np.ndarray, Any]:
    """``x`` where x > 0, ``alpha * (exp(x) - 1)`` elsewhere (expm1: no cancellation near 0)."""
    return np.where(x > 0, x, alpha * np.expm1(np.minimum(x, 0))), (x, alpha)


def elu_backward(dout: np.ndarray, cache: Any) -> np.ndarray:
    """From the input: 1 where x > 0, ``alpha * exp(x)`` elsewhere."""
    x, alpha = cache
    return np.where(x > 0, dout, dout * alpha * np.exp(np.minimum(x, 0)))


def batchnorm_forward(x: np.ndarray, gamma: np.ndarray, beta: np.ndarray, eps: float = 1e-5,
                      unbiased: bool = False) -> tuple[np.ndarray, Any]:
    """Training mode: normalize by the biased variance (/ B), or with ``unbiased`` the
    Bessel-corrected one (/ (B - 1), the lecture's); the cache carries the unbiased one."""
    mean = x.mean(0)
    var = x.var(0, ddof=1 if unbiased else 0)
    invstd = 1.0 / np.sqrt(var + eps)
    xhat = (x - mean) * invstd
    out = gamma * xhat + beta
    var_unbiased = x.var(0, ddof=1)
    return out, (xhat, gamma, invstd, mean, var_unbiased, bool(unbiased))


def batchnorm_backward(dout: np.ndarray, cache: Any,
                       ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
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
    invstd = 1.0 / np.sqrt(running_var + eps)
    xhat = (x - running_mean) * invstd
    return gamma * xhat + beta, (xhat, gamma, invstd)


def batchnorm_eval_backward(dout: np.ndarray, cache: Any,
                            ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    xhat, gamma, invstd = cache
    return dout * gamma * invstd, (dout * xhat).sum(0), dout.sum(0)


def cross_entropy_forward(logits: np.ndarray, target: np.ndarray) -> tuple[np.floating, Any]:
    """Mean of ``logsumexp(l) - l[target]`` with the max subtracted first."""
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
    probs, target = cache
    B = probs.shape[0]
    d = probs.copy()
    d[np.arange(B), target] -= 1
    return d * (dloss / B)
