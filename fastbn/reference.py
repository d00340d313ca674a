"""The ops of ``fastbn.ops`` in plain NumPy: the test oracle and the NumPy baseline.

Same names, arguments and return values as ``fastbn.ops`` (caches are plain tuples), written the
way a student writes them, one NumPy expression per line, with no validation. The tests hold the
compiled kernels to these; the benchmark times them as the NumPy peer.
"""
from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike


def embedding_forward(weight: ArrayLike, idx: ArrayLike) -> tuple[np.ndarray, dict]:
    """(V, D), (B, T) -> (B, T*D): ``weight[idx]`` concatenated per row."""
    idx = np.asarray(idx)
    out = weight[idx].reshape(idx.shape[0], -1)
    return out, (idx, weight.shape)


def embedding_backward(dout: ArrayLike, cache: dict) -> np.ndarray:
    """Scatter-add of dout rows into a (V, D) table; repeated indices accumulate (np.add.at)."""
    idx, wshape = cache
    dweight = np.zeros(wshape, dtype=dout.dtype)
    np.add.at(dweight, idx.reshape(-1), dout.reshape(idx.size, wshape[1]))
    return dweight


def linear_forward(x: ArrayLike, w: ArrayLike,
                   b: ArrayLike | None = None) -> tuple[np.ndarray, dict]:
    """(B, I) @ (I, O) + (O,) -> (B, O)."""
    out = x @ w
    if b is not None:
        out = out + b
    return out, (x, w, b is not None)


def linear_backward(dout: ArrayLike, cache: dict,
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    x, w, has_bias = cache
    return dout @ w.T, x.T @ dout, (dout.sum(0) if has_bias else None)


def tanh_forward(x: ArrayLike) -> tuple[np.ndarray, dict]:
    t = np.tanh(x)
    return t, t


def tanh_backward(dout: ArrayLike, cache: dict) -> np.ndarray:
    return dout * (1 - cache**2)


def relu_forward(x: ArrayLike) -> tuple[np.ndarray, dict]:
    return np.maximum(x, 0), x


def relu_backward(dout: ArrayLike, cache: dict) -> np.ndarray:
    return np.where(cache > 0, dout, 0)


def leaky_relu_forward(x: ArrayLike, negative_slope: float = 0.01,
                       ) -> tuple[np.ndarray, dict]:
    return np.where(x >= 0, x, negative_slope * x), (x, negative_slope)


def leaky_relu_backward(dout: ArrayLike, cache: dict) -> np.ndarray:
    x, slope = cache
    return np.where(x > 0, dout, slope * dout)


def elu_forward(x: ArrayLike, alpha: float = 1.0) -> tuple[np.ndarray, dict]:
    """``x`` where x > 0, ``alpha * (exp(x) - 1)`` elsewhere (expm1: no cancellation near 0)."""
    return np.where(x > 0, x, alpha * np.expm1(np.minimum(x, 0))), (x, alpha)


def elu_backward(dout: ArrayLike, cache: dict) -> np.ndarray:
    """From the input: 1 where x > 0, ``alpha * exp(x)`` elsewhere."""
    x, alpha = cache
    return np.where(x > 0, dout, dout * alpha * np.exp(np.minimum(x, 0)))


def batchnorm_forward(x: ArrayLike, gamma: ArrayLike, beta: ArrayLike, eps: float = 1e-5,
                      unbiased: bool = False) -> tuple[np.ndarray, dict]:
    """Training mode: normalize by the biased variance (/ B), or with ``unbiased`` the
    Bessel-corrected one (/ (B - 1), the lecture's); the cache carries the unbiased one."""
    mean = x.mean(0)
    var = x.var(0, ddof=1 if unbiased else 0)
    invstd = 1.0 / np.sqrt(var + eps)
    xhat = (x - mean) * invstd
    out = gamma * xhat + beta
    var_unbiased = x.var(0, ddof=1)
    return out, (xhat, gamma, invstd, mean, var_unbiased, bool(unbiased))


def batchnorm_backward(dout: ArrayLike, cache: dict,
                       ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    xhat, gamma, invstd, _, _, unbiased = cache
    B = dout.shape[0]
    dbeta = dout.sum(0)
    dgamma = (dout * xhat).sum(0)
    c = B / (B - 1) if unbiased else 1.0          # B / n, n the variance's divisor
    dx = gamma * invstd / B * (B * dout - dbeta - c * xhat * dgamma)
    return dx, dgamma, dbeta


def batchnorm_eval_forward(x: ArrayLike, gamma: ArrayLike, beta: ArrayLike,
                           running_mean: ArrayLike, running_var: ArrayLike,
                           eps: float = 1e-5) -> tuple[np.ndarray, dict]:
    invstd = 1.0 / np.sqrt(running_var + eps)
    xhat = (x - running_mean) * invstd
    return gamma * xhat + beta, (xhat, gamma, invstd)


def batchnorm_eval_backward(dout: ArrayLike, cache: dict,
                            ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    xhat, gamma, invstd = cache
    return dout * gamma * invstd, (dout * xhat).sum(0), dout.sum(0)


def cross_entropy_forward(logits: ArrayLike, target: ArrayLike) -> tuple[np.floating, dict]:
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


def cross_entropy_backward(dloss: ArrayLike, cache: dict) -> np.ndarray:
    probs, target = cache
    B = probs.shape[0]
    d = probs.copy()
    d[np.arange(B), target] -= 1
    return d * (dloss / B)
