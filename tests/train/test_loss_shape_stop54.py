"""One rule for the loss's shape in every mode, and one loss walk per backward (stop 54).

Ghost clipping refused a loss that is not one number per example, shape ``(B,)``;
``mode="vmap"`` summed whatever came back (a 0-d ``reduction="mean"`` loss, ``(B, D)``
or ``(B, T)`` rows), so the same loss ran in one mode and was refused in the other, a
reduction (the sum, not the mean) picked for the user. Ghost clipping read a flat
``(B*T,)`` loss as B*T examples and blamed an input. Now both refuse with one message.
Anchor for the accepted ``(B,)`` loss: ``tests.train.models.loop_grads``.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import tying.train._opacus_probe as opacus_probe
from tests.train.models import loop_grads
from tests.train.test_custom_backward_stop51 import BatchNormed
from tying.train import ghost_norms, grad_sample_module, private_grad

SHAPE = r"loss_fn must return one loss per example, shape \(B,\) = \(5,\) .*got shape {}"


class _LM(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.embed, self.head = nn.Embedding(7, 4), nn.Linear(4, 7)
        self.double()

    def forward(self, tok):  # (B, T) -> (B, T, V)
        return self.head(torch.tanh(self.embed(tok)))


def _mlp():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 5), nn.Tanh(), nn.Linear(5, 3)).double()


_X = torch.randn(5, 4, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
_Y = torch.randn(5, 3, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
_TOK = torch.randint(0, 7, (5, 3), generator=torch.Generator().manual_seed(3))

ROWS = {  # name: (model, loss with rows (B, ...), x, y); the loop sums each example's rows
    "mse rows": (_mlp, lambda o, t: F.mse_loss(o, t, reduction="none"), _X, _Y),
    "keepdim": (_mlp, lambda o, t: (o - t).pow(2).sum(1, keepdim=True), _X, _Y),
    "hand rows": (_mlp, lambda o, t: (o - t).pow(2) * 0.5, _X, _Y),
    "tokens": (
        _LM,
        lambda o, t: F.cross_entropy(o.transpose(1, 2), t, reduction="none"),
        _TOK,
        _TOK,
    ),
}


@pytest.mark.parametrize("case", sorted(ROWS))
def test_rows_per_example_are_summed_alike_in_both_modes_as_the_loop(case):
    make, loss, x, y = ROWS[case]
    model = make()
    C = 0.3
    rows = loop_grads(model, loss, x, y)  # brute force: one backward of each example's sum
    flat = torch.cat([g.flatten(1) for g in rows.values()], 1)
    c = (C / (flat.norm(dim=1) + 1e-6)).clamp(max=1.0)
    for mode in ("vmap", "ghost"):
        pg = private_grad(model, loss, x, y, max_grad_norm=C, noise_multiplier=0.0, mode=mode)
        torch.testing.assert_close(pg.norms, flat.norm(dim=1), rtol=1e-9, atol=1e-12)
        for n, g in rows.items():
            want = (c.view(-1, *[1] * (g.dim() - 1)) * g.to(pg.grads[n].dtype)).mean(0)
            torch.testing.assert_close(pg.grads[n], want, rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("mode", ["vmap", "ghost"])
def test_a_flat_token_loss_on_the_batch_is_refused_by_its_shape_in_ghost(mode):
    # (B*T,) on the batch: ghost clipping read it as 15 examples and blamed an input
    model = _LM()
    flat = lambda o, t: F.cross_entropy(o.reshape(-1, 7), t.reshape(-1), reduction="none")  # noqa: E731
    if mode == "ghost":
        with pytest.raises(ValueError, match=SHAPE.format(r"\(15,\).*view it as \(B, T\)")):
            private_grad(
                model, flat, _TOK, _TOK, max_grad_norm=1.0, noise_multiplier=0.0, mode=mode
            )
        with pytest.raises(ValueError, match=SHAPE.format(r"\(\)")):
            ghost_norms(model, lambda o, t: flat(o, t).mean(), _TOK, _TOK)
    else:  # each example alone gives (T,): summed, as the loop does (stop 36, kept)
        pg = private_grad(model, flat, _TOK, _TOK, max_grad_norm=1e6, noise_multiplier=0.0)
        want = loop_grads(model, flat, _TOK, _TOK)
        for n, g in want.items():
            torch.testing.assert_close(pg.grads[n], g.mean(0), rtol=1e-6, atol=1e-9)


class _FourHeads(nn.Module):
    def __init__(self):
        super().__init__()
        self.trunk = nn.Linear(4, 6)
        self.heads = nn.ModuleList(nn.Linear(6, 3) for _ in range(4))

    def forward(self, x):
        h = torch.tanh(self.trunk(x))
        return tuple(head(h) for head in self.heads)


@pytest.mark.filterwarnings("ignore:Full backward hook is firing:UserWarning")
def test_hooks_walk_the_loss_once_per_backward_and_again_at_the_next(monkeypatch):
    calls = []
    walk = opacus_probe.loss_function_nodes

    def counted(stops, *roots):
        calls.append(1)
        return walk(stops, *roots)

    monkeypatch.setattr(opacus_probe, "loss_function_nodes", counted)
    torch.manual_seed(0)
    model = _FourHeads()
    gsm = grad_sample_module(model, loss_reduction="sum")
    x, y = torch.randn(5, 4), torch.randn(5, 3)
    outs = gsm(x)
    sum((o - y).pow(2).sum() for o in outs).backward(retain_graph=True)
    assert len(calls) == 1  # four outputs reach the loss: one walk, not four
    # a second backward on the same outputs is walked again: a custom Function it
    # applies is refused (the first backward's verdict is not reused)
    for p in model.parameters():
        p.grad, p.grad_sample = None, None
    with pytest.raises(ValueError, match="the loss applies the custom autograd.Function"):
        sum((BatchNormed.apply(o) - y).pow(2).sum() for o in outs).backward()
    assert len(calls) == 2


@pytest.mark.parametrize("mode", ["vmap", "ghost"])
def test_a_loss_that_is_not_a_tensor_is_refused_by_type(mode):
    model = _mlp()
    with pytest.raises(TypeError, match=r"loss_fn must return a tensor .* got float"):
        private_grad(
            model, lambda o, t: 1.0, _X, _Y, max_grad_norm=1.0, noise_multiplier=0.0, mode=mode
        )
