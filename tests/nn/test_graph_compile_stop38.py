"""``MultiHopGraphConv`` under ``torch.compile(fullgraph=True)`` through ``EdgeAdjacency`` (stop 38).

A sparse Â cannot enter a ``fullgraph=True`` graph (torch's "Attempted to wrap sparse
Tensor"). Its entries as an :class:`~tying.nn.EdgeAdjacency` can: the layer then
propagates with a gather and an ``index_add``. Compared with torch_geometric's
``TAGConv`` (the per-hop form), the sparse path and dense powers of Â.
"""

from __future__ import annotations

import warnings

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from tying.nn import EdgeAdjacency, MultiHopGraphConv, normalized_adjacency


def _graph(n=12, e=30, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, n, (2, e), generator=g)  # directed, loops and repeats included


def _dense_reference(conv, x, dense):
    """``Σ_k Â^k X W_kᵀ + b`` with dense powers of Â, each hop's logical weight as read."""
    out, h = 0, x
    for k, hop in enumerate(conv.hops):
        if k:
            h = dense @ h
        out = out + h @ hop.weight.T
    return out + conv.bias


@pytest.mark.parametrize("shared", [True, False])
def test_fullgraph_compile_runs_with_edge_adjacency_and_equals_eager(shared):
    torch.manual_seed(0)
    conv = MultiHopGraphConv(5, 3, hops=3, shared=shared).double()
    adj = normalized_adjacency(_graph(), 12, dtype=torch.float64)
    x = torch.randn(12, 5, dtype=torch.float64)
    eager = conv(x, adj)
    compiled = torch.compile(conv, fullgraph=True, backend="aot_eager")
    with pytest.raises(Exception, match="sparse"):  # torch's refusal of the sparse Â
        compiled(x, adj)
    torch._dynamo.reset()
    out = compiled(x, EdgeAdjacency.from_sparse(adj))
    torch.testing.assert_close(out, eager, rtol=0, atol=1e-13)
    torch.testing.assert_close(out, _dense_reference(conv, x, adj.to_dense()), rtol=0, atol=1e-13)
    # and it trains: the gradient reaches the one stored matrix and the hop scales
    out.square().sum().backward()
    grads = [p.grad for p in conv.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    torch._dynamo.reset()


def test_compiled_per_hop_layer_equals_torch_geometric_tagconv():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from torch_geometric.nn import TAGConv
    torch.manual_seed(3)
    edges = _graph(seed=3)
    tag = TAGConv(6, 4, K=3).double()
    ours = MultiHopGraphConv(6, 4, hops=3, shared=False).double()
    with torch.no_grad():
        for hop, lin in zip(ours.hops, tag.lins, strict=True):
            hop.weight.copy_(lin.weight)
        ours.bias.copy_(tag.bias)
    x = torch.randn(12, 6, dtype=torch.float64)
    adj = normalized_adjacency(edges, 12, self_loops=False, dtype=torch.float64)
    compiled = torch.compile(ours, fullgraph=True, backend="aot_eager")
    out = compiled(x, EdgeAdjacency.from_sparse(adj))
    torch.testing.assert_close(out, tag(x, edges), rtol=0, atol=1e-13)
    torch._dynamo.reset()


def test_edge_adjacency_under_autocast_matches_the_sparse_path():
    torch.manual_seed(1)
    conv = MultiHopGraphConv(5, 3, hops=2)
    adj = normalized_adjacency(_graph(), 12)
    x = torch.randn(12, 5)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        a, b = conv(x, adj), conv(x, EdgeAdjacency.from_sparse(adj))
    assert a.dtype == b.dtype
    torch.testing.assert_close(b, a, rtol=0.02, atol=0.02)  # bfloat16 rounding, summed apart


def test_a_plain_pair_is_refused_naming_edge_adjacency():
    conv = MultiHopGraphConv(5, 3, hops=2)
    adj = normalized_adjacency(_graph(), 12)
    x = torch.randn(12, 5)
    with pytest.raises(ValueError, match=r"got tuple; a plain pair .*EdgeAdjacency.from_sparse"):
        conv(x, (adj.indices(), adj.values()))


@pytest.mark.parametrize(
    ("index", "weight", "match"),
    [
        ([[0, 1], [1, -1]], [1.0, 1.0], r"node ids must lie in \[0, 12\).*got \[-1, 1\]"),
        ([[0, 12], [1, 2]], [1.0, 1.0], r"node ids must lie in \[0, 12\).*got \[0, 12\]"),
        ([[0.0, 1.0], [1.0, 2.0]], [1.0, 1.0], r"index \(2, E\) integers.*torch.float32"),
        ([[0, 1], [1, 2]], [1.0], r"weight \(E,\) floating point.*\(1,\)"),
        ([[0, 1], [1, 2]], [1, 1], r"weight \(E,\) floating point.*torch.int64"),
    ],
)
def test_bad_edge_adjacency_is_refused_by_name(index, weight, match):
    conv = MultiHopGraphConv(5, 3, hops=2)
    pair = EdgeAdjacency(torch.tensor(index), torch.tensor(weight))
    with pytest.raises(ValueError, match=match):  # -1 was read as the last node
        conv(torch.randn(12, 5), pair)


def test_an_edge_weight_of_another_dtype_is_refused():
    conv = MultiHopGraphConv(5, 3, hops=2)
    pair = EdgeAdjacency.from_sparse(normalized_adjacency(_graph(), 12, dtype=torch.float64))
    with pytest.raises(ValueError, match=r"adjacency is torch.float64 but the node features"):
        conv(torch.randn(12, 5), pair)


def test_from_sparse_refuses_a_dense_matrix():
    with pytest.raises(ValueError, match=r"expected a sparse COO Â.*got dense \(3, 3\)"):
        EdgeAdjacency.from_sparse(torch.eye(3))


@settings(derandomize=True, deadline=None, max_examples=25)
@given(
    n=st.integers(1, 9),
    e=st.integers(0, 25),
    hops=st.integers(0, 3),
    shared=st.booleans(),
    self_loops=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_property_edge_adjacency_equals_dense_powers_and_the_sparse_path(
    n, e, hops, shared, self_loops, seed
):
    """Any directed graph (loops, repeats, isolated nodes): the entry form propagates
    along Â[dst, src] exactly as the sparse Â and dense powers do (a transposed or
    wrapped read would differ on a directed graph)."""
    torch.manual_seed(seed)
    edges = torch.randint(0, n, (2, e))
    adj = normalized_adjacency(edges, n, self_loops=self_loops, dtype=torch.float64)
    conv = MultiHopGraphConv(4, 3, hops=hops, shared=shared).double()
    with torch.no_grad():
        for hop in conv.hops[1:]:
            scale = hop._parameters.get("weight_scale")
            if scale is not None:
                scale.uniform_(-2, 2)  # hop scales away from their start of 1
    x = torch.randn(n, 4, dtype=torch.float64)
    out = conv(x, EdgeAdjacency.from_sparse(adj))
    torch.testing.assert_close(out, conv(x, adj), rtol=0, atol=1e-12)
    torch.testing.assert_close(out, _dense_reference(conv, x, adj.to_dense()), rtol=0, atol=1e-12)


def test_a_csr_adjacency_is_named_by_its_layout_not_called_dense():
    conv = MultiHopGraphConv(5, 3, hops=2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch's "sparse CSR support is in beta"
        csr = normalized_adjacency(_graph(), 12).to_sparse_csr()
    with pytest.raises(ValueError, match=r"got torch.sparse_csr \(12, 12\).*adj.to_sparse_coo\(\)"):
        conv(torch.randn(12, 5), csr)


# torch.func's first jacfwd scripts a helper (torch's warning, as in test_graph.py)
@pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:DeprecationWarning")
def test_edge_adjacency_runs_under_jacrev_and_vmap_equal_to_the_sparse_path():
    """torch.func's jacrev cannot expand a sparse Â (torch's "expand is unsupported for
    Sparse tensors"); the entry form can, equal to jacfwd through the sparse Â."""
    from torch.func import jacfwd, jacrev, vmap

    torch.manual_seed(0)
    adj = normalized_adjacency(_graph(n=6, e=10), 6, dtype=torch.float64)
    pair = EdgeAdjacency.from_sparse(adj)
    conv = MultiHopGraphConv(3, 2, hops=2).double()
    x = torch.randn(6, 3, dtype=torch.float64)
    want = jacfwd(lambda x: conv(x, adj))(x)
    torch.testing.assert_close(jacrev(lambda x: conv(x, pair))(x), want, rtol=0, atol=1e-14)
    xs = torch.randn(4, 6, 3, dtype=torch.float64)
    batched = vmap(lambda x: conv(x, pair))(xs)
    torch.testing.assert_close(batched, torch.stack([conv(x, adj) for x in xs]), rtol=0, atol=1e-14)
