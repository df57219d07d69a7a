"""A load refused by a ``tying.nn`` layer's own check changes nothing in the container
that holds it (stop 51).

``SymmetricConv1d``, ``Attention``, ``Siamese``, ``HashedLinear`` and ``HashedEmbedding``
refuse state dicts that would silently change their function (another kernel length,
another head layout, two values for one shared buffer, buckets of another hash). They
raised from their own ``_load_from_state_dict``, so inside an ``nn.Sequential`` every
module *before* them was already loaded when the refusal came. Their checks now run as
``_tying_check_load`` before anything is copied (``tying.core.slot_loads.LOAD_CHECK``).
Every tensor of the target is compared before and after.
"""

import pytest
import torch
from torch import nn

import tying.nn as tnn


def _values(m):
    return {k: v.detach().clone() for k, v in m.state_dict().items()}


def _noisy(sd):
    out = type(sd)({k: torch.randn_like(v) if v.is_floating_point() else v for k, v in sd.items()})
    out._metadata = getattr(sd, "_metadata", None)
    return out


def _symmetric():
    saved = nn.Sequential(nn.Linear(4, 4), tnn.SymmetricConv1d(1, 1, 5)).state_dict()
    return nn.Sequential(nn.Linear(4, 4), tnn.SymmetricConv1d(1, 1, 6)), saved, "length 5"


def _attention():
    saved = nn.Sequential(nn.Linear(16, 16), tnn.Attention(16, 4, kv_heads=2)).state_dict()
    return nn.Sequential(nn.Linear(16, 16), tnn.Attention(16, 8, kv_heads=4)), saved, "head layout"


def _siamese():
    def tower():
        return nn.Sequential(nn.Linear(4, 3), nn.BatchNorm1d(3))

    target = nn.Sequential(nn.Linear(4, 4), tnn.Siamese(tower()))
    saved = target.state_dict()
    saved["1.right.1.running_mean"] = saved["1.left.1.running_mean"] + 1.0
    return target, saved, "one buffer"


def _hashed_linear():
    saved = nn.Sequential(nn.Linear(6, 6), tnn.HashedLinear(6, 4, 9, seed=1)).state_dict()
    return nn.Sequential(nn.Linear(6, 6), tnn.HashedLinear(6, 4, 9, seed=2)), saved, "seed"


def _hashed_embedding():
    saved = nn.Sequential(nn.Linear(6, 6), tnn.HashedEmbedding(30, 6, buckets=17, seed=3))
    target = nn.Sequential(nn.Linear(6, 6), tnn.HashedEmbedding(30, 6, buckets=17, seed=4))
    return target, saved.state_dict(), "seed"


@pytest.mark.parametrize(
    "make",
    [_symmetric, _attention, _siamese, _hashed_linear, _hashed_embedding],
    ids=["symmetric", "attention", "siamese", "hashed-linear", "hashed-embedding"],
)
def test_a_refused_load_into_a_container_changes_nothing(make):
    torch.manual_seed(0)
    target, saved, why = make()
    state = _noisy(saved)  # the Linear before the layer would take new values
    before = _values(target)
    with pytest.raises(ValueError, match=why):
        target.load_state_dict(state)
    after = _values(target)
    assert after.keys() == before.keys()
    for key in before:
        assert torch.equal(after[key], before[key]), key  # "0.weight" was loaded before


def test_a_good_state_dict_still_loads_through_the_container():
    torch.manual_seed(1)
    source = nn.Sequential(nn.Linear(4, 4), tnn.SymmetricConv1d(1, 1, 5))
    target = nn.Sequential(nn.Linear(4, 4), tnn.SymmetricConv1d(1, 1, 5))
    target.load_state_dict(source.state_dict())
    for key, value in source.state_dict().items():
        assert torch.equal(target.state_dict()[key], value), key
