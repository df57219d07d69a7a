"""Stop 56: MultiHopGraphConv with a sparse Â under torch.func transforms.

``jacrev`` failed inside torch with "expand is unsupported for Sparse tensors", ``jacfwd``
with "Cannot access storage of SparseTensorImpl", and ``vmap`` warned that sparse ``mm``
has no batching rule (an error under ``-W error``); only the ``EdgeAdjacency`` form ran.
Under a transform the sparse Â is read through its entries now, as for forward-mode AD.
Anchor: the same layer by hand (dense Â, explicit hop weights), and autograd's gradient.
"""

from __future__ import annotations

import pytest
import torch
from torch.func import functional_call, jacfwd, jacrev, vmap

from tying.nn import MultiHopGraphConv, normalized_adjacency

_EDGES = torch.tensor([[0, 1, 1, 2, 2, 3, 3, 0], [1, 0, 2, 1, 3, 2, 0, 3]])


def _setup(shared=True):
    torch.manual_seed(0)
    conv = MultiHopGraphConv(3, 2, hops=2, shared=shared).double()
    with torch.no_grad():  # scales other than their initial 1, so a wrong hop shows
        for k, hop in enumerate(conv.hops):
            if "weight_scale" in hop._parameters:
                hop.weight_scale.fill_(0.5 + k)
    x = torch.randn(4, 3, dtype=torch.float64)
    return conv, x, normalized_adjacency(_EDGES, 4, dtype=torch.float64)


def _by_hand(params, x, adj, hops=2):
    """sum_k (Â^k x) W_k^T + b, Â dense; a shared W_k is its scale times hops.0.weight."""
    dense, h, w0 = adj.to_dense(), x, params["hops.0.weight"]
    out = h @ w0.T
    for k in range(1, hops + 1):
        h = dense @ h
        w = params.get(f"hops.{k}.weight")
        w = params[f"hops.{k}.weight_scale"] * w0 if w is None else w
        out = out + h @ w.T
    return out + params["bias"]


@pytest.mark.parametrize("shared", [True, False])
@pytest.mark.parametrize("transform", [jacrev, jacfwd])
def test_parameter_jacobian_through_a_sparse_adjacency(transform, shared):
    conv, x, adj = _setup(shared)
    params = {k: v.detach() for k, v in conv.named_parameters()}
    got = transform(lambda p: functional_call(conv, p, (x, adj)))(params)
    want = transform(lambda p: _by_hand(p, x, adj))(params)
    for name in params:
        assert torch.allclose(got[name], want[name], atol=1e-12), name


def test_vmap_and_input_jacobian_through_a_sparse_adjacency():
    conv, x, adj = _setup()
    xs = torch.stack([x, 2 * x])
    params = dict(conv.named_parameters())
    want = torch.stack([_by_hand(params, xi, adj) for xi in xs]).detach()
    assert torch.allclose(vmap(lambda xi: conv(xi, adj))(xs), want, atol=1e-12)
    jac = jacrev(lambda xi: conv(xi, adj))(x)
    ref = torch.autograd.functional.jacobian(lambda xi: _by_hand(params, xi, adj), x)
    assert torch.allclose(jac, ref, atol=1e-12)
