"""Verify first, then time: every peer must compute what the fused step computes.

Before anything is timed, every peer, started from a copy of the fused model's initial
parameters, takes the same ``VERIFY_STEPS`` minibatches; its loss at each step (the first is the
loss at the initial parameters; the later ones see the updates, so a wrong backward or update
shows up) and its parameters and running statistics afterwards must agree with the fused step's,
``|a - b| <= atol + rtol |b|`` with the tolerances of ``LOSS_TOL`` / ``STATE_TOL``; the compiled
loop, drawing the same rows from the same seed, must agree with the fused step too. Any
disagreement raises :class:`VerificationError` and nothing is timed.
"""
import numpy as np

from .peers import IMPLS, LR, clone, model_state

__all__ = ["LOSS_TOL", "STATE_TOL", "VERIFY_STEPS", "VerificationError", "verify_cell"]

VERIFY_STEPS = 3
# |a - b| <= atol + rtol * |b|, b the fused step's value
LOSS_TOL: dict[str, dict[str, float]] = {"float32": {"atol": 1e-5, "rtol": 0.0},
                                         "float64": {"atol": 1e-10, "rtol": 0.0}}
STATE_TOL: dict[str, dict[str, float]] = {"float32": {"atol": 2e-6, "rtol": 1e-5},
                                          "float64": {"atol": 1e-10, "rtol": 1e-10}}


class VerificationError(RuntimeError):
    """A peer does not compute what the fused step computes; the message says where."""


def _close(a, b, atol, rtol):
    """max |a - b| and whether every element is within atol + rtol |b| (NaN fails)."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    diff = np.abs(a - b)
    ok = bool(np.all(diff <= atol + rtol * np.abs(b)))
    return float(np.max(diff)) if diff.size else 0.0, ok


def verify_cell(peers, base, B, X, Y, dtype, seeds, lr=LR, steps=VERIFY_STEPS):
    """Check every peer against the fused step on the same ``steps`` minibatches; raise if not.

    Returns {peer: {"losses": [...], "max_loss_diff": float, "max_state_diff": float}}.
    """
    from ..fused import BatchSampler, FusedTrainer
    sampler = BatchSampler(seeds["verify"])
    rows = [sampler.draw(X.shape[0], B) for _ in range(steps)]
    ref = peers["fused"]
    ref_losses = [ref.step(r, lr) for r in rows]
    ref_state = ref.state()
    where = f"{dtype}, B={B}"
    if not all(np.isfinite(ref_losses)):
        raise VerificationError(f"{where}: the fused step's losses are not finite: {ref_losses}")
    out = {"fused": {"losses": ref_losses, "max_loss_diff": 0.0, "max_state_diff": 0.0}}

    def check(name, losses, state, loss_tol):
        worst = 0.0
        for s, (a, b) in enumerate(zip(losses, ref_losses)):
            d, ok = _close(a, b, **loss_tol)
            worst = max(worst, d)
            if not ok:
                raise VerificationError(
                    f"{where}: {_label(name)} disagrees with the fused step at verification step "
                    f"{s}: loss {a!r} vs {b!r} (|diff| {d:.3g} > atol {loss_tol['atol']:g} + "
                    f"rtol {loss_tol['rtol']:g} |loss|)")
        worst_state = 0.0
        for k, b in ref_state.items():
            d, ok = _close(state[k], b, **STATE_TOL[dtype])
            worst_state = max(worst_state, d)
            if not ok:
                raise VerificationError(
                    f"{where}: after {steps} steps, {k} of {_label(name)} differs from the fused "
                    f"step's by up to {d:.3g} (atol {STATE_TOL[dtype]['atol']:g}, rtol "
                    f"{STATE_TOL[dtype]['rtol']:g})")
        out[name] = {"losses": [float(v) for v in losses], "max_loss_diff": worst,
                     "max_state_diff": worst_state}

    # the compiled loop draws the same rows from the same seed (its losses may be stored as
    # float32: then they are compared to float32 tolerance)
    loop_model = clone(base)
    _, loop_losses = FusedTrainer(loop_model, B).run(X, Y, steps, lr,
                                                     BatchSampler(seeds["verify"]))
    check("fused_loop", loop_losses, model_state(loop_model),
          LOSS_TOL["float32" if loop_losses.dtype == np.float32 else dtype])
    for name, peer in peers.items():
        if name != "fused":
            check(name, [peer.step(r, lr) for r in rows], peer.state(), LOSS_TOL[dtype])
    return out


def _label(name):
    return IMPLS.get(name, "fastbn fused loop (compiled, PCG32 rows)")
