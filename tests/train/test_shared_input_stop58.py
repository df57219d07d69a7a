"""A mask shared by every example, handed in ``x`` beside the batch (stop 58).

``per_example_grads(model, ce, (x, mask), y)`` with a ``(T,)`` mask was refused by its
row count when ``T != B`` ("x[1] has 5 rows but y has 6"), and as a forward that mixes
examples when ``T == B`` (giving example 0 the mask entry of example 1 changes every
output), with causes (BatchNorm, a mean over the batch) that were not this one; neither
said the fix. Both now name it: the mask on the model as a buffer, whose per-example
gradients equal a loop's.
"""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from tying.train import per_example_grads


class Masked(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin, self.out = nn.Linear(4, 4), nn.Linear(4, 2)

    def forward(self, x, mask=None):  # x (B, T, 4); mask (T,), shared by every example
        mask = self.mask if mask is None else mask
        return self.out((self.lin(x) * mask[:, None]).sum(-2))  # (B, 2)


def ce(out, y):
    return F.cross_entropy(out, y, reduction="none")


@pytest.mark.parametrize(
    ("B", "match"),
    [
        (
            6,
            r"x\[1\] has 5 rows but y has 6.*a mask, a position table\) does not go in x: "
            r"keep it on the model \(register_buffer\)",
        ),
        (
            5,
            r"mixes examples.*If an input in x is shared by every example.*keep it on the "
            r"model \(register_buffer\)",
        ),
    ],
)
def test_a_shared_mask_in_x_is_named_with_the_fix(B, match):
    torch.manual_seed(0)
    model, mask = Masked(), torch.rand(5)
    x, y = torch.randn(B, 5, 4), torch.randint(0, 2, (B,))
    with pytest.raises(ValueError, match=match):
        per_example_grads(model, ce, (x, mask), y)
    # the fix, followed: the mask as a buffer gives a loop's per-example gradients
    model.register_buffer("mask", mask)
    got = per_example_grads(model, ce, x, y)
    for b in range(B):
        model.zero_grad()
        ce(model(x[b : b + 1]), y[b : b + 1]).sum().backward()
        for name, p in model.named_parameters():
            torch.testing.assert_close(got[name][b], p.grad, atol=1e-6, rtol=1e-5)


def test_a_per_example_mask_is_not_told_to_move():
    torch.manual_seed(1)
    model = Masked()
    x, y, rows = torch.randn(4, 5, 4), torch.randint(0, 2, (4,)), torch.rand(4, 5)

    class RowMasked(Masked):
        def forward(self, x, mask):  # (B, T) mask: one row per example
            return self.out((self.lin(x) * mask[..., None]).sum(-2))

    net = RowMasked()
    net.load_state_dict(model.state_dict())
    got = per_example_grads(net, ce, (x, rows), y)
    assert got["lin.weight"].shape == (4, 4, 4)
    with pytest.raises(
        ValueError,
        match=r"x has 3 rows but y has 4: every input and the "
        r"targets must hold the same examples, batch first$",
    ):
        per_example_grads(nn.Linear(4, 2), ce, torch.randn(3, 4), y)  # one input: no hint
