"""Stop 26 review guards: tied LM (embedding with padding_idx tied to the output,
GroupNorm) and a layer used twice, against a per-example loop; ε against Opacus."""

from __future__ import annotations

import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import tying
from tying.train import epsilon, per_example_grads, private_grad


class _TiedLM(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.emb = nn.Embedding(7, 5, padding_idx=0)
        self.gn = nn.GroupNorm(1, 5)
        self.out = nn.Linear(5, 7, bias=False)
        tying.Plan([tying.share("out.weight", like="emb.weight")]).apply(self)
        self.double()

    def forward(self, x):
        h = self.gn(self.emb(x).transpose(1, 2)).transpose(1, 2)
        return self.out(h)


class _Twice(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.l = nn.Linear(4, 4)
        self.double()

    def forward(self, x):
        return self.l(torch.tanh(self.l(x)))


def _seq_ce(o, y):
    return F.cross_entropy(o.transpose(1, 2), y, reduction="none").sum(1)


def _ce(o, y):
    return F.cross_entropy(o, y, reduction="none")


def _loop_clipped_mean(model, loss_fn, x, y, C):
    ref = {n: torch.zeros_like(p) for n, p in model.named_parameters()}
    for i in range(len(x)):
        model.zero_grad()
        loss_fn(model(x[i : i + 1]), y[i : i + 1]).sum().backward()
        g = {n: p.grad.clone() for n, p in model.named_parameters()}
        f = min(1.0, C / (torch.sqrt(sum(v.pow(2).sum() for v in g.values())).item() + 1e-6))
        for n in g:
            ref[n] += f * g[n] / len(x)
    return ref


def test_tied_lm_with_padding_idx_and_groupnorm_matches_a_loop():
    m = _TiedLM()
    x = torch.tensor([[0, 1, 2], [3, 0, 4], [5, 6, 0]])
    y = torch.tensor([[1, 2, 3], [0, 4, 5], [6, 1, 2]])
    g = per_example_grads(m, _seq_ce, x, y)
    assert sorted(g) == ["emb.weight", "gn.bias", "gn.weight"]  # the tie appears once
    for i in range(3):
        m.zero_grad()
        _seq_ce(m(x[i : i + 1]), y[i : i + 1]).sum().backward()
        for n, p in m.named_parameters():
            torch.testing.assert_close(g[n][i], p.grad, rtol=1e-9, atol=1e-12)
    r = private_grad(m, _seq_ce, x, y, max_grad_norm=0.5, noise_multiplier=0.0)
    ref = _loop_clipped_mean(m, _seq_ce, x, y, 0.5)
    for n in ref:
        torch.testing.assert_close(r.grads[n], ref[n], rtol=1e-6, atol=1e-12)


@pytest.mark.parametrize("mode", ["vmap", "ghost"])
def test_a_layer_used_twice_is_clipped_as_one_gradient(mode):
    m = _Twice()
    torch.manual_seed(1)
    x = torch.randn(5, 4, dtype=torch.double)
    y = torch.randint(0, 4, (5,))
    r = private_grad(m, _ce, x, y, max_grad_norm=0.3, noise_multiplier=0.0, mode=mode)
    ref = _loop_clipped_mean(m, _ce, x, y, 0.3)
    for n in ref:
        torch.testing.assert_close(r.grads[n], ref[n], rtol=1e-6, atol=1e-12)


@pytest.mark.parametrize(
    "q,sigma,steps,delta",
    [(0.01, 1.0, 1000, 1e-5), (1.0, 1.0, 10, 1e-5), (0.5, 0.3, 5, 1e-3)],
)
def test_rdp_epsilon_equals_opacus(q, sigma, steps, delta):
    from opacus.accountants import RDPAccountant

    acc = RDPAccountant()
    acc.history = [(sigma, q, steps)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        expected = acc.get_epsilon(delta)
    assert epsilon(q, sigma, steps, delta) == pytest.approx(expected, rel=1e-9)


@pytest.mark.parametrize(
    "x, y, match",
    [
        (torch.zeros(0, 3), torch.zeros(1, dtype=torch.long), r"x has 0 rows but y has 1"),
        (torch.zeros(4, 3), torch.zeros(3, dtype=torch.long), r"x has 4 rows but y has 3"),
        (
            (torch.zeros(4, 3), torch.zeros(2, 3)),
            torch.zeros(4, dtype=torch.long),
            r"x\[1\] has 2 rows but y has 4",
        ),
    ],
)
def test_per_example_grads_names_a_mismatched_batch(x, y, match):
    """Stop 26 review: torch's own message named neither the empty batch nor which tensor."""
    from tying.train import per_example_grads

    class Two(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = torch.nn.Linear(3, 2)

        def forward(self, a, b=None):
            return self.lin(a if b is None else a + b)

    ce = lambda out, t: torch.nn.functional.cross_entropy(out, t, reduction="none")  # noqa: E731
    with pytest.raises(ValueError, match=match):
        per_example_grads(Two(), ce, x, y)
