import torch
from torch import nn

import tying

from .helpers import Stack


def test_untied_model_counts_like_torch():
    m = Stack()
    c = tying.count(m)
    n = sum(p.numel() for p in m.parameters())
    assert c.logical == c.physical == n and c.ratio == 1.0 and c.groups == []
    assert c.bytes_physical == 4 * n


def test_groups_and_bytes_of_a_tied_model():
    m = Stack(n=4).to(torch.float16)
    tying.Plan([tying.share("layers.*.fc", like="layers.0.fc")]).apply(m)
    c = tying.count(m)
    fc = 8 * 8
    groups = {g.physical_path: g for g in c.groups}
    assert groups["layers.0.fc.weight"].slots == [f"layers.{i}.fc.weight" for i in range(4)]
    assert groups["layers.0.fc.weight"].logical == 4 * fc
    assert c.logical - c.physical == 3 * (fc + 8)
    assert c.bytes_physical == 2 * c.physical
    d = c.to_dict()
    assert d["ratio"] == c.ratio and len(d["groups"]) == 2
    assert "layers.0.fc.weight" in str(c)


def test_relation_storage_and_extras_count_as_physical():
    m = nn.ParameterDict({"a": nn.Parameter(torch.randn(10)), "b": nn.Parameter(torch.randn(10))})
    tying.Plan(
        [
            tying.share("b", like="a", relation=tying.Scaled()),
            tying.share("a", relation=tying.Mirrored()),
        ]
    ).apply(m)
    c = tying.count(m)
    assert (c.logical, c.physical) == (20, 5 + 1)


def test_count_defers_to_estimators_and_rejects_other_objects():
    import pytest

    class Fit:
        def n_parameters(self):
            return tying.Count(10, 4, 80, 32, [])

    assert tying.count(Fit()).ratio == 2.5
    with pytest.raises(TypeError, match="expected an nn.Module or an object with n_parameters"):
        tying.count(object())
