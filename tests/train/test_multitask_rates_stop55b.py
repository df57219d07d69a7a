"""fit_multitask's learning rate, dial and data checked by name (stop 55, second pass).

``lr=0`` ran every step and returned the net untrained (Adam and L-BFGS), ``lr=inf`` ran
until the loss was NaN, ``lr="0.1"`` failed inside torch on ``'<='``, a two-element
``lam`` failed in ``float()`` naming nothing, and a task whose X the net cannot take
raised torch's "mat1 and mat2" naming no task.
"""

import copy

import pytest
import torch
from torch import nn

from tying.train import MultiTaskNet, fit_multitask


def _net_and_data():
    torch.manual_seed(0)
    net = MultiTaskNet(nn.Linear(3, 4), nn.Linear(4, 1), 2)
    X = torch.randn(6, 3)
    return net, [(X, 2 * X[:, :1]), (X, -X[:, 1:2])]


@pytest.mark.parametrize("method", ["adam", "lbfgs"])
@pytest.mark.parametrize("lr", [0.0, -0.1, float("nan"), float("inf"), "0.1", None])
def test_a_learning_rate_that_cannot_train_is_refused_before_any_step(method, lr):
    net, data = _net_and_data()
    before = copy.deepcopy(net.state_dict())
    with pytest.raises(ValueError, match=r"fit_multitask: lr must be a finite number > 0, got"):
        fit_multitask(net, data, steps=3, lr=lr, method=method)
    assert all(torch.equal(v, before[k]) for k, v in net.state_dict().items())


def test_a_one_element_tensor_rate_still_trains_as_its_float():
    net, data = _net_and_data()
    twin = copy.deepcopy(net)
    fit_multitask(net, data, steps=4, lr=torch.tensor(0.05))
    fit_multitask(twin, data, steps=4, lr=0.05)
    for a, b in zip(net.parameters(), twin.parameters()):
        torch.testing.assert_close(a, b)
    assert not torch.equal(net.heads[0].weight, _net_and_data()[0].heads[0].weight)


def test_a_lam_of_several_values_is_refused_by_name():
    net, data = _net_and_data()
    with pytest.raises(TypeError, match=r"lam must be a real number, got a tensor of shape \(2,\)"):
        fit_multitask(net, data, edges=[(0, 1)], lam=torch.tensor([0.5, 1.0]), steps=2)


def test_a_task_the_net_cannot_take_is_named():
    net, data = _net_and_data()
    data[1] = (data[1][0].double(), data[1][1].double())
    with pytest.raises(RuntimeError) as info:
        fit_multitask(net, data, steps=2)
    notes = " ".join(getattr(info.value, "__notes__", []))
    assert "raised by the forward of task 1" in notes and "torch.float64" in notes


def test_no_step_takes_any_rate_and_returns_the_net_as_given():
    """Found in review: steps=0 runs no step, and lr=0 there was refused."""
    torch.manual_seed(0)
    net = MultiTaskNet(nn.Linear(3, 4), nn.Linear(4, 1), 2)
    before = [p.detach().clone() for p in net.parameters()]
    data = [(torch.randn(10, 3), torch.randn(10, 1)), (torch.randn(8, 3), torch.randn(8, 1))]
    out = fit_multitask(net, data, lr=0, steps=0)
    assert all(torch.equal(a, b) for a, b in zip(before, out.parameters()))
