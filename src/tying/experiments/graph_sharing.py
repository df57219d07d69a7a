"""Sharing across graph hops (seed 001).

B12 ``gnn-hops``: a node classifier that listens 0…K hops away, either with one
transform per hop (TAGConv's form) or with one shared transform and a learned
scalar per hop (:class:`tying.nn.MultiHopGraphConv`, tied by ``tying.Scaled``).
The task is community detection on a stochastic block model whose node features
are too noisy to classify alone: hops average the noise away, so accuracy rises
with K, and the shared layer keeps pace with the per-hop one at ~1/(K+1) of the
parameters.
"""

from __future__ import annotations

import dataclasses
import logging
import statistics

import torch
import torch.nn.functional as F

import tying
from tying.experiments.common import new_figure
from tying.experiments.registry import Result, Table, check_size, experiment
from tying.nn import MultiHopGraphConv, normalized_adjacency
from tying.report.format import format_number

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class HopsConfig:
    nodes: int = 400
    classes: int = 4
    p_in: float = 0.05  # edge probability inside a community
    p_out: float = 0.005  # ... and across communities
    features: int = 16
    signal: float = 0.6  # class-mean scale against unit noise: weak on its own
    label_rate: float = 0.1  # fraction of nodes with a training label
    hops: tuple[int, ...] = (0, 1, 2, 4)
    steps: int = 150
    lr: float = 0.05
    weight_decay: float = 5e-4
    seeds: int = 2


HOPS = {
    "quick": HopsConfig(),
    "report": HopsConfig(nodes=1000, p_in=0.02, p_out=0.002, hops=(0, 1, 2, 3, 4, 6), seeds=4),
}


def _sbm(cfg: HopsConfig, gen: torch.Generator):
    labels = torch.arange(cfg.nodes) % cfg.classes
    same = labels[:, None] == labels[None, :]
    prob = torch.where(same, cfg.p_in, cfg.p_out)
    upper = torch.triu(torch.rand(cfg.nodes, cfg.nodes, generator=gen) < prob, diagonal=1)
    src, dst = upper.nonzero(as_tuple=True)
    edges = torch.stack([torch.cat([src, dst]), torch.cat([dst, src])])  # undirected
    means = torch.randn(cfg.classes, cfg.features, generator=gen)
    x = cfg.signal * means[labels] + torch.randn(cfg.nodes, cfg.features, generator=gen)
    perm = torch.randperm(cfg.nodes, generator=gen)
    n_train = int(cfg.label_rate * cfg.nodes)
    return x, labels, normalized_adjacency(edges, cfg.nodes), perm[:n_train], perm[n_train:]


def _train(cfg: HopsConfig, data, hops: int, shared: bool, seed: int) -> tuple[float, int]:
    x, labels, adj, train, test = data
    torch.manual_seed(seed)
    conv = MultiHopGraphConv(cfg.features, cfg.classes, hops=hops, shared=shared)
    opt = torch.optim.Adam(conv.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    for _ in range(cfg.steps):
        opt.zero_grad()
        F.cross_entropy(conv(x, adj)[train], labels[train]).backward()
        opt.step()
    with torch.no_grad():
        acc = float((conv(x, adj)[test].argmax(1) == labels[test]).float().mean())
    return acc, tying.count(conv).physical


@experiment("gnn-hops")
def gnn_hops(size: str, seed: int) -> Result:
    check_size(size)
    cfg = HOPS[size]
    torch.set_num_threads(1)
    acc = {(k, s): [] for k in cfg.hops for s in (True, False)}
    params = {}
    for i in range(cfg.seeds):
        data = _sbm(cfg, torch.Generator().manual_seed(seed * 1000 + i))
        for k in cfg.hops:
            for shared in (True, False):
                a, p = _train(cfg, data, k, shared, seed * 1000 + i)
                acc[(k, shared)].append(a)
                params[(k, shared)] = p
    mean = {key: statistics.mean(v) for key, v in acc.items()}
    k_max = max(cfg.hops)
    gap = mean[(k_max, False)] - mean[(k_max, True)]
    passed = (
        mean[(k_max, True)] > mean[(0, True)] + 0.15  # hops matter on this task
        and gap < 0.03  # the shared transform keeps pace with one per hop
        and params[(k_max, True)] < params[(k_max, False)] / 2
    )
    rows = [
        {
            "hops K": k,
            "shared: params": params[(k, True)],
            "shared: test accuracy": mean[(k, True)],
            "per hop: params": params[(k, False)],
            "per hop: test accuracy": mean[(k, False)],
        }
        for k in cfg.hops
    ]
    fig, (ax1, ax2) = new_figure(2, height=3.3)
    for shared, marker in ((True, "o"), (False, "s")):
        ax1.plot(
            cfg.hops,
            [mean[(k, shared)] for k in cfg.hops],
            marker=marker,
            label="one shared transform + α_k" if shared else "one transform per hop",
        )
        ax2.plot(cfg.hops, [params[(k, shared)] for k in cfg.hops], marker=marker)
    ax1.set_xlabel("hops K")
    ax1.set_ylabel("test accuracy")
    ax1.set_title(
        f"SBM, {cfg.nodes} nodes, {format_number(cfg.label_rate, 2, percent=True)} labelled"
    )
    ax1.legend(fontsize=8)
    ax2.set_xlabel("hops K")
    ax2.set_ylabel("parameters")
    ax2.set_title("stored parameters")
    return Result(
        tables=[Table(f"mean over {cfg.seeds} graphs", rows)],
        figures={"gnn_hops": fig},
        passed=passed,
        measured={
            f"accuracy shared, K={k_max}": mean[(k_max, True)],
            f"accuracy per hop, K={k_max}": mean[(k_max, False)],
            "accuracy K=0": mean[(0, True)],
            f"params shared / per hop, K={k_max}": params[(k_max, True)] / params[(k_max, False)],
        },
        key_figure=(
            f"K={k_max}: shared {format_number(mean[(k_max, True)], 4)} ({params[(k_max, True)]} params) vs per hop "
            f"{format_number(mean[(k_max, False)], 4)} ({params[(k_max, False)]}); K=0 {format_number(mean[(0, True)], 4)}"
        ),
        notes="One MultiHopGraphConv layer (logistic regression on propagated features), full-batch Adam.",
    )
