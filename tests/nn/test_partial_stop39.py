"""Stop 39: ``partial`` of a derivative that no longer depends on x.

The second derivative of a function linear in x (``3·x``, a linear layer, a PDE term of
a linear ansatz) is 0, but ``torch.autograd.grad`` crashed on it ("element 0 of tensors
does not require grad and does not have a grad_fn"), as did ``SharedBoundary.penalty``
with ``derivatives=2`` on such a network. A ``u`` not computed from ``x`` at all is a
mistake and is refused by name, never returned as a zero derivative.
"""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from tying.nn import SharedBoundary, mlp, partial


def test_second_derivative_of_a_linear_function_is_zero():
    x = torch.linspace(0, 1, 5, dtype=torch.float64).unsqueeze(1).requires_grad_()
    assert partial(3 * x, x, 0).detach().squeeze().tolist() == [3.0] * 5
    for order in (2, 3):
        d = partial(3 * x, x, 0, order=order)
        assert d.shape == (5, 1) and d.dtype == torch.float64
        assert torch.equal(d, torch.zeros(5, 1, dtype=torch.float64))


def test_second_derivative_of_a_linear_layer_matches_its_weight_then_zero():
    torch.manual_seed(0)
    lin = torch.nn.Linear(2, 1)
    x = torch.rand(6, 2).requires_grad_()
    first = partial(lin(x), x, 1)
    assert torch.allclose(first, lin.weight[0, 1].expand(6, 1))
    assert torch.equal(partial(lin(x), x, 1, order=2), torch.zeros(6, 1))


def test_shared_boundary_penalty_with_second_derivatives_of_a_linear_net():
    torch.manual_seed(0)
    u = torch.nn.Linear(2, 1)
    bc = SharedBoundary(2, period=1.0, derivatives=2)
    t = torch.rand(7, 1)
    left, right = bc.ends(u, t)
    # u = a·x + b·t + c: u(L) − u(0) = a·L, ∂u/∂x = a at both ends, ∂²u/∂x² = 0
    a = u.weight[0, 0]
    assert torch.allclose(right[:, 0] - left[:, 0], a.expand(7), atol=1e-6)
    assert torch.allclose(left[:, 1], a.expand(7)) and torch.allclose(right[:, 1], a.expand(7))
    assert torch.equal(left[:, 2], torch.zeros(7)) and torch.equal(right[:, 2], torch.zeros(7))
    assert math.isfinite(float(bc.penalty(u, t).detach()))


def test_u_not_computed_from_x_is_refused_not_read_as_zero():
    net = mlp([2, 4, 1])
    x = torch.rand(3, 2).requires_grad_()
    with pytest.raises(ValueError, match=r"partial: u was not computed from x"):
        partial(net(x.detach().clone().requires_grad_()), x, 0)
    with torch.no_grad():
        u = net(x)
    with pytest.raises(ValueError, match=r"partial: u has no graph back to x"):
        partial(u, x, 0)


@settings(derandomize=True, deadline=None, max_examples=25)
@given(
    coefs=st.lists(st.integers(-3, 3), min_size=1, max_size=4),
    order=st.integers(1, 4),
)
def test_partial_of_a_polynomial_equals_its_exact_derivative(coefs, order):
    # u = Σ c_k x^k written with Python-number coefficients: every derivative past the
    # degree is exactly 0 and must come back as zeros, not a crash
    x = torch.linspace(-1, 1, 7, dtype=torch.float64).unsqueeze(1).requires_grad_()
    u = sum(c * x**k for k, c in enumerate(coefs) if k) + coefs[0] + 0 * x
    got = partial(u, x, 0, order=order).detach().squeeze(1)
    xs = x.detach().squeeze(1)
    exact = torch.zeros_like(xs)
    for k, c in enumerate(coefs):
        if k >= order:
            exact += c * math.perm(k, order) * xs ** (k - order)
    assert torch.allclose(got, exact, atol=1e-12)
