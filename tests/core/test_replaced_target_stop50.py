"""A module holding a tied slot replaced after the plan (``model.lm_head = nn.Linear(...)``):
each common flow keeps the tie right or refuses loudly, checked against the same model
tied by hand (``lm_head.weight = embed.weight``)."""

import pytest
import torch
from torch import nn

import tying


def _model(hand=False):
    torch.manual_seed(0)
    m = nn.ModuleDict({"embed": nn.Embedding(10, 4), "lm_head": nn.Linear(4, 10, bias=False)})
    if hand:
        m.lm_head.weight = m.embed.weight
    else:
        tying.Plan([tying.share("lm_head.weight", like="embed.weight")]).apply(m)
    return m


@pytest.mark.parametrize(
    "replace",
    [
        lambda m: setattr(m, "lm_head", nn.Linear(4, 10, bias=False)),
        lambda m: m.__setitem__("lm_head", nn.Linear(4, 10, bias=False)),
        lambda m: m.add_module("lm_head", nn.Linear(4, 10, bias=False)),
    ],
    ids=["setattr", "setitem", "add_module"],
)
def test_save_refuses_a_tie_its_module_replacement_dropped(replace, tmp_path):
    m, hand = _model(), _model(hand=True)
    replace(m)
    replace(hand)  # plain torch drops the hand tie the same way: the forward reads the new one
    assert hand.lm_head.weight is not hand.embed.weight
    assert m.lm_head.weight is not m.embed.weight
    path = tmp_path / "m.safetensors"
    with pytest.raises(
        tying.TieError,
        match=r"lm_head\.weight \(declared tied to embed\.weight\) is now an independent",
    ):
        tying.save(m, path)
    assert not path.exists()
    with pytest.raises(tying.TieError, match="lm_head.weight: is an independent parameter"):
        tying.verify(m)
    # the two ways out the message names
    tying.retie(m)
    assert m.lm_head.weight is m.embed.weight
    tying.save(m, path)
    fresh = _model(hand=False)
    tying.untie(fresh)
    tying.load(fresh, path)
    assert fresh.lm_head.weight is fresh.embed.weight


def test_an_untied_replacement_saves_once_the_declaration_is_dropped(tmp_path):
    m = _model()
    new = nn.Linear(4, 10, bias=False)
    m.lm_head = new
    tying.untie(m)  # keep the new head on its own
    tying.save(m, tmp_path / "m.safetensors")
    fresh = nn.ModuleDict({"embed": nn.Embedding(10, 4), "lm_head": nn.Linear(4, 10, bias=False)})
    tying.load(fresh, tmp_path / "m.safetensors")
    assert torch.equal(fresh.lm_head.weight, new.weight)
    assert fresh.lm_head.weight is not fresh.embed.weight


def test_an_assign_load_keeps_the_tie_as_a_hand_tied_model_does():
    m, hand = _model(), _model(hand=True)
    sd = {k: v.detach().clone() + 1 for k, v in m.state_dict().items()}
    m.load_state_dict(sd, assign=True)
    hand.load_state_dict({**sd, "lm_head.weight": sd["embed.weight"]}, assign=True)
    x = torch.tensor([[1, 2, 3]])
    assert m.lm_head.weight is m.embed.weight
    assert torch.equal(m.lm_head(m.embed(x)), hand.lm_head(hand.embed(x)))
    assert tying.verify(m) == 1
