"""Stop 50: ``TiedResidualNet`` reads its step ``h = t1 / depth`` from ``t1`` and the steps
it holds, not from a number stored at construction.

``net.t1 = 2.0`` after construction changed ``net.t1`` but the forward pass kept the old
step (0.46 off at depth 8, no error). ``t1`` is now checked when assigned, as when built,
``h`` follows it, and ``depth`` is the number of steps (an assignment is refused).
"""

from __future__ import annotations

import copy
import pickle

import pytest
import torch

from tying.nn import TiedResidualNet


def _euler(net: TiedResidualNet, x: torch.Tensor, t1: float, depth: int) -> torch.Tensor:
    # the anchor: explicit Euler steps of the shared field, written out
    for _ in range(depth):
        x = x + (t1 / depth) * net.field(x)
    return x


@pytest.mark.parametrize("tied", [True, False])
@pytest.mark.parametrize("t1", [0.25, 2.0, 3])
def test_an_assigned_t1_moves_the_step(tied, t1):
    torch.manual_seed(0)
    net = TiedResidualNet(2, 4, 8, t1=1.0, tied=tied).double()
    x = torch.randn(3, 2, dtype=torch.float64)
    net.t1 = t1
    assert net.t1 == float(t1) and net.h == float(t1) / 8
    expected = x
    for f in net.steps:  # untied: each step its own field
        expected = expected + (t1 / 8) * f(expected)
    assert torch.allclose(net(x), expected, rtol=0, atol=1e-14)
    if tied:
        assert torch.allclose(net(x), _euler(net, x, t1, 8), rtol=0, atol=1e-14)
    # and it survives a copy, a pickle and a state-dict load into a fresh net
    for other in (copy.deepcopy(net), pickle.loads(pickle.dumps(net))):
        assert other.t1 == float(t1) and torch.equal(other(x), net(x))


@pytest.mark.parametrize("t1", [0.0, -1.0, float("inf"), float("nan"), True])
def test_an_assigned_t1_is_checked_as_the_argument_is(t1):
    net = TiedResidualNet(2, 4, 3)
    with pytest.raises(ValueError, match=r"t1 must be > 0 and finite, got"):
        net.t1 = t1
    assert net.t1 == 1.0 and net.h == 1.0 / 3  # unchanged


def test_depth_is_the_number_of_steps_and_cannot_be_assigned():
    net = TiedResidualNet(2, 4, 5, t1=2.0)
    assert net.depth == len(net.steps) == 5 and net.h == 2.0 / 5
    with pytest.raises(ValueError, match=r"depth is the number of steps built \(5\).*depth=7"):
        net.depth = 7
    assert net.depth == 5 and net.h == 2.0 / 5


def test_a_net_pickled_before_stop_50_still_reads_its_time():
    torch.manual_seed(1)
    net = TiedResidualNet(2, 4, 4, t1=0.5).double()
    x = torch.randn(2, 2, dtype=torch.float64)
    expected = net(x)
    old = copy.deepcopy(net)
    d = old.__dict__  # how the attributes were stored before
    d["t1"] = d.pop("_t1")
    d["depth"], d["h"] = 4, 0.5 / 4
    restored = pickle.loads(pickle.dumps(old))
    assert restored.t1 == 0.5 and restored.h == 0.125
    assert torch.equal(restored(x), expected)
