"""Sharing over depth, heads and hops: ratios against the unshared layer in the same run (issue 5).

1. ALBERT-style stack (``share_layers``) vs the untied stack of the same width:
   parameters, Adam state bytes, forward+backward time (target ≈ 1.0: sharing
   must cost no time).
2. GQA / MQA / shared-V attention vs MHA: parameters and forward time; GQA's
   output against a hand-written per-head reference.
3. ``MultiHopGraphConv`` (shared and per hop) vs torch_geometric's ``TAGConv`` on
   the same graph, when torch_geometric is installed: time and parameter ratios.
"""

from __future__ import annotations

import importlib.util
import math
import warnings

import torch

import tying
from benchmarks.common import compare, write
from tying.nn import (
    Attention,
    MultiHopGraphConv,
    Stack,
    TransformerBlock,
    normalized_adjacency,
    share_layers,
)


def _adam_state_bytes(model: torch.nn.Module, x: torch.Tensor) -> int:
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    model(x).pow(2).mean().backward()
    opt.step()
    opt.zero_grad(set_to_none=True)
    return sum(
        t.numel() * t.element_size() for s in opt.state.values() for t in s.values() if t.ndim
    )


def _fwd_bwd(model, x):
    def run():
        model.zero_grad(set_to_none=True)
        model(x).pow(2).mean().backward()

    return run


def albert(d: int = 256, depth: int = 12, batch: int = 8, seq: int = 64) -> dict:
    torch.manual_seed(0)
    tied = Stack(TransformerBlock(d, 4, dropout=0.0) for _ in range(depth))
    share_layers(tied, free=("norm*",))
    untied = Stack(TransformerBlock(d, 4, dropout=0.0) for _ in range(depth))
    x = torch.randn(batch, seq, d)
    t_tied, t_untied = compare(_fwd_bwd(tied, x), _fwd_bwd(untied, x), repeat=9)
    c_tied, c_untied = tying.count(tied), tying.count(untied)
    return {
        "case": f"ALBERT {depth}× TransformerBlock(d={d}, free norms) vs untied, fwd+bwd",
        "tied_ms": 1e3 * t_tied,
        "untied_ms": 1e3 * t_untied,
        "time_ratio": t_tied / t_untied,
        "target": "≈ 1.0",
        "params_ratio": c_tied.physical / c_untied.physical,
        "adam_state_ratio": _adam_state_bytes(tied, x) / _adam_state_bytes(untied, x),
        "logical_params_equal": c_tied.logical == c_untied.logical,
    }


def _reference(attn: Attention, x: torch.Tensor) -> torch.Tensor:
    q, k, v = attn.q_proj(x), attn.k_proj(x), attn.v_proj(x)
    d, outs = attn.d_head, []
    for h in range(attn.n_heads):
        kh, vh = h // (attn.n_heads // attn.kv_heads), h // (attn.n_heads // attn.v_heads)
        s = q[..., h * d : (h + 1) * d] @ k[..., kh * d : (kh + 1) * d].transpose(-1, -2)
        outs.append((s / math.sqrt(d)).softmax(-1) @ v[..., vh * d : (vh + 1) * d])
    return attn.out_proj(torch.cat(outs, -1))


def attention(d: int = 512, heads: int = 8, batch: int = 8, seq: int = 256) -> list[dict]:
    torch.manual_seed(0)
    x = torch.randn(batch, seq, d)
    mha = Attention(d, heads)
    p_mha = tying.count(mha).physical
    rows = []
    for name, kw in (
        ("GQA (2 K/V heads)", {"kv_heads": 2}),
        ("MQA", {"kv_heads": 1}),
        ("shared W_V", {"v_heads": 1}),
    ):
        attn = Attention(d, heads, **kw)
        with torch.no_grad():
            ours, ref = attn(x[:2]), _reference(attn, x[:2])
            t_ours, t_mha = compare(lambda a=attn: a(x), lambda: mha(x), repeat=9)
        rows.append(
            {
                "case": f"{name} vs MHA, d={d}, {heads} heads, forward ({batch}×{seq})",
                "ours_ms": 1e3 * t_ours,
                "mha_ms": 1e3 * t_mha,
                "time_ratio": t_ours / t_mha,
                "params_ratio": tying.count(attn).physical / p_mha,
                "max_abs_err_vs_reference": float((ours - ref).abs().max()),
            }
        )
    return rows


def graph(nodes: int = 20_000, edges: int = 200_000, width: int = 64, hops: int = 3) -> list[dict]:
    torch.manual_seed(0)
    src, dst = torch.randint(nodes, (2, edges))
    keep = src != dst
    edge_index = torch.stack([torch.cat([src[keep], dst[keep]]), torch.cat([dst[keep], src[keep]])])
    x = torch.randn(nodes, width)
    adj = normalized_adjacency(edge_index, nodes, self_loops=False)
    shared = MultiHopGraphConv(width, width, hops)
    per_hop = MultiHopGraphConv(width, width, hops, shared=False)
    rows = []
    if importlib.util.find_spec("torch_geometric") is None:
        t_s, t_p = compare(lambda: shared(x, adj), lambda: per_hop(x, adj))
        return [
            {
                "case": f"MultiHopGraphConv shared vs per hop, N={nodes}, E={edge_index.shape[1]}, K={hops}",
                "time_ratio": t_s / t_p,
                "params_ratio": tying.count(shared).physical / tying.count(per_hop).physical,
                "note": "torch_geometric not installed: no TAGConv anchor",
            }
        ]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from torch_geometric.nn import TAGConv
        from torch_geometric.nn.conv.gcn_conv import gcn_norm
    # a fair anchor: the normalisation is computed once, as ours is, not in every forward
    norm_index, norm_weight = gcn_norm(edge_index, None, nodes, add_self_loops=False)
    tag = TAGConv(width, width, K=hops, normalize=False)

    def anchor():
        return tag(x, norm_index, norm_weight)

    with torch.no_grad():
        for hop, lin in zip(per_hop.hops, tag.lins):
            hop.weight.copy_(lin.weight)
        per_hop.bias.copy_(tag.bias)
        err = float((per_hop(x, adj) - anchor()).abs().max())
    p_tag = sum(p.numel() for p in tag.parameters())
    for name, layer in (("shared (one W + α_k)", shared), ("per hop", per_hop)):
        with torch.no_grad():
            t_ours, t_tag = compare(lambda m=layer: m(x, adj), anchor, repeat=7)
        rows.append(
            {
                "case": f"MultiHopGraphConv {name} vs TAGConv, N={nodes}, E={edge_index.shape[1]}, K={hops}, forward",
                "ours_ms": 1e3 * t_ours,
                "tagconv_ms": 1e3 * t_tag,
                "time_ratio": t_ours / t_tag,
                "params_ratio": tying.count(layer).physical / p_tag,
                "max_abs_err_per_hop_vs_tagconv": err,
            }
        )
    return rows


def main() -> None:
    torch.set_num_threads(1)
    rows = [albert()] + attention() + graph()
    write("nn_temporal", rows)


if __name__ == "__main__":
    main()
