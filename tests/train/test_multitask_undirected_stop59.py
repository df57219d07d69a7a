"""MultiTaskNet's soft penalty takes laplacian_penalty's ``undirected=`` (stop 59).

``laplacian_penalty`` now refuses an edge given both ways and advises ``undirected=``; the
multitask penalty passed no such argument, so that advice could not be followed there.
"""

import pytest
import torch

from tying.train import MultiTaskNet, fit_multitask


def _net() -> MultiTaskNet:
    torch.manual_seed(0)
    trunk = torch.nn.Sequential(torch.nn.Linear(2, 4), torch.nn.Tanh())
    net = MultiTaskNet(trunk, torch.nn.Linear(4, 1), 3)
    with torch.no_grad():  # the trunks start as copies: move them apart
        for p in net.trunks.parameters():
            p.add_(torch.randn_like(p))
    return net


def test_both_ways_is_refused_and_undirected_counts_each_pair_once():
    net = _net()
    one_way = net.soft_penalty([(0, 1), (1, 2)], 2.0)
    with pytest.raises(ValueError, match="undirected=True"):
        net.soft_penalty([(0, 1), (1, 0), (1, 2)], 2.0)
    both = net.soft_penalty([(0, 1), (1, 0), (1, 2), (2, 1)], 2.0, undirected=True)
    twice = net.soft_penalty([(0, 1), (1, 0), (1, 2), (2, 1)], 2.0, undirected=False)
    assert one_way.item() > 0
    torch.testing.assert_close(both, one_way)
    torch.testing.assert_close(twice, 2 * one_way)


def test_fit_multitask_forwards_undirected():
    data = [(torch.randn(8, 2), torch.randn(8, 1)) for _ in range(3)]
    edges = [(0, 1), (1, 0)]
    with pytest.raises(ValueError, match="undirected"):
        fit_multitask(_net(), data, edges=edges, lam=1.0, steps=1)
    a = fit_multitask(_net(), data, edges=edges, lam=1.0, steps=3, undirected=True)
    b = fit_multitask(_net(), data, edges=[(0, 1)], lam=1.0, steps=3)
    for p, q in zip(a.parameters(), b.parameters(), strict=True):
        torch.testing.assert_close(p, q)
