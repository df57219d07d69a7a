"""Review of stop 58's row guard in grad_sample_module (commit ac2113d).

The guard took the batch from the forward's first tensor input and kept it after the
forward: a model whose first input is not the batch (``model(t, x)``, t of shape (1,))
and a sampled layer called on its own after a forward were refused, where Opacus'
per-sample gradients were right (0 off a per-example loop).
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from tying.train import grad_sample_module

pytest.importorskip("opacus", reason="the privacy extra: pip install 'tying[privacy]'")
# Opacus' module hooks make torch note an input that needs no gradient
pytestmark = pytest.mark.filterwarnings("ignore:Full backward hook is firing")


class TimeFirst(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.f = nn.Linear(4, 2)

    def forward(self, t, x):  # (1,), (B, 4) -> (B, 2)
        return self.f(x) * t.sum()


def _loop(model, call_one, n):
    out = []
    for b in range(n):
        model.zero_grad(set_to_none=True)
        call_one(b).sum().backward()
        out.append(model.f.weight.grad.clone())
    model.zero_grad(set_to_none=True)
    return torch.stack(out)


@pytest.mark.parametrize("by_keyword", [False, True])
def test_a_first_input_that_is_not_the_batch_is_not_refused(by_keyword):
    model = TimeFirst()
    t, x = torch.tensor([2.0]), torch.randn(3, 4, generator=torch.Generator().manual_seed(1))
    want = _loop(model, lambda b: model(t, x[b : b + 1]), 3)
    gsm = grad_sample_module(model, loss_reduction="sum")
    out = gsm(t=t, x=x) if by_keyword else gsm(t, x)
    out.sum().backward()
    assert torch.allclose(model.f.weight.grad_sample, want)
    gsm._close()


def test_a_layer_called_on_its_own_after_a_forward_is_not_refused():
    model = nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2))
    gsm = grad_sample_module(model, loss_reduction="sum")
    gsm(torch.randn(4, 4)).sum().backward()
    for p in model.parameters():
        p.grad_sample = None
    model[0](torch.randn(3, 4)).sum().backward()  # another batch size, outside the model
    assert model[0].weight.grad_sample.shape == (3, 3, 4)
    gsm._close()


def test_a_shared_table_is_still_refused_when_the_first_input_is_not_the_batch():
    class Pos(nn.Module):
        def __init__(self):
            super().__init__()
            self.wpe = nn.Embedding(8, 4)

        def forward(self, t, tok):  # (2,), (B, T)
            return self.wpe(torch.arange(tok.shape[1])[None]) * t.sum() + tok[..., None]

    gsm = grad_sample_module(Pos(), loss_reduction="sum")
    with pytest.raises(
        ValueError,
        match=r"wpe \(Embedding\) is called on an input of 1 rows.*"
        r"batch has 2 or 3",
    ):
        gsm(torch.ones(2), torch.zeros(3, 5))
    gsm._close()


def test_a_layer_on_flattened_rows_is_told_to_take_the_batch_first_shape():
    """Opacus' per-sample gradients there had B*T rows (4.0 off a loop at B = 1)."""

    class Flat(nn.Module):
        def __init__(self):
            super().__init__()
            self.f = nn.Linear(4, 2)

        def forward(self, x):  # (B, T, 4) -> (B, T, 2)
            b, t, f = x.shape
            return self.f(x.reshape(b * t, f)).reshape(b, t, 2)

    gsm = grad_sample_module(Flat(), loss_reduction="sum")
    with pytest.raises(
        ValueError,
        match=r"f \(Linear\) is called on an input of 15 rows.*"
        r"h.reshape\(B \* T, F\)\) on the batch-first shape",
    ):
        gsm(torch.randn(3, 5, 4))
    gsm._close()


def test_a_one_row_table_passed_to_the_forward_is_still_refused():
    """GPT-2's positions handed over by keyword: a table, not a second batch size."""

    class Pos(nn.Module):
        def __init__(self):
            super().__init__()
            self.wpe = nn.Embedding(8, 4)

        def forward(self, tok, position_ids):  # (B, T), (1, T)
            return self.wpe(position_ids) + tok[..., None]

    gsm = grad_sample_module(Pos(), loss_reduction="sum")
    with pytest.raises(
        ValueError,
        match=r"wpe \(Embedding\) is called on an input of 1 rows.*"
        r"batch has 3 ",
    ):
        gsm(torch.zeros(3, 5), position_ids=torch.arange(5)[None])
    gsm._close()
