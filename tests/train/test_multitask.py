"""Multi-task sharing: hard sharing is a Plan, soft sharing a Laplacian, and λ joins them."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

import tying
from tying.train import MultiTaskNet, components, fit_multitask


def _data(seed=0, K=4, n=30, d=5):
    g = torch.Generator().manual_seed(seed)
    mu = torch.randn(d, generator=g)
    out = []
    for _ in range(K):
        th = mu + 0.3 * torch.randn(d, generator=g)
        X = torch.randn(n, d, generator=g)
        out.append((X, (X @ th)[:, None] + 0.5 * torch.randn(n, 1, generator=g)))
    return out


def _net(K=4, d=5):
    torch.manual_seed(0)
    return MultiTaskNet(nn.Linear(d, 1, bias=False), nn.Linear(1, 1), n_tasks=K)


def test_components_of_a_task_graph():
    assert components(6, [(0, 1), (2, 1), (4, 5)]) == [[0, 1, 2], [3], [4, 5]]
    with pytest.raises(ValueError, match=r"edge \(0, 7\) names task 7, expected 0 <= task < 6"):
        components(6, [(0, 7)])


def test_tasks_start_from_one_value_and_stay_independent_copies():
    net = _net()
    assert torch.equal(net.trunks[0].weight, net.trunks[3].weight)
    assert net.trunks[0].weight is not net.trunks[3].weight
    assert tying.count(net).ratio == 1.0


def test_hard_sharing_is_a_plan_and_survives_training():
    net = _net()
    report = net.share_hard([[0, 1], [2, 3]])
    assert report.physical == 2 * 5 + 4 * 2
    assert tying.count(net).logical == 4 * 5 + 4 * 2
    fit_multitask(net, _data(), steps=20)
    assert net.trunks[1].weight is net.trunks[0].weight
    assert not torch.equal(net.trunks[0].weight, net.trunks[2].weight)
    tying.verify(net)


def test_share_hard_rejects_overlapping_groups():
    with pytest.raises(ValueError, match=r"task 1 is in two groups, \[0, 1\] and \[1, 2\]"):
        _net().share_hard([[0, 1], [1, 2]])


def test_soft_penalty_is_the_laplacian_over_trunk_parameters():
    net = _net()
    with torch.no_grad():
        for k, t in enumerate(net.trunks):
            t.weight.fill_(float(k))
    # edges (0,1), (1,3): ‖0-1‖² + ‖1-3‖² = 5·1 + 5·4 = 25
    assert net.soft_penalty([(0, 1), (1, 3)], lam=2.0).item() == pytest.approx(25.0)


def test_the_dial_runs_from_independent_to_hard_sharing():
    data, edges = _data(), [(0, 1), (1, 2), (2, 3)]
    base = _net()

    def predictions(lam=None, hard=False):
        net = copy.deepcopy(base)
        if hard:
            net.share_hard()
        fit_multitask(net, data, edges=edges, lam=lam or 0.0, steps=300, lr=1.0, method="lbfgs")
        with torch.no_grad():  # trunk and head are identified only up to a scale: compare outputs
            return torch.stack([net(X, k) for k, (X, _) in enumerate(data)])

    indep, hard = predictions(), predictions(hard=True)
    small, large = predictions(1e-6), predictions(1e3)
    torch.testing.assert_close(small, indep, atol=1e-3, rtol=0)
    torch.testing.assert_close(large, hard, atol=2e-2, rtol=0)
    assert (indep - hard).abs().max() > 0.3  # the two ends really differ


def test_fit_checks_its_inputs():
    with pytest.raises(ValueError, match="got data for 2 tasks, the net has 4"):
        fit_multitask(_net(), _data(K=2))
    with pytest.raises(ValueError, match="method must be 'adam' or 'lbfgs', got 'sgd'"):
        fit_multitask(_net(), _data(), method="sgd")
    with pytest.raises(ValueError, match="n_tasks must be >= 1, got 0"):
        MultiTaskNet(nn.Linear(2, 1), nn.Linear(1, 1), n_tasks=0)


@pytest.mark.parametrize(
    "task,err,match",
    [
        (-1, ValueError, r"task must be in 0..2, got -1"),  # was the last task's head, silently
        (3, ValueError, r"task must be in 0..2, got 3"),
        (True, TypeError, r"task must be an int, got bool True"),  # was task 1
    ],
)
def test_forward_refuses_a_task_index_a_list_would_wrap(task, err, match):
    net = MultiTaskNet(torch.nn.Linear(4, 3), torch.nn.Linear(3, 1), n_tasks=3)
    with pytest.raises(err, match=match):
        net(torch.randn(2, 4), task=task)


def test_a_flat_target_against_column_outputs_is_refused_not_broadcast():
    # (N,) targets minus (N, 1) outputs is an (N, N) difference: the fit pulled every
    # output to the mean target and learnt nothing (MSE ~ the targets' variance), no error
    data = [(X, y[:, 0]) for X, y in _data()]
    net = _net()
    before = [p.detach().clone() for p in net.parameters()]
    with pytest.raises(
        ValueError,
        match=r"task 0's targets have shape \(30,\) but the net's "
        r"outputs \(30, 1\).*y.unsqueeze\(-1\)",
    ):
        fit_multitask(net, data, steps=5)
    assert all(torch.equal(a, b) for a, b in zip(before, net.parameters()))
    with pytest.raises(ValueError, match=r"task 1 has 30 inputs but 29 targets"):
        fit_multitask(_net(), [_data()[0], (_data()[1][0], _data()[1][1][:29])] + _data()[2:])


@pytest.mark.parametrize("where", ["X", "y"])
def test_non_finite_task_data_is_named(where):
    data = _data()
    X, y = data[2]
    (X if where == "X" else y)[3, 0] = float("nan")
    with pytest.raises(ValueError, match=rf"task 2's {where} holds 1 NaN/inf value"):
        fit_multitask(_net(), data, steps=5)


def test_a_diverging_fit_is_refused_and_the_net_put_back_to_finite_values():
    data = [(1e16 * X, y) for X, y in _data()]  # a finite loss at the start, inf after a step
    net = _net()
    with pytest.raises(FloatingPointError, match=r"NaN/inf at step 1 .*put back to the last"):
        fit_multitask(net, data, steps=50, lr=1e10)
    assert all(bool(torch.isfinite(p).all()) for p in net.parameters())


@pytest.mark.parametrize("method", ["adam", "lbfgs"])
def test_a_loss_that_is_inf_from_the_start_leaves_the_net_unchanged(method):
    data = [(1e20 * X, y) for X, y in _data()]
    net = _net()
    before = [p.detach().clone() for p in net.parameters()]
    with pytest.raises(FloatingPointError, match=r"loss became NaN/inf"):
        fit_multitask(net, data, steps=20, method=method)
    assert all(torch.equal(a, b) for a, b in zip(before, net.parameters()))


# -- stop 32: the dial, the graph and the budget are checked whatever their values --


@pytest.mark.parametrize(
    "kw,err,match",
    [
        # the penalty ran only for lam > 0: these fitted independent tasks, no error
        (dict(lam=-1.0, edges=[(0, 1)]), ValueError, r"lam must be finite and >= 0 .*got -1.0"),
        (dict(lam=float("nan"), edges=[(0, 1)]), ValueError, r"lam must be finite .*got nan"),
        (dict(lam=True, edges=[(0, 1)]), TypeError, r"lam must be a real number, got bool"),
        # an edge naming a missing task went unnoticed at lam = 0
        (dict(lam=0.0, edges=[(0, 5)]), ValueError, r"edge \(0, 5\) names task 5"),
        # range(-3): the net came back untrained
        (dict(steps=-3), ValueError, r"steps must be an int >= 0, got -3"),
    ],
)
def test_fit_refuses_settings_that_silently_change_the_fit(kw, err, match):
    net = _net()
    before = [p.clone() for p in net.parameters()]
    with pytest.raises(err, match=match):
        fit_multitask(net, _data(), **kw)
    assert all(torch.equal(a, b) for a, b in zip(before, net.parameters()))


def test_a_task_with_no_rows_is_named():
    """Its mean squared error is NaN: the fit raised 'lower lr or scale the data'."""
    data = _data()
    data[1] = (data[1][0][:0], data[1][1][:0])
    with pytest.raises(ValueError, match=r"task 1 has no rows \(X of shape \(0, 5\)\)"):
        fit_multitask(_net(), data, steps=5)
