"""Stop 59: an edge given both ways (torch_geometric's undirected edge_index) counted twice."""

import pytest
import torch

from tying.soft import laplacian_penalty


def _members():
    torch.manual_seed(0)
    return [torch.randn(3, dtype=torch.float64, requires_grad=True) for _ in range(4)]


def test_an_edge_and_its_reverse_are_refused_naming_both_opt_ins():
    a, b = torch.zeros(2), torch.ones(2)
    assert laplacian_penalty([a, b], [(0, 1)], lam=2.0).item() == 2.0
    # it came back 4.0 with no word: the undirected edge counted once per direction
    with pytest.raises(ValueError, match=r"edge \(1, 0\) and its reverse \(0, 1\) are both"):
        laplacian_penalty([a, b], [[0, 1], [1, 0]], lam=2.0)
    with pytest.raises(ValueError, match="pass undirected=True to count each pair once"):
        laplacian_penalty({"a": a, "b": b}, [("a", "b"), ("b", "a")], lam=2.0)
    assert laplacian_penalty([a, b], [[0, 1], [1, 0]], lam=2.0, undirected=True).item() == 2.0
    assert laplacian_penalty([a, b], [[0, 1], [1, 0]], lam=2.0, undirected=False).item() == 4.0


def test_undirected_true_is_the_laplacian_quadratic_form_of_a_both_ways_edge_index():
    p = _members()
    one_way = [(0, 1), (1, 2), (2, 3), (0, 3)]
    both_ways = [e for i, j in one_way for e in ((i, j), (j, i))]  # to_undirected's layout
    got = laplacian_penalty(p, both_ways, lam=1.5, undirected=True)
    theta = torch.stack(p)  # (N, 3)
    adj = torch.zeros(4, 4, dtype=torch.float64)
    for i, j in both_ways:
        adj[i, j] = 1.0
    lap = torch.diag(adj.sum(1)) - adj  # L = D - A
    assert torch.allclose(got, 0.75 * torch.trace(theta.T @ lap @ theta))
    assert torch.allclose(got, laplacian_penalty(p, one_way, lam=1.5))
    got.backward()  # d/dθ0 = λ Σ_(j~0) (θ0 − θj), each neighbour once
    assert torch.allclose(p[0].grad, 1.5 * ((p[0] - p[1]) + (p[0] - p[3])).detach())


def test_legitimate_variants_still_pass():
    p = _members()
    # a self loop adds nothing and is no "reverse" of itself; a repeated edge is a multigraph's
    assert laplacian_penalty(p, [(0, 0), (0, 1)], lam=1.0) == laplacian_penalty(p, [(0, 1)], 1.0)
    twice = laplacian_penalty(p, [(0, 1), (0, 1)], lam=1.0)
    assert torch.allclose(twice, 2 * laplacian_penalty(p, [(0, 1)], lam=1.0))
    once = laplacian_penalty(p, [(0, 1), (0, 1), (1, 0)], lam=1.0, undirected=True)
    assert torch.allclose(once, laplacian_penalty(p, [(0, 1)], lam=1.0))
    assert laplacian_penalty(p, [], lam=1.0, undirected=True).item() == 0.0
    assert torch.autograd.gradcheck(
        lambda *ps: laplacian_penalty(list(ps), [(0, 1), (1, 0), (2, 3)], 0.7, undirected=True),
        p,
    )


def test_undirected_must_be_a_bool_or_none():
    a, b = torch.zeros(2), torch.ones(2)
    with pytest.raises(TypeError, match="undirected must be True, False or None, got str 'yes'"):
        laplacian_penalty([a, b], [(0, 1)], lam=1.0, undirected="yes")


def test_the_edge_index_advice_names_undirected_and_works_when_followed():
    a, b = torch.zeros(2), torch.ones(2)
    edge_index = torch.tensor([[0, 1, 0], [1, 0, 0]])
    with pytest.raises(TypeError, match=r"edge_index\.T\.tolist\(\).*with undirected=True"):
        laplacian_penalty([a, b], edge_index, lam=2.0)
    got = laplacian_penalty([a, b], edge_index.T.tolist(), lam=2.0, undirected=True)
    assert got.item() == 2.0
