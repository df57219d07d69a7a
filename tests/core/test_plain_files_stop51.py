"""``tying.load`` of a file written by plain ``safetensors.torch.save_model`` from a model
tied by hand (``lm_head.weight = embed.weight``), checked against that model.

save_model stores the shared tensor once and records the dropped name in the metadata
(``{"lm_head.weight": "embed.weight"}``). A model that computes the dropped name otherwise
(another source, a relation) used to load the file silently and compute other values; a
model that names the same identity tie the other way round was refused as "not tied".
"""

import pytest
import safetensors.torch as st
import torch
from torch import nn

import tying


def _model():
    return nn.ModuleDict(
        {
            "lm_head": nn.Linear(4, 4, bias=False),
            "embed": nn.Embedding(4, 4),
            "mid": nn.Linear(4, 4),
        }
    )


def _forward(m, ids):
    return m["lm_head"](m["mid"](m["embed"](ids)))


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    torch.manual_seed(0)
    hand = _model()
    hand["lm_head"].weight = hand["embed"].weight  # the anchor, tied by hand
    path = tmp_path_factory.mktemp("plain") / "hand.safetensors"
    st.save_model(hand, str(path))
    return hand, path


IDS = torch.tensor([0, 2, 3, 1])


@pytest.mark.parametrize(
    "target, like",
    [("lm_head.weight", "embed.weight"), ("embed.weight", "lm_head.weight")],
    ids=["as_saved", "named_the_other_way"],
)
def test_the_same_identity_tie_loads_as_the_saved_model(saved, target, like):
    hand, path = saved
    torch.manual_seed(1)
    m = _model()
    tying.Plan([tying.share(target, like=like)]).apply(m)
    tying.load(m, path, verify_hash=False)
    assert torch.allclose(_forward(m, IDS), _forward(hand, IDS))
    assert torch.equal(m["embed"].weight, hand["embed"].weight)
    assert tying.verify(m) == 1


@pytest.mark.parametrize(
    "like, relation, says",
    [
        ("embed.weight", tying.Transposed(), r"from embed\.weight via Transposed"),
        ("mid.weight", tying.Same(), r"from mid\.weight via Same\(\)"),
    ],
    ids=["other_relation", "other_source"],
)
def test_a_tie_computed_otherwise_than_the_file_is_refused(saved, like, relation, says):
    _, path = saved
    torch.manual_seed(1)
    m = _model()
    tying.Plan([tying.share("lm_head.weight", like=like, relation=relation)]).apply(m)
    before = {k: v.detach().clone() for k, v in m.state_dict().items()}
    with pytest.raises(
        tying.TieError,
        match=r"stores lm_head\.weight as the same tensor as embed\.weight .*computes "
        r"lm_head\.weight " + says,
    ):
        tying.load(m, path, verify_hash=False)
    after = m.state_dict()
    assert all(torch.equal(after[k], v) for k, v in before.items())
