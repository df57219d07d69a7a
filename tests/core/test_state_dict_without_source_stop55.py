"""A state dict that holds a tied slot but not its source, loaded with ``strict=False``
(stop 55), next to the same model tied by hand.

By hand (``head.weight = emb.weight``) torch loads the entry into the shared Parameter.
A Plan tie refuses a value that differs from the tie's, here compared with the model's own
``emb.weight`` because the state dict has none; the refusal said the state dict "holds a
different value" without a word on the source it never named. It now names the missing
key and the fix, and still loads nothing.
"""

import pytest
import torch
from torch import nn

import tying


def _lm(seed):
    torch.manual_seed(seed)
    return nn.ModuleDict({"emb": nn.Embedding(5, 4), "head": nn.Linear(4, 5)})


def test_the_refusal_names_the_source_the_state_dict_lacks():
    anchor = _lm(0)
    anchor["head"].weight = anchor["emb"].weight
    sd = {k: v for k, v in anchor.state_dict().items() if k != "emb.weight"}
    m = _lm(1)
    tying.Plan([tying.share("head.weight", like="emb.weight")]).apply(m)
    before = {k: v.clone() for k, v in m.state_dict().items()}
    with pytest.raises(
        RuntimeError,
        match=r"head\.weight is tied .* different value for it \(it has no entry 'emb\.weight' "
        r"for the source.*add 'emb\.weight' to the state dict",
    ):
        m.load_state_dict(sd, strict=False)
    assert all(torch.equal(v, before[k]) for k, v in m.state_dict().items())  # nothing loaded
    sd["emb.weight"] = anchor["emb"].weight.detach()  # the fix it names
    m.load_state_dict(sd, strict=False)
    assert torch.equal(m["head"].weight, anchor["head"].weight)


def test_a_state_dict_with_a_contradicting_source_says_nothing_of_a_missing_one():
    m = _lm(1)
    tying.Plan([tying.share("head.weight", like="emb.weight")]).apply(m)
    sd = {"emb.weight": torch.zeros(5, 4), "head.weight": torch.ones(5, 4)}
    with pytest.raises(RuntimeError, match=r"holds a different value for it; load it"):
        m.load_state_dict(sd, strict=False)
