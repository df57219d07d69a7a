"""Claim B5: the gradient of a tied parameter is the sum of its per-use gradients,
for ties over time (RNN), towers (Siamese) and layers (ALBERT)."""

from __future__ import annotations

import torch
from torch import nn

import tying

torch.manual_seed(0)


def _per_use_sum(loss_fn, shared: torch.Tensor, n_uses: int) -> torch.Tensor:
    """Give each use its own copy of ``shared``; return the sum of the copies' gradients."""
    copies = [shared.detach().clone().requires_grad_() for _ in range(n_uses)]
    loss_fn(copies).backward()
    return sum(c.grad for c in copies)


def test_rnn_over_time():
    d, steps = 4, 6
    W = nn.Parameter(torch.randn(d, d) * 0.5)
    xs = torch.randn(steps, d)

    def run(weights):
        h = torch.zeros(d)
        for t in range(steps):
            h = torch.tanh(weights[t] @ h + xs[t])
        return h.pow(2).sum()

    run([W] * steps).backward()
    torch.testing.assert_close(W.grad, _per_use_sum(run, W, steps))


def test_siamese_towers():
    tower = nn.Sequential(nn.Linear(5, 3), nn.Tanh())
    twin = nn.Sequential(nn.Linear(5, 3), nn.Tanh())
    pair = nn.ModuleDict({"a": tower, "b": twin})
    tying.Plan([tying.share("b", like="a")]).apply(pair)
    x1, x2 = torch.randn(8, 5), torch.randn(8, 5)
    (pair["a"](x1) - pair["b"](x2)).pow(2).sum().backward()
    W = pair["a"][0].weight

    def loss(ws):
        f1 = torch.tanh(x1 @ ws[0].t() + tower[0].bias)
        f2 = torch.tanh(x2 @ ws[1].t() + tower[0].bias)
        return (f1 - f2).pow(2).sum()

    torch.testing.assert_close(W.grad, _per_use_sum(loss, W, 2))


def test_albert_layers():
    layers = nn.ModuleList(nn.Linear(4, 4) for _ in range(5))
    tying.Plan([tying.share("*", like="0")]).apply(layers)
    x = torch.randn(3, 4)
    h = x
    for layer in layers:
        h = torch.tanh(layer(h))
    h.sum().backward()
    W, b = layers[0].weight, layers[0].bias

    def loss(ws):
        h = x
        for w in ws:
            h = torch.tanh(h @ w.t() + b)
        return h.sum()

    torch.testing.assert_close(W.grad, _per_use_sum(loss, W, 5))
    # the tie holds after the optimizer moved the shared tensor
    torch.optim.SGD(layers.parameters(), lr=0.5).step()
    assert all(layer.weight is W for layer in layers)
