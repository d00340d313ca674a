"""The model description: what a model's layers are, read once for every path that walks them.

The fused training step (``fastbn.fused``), the inference plan (``fastbn.inference``) and batch
norm folding (``fastbn.folding``) each need to know what a model's layers compute. They read it
here rather than each pattern-matching the layer list:

- ``describe(layers)``: one ``Part`` per layer, in order (its index, its kind, the layer, and for
  an activation its name in ``fastbn.registry``). Any layer list of those kinds: a plan runs
  any of them (batch norm anywhere, as its eval-mode affine map).
- ``structure(layers)``: the MLP of those parts, ``Description``: the Embedding, then hidden
  ``Block``\\ s (Linear, optional BatchNorm1d, activation), then the output ``Block`` (Linear,
  optional BatchNorm1d). What ``CharMLP.blocks()`` returns, and what fusing and folding walk.

A layer of no known kind is refused here, in one place (TypeError); a list that is not such an
MLP, by ``structure`` (ValueError). A second model provides its own ``blocks()`` (or a layer
list for ``describe``), and the walkers need no change for the kinds they already know.

The parts hold the layers themselves (their arrays, gradients and settings: the fused step
trains them in place), frozen: the description never changes, the layers it names may.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

from . import nn, registry

__all__ = ["Block", "Description", "Part", "describe", "structure"]

# the activation layer classes of fastbn.registry, by class: their names
_ACTIVATIONS = {a.layer: name for name, a in registry.ACTIVATIONS.items()}
KINDS = ("embedding", "linear", "batchnorm", "activation")
_L = TypeVar("_L", bound=nn.Module)


@dataclass(frozen=True)
class Part(Generic[_L]):
    """One layer: ``index`` in the layer list, ``kind`` (one of ``KINDS``), the ``layer``, and
    for an activation its name (``"tanh"``, ``"relu"``, ...; None for the other kinds)."""

    index: int
    kind: str
    layer: _L
    activation: str | None = None


@dataclass(frozen=True)
class Block:
    """A Linear, the BatchNorm1d after it (or None) and the activation after that (None for the
    output block): parts of ``describe``."""

    linear: Part[nn.Linear]
    batchnorm: Part[nn.BatchNorm1d] | None
    activation: Part[nn.Module] | None


@dataclass(frozen=True)
class Description:
    """An MLP: the Embedding, the hidden blocks, the output block (no activation)."""

    embedding: Part[nn.Embedding]
    hidden: tuple[Block, ...]
    output: Block


def _kind(i: int, layer: nn.Module) -> Part[nn.Module]:
    if isinstance(layer, nn.Embedding):
        return Part(i, "embedding", layer)
    if isinstance(layer, nn.Linear):
        return Part(i, "linear", layer)
    if isinstance(layer, nn.BatchNorm1d):
        return Part(i, "batchnorm", layer)
    for cls, name in _ACTIVATIONS.items():
        if isinstance(layer, cls):
            return Part(i, "activation", layer, name)
    raise TypeError(f"no inference step for layer {i}, {type(layer).__name__}: not an "
                    f"Embedding, Linear, BatchNorm1d or an activation of fastbn.registry")


def describe(layers: Sequence[nn.Module]) -> tuple[Part[nn.Module], ...]:
    """The parts of ``layers``, one per layer, in order: an Embedding first, none after it.

    Raises ValueError for an empty list, one that does not start with an Embedding or has
    another one later; TypeError for a layer of no known kind.
    """
    layers = list(layers)
    if not layers:
        raise ValueError("a plan needs at least an Embedding")
    if not isinstance(layers[0], nn.Embedding):
        raise ValueError(f"a plan starts with an Embedding, not {type(layers[0]).__name__}")
    parts = tuple(_kind(i, layer) for i, layer in enumerate(layers))
    for p in parts[1:]:
        if p.kind == "embedding":
            raise ValueError("an Embedding can only be the first layer of a plan")
    return parts


def structure(layers: Sequence[nn.Module]) -> Description:
    """The MLP of ``layers``: Embedding, then blocks of Linear, [BatchNorm1d,] activation, then
    the output Linear [and BatchNorm1d] (a ``CharMLP``'s layers, folded or not).

    Raises ValueError, naming the layer, when ``layers`` is not such a list.
    """
    parts = describe(layers)
    blocks: list[Block] = []
    i, n = 1, len(parts)
    while i < n:
        lin = parts[i].layer
        if not isinstance(lin, nn.Linear):
            what = ("a BatchNorm1d, does not follow a Linear" if parts[i].kind == "batchnorm"
                    else f"{type(lin).__name__}, is not a Linear")
            raise ValueError(f"layer {i}, {what}: the layers are not Embedding, "
                             f"[Linear, BatchNorm1d (optional), activation] x n, Linear, "
                             f"BatchNorm1d (optional)")
        linear = Part(i, "linear", lin)
        i += 1
        bn = parts[i].layer if i < n else None
        batchnorm = Part(i, "batchnorm", bn) if isinstance(bn, nn.BatchNorm1d) else None
        i += batchnorm is not None
        act = parts[i] if i < n and parts[i].kind == "activation" else None
        i += act is not None
        if act is None and i < n:
            raise ValueError(f"layer {i}, {type(parts[i].layer).__name__}, follows a Linear "
                             f"[and BatchNorm1d] without an activation between")
        blocks.append(Block(linear, batchnorm, act))
    if not blocks or blocks[-1].activation is not None:
        raise ValueError("the layers do not end with the output Linear [and BatchNorm1d]")
    emb = parts[0].layer
    assert isinstance(emb, nn.Embedding)            # describe's first part
    return Description(Part(0, "embedding", emb), tuple(blocks[:-1]), blocks[-1])
