"""PINN helpers: hard periodic features and a shared boundary sub-network (B14)."""

from __future__ import annotations

import math
import re

import pytest
import torch

from tying.nn import PeriodicFeatures, SharedBoundary, mlp, partial


def test_periodic_features_make_value_and_slope_periodic():
    torch.manual_seed(0)
    net = torch.nn.Sequential(PeriodicFeatures(2, period=3.0, harmonics=2), mlp([5, 16, 16, 1]))
    net = net.double()
    t = torch.rand(20, 1, dtype=torch.float64)
    left = torch.cat([torch.zeros_like(t), t], 1).requires_grad_()
    right = torch.cat([torch.full_like(t, 3.0), t], 1).requires_grad_()
    ul, ur = net(left), net(right)
    assert float((ul - ur).abs().max().detach()) < 1e-12
    dl, dr = partial(ul, left, 0), partial(ur, right, 0)
    assert float((dl - dr).abs().max().detach()) < 1e-10
    # an ordinary MLP on raw x is not periodic
    raw = mlp([2, 16, 1]).double()
    assert float((raw(left) - raw(right)).abs().max().detach()) > 1e-3


def test_periodic_features_values_and_errors():
    feats = PeriodicFeatures(2, period=2.0, periodic_dims=(1,))
    out = feats(torch.tensor([[0.7, 0.5]]))
    torch.testing.assert_close(
        out, torch.tensor([[math.sin(math.pi / 2), 0.0, 0.7]]), atol=1e-6, rtol=0
    )
    assert feats.out_features == 3
    with pytest.raises(ValueError, match=r"period must be > 0, got 0"):
        PeriodicFeatures(1, period=0)
    with pytest.raises(ValueError, match=r"periodic_dims \(2,\) must be distinct columns"):
        PeriodicFeatures(2, period=1.0, periodic_dims=(2,))
    with pytest.raises(ValueError, match=r"expected coordinates \(\.\.\., 2\), got \(4, 3\)"):
        feats(torch.randn(4, 3))


def test_partial_derivatives():
    x = torch.linspace(0, 1, 7, dtype=torch.float64).unsqueeze(1).requires_grad_()
    u = torch.sin(3 * x)
    torch.testing.assert_close(partial(u, x, 0), 3 * torch.cos(3 * x).detach())
    torch.testing.assert_close(partial(u, x, 0, order=2), -9 * torch.sin(3 * x).detach())
    with pytest.raises(ValueError, match=r"x must require grad"):
        partial(u, x.detach(), 0)


def test_shared_boundary_penalty_is_the_stated_formula():
    torch.manual_seed(1)
    u = mlp([2, 8, 1]).double()
    bc = SharedBoundary(2, period=2.0, dim=0, derivatives=1).double()
    t = torch.rand(6, 1, dtype=torch.float64)
    g = bc.boundary(t)
    ends = []
    for x0 in (0.0, 2.0):
        xy = torch.cat([torch.full_like(t, x0), t], 1).requires_grad_()
        val = u(xy)
        ends.append(torch.cat([val, partial(val, xy, 0)], 1))
    expected = ((ends[0] - g) ** 2 + (ends[1] - g) ** 2).sum(-1).mean()
    torch.testing.assert_close(bc.penalty(u, t), expected)
    assert float(bc.mismatch(u, t).detach()) == pytest.approx(
        float((ends[0][:, 0] - ends[1][:, 0]).abs().max().detach())
    )


def test_shared_boundary_training_pulls_the_ends_together():
    torch.manual_seed(2)
    u = mlp([1, 16, 1])
    bc = SharedBoundary(1, period=1.0)  # stationary: g is a learnable number
    opt = torch.optim.Adam([*u.parameters(), *bc.parameters()], lr=0.01)
    t = torch.zeros(1, 0)
    first = float(bc.mismatch(u, t).detach())
    for _ in range(200):
        opt.zero_grad()
        bc.penalty(u, t).backward()
        opt.step()
    assert float(bc.mismatch(u, t).detach()) < 0.05 * first


def test_shared_boundary_errors():
    with pytest.raises(ValueError, match=r"dim must be in \[0, 2\), got 2"):
        SharedBoundary(2, period=1.0, dim=2)
    bc = SharedBoundary(2, period=1.0)
    with pytest.raises(ValueError, match=r"expected t of shape \(N, 1\), got \(3, 2\)"):
        bc.penalty(mlp([2, 4, 1]), torch.zeros(3, 2))
    with pytest.raises(ValueError, match=r"sizes must be at least two positive ints"):
        mlp([3])


def test_periodic_features_built_on_meta_then_to_empty_compute_the_same_features():
    # stop 25 review: omega was a non-persistent buffer; to_empty left uninitialised
    # memory in it (nothing loads it) and the features came out wrong without an error
    ref = PeriodicFeatures(3, period=2.0, periodic_dims=(0,), harmonics=3)
    with torch.device("meta"):
        lazy = PeriodicFeatures(3, period=2.0, periodic_dims=(0,), harmonics=3)
    lazy.to_empty(device="cpu")
    lazy.load_state_dict(ref.state_dict())
    x = torch.randn(5, 3)
    assert torch.equal(lazy(x), ref(x))
    assert torch.equal(lazy.omega, 2 * math.pi * torch.arange(1.0, 4.0, dtype=torch.float64) / 2.0)
    assert dict(ref.named_buffers()) == {} and ref.state_dict() == {}


def test_partial_refuses_a_column_it_would_slice_to_nothing():
    # dim=-1 (or dim=d) sliced the gradient to an empty (N, 0): a PDE residual of no
    # columns, whose mean is NaN and whose sum is 0, with no error
    x = torch.rand(6, 2, dtype=torch.float64, requires_grad=True)
    u = x[:, :1] ** 3 * torch.sin(x[:, 1:])
    torch.testing.assert_close(partial(u, x, -1), partial(u, x, 1), rtol=0, atol=0)
    torch.testing.assert_close(
        partial(u, x, -1), x[:, :1] ** 3 * torch.cos(x[:, 1:]), rtol=0, atol=1e-15
    )
    for dim in (2, -3, True, 0.0):
        with pytest.raises(ValueError, match=r"dim must be an int in \[-2, 2\), got"):
            partial(u, x, dim)
    for order in (0, 1.5, True):
        with pytest.raises(ValueError, match=r"order must be an int >= 1, got"):
            partial(u, x, 0, order=order)


def test_partial_refuses_several_outputs_and_batched_coordinates():
    # u with two columns: the derivative of u.sum() (the sum of both outputs' derivatives)
    # came back as (N, 1); a (B, N, d) x was differentiated along its N axis
    x = torch.rand(6, 2, dtype=torch.float64, requires_grad=True)
    u = torch.cat([x[:, :1] ** 2, x[:, 1:] ** 2], 1)
    with pytest.raises(
        ValueError, match=r"u must hold one value per row of x, \(6, 1\) or \(6,\), got \(6, 2\)"
    ):
        partial(u, x, 0)
    torch.testing.assert_close(partial(u[:, 0], x, 0), 2 * x[:, :1], rtol=0, atol=0)
    xb = torch.rand(2, 3, 2, dtype=torch.float64, requires_grad=True)
    with pytest.raises(ValueError, match=r"x must be coordinates \(N, d\), got shape \(2, 3, 2\)"):
        partial(xb[..., :1] ** 2, xb, 0)


def test_periodic_helpers_refuse_an_infinite_period_and_bools():
    # period=inf made every frequency 0 (features sin 0, cos 0 whatever x); SharedBoundary
    # put the right end at x = inf. True was read as 1 (period, in_features, dim, ...)
    with pytest.raises(ValueError, match=r"period must be > 0, got inf; give a finite number"):
        PeriodicFeatures(1, period=float("inf"))
    with pytest.raises(ValueError, match=r"period must be > 0, got True"):
        PeriodicFeatures(1, period=True)
    with pytest.raises(ValueError, match=r"in_features must be a positive int, got True"):
        PeriodicFeatures(True, period=1.0)
    with pytest.raises(
        ValueError, match=r"periodic_dims must be ints \(column indices\), got \(True,\)"
    ):
        PeriodicFeatures(2, period=1.0, periodic_dims=(True,))
    with pytest.raises(ValueError, match=r"periodic_dims must be ints"):
        PeriodicFeatures(2, period=1.0, periodic_dims=(1.0,))
    with pytest.raises(ValueError, match=r"period must be > 0, got inf; give a finite number"):
        SharedBoundary(2, period=float("inf"))
    with pytest.raises(ValueError, match=r"dim must be in \[0, 2\), got True"):
        SharedBoundary(2, period=1.0, dim=True)
    with pytest.raises(ValueError, match=r"derivatives must be an int >= 0, got True"):
        SharedBoundary(2, period=1.0, derivatives=True)
    with pytest.raises(ValueError, match=r"in_features must be a positive int, got 0"):
        SharedBoundary(0, period=1.0)


@pytest.mark.parametrize("dims", [(0, 0), (1, 1, 2), (2, -1)])
def test_periodic_features_refuse_a_column_named_twice(dims):
    # stop 37: the check counted the set of the dims, so (0, 0) was read as (0,) with no
    # error (a typo for (0, 1) gave one periodic column); (2, -1) was already refused
    with pytest.raises(
        ValueError, match=rf"periodic_dims {re.escape(str(dims))} must be distinct columns"
    ):
        PeriodicFeatures(3, period=2.0, periodic_dims=dims)
    assert PeriodicFeatures(3, period=2.0, periodic_dims=(0, -1)).periodic_dims == (0, 2)


def test_periodic_features_refuse_integer_coordinates():
    # an integer x cast omega = 2πn/L to integers (π became 3 for L = 2): sin(3·1) = 0.14
    # where sin(π·1) = 0, with no error
    feats = PeriodicFeatures(1, period=2.0)
    with pytest.raises(
        ValueError, match=r"coordinates must be floating point, got torch.int64; pass x.float\(\)"
    ):
        feats(torch.ones(2, 1, dtype=torch.long))
    torch.testing.assert_close(
        feats(torch.ones(2, 1, dtype=torch.float64)),
        torch.tensor([[0.0, -1.0]] * 2, dtype=torch.float64),
        rtol=0,
        atol=1e-15,
    )
