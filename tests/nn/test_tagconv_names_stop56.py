"""torch_geometric's TAGConv / GCNConv keywords on MultiHopGraphConv name ours (stop 56).

A TAGConv(in, out, K=3) port got Python's bare "unexpected keyword argument 'K'"; the
adjacency the message points to is checked against TAGConv itself.
"""

import pytest
import torch

from tying.nn.graph import MultiHopGraphConv, normalized_adjacency


@pytest.mark.parametrize(
    ("name", "value", "hint"),
    [
        ("K", 3, r"K \(TAGConv, default 3\) is hops= here"),
        ("normalize", True, r"normalized_adjacency\(edge_index, N, self_loops=False\)"),
        ("add_self_loops", False, r"self loops belong to Â"),
        ("cached", True, r"build it once with normalized_adjacency"),
        ("improved", True, r"A \+ 2I"),
    ],
)
def test_torch_geometric_keyword_names_ours(name, value, hint):
    with pytest.raises(TypeError, match=rf"MultiHopGraphConv: no keyword '{name}' here; .*{hint}"):
        MultiHopGraphConv(5, 3, **{name: value})


def test_other_unknown_keyword_keeps_pythons_message():
    with pytest.raises(TypeError, match=r"unexpected keyword argument 'hopz'"):
        MultiHopGraphConv(5, 3, hopz=2)


def test_the_named_recipe_is_tagconv():
    """hops=K, shared=False on normalized_adjacency(self_loops=False) is TAGConv; the
    default self_loops=True is not (the message warns of it)."""
    tg = pytest.importorskip("torch_geometric.nn")
    torch.manual_seed(0)
    edges = torch.tensor([[0, 1, 1, 2, 2, 3, 0, 3], [1, 0, 2, 1, 3, 2, 3, 0]])
    x = torch.randn(4, 5)
    tag = tg.TAGConv(5, 3, K=2)
    ours = MultiHopGraphConv(5, 3, hops=2, shared=False)
    with torch.no_grad():
        for k in range(3):
            ours.hops[k].weight.copy_(tag.lins[k].weight)
        ours.bias.copy_(tag.bias)
        want = tag(x, edges)
        same = ours(x, normalized_adjacency(edges, 4, self_loops=False))
        other = ours(x, normalized_adjacency(edges, 4))
    torch.testing.assert_close(same, want, atol=1e-6, rtol=1e-5)
    assert (other - want).abs().max() > 0.1
