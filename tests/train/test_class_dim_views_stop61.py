"""Stop 61: the class dimension followed through no-op slices, ``select`` and ``unsqueeze``.

Under Opacus' hooks a ``cross_entropy`` mean over padded targets is refused when the
examples keep different numbers of them (stop 59), counted from the output's gradient
along the dimension that holds the classes (stop 60). A slice that keeps everything
(``out[:, :]``, ``out[:, ::1]``, ``out[...]``: torch's ``AliasBackward0``) ended the walk
from the loss to the model output, so the padding went unseen: with uneven padding each
example's per-sample gradient was 0.5 off its own (examples 0 and 2 of 3), no error.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from tying.train import grad_sample_module
from tying.train._loss_divisor import output_class_dim

pytestmark = pytest.mark.filterwarnings("ignore:Full backward hook is firing:UserWarning")

B, T, C = 3, 6, 6  # T == C: only the chain from the output tells (B, T, C) from (B, C, T)


def _lm(heads: int = 0) -> nn.Module:
    torch.manual_seed(0)
    layers = [nn.Embedding(7, 6), nn.Linear(6, C)]  # (B, T) -> (B, T, C)
    if heads:
        layers.append(nn.Unflatten(-1, (1, C)))  # (B, T, 1, C)
    return nn.Sequential(*layers)


def _assert_equals_the_loop(net, loss, x, y, reduction):
    """Opacus-style hooks' per-sample gradients of ``loss`` equal a per-example loop's."""
    gsm = grad_sample_module(net, loss_reduction=reduction)
    try:
        loss(gsm(x), y).backward()
        got = net[1].weight.grad_sample.clone()
    finally:
        gsm._close()
    loop = _lm()
    for b in range(B):
        loop.zero_grad()
        loss(loop(x[b : b + 1]), y[b : b + 1]).backward()
        torch.testing.assert_close(got[b], loop[1].weight.grad, rtol=1e-5, atol=1e-6)


def _data(padded: bool):
    g = torch.Generator().manual_seed(1)
    x, y = torch.randint(0, 7, (B, T), generator=g), torch.randint(0, C, (B, T), generator=g)
    if padded:
        y[0, 2:] = -100  # example 0 keeps 2 targets, example 1 keeps 4, example 2 all 6
        y[1, 4:] = -100
    return x, y


READS = {
    "full-slice": lambda o: o[:, :].transpose(1, 2),
    "step-slice": lambda o: o[:, ::1].transpose(1, 2),
    "ellipsis": lambda o: o[...].transpose(1, 2),
}


@pytest.mark.parametrize("declared", ["mean", "sum"])
@pytest.mark.parametrize("read", list(READS.values()), ids=list(READS))
def test_an_uneven_padded_mean_read_through_a_no_op_slice_is_refused(declared, read):
    net, (x, y) = _lm(), _data(padded=True)
    gsm = grad_sample_module(net, loss_reduction=declared)
    try:
        with pytest.raises(ValueError, match=r"mean over the targets it kept .* keep from 2 to 6"):
            F.cross_entropy(read(gsm(x)), y).backward()  # was: no error, 0.5 off the loop
    finally:
        gsm._close()


def test_an_even_mean_read_through_a_no_op_slice_still_equals_the_loop():
    net, (x, y) = _lm(), _data(padded=False)
    gsm = grad_sample_module(net, loss_reduction="mean")
    F.cross_entropy(gsm(x)[:, :].transpose(1, 2), y).backward()
    got = net[1].weight.grad_sample.clone()
    gsm._close()
    loop = _lm()
    for b in range(B):
        loop.zero_grad()
        F.cross_entropy(loop(x[b : b + 1])[:, :].transpose(1, 2), y[b : b + 1]).backward()
        torch.testing.assert_close(got[b], loop[1].weight.grad, rtol=1e-5, atol=1e-6)


def test_a_selected_head_read_transposed_is_refused_when_uneven():
    net, (x, y) = _lm(heads=1), _data(padded=True)
    gsm = grad_sample_module(net, loss_reduction="mean")
    try:
        with pytest.raises(ValueError, match=r"keep from 2 to 6"):
            F.cross_entropy(gsm(x)[:, :, 0].transpose(1, 2), y).backward()
    finally:
        gsm._close()


def _dim(read, shape=(2, 5, 5)):
    out = torch.randn(*shape, requires_grad=True) * 1
    view = read(out)
    target = torch.zeros(view.shape[0], *view.shape[2:], dtype=torch.long)
    return output_class_dim(F.cross_entropy(view, target).grad_fn, out.grad_fn)


def test_the_class_dimension_is_followed_through_slices_selects_and_unsqueezes():
    assert _dim(lambda o: o[:, :].transpose(1, 2)) == 2  # was None (the alias)
    assert _dim(lambda o: o[:, 1:].transpose(1, 2)) == 2  # a shift: T cut, classes kept
    assert _dim(lambda o: o[:, :, 0].transpose(1, 2), (2, 5, 1, 5)) == 3
    assert _dim(lambda o: o[:, 0].transpose(1, 2), (2, 1, 5, 5)) == 3
    assert _dim(lambda o: o.unsqueeze(1).transpose(1, 3)[:, :, 0], (2, 5, 5)) == 2
    # classes cut (logits[..., :vocab]): the output's dimension still holds them (review 61)
    assert _dim(lambda o: o[:, :, :-1].transpose(1, 2), (2, 5, 6)) == 2
    assert _dim(lambda o: o.squeeze(2).transpose(1, 2), (2, 5, 1, 5)) == 3
    assert _dim(lambda o: o.unflatten(-1, (1, 5))[:, :, 0].transpose(1, 2)) == 2
    assert _dim(lambda o: o.index_select(1, torch.arange(5)).transpose(1, 2)) == 2


# review 61: each read ended the walk with None, and the shapes then read the classes along
# T (T == C) or matched no dimension (a vocabulary cut): 0.5 off the loop, no error
OTHER_READS = {
    "vocab-cut": (lambda o: o[..., :-1].flatten(0, 1), lambda y: y.clamp(max=C - 2).flatten()),
    "vocab-cut-narrow": (
        lambda o: o.narrow(2, 0, C - 1).transpose(1, 2),
        lambda y: y.clamp(max=C - 2),
    ),
    "full-narrow": (lambda o: o.narrow(2, 0, C).transpose(1, 2), lambda y: y),
    "squeeze": (lambda o: o.unsqueeze(2).squeeze(2).transpose(1, 2), lambda y: y),
    "unflatten-select": (lambda o: o.unflatten(-1, (1, C))[:, :, 0].transpose(1, 2), lambda y: y),
    "index-select": (lambda o: o.index_select(1, torch.arange(T)).transpose(1, 2), lambda y: y),
}


@pytest.mark.parametrize("read", list(OTHER_READS.values()), ids=list(OTHER_READS))
def test_an_uneven_padded_mean_read_through_a_class_slice_squeeze_or_view_is_refused(read):
    net, (x, y) = _lm(), _data(padded=True)
    read_out, read_y = read
    y = torch.where(y == -100, y, read_y(y.clamp(min=0)).view_as(y))
    gsm = grad_sample_module(net, loss_reduction="mean")
    try:
        with pytest.raises(ValueError, match=r"keep from 2 to 6"):
            F.cross_entropy(
                read_out(gsm(x)), y.flatten() if read_out(torch.zeros(B, T, C)).dim() == 2 else y
            ).backward()
    finally:
        gsm._close()


@pytest.mark.parametrize("read", list(OTHER_READS.values()), ids=list(OTHER_READS))
def test_an_even_mean_read_through_a_class_slice_squeeze_or_view_equals_the_loop(read):
    net, (x, y) = _lm(), _data(padded=False)
    read_out, read_y = read
    y = read_y(y).view_as(y)

    def loss(out, y):
        view = read_out(out)
        return F.cross_entropy(view, y.flatten() if view.dim() == 2 else y)

    _assert_equals_the_loop(net, loss, x, y, "mean")


# review 61: a split or chunk ended the walk from the loss to the output (not a row-keeping
# node): the padding went unseen, 0.25/0.125/0.125 (along T) or 0.5 (of the classes) off
SPLITS = {
    "chunk-T": (lambda o: o.chunk(2, 1)[0].transpose(1, 2), lambda y: y[:, : T // 2]),
    "split-classes": (
        lambda o: o.split([C - 1, 1], 2)[0].flatten(0, 1),
        lambda y: y.clamp(max=C - 2).flatten(),
    ),
}


@pytest.mark.parametrize("read", list(SPLITS.values()), ids=list(SPLITS))
def test_an_uneven_padded_mean_read_through_a_split_is_refused(read):
    net, (x, y) = _lm(), _data(padded=True)
    read_out, read_y = read
    target = torch.where(read_y(y) == -100, -100, read_y(y.clamp(min=0)))
    gsm = grad_sample_module(net, loss_reduction="mean")
    try:
        with pytest.raises(ValueError, match=r"mean over the targets it kept"):
            F.cross_entropy(read_out(gsm(x)), target).backward()
    finally:
        gsm._close()


def test_a_per_example_loop_over_split_rows_is_not_refused():
    net, (x, y) = _lm(), _data(padded=True)  # each example's own mean: right

    def loss(out, y):
        return sum(F.cross_entropy(o[0], t[0]) for o, t in zip(out.split(1), y.split(1)))

    _assert_equals_the_loop(net, loss, x, y, "sum")
