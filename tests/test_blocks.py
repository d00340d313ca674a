"""The model description (fastbn.blocks): what every path that walks a model's layers reads."""
from types import SimpleNamespace

import numpy as np
import pytest

from fastbn import fold_batchnorm, nn
from fastbn.blocks import describe, structure
from fastbn.data import Vocab
from fastbn.inference import Plan
from fastbn.model import CharMLP
from fastbn.registry import NONLINEARITIES

VOCAB = Vocab.from_chars(".abcdefghijklmnopqrstuvwxyz")


@pytest.mark.parametrize("kw", [{}, dict(n_layers=3, n_hidden=20), dict(batchnorm=False),
                                dict(final_bn=True, n_layers=2, n_hidden=16)]
                         + [dict(activation=a, n_hidden=8) for a in NONLINEARITIES])
def test_the_description_names_every_layer_once_in_order(kw):
    m = CharMLP(VOCAB, seed=0, **kw)
    d = m.blocks()
    L = m.config["n_layers"]
    assert d.embedding.layer is m.layers[0] and d.embedding.index == 0
    assert len(d.hidden) == L and d.output.activation is None
    named = [d.embedding] + [p for b in (*d.hidden, d.output)
                             for p in (b.linear, b.batchnorm, b.activation) if p is not None]
    assert [p.index for p in named] == list(range(len(m.layers)))
    assert all(p.layer is m.layers[p.index] for p in named)
    assert all(b.activation.activation == m.config["activation"] for b in d.hidden)
    assert all((b.batchnorm is not None) == m.config["batchnorm"] for b in d.hidden)
    assert (d.output.batchnorm is not None) == m.config["final_bn"]
    assert [p.kind for p in describe(m.layers)] == [p.kind for p in named]
    # folded: every BatchNorm1d gone, every Linear with a bias
    f = structure(fold_batchnorm(m).layers)
    assert len(f.hidden) == L and f.output.batchnorm is None
    assert all(b.batchnorm is None and b.linear.layer.bias is not None
               for b in (*f.hidden, f.output))


def test_the_description_is_frozen():
    d = CharMLP(VOCAB, seed=0).blocks()
    with pytest.raises(AttributeError):
        d.output = d.hidden[0]


def test_unsupported_layer_lists_are_refused_in_one_place():
    m = CharMLP(VOCAB, n_hidden=8, seed=0)
    emb, lin, bn, act, out = m.layers
    for walk in (describe, structure,
                 lambda ls: Plan(SimpleNamespace(layers=ls, dtype=np.float32, block_size=3))):
        with pytest.raises(TypeError, match="no inference step for layer 1, object"):
            walk([emb, object()])
        with pytest.raises(ValueError, match="starts with an Embedding"):
            walk([lin, bn])
        with pytest.raises(ValueError, match="needs at least an Embedding"):
            walk([])
        with pytest.raises(ValueError, match="only be the first layer"):
            walk([emb, emb])
    with pytest.raises(ValueError, match="layer 1, a BatchNorm1d, does not follow a Linear"):
        structure([emb, bn, lin, act, out])
    with pytest.raises(ValueError, match="layer 2, Linear, follows a Linear"):
        structure([emb, lin, out])
    with pytest.raises(ValueError, match="do not end with the output Linear"):
        structure([emb, lin, bn, act])
    with pytest.raises(ValueError, match="layer 1, Tanh, is not a Linear"):
        structure([emb, nn.Tanh(), out])
