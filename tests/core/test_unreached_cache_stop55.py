"""The step check of an optimizer over a tied module alone (tying.core.unreached, stop 55)
keeps its scan per optimizer: what may change between steps must still be seen.

The scan is done again when the optimizer's parameter groups or any tie change; whether
the left-out source is trained (requires grad, has a gradient) is asked at every step.
The optimizers get a list built here (``list(head.parameters())``): since stop 57 the
generator ``head.parameters()`` given to an optimizer holds the source (part_walks).
"""

import pytest
import torch
from torch import nn

import tying

IDS = torch.tensor([0, 1, 3])


def _tied():
    torch.manual_seed(0)
    m = nn.ModuleDict(
        {"emb": nn.Embedding(5, 4), "head": nn.Linear(4, 5), "other": nn.Linear(4, 5)}
    )
    tying.Plan([tying.share("head.weight", like="emb.weight")]).apply(m)
    return m


def _step(m, opt):
    opt.zero_grad()
    m["head"](m["emb"](IDS)).pow(2).sum().backward()
    opt.step()


def test_a_source_unfrozen_after_a_passing_step_is_seen_at_the_next():
    m = _tied()
    m["emb"].weight.requires_grad_(False)  # left untrained on purpose: steps pass
    opt = torch.optim.SGD(list(m["head"].parameters()), lr=0.1)
    _step(m, opt)
    _step(m, opt)
    m["emb"].weight.requires_grad_(True)
    with pytest.raises(tying.TieError, match=r"never train emb\.weight"):
        _step(m, opt)
    opt.add_param_group({"params": [m["emb"].weight]})  # a new group: scanned again
    before = m["emb"].weight.detach().clone()
    _step(m, opt)
    assert not torch.equal(m["emb"].weight, before)


def test_a_tie_made_after_a_passing_step_is_seen_at_the_next():
    m = _tied()
    opt = torch.optim.SGD([m["other"].bias], lr=0.1)  # the bias alone
    opt.zero_grad()
    (m["other"](m["emb"](IDS)).sum() + m["head"](m["emb"](IDS)).sum()).backward()
    opt.step()  # "other" holds no tie yet: nothing to refuse
    # tie "other" to the embedding too; the optimizer (over other's bias) is not re-built
    tying.Plan([tying.share("other.weight", like="emb.weight")]).apply(m)
    opt.zero_grad()
    (m["other"](m["emb"](IDS)).sum()).backward()
    with pytest.raises(
        tying.TieError, match=r"never train emb\.weight \(which other\.weight reads\)"
    ):
        opt.step()
    # leaving the source untrained on purpose (a bias-only fine-tune) is said by freezing it
    m["emb"].weight.requires_grad_(False)
    opt.zero_grad()
    m["other"](m["emb"](IDS)).sum().backward()
    before = m["other"].bias.detach().clone()
    opt.step()
    assert not torch.equal(m["other"].bias, before)


def _bitfit_model(hand: bool):
    torch.manual_seed(0)
    m = nn.ModuleDict({"emb": nn.Embedding(5, 4), "norm": nn.LayerNorm(4), "head": nn.Linear(4, 5)})
    if hand:
        m["head"].weight = m["emb"].weight
    else:
        tying.Plan([tying.share("head.weight", like="emb.weight")]).apply(m)
    return m


def test_a_selection_of_parameters_steps_as_with_the_hand_tie():
    """Found in review: an optimizer over every bias (BitFit), the weights left trainable,
    was refused, though with the hand tie it leaves the embedding out too."""
    out = []
    for hand in (True, False):
        m = _bitfit_model(hand)
        opt = torch.optim.SGD([p for n, p in m.named_parameters() if n.endswith("bias")], lr=0.1)
        for _ in range(3):
            opt.zero_grad()
            m["head"](m["norm"](m["emb"](IDS))).pow(2).sum().backward()
            opt.step()
        out.append({n: p.detach().clone() for n, p in m.named_parameters()})
    assert out[0].keys() == out[1].keys()
    assert all(torch.equal(out[0][n], out[1][n]) for n in out[0])


def test_an_optimizer_over_a_module_above_the_tied_one_is_refused():
    m = nn.ModuleDict(
        {"emb": nn.Embedding(5, 4), "dec": nn.Sequential(nn.LayerNorm(4), nn.Linear(4, 5))}
    )
    tying.Plan([tying.share("dec.1.weight", like="emb.weight")]).apply(m)
    opt = torch.optim.SGD(list(m["dec"].parameters()), lr=0.1)
    m["dec"](m["emb"](IDS)).pow(2).sum().backward()
    with pytest.raises(
        tying.TieError, match=r"never train emb\.weight \(which dec\.1\.weight reads\)"
    ):
        opt.step()
