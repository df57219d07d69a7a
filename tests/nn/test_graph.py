"""Multi-hop graph convolution with one shared transform (B12)."""

from __future__ import annotations

import copy
import importlib.util
import warnings

import pytest
import torch

import tying
from tying.nn import MultiHopGraphConv, normalized_adjacency


def _graph(n: int = 30, e: int = 80, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    src, dst = torch.randint(n, (e,), generator=g), torch.randint(n, (e,), generator=g)
    keep = src != dst
    return torch.stack([torch.cat([src[keep], dst[keep]]), torch.cat([dst[keep], src[keep]])])


def _dense_reference(conv: MultiHopGraphConv, x, adj):
    a = adj.to_dense()
    out = sum(
        torch.linalg.matrix_power(a, k) @ x @ conv.hops[k].weight.T for k in range(conv.K + 1)
    )
    return out + conv.bias


@pytest.mark.parametrize("shared", [True, False])
def test_matches_dense_reference(shared):
    torch.manual_seed(0)
    edges = _graph()
    adj = normalized_adjacency(edges, 30, dtype=torch.float64)
    conv = MultiHopGraphConv(6, 4, hops=3, shared=shared).double()
    if shared:
        with torch.no_grad():  # scales away from 1 so the test sees them
            for k, hop in enumerate(conv.hops[1:], start=1):
                hop.weight_scale.fill_(0.5**k)
    x = torch.randn(30, 6, dtype=torch.float64)
    torch.testing.assert_close(conv(x, adj), _dense_reference(conv, x, adj))


def test_shared_weights_are_scaled_copies_and_counted():
    conv = MultiHopGraphConv(16, 8, hops=4)
    c = tying.count(conv)
    assert c.physical == 16 * 8 + 4 + 8  # one W, 4 hop scalars, bias
    assert c.logical == 5 * 16 * 8 + 8
    assert tying.count(MultiHopGraphConv(16, 8, hops=4, shared=False)).physical == c.logical
    with torch.no_grad():
        conv.hops[2].weight_scale.fill_(-3.0)
    torch.testing.assert_close(conv.hops[2].weight, -3.0 * conv.hops[0].weight)


def test_tie_survives_a_step_and_hop_scales_learn():
    torch.manual_seed(1)
    adj = normalized_adjacency(_graph(), 30)
    conv = MultiHopGraphConv(5, 3, hops=2)
    opt = torch.optim.SGD(conv.parameters(), lr=0.1)
    conv(torch.randn(30, 5), adj).pow(2).sum().backward()
    assert conv.hops[1].weight_scale.grad is not None
    opt.step()
    assert float(conv.hops[1].weight_scale.detach()) != 1.0
    torch.testing.assert_close(conv.hops[1].weight, conv.hops[1].weight_scale * conv.hops[0].weight)


def test_untie_keeps_outputs():
    torch.manual_seed(2)
    adj = normalized_adjacency(_graph(), 30)
    conv = MultiHopGraphConv(5, 3, hops=2)
    x = torch.randn(30, 5)
    before = conv(x, adj)
    tying.untie(conv)
    assert tying.count(conv).physical == tying.count(conv).logical
    torch.testing.assert_close(conv(x, adj), before)


def test_normalized_adjacency():
    edges = torch.tensor([[0, 1, 1, 2], [1, 0, 2, 1]])  # path 0-1-2
    a = normalized_adjacency(edges, 3).to_dense()
    torch.testing.assert_close(a, a.T)
    deg = torch.tensor([2.0, 3.0, 2.0])  # with self loops
    expected = (torch.eye(3) + torch.tensor([[0, 1, 0], [1, 0, 1], [0, 1, 0.0]])) / torch.outer(
        deg.sqrt(), deg.sqrt()
    )
    torch.testing.assert_close(a, expected)
    with pytest.raises(ValueError, match=r"node ids must lie in \[0, 2\), got \[0, 2\]"):
        normalized_adjacency(edges, 2)
    with pytest.raises(ValueError, match=r"must be a \(2, E\) integer tensor"):
        normalized_adjacency(edges.float(), 3)


def test_fan_in_and_errors():
    conv = MultiHopGraphConv(6, 4, hops=2)
    assert tying.fan_in(conv) == 18
    adj = normalized_adjacency(_graph(), 30)
    with pytest.raises(ValueError, match=r"expected a sparse adjacency \(30, 30\).*got dense"):
        conv(torch.randn(30, 6), adj.to_dense())
    with pytest.raises(ValueError, match=r"expected node features \(N, 6\), got \(30, 5\)"):
        conv(torch.randn(30, 5), adj)
    with pytest.raises(ValueError, match=r"hops must be an int >= 0, got -1"):
        MultiHopGraphConv(6, 4, hops=-1)


def test_a_boolean_edge_index_or_a_bool_node_count_is_refused():
    # stop 31: a bool (2, E) tensor was read as node ids 0 and 1 (every edge 0-1), and
    # num_nodes=True as one node, with no error
    edges = torch.tensor([[0, 1, 2], [1, 2, 0]])
    with pytest.raises(ValueError, match=r"integer tensor, got torch.bool of shape \(2, 3\)"):
        normalized_adjacency(edges.bool(), 3)
    with pytest.raises(ValueError, match=r"num_nodes must be an int >= 0, got True"):
        normalized_adjacency(torch.tensor([[0], [0]]), True)
    with pytest.raises(ValueError, match=r"num_nodes must be an int >= 0, got -1"):
        normalized_adjacency(torch.zeros(2, 0, dtype=torch.long), -1)


@pytest.mark.skipif(
    importlib.util.find_spec("torch_geometric") is None, reason="torch_geometric not installed"
)
def test_per_hop_equals_torch_geometric_tagconv():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from torch_geometric.nn import TAGConv
    torch.manual_seed(3)
    edges = _graph()
    tag = TAGConv(6, 4, K=3).double()
    ours = MultiHopGraphConv(6, 4, hops=3, shared=False).double()
    with torch.no_grad():
        for hop, lin in zip(ours.hops, tag.lins):
            hop.weight.copy_(lin.weight)
        ours.bias.copy_(tag.bias)
    x = torch.randn(30, 6, dtype=torch.float64)
    adj = normalized_adjacency(edges, 30, self_loops=False, dtype=torch.float64)
    torch.testing.assert_close(ours(x, adj), tag(x, edges))


def _dense_from_gcn_norm(edges, n, add_self_loops):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from torch_geometric.nn.conv.gcn_conv import gcn_norm
    index, weight = gcn_norm(edges, None, n, add_self_loops=add_self_loops, dtype=torch.float64)
    dense = torch.zeros(n, n, dtype=torch.float64)
    return dense.index_put_((index[1], index[0]), weight, accumulate=True)


@pytest.mark.skipif(
    importlib.util.find_spec("torch_geometric") is None, reason="torch_geometric not installed"
)
@pytest.mark.parametrize("seed", range(12))
@pytest.mark.parametrize("self_loops", [True, False])
def test_normalized_adjacency_equals_torch_geometric_gcn_norm(seed, self_loops):
    # random directed graphs with given self loops, repeated edges and isolated nodes
    gen = torch.Generator().manual_seed(seed)
    n = int(torch.randint(2, 12, (1,), generator=gen))
    e = int(torch.randint(0, 3 * n, (1,), generator=gen))
    edges = torch.randint(0, n, (2, e), generator=gen)
    loops = torch.randint(0, n, (int(torch.randint(1, 4, (1,), generator=gen)),), generator=gen)
    edges = torch.cat([edges, loops.expand(2, -1), edges[:, : e // 3]], dim=1)
    ours = normalized_adjacency(edges, n, self_loops=self_loops, dtype=torch.float64)
    torch.testing.assert_close(
        ours.to_dense(), _dense_from_gcn_norm(edges, n, self_loops), rtol=0, atol=1e-12
    )


def test_given_self_loop_weighs_one_not_two():
    # path 0-1-2 with a loop already on node 2: Â = D^-1/2 (A + I) D^-1/2 has Â[2,2] = 1/2
    edges = torch.tensor([[0, 1, 1, 2, 2], [1, 0, 2, 1, 2]])
    a = normalized_adjacency(edges, 3, dtype=torch.float64).to_dense()
    assert a[2, 2].item() == pytest.approx(0.5, abs=1e-15)
    plain = normalized_adjacency(edges[:, :4], 3, dtype=torch.float64).to_dense()
    torch.testing.assert_close(a, plain, rtol=0, atol=0)


@pytest.mark.parametrize("dtype", [torch.bool, torch.int64, torch.complex64, "float32"])
def test_a_dtype_that_is_not_floating_point_is_refused(dtype):
    # dtype=torch.bool summed the degrees as a logical or: A + I came back with every
    # weight 1, not normalised, with no error (int64 came back as float32, not int64)
    edges = torch.tensor([[0, 1, 1, 2], [1, 0, 2, 1]])
    with pytest.raises(ValueError, match=r"dtype must be a floating-point torch.dtype .* got"):
        normalized_adjacency(edges, 3, dtype=dtype)
    for ok in (torch.float16, torch.bfloat16, torch.float64):
        assert normalized_adjacency(edges, 3, dtype=ok).dtype == ok


@pytest.mark.parametrize("shared", [True, False])
def test_autocast_forward_and_backward_run(shared):
    # sparse.mm's backward under CPU autocast met the float32 adjacency and failed
    # ("expected scalar type Float but found BFloat16"); Â is cast as autocast casts it
    torch.manual_seed(0)
    conv = MultiHopGraphConv(6, 4, hops=3, shared=shared)
    adj = normalized_adjacency(_graph(20, 50), 20)
    x = torch.randn(20, 6, requires_grad=True)
    ref = conv(x, adj)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = conv(x, adj)
    y.float().square().sum().backward()
    err = ((y.detach().float() - ref.detach()).norm() / ref.detach().norm()).item()
    assert err < 2e-2, err  # bfloat16 round-off
    assert x.grad is not None and torch.isfinite(x.grad).all()
    assert all(p.grad is not None for p in conv.parameters())


def test_an_adjacency_of_another_dtype_is_refused_by_name():
    conv = MultiHopGraphConv(6, 4).double()
    adj = normalized_adjacency(_graph(20, 50), 20)  # float32 by default
    with pytest.raises(
        ValueError,
        match=r"adjacency is torch.float32 but the node features are "
        r"torch.float64.*dtype=torch.float64",
    ):
        conv(torch.randn(20, 6, dtype=torch.float64), adj)


@pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:DeprecationWarning")
@pytest.mark.parametrize("shared", [True, False])
def test_forward_mode_ad_and_jacfwd_match_the_dense_adjacency(shared):
    # stop 34: sparse mm has no forward derivative ("Trying to use forward AD with
    # _sparse_addmm"); forward AD propagates over Â's entries by gather and index_add
    import torch.autograd.forward_ad as fwAD

    torch.manual_seed(0)
    conv = MultiHopGraphConv(3, 2, hops=3, shared=shared).double()
    edges = torch.tensor([[0, 1, 1, 2, 2, 3, 0], [1, 0, 2, 1, 3, 2, 0]])
    adj = normalized_adjacency(edges, 4, dtype=torch.float64)
    dense = adj.to_dense()
    x = torch.randn(4, 3, dtype=torch.float64)

    def reference(x):  # the same layer with Â as a dense matrix
        h, out = x, torch.zeros(4, 2, dtype=torch.float64)
        for hop in conv.hops:
            out = out + h @ hop.weight.T
            h = dense @ h
        return out + conv.bias

    plain = conv(x, adj)
    torch.testing.assert_close(plain, reference(x), rtol=1e-12, atol=1e-12)
    t = torch.randn_like(x)
    with fwAD.dual_level():
        tangent = fwAD.unpack_dual(conv(fwAD.make_dual(x, t), adj)).tangent
    expected = torch.func.jvp(reference, (x,), (t,))[1]
    torch.testing.assert_close(tangent, expected, rtol=1e-12, atol=1e-12)
    jac = torch.func.jacfwd(lambda x: conv(x, adj))(x)
    torch.testing.assert_close(jac, torch.func.jacrev(reference)(x), rtol=1e-12, atol=1e-12)
    assert torch.equal(conv(x, adj), plain)  # outside forward AD: sparse mm, as before


@pytest.mark.parametrize("shared", [True, False])
@pytest.mark.parametrize("how", ["prune", "spectral_norm"])
def test_a_reparametrised_hop_weight_is_read_at_its_current_value(how, shared):
    # stop 35: the hop Linears are read, never called, so the pre-hook that writes a
    # pruned / spectral-normed weight never ran: an eval call after training read the
    # weight as it was when reparametrised (no error), a second pruned step failed
    from torch.nn.utils import prune

    torch.manual_seed(0)
    conv = MultiHopGraphConv(5, 3, hops=2, shared=shared).double()
    if how == "prune":
        prune.l1_unstructured(conv.hops[0], "weight", amount=0.5)
    else:
        torch.nn.utils.spectral_norm(conv.hops[0])
    adj = normalized_adjacency(_graph(12, 30), 12, dtype=torch.float64)
    x = torch.randn(12, 5, dtype=torch.float64)
    opt = torch.optim.SGD(conv.parameters(), lr=0.3)
    for _ in range(3):
        opt.zero_grad()
        conv(x, adj).square().sum().backward()
        opt.step()
    conv.eval()
    with torch.no_grad():
        got = conv(x, adj)
        plain = copy.deepcopy(conv)  # computes the weight now, as a plain parameter
        if how == "prune":
            prune.remove(plain.hops[0], "weight")
        else:
            torch.nn.utils.remove_spectral_norm(plain.hops[0])
        assert torch.equal(got, plain(x, adj))
