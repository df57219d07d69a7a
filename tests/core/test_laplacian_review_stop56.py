"""Review of d76de10: networkx's G.edges (a Mapping of pairs to empty dicts) is edges."""

import pytest
import torch

from tying.core.soft import laplacian_penalty

nx = pytest.importorskip("networkx")


def test_an_unweighted_networkx_edge_view_is_read_as_its_pairs():
    params = [torch.full((3,), float(i)) for i in range(4)]
    g = nx.path_graph(4)
    expected = laplacian_penalty(params, list(g.edges), 1.0)  # 3 edges * 3 * 1**2 / 2
    assert float(expected) == 4.5
    assert float(laplacian_penalty(params, g.edges, 1.0)) == 4.5  # TypeError since d76de10


def test_a_weighted_networkx_edge_view_is_still_refused():
    g = nx.Graph()
    g.add_edge(0, 1, weight=10.0)
    with pytest.raises(TypeError, match="edges must be pairs"):
        laplacian_penalty([torch.zeros(2), torch.ones(2)], g.edges, 1.0)
    with pytest.raises(TypeError, match="edges must be pairs"):
        laplacian_penalty([torch.zeros(2), torch.ones(2)], {(0, 1): 10.0}, 1.0)
