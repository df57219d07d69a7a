"""Stop 58 review of 85bbe8b (tying.train): siblings the fix missed.

PRV's other refusal, "cannot place delta on its grid" (Opacus' "Cannot compute epsilon",
δ met before the grid's first point while RDP's bound is above 0), was a plain ValueError,
so it still escaped the callers the commit fixed, with the advice they cannot take:

- ``noise_for_epsilon(4.0, 0.999, 1.0, 10)`` (RDP by default) raised it, naming
  noise_multiplier=1.0 (never passed) and telling the caller to use accountant='rdp';
- ``DPSGD.epsilon(0.999)`` with ``accountant="prv"`` said ``accountant='rdp'`` only;
- a history of two segments at δ = 0.99 raised Opacus' bare ``RuntimeError: Cannot compute
  epsilon`` (one segment answers 0.0).

And the new shared-input hint blamed ``x[0]`` (with "keep it on the model") when the
inputs in x all agree and y is the one with the wrong row count.
"""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from tying.train import DPSGD, epsilon, noise_for_epsilon, per_example_grads
from tying.train.accounting import epsilon_of_history


def test_noise_for_epsilon_by_rdp_answers_where_prv_cannot_place_delta():
    sigma = noise_for_epsilon(4.0, 0.999, 1.0, 10)  # raised PRV's "cannot place" refusal
    assert epsilon(1.0, sigma, 10, 0.999) <= 4.0 < epsilon(1.0, sigma / 1.002, 10, 0.999)


def test_a_history_at_a_large_delta_answers_as_one_segment_does():
    assert epsilon(1.0, 3.0, 1, 0.99, accountant="prv") == 0.0
    # was Opacus' bare RuntimeError("Cannot compute epsilon")
    assert epsilon_of_history([(1.0, 3.0, 1), (1.0, 4.0, 1)], 0.99, accountant="prv") == 0.0


def test_dpsgd_epsilon_says_to_set_its_accountant_where_prv_cannot_place_delta():
    model = nn.Linear(3, 2)
    dp = DPSGD(
        model,
        torch.optim.SGD(model.parameters(), lr=0.1),
        noise_multiplier=1.0,
        max_grad_norm=1.0,
        sample_rate=0.5,
        accountant="prv",
        generator=torch.Generator().manual_seed(0),
    )
    dp.history, dp.steps = [(0.5, 0.5, 10)], 10
    with pytest.raises(ValueError, match=r"set dp\.accountant = 'rdp' and call dp\.epsilon"):
        dp.epsilon(0.999)
    dp.accountant = "rdp"  # the advice, followed
    assert dp.epsilon(0.999) == epsilon(0.5, 0.5, 10, 0.999) > 0


class _Masked(nn.Module):
    def __init__(self):
        super().__init__()
        self.emb, self.out = nn.Embedding(10, 4), nn.Linear(4, 2)

    def forward(self, tok, mask):  # tok (B, T), mask (B, T): both per example
        return self.out((self.emb(tok) * mask[..., None]).sum(1))  # (B, 2)


def _ce(out, y):
    return F.cross_entropy(out, y, reduction="none")


def test_targets_with_the_wrong_row_count_are_named_not_the_inputs():
    torch.manual_seed(0)
    tok, mask, y = torch.randint(0, 10, (5, 3)), torch.rand(5, 3), torch.randint(0, 2, (5,))
    with pytest.raises(ValueError, match=r"^y has 4 rows but every input in x has 5") as info:
        per_example_grads(_Masked(), _ce, (tok, mask), y[:4])
    assert "register_buffer" not in str(info.value)  # the token ids are not a shared mask
    # a mask with the wrong rows beside the batch still gets the hint
    with pytest.raises(ValueError, match=r"x\[1\] has 4 rows but y has 5.*register_buffer"):
        per_example_grads(_Masked(), _ce, (tok, mask[:4]), y)
