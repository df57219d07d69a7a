"""Multi-hop graph convolution with one transform shared by every hop.

Claim B12 (``gnn-hops``): a GNN that listens to its neighbours 0, 1, …, K hops
away can learn one module per hop,

    y = Σ_k  Â^k X W_kᵀ + b                      (per hop, as TAGConv),

or one *shared* transform with a learned scalar per hop,

    y = Σ_k  α_k Â^k X Wᵀ + b,   W_k = α_k W     (shared).

The shared form is a tie the engine knows: ``hops.k.weight`` reads
``hops.0.weight`` through :class:`tying.Scaled` (a learnable ``hops.k.weight_scale``;
α₀ is absorbed into W). It stores ``K·in·out`` fewer parameters, ``tying.count``
reports ``logical = (K+1)·physical`` (almost), and the forward pass projects once
and then propagates in the output width: one dense matmul instead of K+1.

Â is a sparse matrix (``torch.sparse_coo``); no dense N×N is ever built.

Example:
    >>> import torch, tying
    >>> edges = torch.tensor([[0, 1, 1, 2, 2, 3], [1, 0, 2, 1, 3, 2]])   # a path 0-1-2-3
    >>> adj = normalized_adjacency(edges, num_nodes=4)
    >>> conv = MultiHopGraphConv(5, 3, hops=3)
    >>> conv(torch.randn(4, 5), adj).shape
    torch.Size([4, 3])
    >>> c = tying.count(conv); (c.logical, c.physical)
    (63, 21)
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from tying.core import Plan, Scaled, share
from tying.nn._args import (
    assert_in_graph,
    flag,
    forward_ad_active,
    in_graph,
    int_arg,
    refuse_foreign_keywords,
)
from tying.nn._input_errors import CAUGHT, InputDtypeError, dtype_detail, raise_if_mismatched
from tying.nn._layer_plans import apply_plan, tie_setting
from tying.nn._reparam import refresh
from tying.nn._sparse import sparse_coo

__all__ = ["EdgeAdjacency", "MultiHopGraphConv", "normalized_adjacency"]


class EdgeAdjacency(NamedTuple):
    """Â as its entries, for ``torch.compile(fullgraph=True)``, which cannot take a sparse tensor.

    Row ``0`` of ``index`` holds the rows of Â (destinations), row ``1`` the columns
    (sources): ``Â[index[0, e], index[1, e]] = weight[e]``, the order of a sparse Â's
    ``indices()`` (torch_geometric's ``edge_index`` is ``[src; dst]``, the other way:
    build this with :meth:`from_sparse`, not by hand from an ``edge_index``).

    Attributes:
        index: ``(2, E)`` integer tensor ``[rows; cols]``.
        weight: ``(E,)`` floating-point tensor, in the node features' dtype.

    Example:
        >>> adj = normalized_adjacency(torch.tensor([[0, 1], [1, 0]]), 2)
        >>> pair = EdgeAdjacency.from_sparse(adj)
        >>> pair.index.tolist(), [round(w, 6) for w in pair.weight.tolist()]
        ([[0, 0, 1, 1], [0, 1, 0, 1]], [0.5, 0.5, 0.5, 0.5])
    """

    index: torch.Tensor
    weight: torch.Tensor

    @staticmethod
    def from_sparse(adj: torch.Tensor) -> EdgeAdjacency:
        """The entries of a sparse ``(N, N)`` Â (coalesced first; repeated entries are summed).

        Raises:
            ValueError: on a tensor that is not sparse COO.
        """
        if not isinstance(adj, torch.Tensor) or adj.layout != torch.sparse_coo:
            raise ValueError(
                f"EdgeAdjacency.from_sparse: expected a sparse COO Â (normalized_adjacency's "
                f"result), got {_describe(adj)}"
            )
        adj = adj.coalesce()
        # copies, not views: torch.compile cannot wrap a view whose base is sparse
        return EdgeAdjacency(adj.indices().clone(), adj.values().clone())


def _describe(adj) -> str:
    if isinstance(adj, torch.Tensor):
        if adj.layout not in (torch.strided, torch.sparse_coo):  # CSR/CSC/BSR were "dense"
            return (
                f"{adj.layout} {tuple(adj.shape)} ({adj.dtype}); convert with adj.to_sparse_coo()"
            )
        kind = "sparse" if adj.is_sparse else "dense"
        return f"{kind} {tuple(adj.shape)} ({adj.dtype})"
    return f"{type(adj).__name__}"


def normalized_adjacency(
    edge_index: torch.Tensor,
    num_nodes: int,
    *,
    self_loops: bool = True,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """The GCN-normalised sparse adjacency ``D^{-1/2} (A [+ I]) D^{-1/2}``.

    Args:
        edge_index: ``(2, E)`` integer tensor of directed edges ``src → dst``; give both
            directions for an undirected graph. Repeated edges are summed.
        num_nodes: N.
        self_loops: give every node one self loop of weight 1 before normalising (GCN's
            ``A + I``); a loop already in ``edge_index`` is replaced, not counted twice,
            as in torch_geometric's ``gcn_norm``. False (TAGConv) keeps the edges as
            given.
        dtype: value dtype, floating point.

    Returns:
        A coalesced ``torch.sparse_coo`` tensor ``(N, N)``; row ``i`` gathers node ``i``'s
        in-neighbours (``Â[dst, src]``).

    Raises:
        ValueError: on an ``edge_index`` that is not ``(2, E)`` integers (bool refused) or
            has node ids outside ``[0, num_nodes)``; a ``num_nodes`` that is not an int >= 0;
            a ``dtype`` that is not floating point.

    Example:
        >>> adj = normalized_adjacency(torch.tensor([[0, 1], [1, 0]]), 2, self_loops=False)
        >>> adj.to_dense()
        tensor([[0., 1.],
                [1., 0.]])
    """
    if (
        edge_index.ndim != 2
        or edge_index.shape[0] != 2
        or edge_index.is_floating_point()
        or edge_index.is_complex()
        or edge_index.dtype == torch.bool  # read as node ids 0 and 1 with no error
    ):
        raise ValueError(
            f"normalized_adjacency: edge_index must be a (2, E) integer tensor, got "
            f"{edge_index.dtype} of shape {tuple(edge_index.shape)}; pass node ids (from a "
            f"boolean (N, N) matrix A with A[src, dst]: A.nonzero().T)"
        )
    self_loops = flag("normalized_adjacency", "self_loops", self_loops)
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        # dtype=torch.bool summed the degrees as a logical or and returned A + I with
        # every weight 1, not normalised, with no error (stop 33)
        raise ValueError(
            f"normalized_adjacency: dtype must be a floating-point torch.dtype (the weights "
            f"are 1/sqrt(deg) products), got {dtype!r}; pass e.g. dtype=torch.float32"
        )
    num_nodes = int_arg(  # True was read as 1 node
        num_nodes, 0, f"normalized_adjacency: num_nodes must be an int >= 0, got {num_nodes!r}"
    )
    if edge_index.numel() and (int(edge_index.min()) < 0 or int(edge_index.max()) >= num_nodes):
        raise ValueError(
            f"normalized_adjacency: node ids must lie in [0, {num_nodes}), got "
            f"[{int(edge_index.min())}, {int(edge_index.max())}]; check num_nodes"
        )
    src, dst = edge_index.long()
    if self_loops:
        # GCN's Â = A + I means one loop of weight 1 per node: a loop the graph already
        # has is replaced, not added to (weight 2) or repeated, as torch_geometric's
        # gcn_norm (add_remaining_self_loops) does
        keep = src != dst
        src, dst = src[keep], dst[keep]
    values = torch.ones(src.numel(), dtype=dtype, device=edge_index.device)
    if self_loops:
        loop = torch.arange(num_nodes, device=edge_index.device)
        src, dst = torch.cat([src, loop]), torch.cat([dst, loop])
        values = torch.cat([values, torch.ones(num_nodes, dtype=dtype, device=values.device)])
    deg = torch.zeros(num_nodes, dtype=dtype, device=values.device).index_add_(0, dst, values)
    inv_sqrt = deg.clamp_min(1e-12).rsqrt().masked_fill(deg == 0, 0.0)
    values = inv_sqrt[dst] * values * inv_sqrt[src]
    return sparse_coo(
        torch.stack([dst, src]), values, (num_nodes, num_nodes), check_invariants=True,
        coalesce=True,
    )  # fmt: skip


# torch_geometric's TAGConv / GCNConv keywords, and what a ported script uses here: a
# TAGConv(in, out, K=3) port got Python's bare "unexpected keyword argument" (stop 56)
_TAGCONV_NAMES = {
    "K": "torch_geometric's K (TAGConv, default 3) is hops= here (default 2): "
    "MultiHopGraphConv(in_features, out_features, hops=K, shared=False) is TAGConv",
    "normalize": "the layer takes Â built outside it: TAGConv's normalize=True is "
    "normalized_adjacency(edge_index, N, self_loops=False) (the default self_loops=True "
    "is GCN's A + I, other numbers); for normalize=False pass your own sparse Â",
    "add_self_loops": "self loops belong to Â: normalized_adjacency(edge_index, N, "
    "self_loops=True/False) (TAGConv adds none: self_loops=False)",
    "cached": "the layer keeps no Â: build it once with normalized_adjacency and pass it "
    "to every call",
    "improved": "GCNConv's improved=True (A + 2I) is not provided; pass that Â as a sparse "
    "(N, N) tensor",
}


class MultiHopGraphConv(nn.Module):
    """``y = Σ_{k=0..K} Â^k X W_kᵀ + b`` with ``W_k = α_k W`` when shared (claim B12).

    Args:
        in_features: node feature width.
        out_features: output width.
        hops: K, the farthest hop (K+1 terms, hop 0 is the node itself).
        shared: True (default) ties every hop's transform to hop 0's through
            :class:`tying.Scaled` (one matrix + K scalars); False keeps one matrix
            per hop (TAGConv's form).
        bias: add a bias (once, not per hop).

    Attributes:
        hops: ``ModuleList`` of K+1 ``Linear(in, out, bias=False)``; when shared,
            ``hops.k.weight`` reads ``hops.0.weight`` times ``hops.k.weight_scale``.
        bias: ``(out_features,)`` or None.

    Raises:
        ValueError: for non-positive sizes or negative ``hops``; on features or an
            adjacency of the wrong shape, a dense or CSR adjacency, a plain
            ``(indices, values)`` pair (use :class:`EdgeAdjacency`), or an
            ``EdgeAdjacency`` with node ids outside ``[0, N)``.
        TypeError: when ``shared`` or ``bias`` is not True/False; for torch_geometric's
            ``K``, ``normalize``, ``add_self_loops``, ``cached``, ``improved``, naming
            what to use here (``hops=``; the adjacency is built outside the layer).

    Example:
        >>> import tying
        >>> per_hop = MultiHopGraphConv(16, 8, hops=4, shared=False)
        >>> shared = MultiHopGraphConv(16, 8, hops=4)
        >>> tying.count(per_hop).physical, tying.count(shared).physical
        (648, 140)
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        hops: int = 2,
        *,
        shared: bool = True,
        bias: bool = True,
        **torch_geometric: object,
    ) -> None:
        super().__init__()
        refuse_foreign_keywords("MultiHopGraphConv", torch_geometric, _TAGCONV_NAMES)
        in_features, out_features = (
            int_arg(value, 1, f"MultiHopGraphConv: {name} must be a positive int, got {value!r}")
            for name, value in (("in_features", in_features), ("out_features", out_features))
        )
        hops = int_arg(hops, 0, f"MultiHopGraphConv: hops must be an int >= 0, got {hops!r}")
        self.in_features, self.out_features, self.K = in_features, out_features, hops
        self.shared = flag("MultiHopGraphConv", "shared", shared)
        bias = flag("MultiHopGraphConv", "bias", bias)
        self.hops = nn.ModuleList(
            nn.Linear(in_features, out_features, bias=False) for _ in range(hops + 1)
        )
        self.bias = nn.Parameter(torch.empty(out_features)) if bias else None
        if self.shared and hops > 0:
            plan = Plan(
                [
                    share(f"hops.{k}.weight", like="hops.0.weight", relation=Scaled(1.0))
                    for k in range(1, hops + 1)
                ]
            )
            apply_plan(plan, self)
        self.reset_parameters()

    def fan_in(self) -> int:
        """Inputs of one output unit: ``(K+1)·in_features`` (one feature vector per hop).

        Sharing W across hops does not change this (claim B15): each hop's
        propagated features are different inputs even when one matrix reads them.
        """
        return (self.K + 1) * self.in_features

    def reset_parameters(self) -> None:
        """U(±1/√fan_in) on the stored matrices and bias; hop scales α_k start at 1.

        With α_k = 1 the shared layer starts as the per-hop layer with equal
        matrices, so both start at the same output scale.
        """
        bound = 1.0 / math.sqrt(self.fan_in())
        with torch.no_grad():
            for hop in self.hops:
                weight = hop._parameters.get("weight")
                if weight is not None:
                    weight.uniform_(-bound, bound)
                scale = hop._parameters.get("weight_scale")
                if scale is not None:
                    scale.fill_(1.0)
            if self.bias is not None:
                self.bias.uniform_(-bound, bound)

    def _scales(self) -> list[torch.Tensor] | None:
        if not self.shared:
            return None
        scales = [hop._parameters.get("weight_scale") for hop in self.hops[1:]]
        return None if any(s is None for s in scales) else scales  # None once untied

    def forward(self, x: torch.Tensor, adj: torch.Tensor | EdgeAdjacency) -> torch.Tensor:
        """Node features ``(N, in)`` and ``Â`` ``(N, N)`` → ``(N, out)``.

        ``adj`` is the sparse Â, or its entries as an :class:`EdgeAdjacency` (the form
        ``torch.compile(fullgraph=True)`` takes: it cannot wrap a sparse tensor). Both
        give the same numbers; under ``torch.func`` transforms and forward-mode AD a
        sparse Â is read through its entries as an ``EdgeAdjacency`` is.
        """
        if x.ndim != 2 or x.shape[1] != self.in_features:
            raise ValueError(
                f"MultiHopGraphConv: expected node features (N, {self.in_features}), got {tuple(x.shape)}"
            )
        n = x.shape[0]
        if isinstance(adj, EdgeAdjacency):
            adj = _check_edges(adj, n)
            adj_dtype = adj.weight.dtype
        elif not isinstance(adj, torch.Tensor) or not adj.is_sparse or tuple(adj.shape) != (n, n):
            plain = isinstance(adj, tuple | list)
            raise ValueError(
                f"MultiHopGraphConv: expected a sparse adjacency ({n}, {n}) (see "
                f"normalized_adjacency) or its EdgeAdjacency, got {_describe(adj)}"
                + (
                    "; a plain pair is not read as Â (which row is the destination?): "
                    "pass EdgeAdjacency.from_sparse(adj)"
                    if plain
                    else ""
                )
            )
        else:
            adj_dtype = adj.dtype
        if torch.is_autocast_enabled(x.device.type) and adj_dtype == torch.float32:
            # autocast runs sparse.mm in its low dtype, but its backward met the float32 Â
            # and failed ("expected scalar type Float but found BFloat16", torch 2.13): cast Â
            # as autocast casts it for the forward
            low = torch.get_autocast_dtype(x.device.type)
            if isinstance(adj, EdgeAdjacency):
                adj = EdgeAdjacency(adj.index, adj.weight.to(low))
            else:
                adj = adj.to(low)
        elif adj_dtype != x.dtype and not torch.is_autocast_enabled(x.device.type):
            w = self.hops[0].weight
            if x.dtype != w.dtype:  # the features are the first clash: name the layer's dtype
                detail = dtype_detail(x.dtype, w.dtype) + ", and Â in the same dtype"
                raise InputDtypeError(f"MultiHopGraphConv: {detail}", self, detail)
            raise ValueError(
                f"MultiHopGraphConv: the adjacency is {adj_dtype} but the node features are "
                f"{x.dtype}; make Â in the features' dtype (normalized_adjacency(..., "
                f"dtype={x.dtype}))"
            )
        try:
            for hop in self.hops:  # read, never called: a pruned/normed weight's hook runs here
                refresh(hop)
            scales = self._scales()
            if isinstance(adj, EdgeAdjacency):
                mm = _edges_mm
            else:
                mm = torch.sparse.mm
                if not torch.compiler.is_compiling() and (
                    torch._C._are_functorch_transforms_active()
                    or forward_ad_active(x, adj, *_own_parameters(self))
                ):
                    # sparse mm has no forward derivative (stop 34), and under torch.func
                    # jacrev/jacfwd failed in torch ("expand is unsupported for Sparse
                    # tensors", "Cannot access storage of SparseTensorImpl") and vmap warned
                    # of a missing batching rule (an error under -W error) (stop 56)
                    mm = _gather_mm
            if scales is not None:
                z = F.linear(x, self.hops[0].weight)  # (N, out): project once, propagate narrow
                out = z
                for scale in scales:
                    z = mm(adj, z)
                    out = out + scale * z
            else:
                h = x
                out = F.linear(h, self.hops[0].weight)
                for hop in self.hops[1:]:
                    h = mm(adj, h)  # (N, in)
                    out = out + F.linear(h, hop.weight)
            return out if self.bias is None else out + self.bias
        except CAUGHT as e:
            on = adj.weight if isinstance(adj, EdgeAdjacency) else adj
            raise_if_mismatched(self, e, x, devices={"adj": on})
            raise

    def extra_repr(self) -> str:
        return (
            f"{self.in_features}, {self.out_features}, hops={self.K}, "
            f"shared={tie_setting(self, self.shared)}, "
            f"bias={self.bias is not None}"
        )


def _gather_mm(adj: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """``Â @ z`` as a gather and an ``index_add`` over Â's entries (O(edges)).

    Forward-mode AD (``jacfwd``, ``forward_ad``) reaches no derivative of sparse ``mm``
    (torch's "Trying to use forward AD with _sparse_addmm", stop 34); these plain ops
    have one.
    """
    adj = adj.coalesce()
    return _edges_mm(EdgeAdjacency(adj.indices(), adj.values()), z)


def _edges_mm(adj: EdgeAdjacency, z: torch.Tensor) -> torch.Tensor:
    """``Â @ z`` from Â's entries: repeated entries add up, as in an uncoalesced sparse Â."""
    row, col = adj.index  # (E,) each
    msg = adj.weight.unsqueeze(-1) * z[col]  # (E, F)
    return torch.zeros_like(z).index_add(0, row, msg)


def _check_edges(adj: EdgeAdjacency, n: int) -> EdgeAdjacency:
    """Shapes and dtypes always; node ids in ``[0, n)`` too, as ``z[col]`` would read a
    negative id from the end with no error.

    Returns ``adj``; inside a compiled or traced graph, one whose index carries the id
    check (a Python ``if`` ran at recording time only: a ``torch.jit.trace`` of a model
    that builds its ``EdgeAdjacency`` read node -1 as the last node, silently, stop 53).
    """
    index, weight = adj
    if not isinstance(index, torch.Tensor) or not isinstance(weight, torch.Tensor):
        raise ValueError(
            f"MultiHopGraphConv: EdgeAdjacency holds two tensors, got index "
            f"{type(index).__name__} and weight {type(weight).__name__}; build it with "
            f"EdgeAdjacency.from_sparse(adj)"
        )
    if (
        index.ndim != 2
        or index.shape[0] != 2
        or index.is_floating_point()
        or index.is_complex()
        or index.dtype == torch.bool
        or weight.ndim != 1
        or weight.shape[0] != index.shape[1]
        or not weight.is_floating_point()
    ):
        raise ValueError(
            f"MultiHopGraphConv: EdgeAdjacency expects index (2, E) integers and weight (E,) "
            f"floating point, got index {index.dtype} {tuple(index.shape)} and weight "
            f"{weight.dtype} {tuple(weight.shape)}; build it with EdgeAdjacency.from_sparse(adj)"
        )
    inside = ((index >= 0) & (index < n)).all()
    if in_graph():
        index = assert_in_graph(
            inside,
            "MultiHopGraphConv: EdgeAdjacency node ids must lie in [0, N) (N node feature "
            "rows); check the graph matches x",
            index,
        )
        return EdgeAdjacency(index, weight)
    if index.numel() and not bool(inside):
        raise ValueError(
            f"MultiHopGraphConv: EdgeAdjacency node ids must lie in [0, {n}) (N node feature "
            f"rows), got [{int(index.min())}, {int(index.max())}]; check the graph matches x"
        )
    return adj


def _own_parameters(module: nn.Module) -> list:
    """Every Parameter stored in ``module``'s tree, read with ``_parameters.values()``.

    Not ``module.parameters()``: it calls a tied module's ``_parameters.items()`` (the core
    ``TiedParams.items``, a Python method), and under ``torch.compile`` (after a graph
    break, eager code run beside the compiled frames) torch's frame hook entered that
    method again from inside itself until a RecursionError (stop 57b).
    """
    return [p for m in module.modules() for p in dict.values(m._parameters) if p is not None]
