"""A recurrent layer fed a ``PackedSequence`` under ``mode="vmap"`` (stop 57b).

``pack_padded_sequence`` reads each example's length as a number, which ``vmap`` cannot
do in any of the per-example ways; the expanded (watched) way failed with torch's bare
"stack expects each tensor to be equal size" (a ``RuntimeError`` naming no layer), and
``DPSGD.step`` with it. Now refused with a ``ValueError`` naming the layer and the fix,
the model and optimizer left as they were.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from tests.train.models import mse
from tying.train import DPSGD, per_example_grads

pytestmark = pytest.mark.filterwarnings("ignore:There is a performance drop:UserWarning")

_REFUSAL = r"rnn \(GRU\): per-example gradients .* a PackedSequence cannot run under vmap"


class _Packed(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.rnn, self.out = nn.GRU(4, 3, batch_first=True), nn.Linear(3, 3)
        self.double()

    def forward(self, x):  # (B, T, 4), a row of zeros is padding
        lens = (x[:, :, 0] != 0).sum(1)  # (B,)
        p = nn.utils.rnn.pack_padded_sequence(x, lens, batch_first=True, enforce_sorted=False)
        h = nn.utils.rnn.pad_packed_sequence(self.rnn(p)[0], batch_first=True, total_length=5)[0]
        return self.out(h.sum(1))  # (B, 3)


def _batch(B: int):
    g = torch.Generator().manual_seed(B)
    x = torch.randn(B, 5, 4, generator=g, dtype=torch.float64)
    x[0, 3:] = 0  # example 0 has 3 steps
    return x, torch.randn(B, 3, generator=g, dtype=torch.float64)


@pytest.mark.parametrize("B", [1, 5])
def test_a_packed_sequence_is_refused_by_layer_name(B):
    model = _Packed()
    x, y = _batch(B)
    with pytest.raises(ValueError, match=_REFUSAL):
        per_example_grads(model, mse, x, y)


def test_dpsgd_refuses_a_packed_sequence_and_changes_nothing():
    model = _Packed()
    x, y = _batch(5)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    dp = DPSGD(model, opt, noise_multiplier=0.0, max_grad_norm=1.0, sample_rate=0.1)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(ValueError, match=_REFUSAL):
        dp.step(mse, x, y)
    assert dp.steps == 0
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert all(p.grad is None for p in model.parameters())
