"""A module whose name holds ``*`` (a ``ModuleDict`` key ``"a*"``) and the exact rules made
from tied paths (stop 53).

A rule reads ``*`` as a wildcard. ``Plan.declared`` wrote the tied path ``a*.weight`` as a
rule, and applied to a model that also holds ``ab`` it tied ``ab.weight`` too, without a
word; ``save`` refused such a model saying "tying.verify(model) names the broken tie",
where no tie was broken. Both now name the path and the fix.
"""

import pytest
import torch
from torch import nn

import tying


def _model():
    torch.manual_seed(0)
    return nn.ModuleDict({"a*": nn.Linear(3, 3), "ab": nn.Linear(3, 3), "c": nn.Linear(3, 3)})


def _tied():
    m = nn.ModuleDict({"a*": nn.Linear(3, 3), "c": nn.Linear(3, 3)})
    tying.Plan([tying.share("a*", like="c")]).apply(m)  # here the pattern meets only "a*"
    assert m["a*"].weight is m["c"].weight
    return m


def test_declared_refuses_a_tied_path_holding_a_star_rather_than_tie_more():
    with pytest.raises(tying.TieError, match=r"tied path 'a\*\.(weight|bias)' holds '\*'.*rename"):
        tying.Plan.declared(_tied())
    # what the refused plan would have done, by hand: "ab" is no tie of the original
    fresh = _model()
    before = {n: id(p) for n, p in fresh.named_parameters()}
    with pytest.raises(tying.TieError, match=r"holds '\*'"):
        tying.Plan.declared(_tied()).apply(fresh)
    assert {n: id(p) for n, p in fresh.named_parameters()} == before


def test_save_names_the_star_not_a_broken_tie(tmp_path):
    path = tmp_path / "m.safetensors"
    with pytest.raises(
        tying.TieError,
        match=r"would not load back: the tied path 'a\*\.(weight|bias)' holds '\*'.*nothing was",
    ):
        tying.save(_tied(), path)
    assert not path.exists()


def test_a_hand_tie_of_a_star_named_module_round_trips_exactly(tmp_path):
    """A hand tie is written as an alias (no pattern): only its two paths are tied again."""
    m = _model()
    m["a*"].weight = m["c"].weight
    path = tying.save(m, tmp_path / "m.safetensors")
    fresh = _model()
    with torch.no_grad():
        for p in fresh.parameters():
            p.add_(1.0)
    tying.load(fresh, path)
    assert fresh["a*"].weight is fresh["c"].weight
    assert fresh["ab"].weight is not fresh["c"].weight
    for (k, v), (k2, v2) in zip(m.state_dict().items(), fresh.state_dict().items()):
        assert k == k2 and torch.equal(v, v2)
