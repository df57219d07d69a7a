"""The ghost probe's "not batch-first" refusal states the user's batch size (stop 39).

It said "gave 4 rows for a batch of 5 examples" for a batch of 4 (5 is its own probe's
size) and claimed the counts "happened to agree" when they had not (T != B).
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from tying.train import ghost_norms


class _PosLM(nn.Module):
    def __init__(self, T: int):
        super().__init__()
        self.emb, self.pos, self.head = nn.Embedding(7, 5), nn.Embedding(T, 5), nn.Linear(5, 7)

    def forward(self, tok):
        return self.head(torch.tanh(self.emb(tok) + self.pos(torch.arange(tok.shape[1]))))


def _tok_ce(o, y):
    return nn.functional.cross_entropy(o.transpose(1, 2), y, reduction="none").sum(1)


@pytest.mark.parametrize("B", [3, 4, 6])
def test_the_refusal_names_the_batch_the_user_passed(B):
    torch.manual_seed(0)
    m = _PosLM(4).double()
    x, y = torch.randint(0, 7, (B, 4)), torch.randint(0, 7, (B, 4))
    with pytest.raises(ValueError) as err:
        ghost_norms(m, _tok_ce, x, y)
    text = str(err.value)
    if B + 1 != 4:  # the probe (one example more) does not give 4 rows either: its refusal
        assert f"your batch of {B} ({B + 1}) gave it 4 rows" in text
        assert "happened to agree" not in text
    else:  # the probe's 4 rows matched B + 1: refused by the step's own row count
        assert f"has {B} examples" in text
