"""Stop 50: the layers that record their layout in the state dict's metadata
(``Attention``'s heads, the hashed layers' hash and sizes) check it only when the load
holds the entries it describes.

The record of a layer's prefix stays in a state dict after its entries are dropped
(``del state["1.q_proj.weight"]`` keeps ``state._metadata``), so a partial load
(``strict=False``) of the rest of a model into one whose attention has another head
layout, or of a ``HashedLinear``'s bias alone into a layer with another seed, was refused
("its projection rows would be read as other heads") although nothing of the layer was
loaded; ``nn.MultiheadAttention``/``nn.Linear`` load the rest and report the missing keys.
The entries themselves are still refused (the stop 31/32/37 checks).
"""

from __future__ import annotations

import io

import pytest
import torch
from torch import nn

from tying.nn import Attention, HashedEmbedding, HashedEmbeddingBag, HashedLinear


def _saved(module: nn.Module) -> dict:
    buf = io.BytesIO()
    torch.save(module.state_dict(), buf)
    buf.seek(0)
    return torch.load(buf, weights_only=True)


def _dropped(state: dict, prefix: str) -> dict:
    for key in [k for k in state if k.startswith(prefix)]:
        del state[key]  # the metadata of the prefix stays, as a user's del leaves it
    return state


def test_the_rest_of_a_model_loads_around_an_attention_of_another_layout():
    torch.manual_seed(0)
    source = nn.Sequential(nn.Linear(16, 16), Attention(16, 4, kv_heads=2))
    target = nn.Sequential(nn.Linear(16, 16), Attention(16, 8, kv_heads=4))  # same shapes
    before = {k: v.clone() for k, v in target[1].state_dict().items()}
    state = _dropped(_saved(source), "1.")
    result = target.load_state_dict(state, strict=False)
    assert sorted(result.missing_keys) == sorted(f"1.{k}" for k in before)
    assert torch.equal(target[0].weight, source[0].weight)
    for key, value in target[1].state_dict().items():
        assert torch.equal(value, before[key]), key
    # one projection of the other layout is still refused, naming the layer
    one = _saved(source)
    one = type(one)({k: v for k, v in one.items() if k.startswith("1.q_proj")})
    one._metadata = _saved(source)._metadata
    with pytest.raises(ValueError, match=r"Attention at '1'.*another head layout"):
        target.load_state_dict(one, strict=False)


@pytest.mark.parametrize(
    "other", [{"seed": 2}, {"signed": False}, {"in_features": 6}], ids=["seed", "sign", "size"]
)
def test_a_hashed_linear_bias_alone_loads_whatever_the_hash(other):
    torch.manual_seed(1)
    source = HashedLinear(5, 3, 7, seed=1)
    kwargs = {"in_features": 5, "out_features": 3, "buckets": 7, "seed": 1} | other
    target = HashedLinear(**kwargs)
    buckets = target.weight_physical.detach().clone()
    state = _saved(source)
    del state["weight_physical"]
    result = target.load_state_dict(state, strict=False)
    anchor = nn.Linear(kwargs["in_features"], 3)  # nn.Linear takes the same partial load
    anchor_result = anchor.load_state_dict({"bias": state["bias"]}, strict=False)
    assert result.missing_keys == ["weight_physical"] and anchor_result.missing_keys == ["weight"]
    assert torch.equal(target.bias, source.bias) and torch.equal(anchor.bias, source.bias)
    assert torch.equal(target.weight_physical, buckets)
    with pytest.raises(ValueError, match=r"HashedLinear at '<root>'.*weight_physical was saved"):
        target.load_state_dict(_saved(source))  # the buckets themselves: refused
    assert torch.equal(target.weight_physical, buckets)


@pytest.mark.parametrize("cls", [HashedEmbedding, HashedEmbeddingBag])
def test_the_rest_of_a_model_loads_around_a_hashed_table_of_another_seed(cls):
    torch.manual_seed(2)
    source = nn.Sequential(nn.Linear(3, 3), cls(10, 4, 7, seed=1))
    target = nn.Sequential(nn.Linear(3, 3), cls(10, 4, 7, seed=5))
    buckets = target[1].weight_physical.detach().clone()
    state = _dropped(_saved(source), "1.")
    result = target.load_state_dict(state, strict=False)
    assert result.missing_keys == ["1.weight_physical"]
    assert torch.equal(target[0].weight, source[0].weight)
    assert torch.equal(target[1].weight_physical, buckets)
    with pytest.raises(ValueError, match=rf"{cls.__name__} at '1'.*hashing with"):
        target.load_state_dict(_saved(source), strict=False)
