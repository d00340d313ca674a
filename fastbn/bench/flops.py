"""FLOPs of one training step of the benchmarked model: what the GEMMs do, ``2 M N K`` each.

Shapes: B batch, T block size, D embedding size, H hidden width, V vocabulary size. Elementwise
work, the softmax and the embedding gather are left out.
"""

from __future__ import annotations

__all__ = ["fused_flops", "step_flops"]


def step_flops(B: int, T: int = 3, D: int = 10, H: int = 200, V: int = 27) -> int:
    """FLOPs of the six GEMMs of one step, ``2 M N K`` each: ``6 B H (T D + V)``.

    Forward ``x0 @ W1`` (B, TD)x(TD, H) and ``h @ W2`` (B, H)x(H, V); backward per Linear the
    weight gradient (in^T @ dout) and the input gradient (dout @ W^T), the same M N K.

    Parameters
    ----------
    B : int
        The batch size.
    T, D, H, V : int
        Context, embedding size, hidden width, vocabulary (the benchmarked model's by default).

    Returns
    -------
    int
        The FLOPs.
    """
    return 6 * B * H * (T * D + V)


def fused_flops(B: int, table: bool, T: int = 3, D: int = 10, H: int = 200,
                V: int = 27) -> int:
    """GEMM FLOPs of one fused step: ``step_flops`` unless ``table``.

    With the table (``fastbn.fused``, large batches) the first Linear's three GEMMs become 3 T
    GEMMs over the vocabulary instead of the batch: ``E_t = C @ W1[t]`` (V, D)x(D, H),
    ``dW1[t] = C^T @ S_t`` (D, V)x(V, H) and ``dC += S_t @ W1[t]^T`` (V, H)x(H, D), S_t the
    gradient rows summed per context id: ``6 T V D H``, whatever B; the output layer's stay,
    ``6 B H V``. (The gather and scatter of B T rows of H are elementwise work, not counted.)

    Parameters
    ----------
    B : int
        The batch size.
    table : bool
        Whether the fused step runs the table.
    T, D, H, V : int
        As ``step_flops``.

    Returns
    -------
    int
        The FLOPs.
    """
    if not table:
        return step_flops(B, T, D, H, V)
    return 6 * T * V * D * H + 6 * B * H * V
