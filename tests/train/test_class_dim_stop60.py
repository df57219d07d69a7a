"""Stop 60: where the classes are in a model output that the loss reads transposed.

Under Opacus' hooks (``grad_sample_module``) a ``cross_entropy`` mean over padded tokens
is refused when the examples keep different numbers of tokens (stop 59): the kept counts
are read from the output's gradient, a dropped token being a row of zeros. A ``(B, T, C)``
LM output read as ``out.transpose(1, 2)`` was told from a ``(B, C, T)`` one by its shape
only, so with ``T == C`` its gradient was read along T: the counts came out even, the
padded mean passed, and each example got ``B n_b / N`` times its own gradient, no error
(with ``T != C`` it was refused). The chain from the output to the loss now says which
dimension holds the classes.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from tying.train import grad_sample_module
from tying.train._loss_divisor import output_class_dim

pytestmark = pytest.mark.filterwarnings("ignore:Full backward hook is firing:UserWarning")

B, T, C = 3, 5, 5  # T == C: the shapes cannot tell (B, T, C) from (B, C, T)


def _lm() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Embedding(7, 6), nn.Linear(6, C))  # (B, T) -> (B, T, C)


def _data(padded: bool):
    g = torch.Generator().manual_seed(1)
    x, y = torch.randint(0, 7, (B, T), generator=g), torch.randint(0, C, (B, T), generator=g)
    if padded:
        y[0, 1:] = -100  # example 0 keeps 1 token, example 1 keeps 3, example 2 all 5
        y[1, 3:] = -100
    return x, y


@pytest.mark.parametrize("declared", ["mean", "sum"])
@pytest.mark.parametrize(
    "read",
    [
        lambda o: o.transpose(1, 2),
        lambda o: o.permute(0, 2, 1),
        lambda o: o.transpose(-1, -2) * 2.0,
    ],
    ids=["transpose", "permute", "transpose-neg-dims-scaled"],
)
def test_a_transposed_output_with_uneven_padding_is_refused_when_t_equals_c(declared, read):
    net, (x, y) = _lm(), _data(padded=True)
    gsm = grad_sample_module(net, loss_reduction=declared)
    with pytest.raises(ValueError, match=r"mean over the targets it kept .* keep from 1 to 5"):
        F.cross_entropy(read(gsm(x)), y).backward()  # was: no error, scaled gradients
    gsm._close()


def test_a_transposed_output_without_padding_still_equals_the_loop():
    net, (x, y) = _lm(), _data(padded=False)
    gsm = grad_sample_module(net, loss_reduction="mean")
    F.cross_entropy(gsm(x).transpose(1, 2), y).backward()
    got = net[1].weight.grad_sample.clone()
    gsm._close()
    loop = _lm()
    for b in range(B):
        loop.zero_grad()
        F.cross_entropy(loop(x[b : b + 1]).transpose(1, 2), y[b : b + 1]).backward()
        torch.testing.assert_close(got[b], loop[1].weight.grad, rtol=1e-5, atol=1e-6)


def test_a_channels_first_output_with_uneven_padding_is_still_refused():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv1d(C, C, 1))  # (B, C, T) -> (B, C, T), classes in dim 1
    x, (_, y) = torch.randn(B, C, T), _data(padded=True)
    gsm = grad_sample_module(net, loss_reduction="mean")
    with pytest.raises(ValueError, match=r"keep from 1 to 5"):
        F.cross_entropy(gsm(x), y).backward()
    gsm._close()


def test_output_class_dim_follows_the_chain():
    out = torch.randn(2, 4, 4, requires_grad=True) * 1
    y = torch.zeros(2, 4, dtype=torch.long)
    ce = F.cross_entropy
    assert output_class_dim(ce(out, y).grad_fn, out.grad_fn) == 1
    assert output_class_dim(ce(out.transpose(1, 2), y).grad_fn, out.grad_fn) == 2
    assert output_class_dim(ce(out.permute(0, 2, 1) / 3, y).grad_fn, out.grad_fn) == 2
    flat = ce(out.flatten(0, 1), y.flatten()).grad_fn  # (B*T, C): the classes stay last
    assert output_class_dim(flat, out.grad_fn) == 2  # review 61: trailing dimensions kept
    sliced = ce(out[:, :, :-1], y[:, :-1]).grad_fn  # a slice of T: followed since stop 61
    assert output_class_dim(sliced, out.grad_fn) == 1
    cut = ce(out[:, :-1], y).grad_fn  # a slice of the classes: the output's dimension
    assert output_class_dim(cut, out.grad_fn) == 1  # holds them (review 61)
