"""An optimizer built after a tie over one tied module, ``SGD(model.head.parameters())``
(stop 55), checked against the same model tied by hand (``head.weight = emb.weight``).

By hand, ``head.parameters()`` yields the shared Parameter and the step trains it. A
Plan tie's slot is no Parameter of its module, so the same optimizer held the head's
bias alone and the weight the head reads never moved, with no error. Such a step is now
refused, before anything changes, naming the source and the fix.

Since stop 57 an optimizer given the generator ``head.parameters()`` holds the source, as
on the hand tie (tying.core.part_walks; tests/core/test_part_walks_stop57.py); these
tests build the list themselves (``list(head.parameters())``), which still leaves it out.
"""

import copy

import pytest
import torch
from torch import nn

import tying

IDS = torch.tensor([0, 1, 3])


def _lm():
    torch.manual_seed(0)
    return nn.ModuleDict({"emb": nn.Embedding(5, 4), "head": nn.Linear(4, 5)})


def _loss(m):
    return m["head"](m["emb"](IDS)).pow(2).sum()


@pytest.mark.parametrize("rel", [tying.Same(), tying.Scaled(2.0)], ids=["Same", "Scaled"])
def test_an_optimizer_over_the_tied_module_alone_is_refused(rel):
    m = _lm()
    tying.Plan([tying.share("head.weight", like="emb.weight", relation=rel)]).apply(m)
    opt = torch.optim.SGD(list(m["head"].parameters()), lr=0.1)
    _loss(m).backward()
    before = [p.detach().clone() for p in m.parameters()]
    with pytest.raises(
        tying.TieError, match=r"never train emb\.weight \(which head\.weight reads\)"
    ):
        opt.step()
    assert all(torch.equal(p, q) for p, q in zip(m.parameters(), before))  # nothing changed
    opt.add_param_group({"params": [m.get_parameter("emb.weight")]})  # the fix it names
    opt.step()
    assert not torch.equal(m["emb"].weight, before[0])


def test_with_the_source_added_it_steps_as_the_hand_tied_anchor():
    hand, plan = _lm(), _lm()
    hand["head"].weight = hand["emb"].weight
    tying.Plan([tying.share("head.weight", like="emb.weight")]).apply(plan)
    opt_hand = torch.optim.Adam(hand["head"].parameters(), lr=0.05)
    opt_plan = torch.optim.Adam([*plan["head"].parameters(), plan["emb"].weight], lr=0.05)
    for _ in range(3):
        for m, opt in ((hand, opt_hand), (plan, opt_plan)):
            opt.zero_grad()
            _loss(m).backward()
            opt.step()
    assert torch.equal(plan["emb"].weight, hand["emb"].weight)
    assert torch.equal(plan["head"].bias, hand["head"].bias)


def test_optimizers_that_train_the_source_elsewhere_or_freeze_it_step():
    m = _lm()
    tying.Plan([tying.share("head.weight", like="emb.weight")]).apply(m)
    opt_head = torch.optim.SGD(list(m["head"].parameters()), lr=0.1)
    opt_emb = torch.optim.SGD(m["emb"].parameters(), lr=0.1)  # trains what the head reads
    _loss(m).backward()
    emb0 = m["emb"].weight.detach().clone()
    opt_head.step()
    opt_emb.step()
    assert not torch.equal(m["emb"].weight, emb0)  # trained by the other optimizer
    del opt_emb
    m["emb"].weight.requires_grad_(False)  # left untrained on purpose
    emb1, bias1 = m["emb"].weight.detach().clone(), m["head"].bias.detach().clone()
    opt_head.step()
    assert torch.equal(m["emb"].weight, emb1) and not torch.equal(m["head"].bias, bias1)


def test_a_chain_names_the_source_it_reads_and_an_untouched_source_is_no_refusal():
    torch.manual_seed(0)
    m = nn.ModuleDict({k: nn.Linear(3, 3) for k in "abc"})
    tying.Plan(
        [
            tying.share("b.weight", like="a.weight", relation=tying.Transposed()),
            tying.share("c.weight", like="b.weight", relation=tying.Flipped((0,))),
        ]
    ).apply(m)
    opt = torch.optim.SGD(list(m["c"].parameters()), lr=0.1)
    m["c"](torch.ones(2, 3)).sum().backward()
    with pytest.raises(tying.TieError, match=r"never train b\.weight \(which c\.weight reads\)"):
        opt.step()
    m.zero_grad(set_to_none=True)
    m["c"].bias.grad = torch.ones(3)  # a step with no gradient on the source moves nothing
    opt.step()


@pytest.mark.parametrize("how", ["deepcopy", "pickle"])
def test_a_copy_of_the_tied_model_is_checked_as_the_original(how):
    import pickle

    m = _lm()
    tying.Plan([tying.share("head.weight", like="emb.weight")]).apply(m)
    c = copy.deepcopy(m) if how == "deepcopy" else pickle.loads(pickle.dumps(m))
    opt = torch.optim.SGD(list(c["head"].parameters()), lr=0.1)
    _loss(c).backward()
    with pytest.raises(tying.TieError, match=r"never train emb\.weight"):
        opt.step()
