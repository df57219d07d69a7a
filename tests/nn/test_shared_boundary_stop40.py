"""Stop 40: SharedBoundary with a network that returns ``(N,)`` (or several outputs).

A ``u`` returning one value per point as ``(N,)`` broadcast against ``g(t)``'s ``(N, 1)``
into ``(N, N)``: the penalty summed every point's value against every point's boundary
(1.129 for a true 0.240) with no error, and ``mismatch`` died on an IndexError. Several
outputs ``(N, 2)`` were all pulled to one boundary value.
"""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from tying.nn import SharedBoundary, mlp


def at(u, t, dim, x_value):
    """u at x = x_value in column ``dim``, the other columns t: ``(N,)``, written out."""
    x = torch.full((t.shape[0], 1), x_value, dtype=t.dtype)
    return u(torch.cat([t[:, :dim], x, t[:, dim:]], dim=1)).reshape(-1)


def test_a_flat_output_gives_the_penalty_of_the_column_output():
    torch.manual_seed(0)
    u = mlp([2, 8, 1]).double()
    bc = SharedBoundary(2, 1.0).double()
    t = torch.rand(5, 1, dtype=torch.float64)
    column = bc.penalty(u, t)
    flat = bc.penalty(lambda c: u(c).squeeze(-1), t)  # old code: 1.129 for 0.240
    g = bc.boundary(t)[:, 0]
    want = ((at(u, t, 0, 0.0) - g) ** 2 + (at(u, t, 0, 1.0) - g) ** 2).mean()
    torch.testing.assert_close(column, want)
    torch.testing.assert_close(flat, want)
    torch.testing.assert_close(bc.mismatch(lambda c: u(c).squeeze(-1), t), bc.mismatch(u, t))


@pytest.mark.parametrize("derivatives", [0, 1])
def test_several_outputs_are_refused_naming_the_fix(derivatives):
    torch.manual_seed(1)
    u = mlp([2, 8, 2])
    bc = SharedBoundary(2, 1.0, derivatives=derivatives)
    t = torch.rand(4, 1)
    with pytest.raises(ValueError, match=r"one value per point, \(4, 1\) or \(4,\), got \(4, 2\)"):
        bc.penalty(u, t)
    with pytest.raises(ValueError, match=r"u\(c\)\[:, j:j\+1\]"):
        bc.mismatch(u, t)


def test_mismatch_and_ends_check_t_as_penalty_does():
    bc = SharedBoundary(3, 1.0)
    u = mlp([3, 4, 1])
    for call in (bc.mismatch, bc.ends):
        with pytest.raises(ValueError, match=r"expected t of shape \(N, 2\), got \(4, 1\)"):
            call(u, torch.rand(4, 1))


@settings(derandomize=True, deadline=None, max_examples=15)
@given(
    width=st.integers(1, 4),
    dim_frac=st.floats(0, 0.999),
    period=st.floats(0.5, 3.0),
    flat=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_property_penalty_is_the_written_out_formula(width, dim_frac, period, flat, seed):
    """The kind of defect: shapes broadcast into a wrong number. For any width, periodic
    column, period and output layout, the penalty is ``mean (u(0,t)−g)² + (u(L,t)−g)²``."""
    torch.manual_seed(seed)
    dim = int(dim_frac * width)
    net = mlp([width, 6, 1]).double()
    u = (lambda c: net(c).squeeze(-1)) if flat else net
    bc = SharedBoundary(width, period, dim=dim).double()
    t = torch.rand(7, width - 1, dtype=torch.float64)
    g = bc.boundary(t)[:, 0]
    want = ((at(net, t, dim, 0.0) - g) ** 2 + (at(net, t, dim, period) - g) ** 2).mean()
    torch.testing.assert_close(bc.penalty(u, t), want)
    mismatch = (at(net, t, dim, 0.0) - at(net, t, dim, period)).abs().max()
    torch.testing.assert_close(bc.mismatch(u, t), mismatch)
