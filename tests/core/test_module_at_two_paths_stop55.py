"""A module registered at two paths (``m.a = m.b = lin``) whose parameter a rule ties to
itself through the other path (stop 55).

``share("b.weight", like="a.weight", relation=Transposed())`` reads ``lin.weight``
transposed from ``lin.weight``: a cycle. The paths differ, so no check saw it, and the
commit failed half way saying a module on the path "was replaced or re-parametrised",
which nobody had done. A chain through the other path (``c <- a``, ``b <- c``) was the
same. Both are refused while resolving, as a cycle naming the two paths; a module
registered twice keeps working as a source (T5's shared embedding).
"""

import pytest
import torch
from torch import nn

import tying


def _model():
    torch.manual_seed(0)
    lin = nn.Linear(3, 3)
    m = nn.Module()
    m.a = lin
    m.b = lin
    m.c = nn.Linear(3, 3)
    return m


@pytest.mark.parametrize(
    "rel", [tying.Transposed(), tying.Scaled(2.0), tying.Flipped((0,))], ids=repr
)
def test_a_relation_tie_of_a_module_to_its_other_path_is_refused_as_a_cycle(rel):
    m = _model()
    w = m.a.weight
    plan = tying.Plan([tying.share("b.weight", like="a.weight", relation=rel)])
    with pytest.raises(
        tying.TieError,
        match=r"'b\.weight' is tied to itself .*'b\.weight' and 'a\.weight' are one parameter "
        r"of one module registered at two paths",
    ):
        plan.resolve(m)  # refused before the commit
    assert m.a.weight is w and tying.ties(m)[0].hand  # unchanged


@pytest.mark.parametrize("rel", [tying.Same(), tying.Transposed()], ids=repr)
def test_a_chain_back_through_the_other_path_is_refused_as_a_cycle(rel):
    m = _model()
    plan = tying.Plan(
        [
            tying.share("c.weight", like="a.weight", relation=rel),
            tying.share("b.weight", like="c.weight", relation=rel),
        ]
    )
    with pytest.raises(
        tying.TieError, match=r"cycle of ties .*b\.weight is a\.weight: one module registered"
    ):
        plan.resolve(m)
    assert m.c.weight is not m.a.weight


def test_the_module_at_two_paths_still_serves_as_a_source():
    m = _model()
    tying.Plan([tying.share("c.weight", like="b.weight", relation=tying.Transposed())]).apply(m)
    assert torch.equal(m.c.weight, m.a.weight.T)
    opt = torch.optim.SGD(m.parameters(), lr=0.1)
    m.c(m.b(torch.ones(2, 3))).sum().backward()
    opt.step()
    assert torch.equal(m.c.weight, m.a.weight.T) and tying.verify(m) == 3
