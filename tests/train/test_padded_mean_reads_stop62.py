"""Stop 62: a padded mean read through ops the walk to the model output does not know.

Under Opacus' hooks a ``cross_entropy`` mean over padded targets is refused when the
examples keep different numbers of them (stop 59), counted from the output's gradient.
The walk from the loss to the output followed only the ops known to keep each row where
it was, and any other op in between (``out.gather``, ``torch.stack(out.unbind(1), 1)``,
``expand``, ``as_strided``, ``torch.cat`` of slices, ``roll``, ``flip``, ``torch.where``,
``softmax().log()``, ``tensor_split``) hid the padding: per-sample gradients 0.67x and
1.33x the per-example loop's (examples keeping 2, 3 and 4 of 4 targets), no error. The
output the loss reaches first is now read by its shape.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from tying.train import grad_sample_module
from tying.train._loss_divisor import nearest_outputs

pytestmark = pytest.mark.filterwarnings("ignore:Full backward hook is firing:UserWarning")

B, T, V = 3, 4, 6

READS = {
    "gather": lambda o: o.gather(-1, torch.arange(V).expand(o.shape[0], T, V)),
    "unbind-stack": lambda o: torch.stack(o.unbind(1), 1),
    "expand": lambda o: o[:, :, None].expand(-1, -1, 1, -1).squeeze(2),
    "as_strided": lambda o: o.as_strided(o.shape, o.stride()),
    "roll": lambda o: o.roll(1, 1),
    "flip": lambda o: o.flip(1),
    "cat": lambda o: torch.cat([o[:, :2], o[:, 2:]], 1),
    "where": lambda o: torch.where(torch.ones(1, 1, 1, dtype=torch.bool), o, 0.0),
    "softmax-log": lambda o: o.softmax(-1).log(),
    "tensor_split": lambda o: torch.cat(o.tensor_split(2, dim=1), 1),
}


def _lm() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Embedding(V, 5), nn.Linear(5, V))  # (B, T) -> (B, T, V)


def _data(padded: bool):
    g = torch.Generator().manual_seed(1)
    x, y = torch.randint(0, V, (B, T), generator=g), torch.randint(0, V, (B, T), generator=g)
    if padded:
        y[0, 2:] = -100  # keeps 2, 3 and 4 of 4
        y[1, 3:] = -100
    else:
        y[:, 3:] = -100  # every example keeps 3: the mean is each one's own
    return x, y


def _loss(read, out, y):
    return F.cross_entropy(read(out).flatten(0, 1), y.flatten())


def _loop(read, x, y) -> torch.Tensor:
    net, want = _lm(), []
    for b in range(B):
        net.zero_grad()
        _loss(read, net(x[b : b + 1]), y[b : b + 1]).backward()
        want.append(net[1].weight.grad.clone())
    return torch.stack(want)


@pytest.mark.parametrize("name", list(READS))
def test_uneven_padding_behind_another_op_is_refused(name):
    read = READS[name]
    x, y = _data(padded=True)
    net = _lm()
    gsm = grad_sample_module(net)
    try:
        with pytest.raises(ValueError, match=r"mean over the targets it kept .* keep from 2 to 4"):
            _loss(read, gsm(x), y).backward()
        assert getattr(net[1].weight, "grad_sample", None) is None  # nothing written
    finally:
        gsm._close()


@pytest.mark.parametrize("name", list(READS))
def test_even_padding_behind_another_op_equals_the_loop(name):
    read = READS[name]
    x, y = _data(padded=False)
    net = _lm()
    gsm = grad_sample_module(net)
    try:
        _loss(read, gsm(x), y).backward()
        got = net[1].weight.grad_sample.clone()
    finally:
        gsm._close()
    torch.testing.assert_close(got, _loop(read, x, y), rtol=1e-5, atol=1e-6)


def test_an_output_behind_the_read_one_is_not_reached_first():
    h = torch.randn(2, 3, 4, requires_grad=True) * 1
    logits = h.cumsum(1) * 2
    loss = F.cross_entropy(logits.roll(1, 1).flatten(0, 1), torch.zeros(6).long())
    found = nearest_outputs(loss.grad_fn, [h.grad_fn, logits.grad_fn])
    assert found == {id(logits.grad_fn)}
    assert nearest_outputs(loss.grad_fn, [None]) == set()


LOOPS = {  # each example's own mean, read through ops the chain does not know
    "select-flip": lambda o, y, b: (o[b].flip(0), y[b].flip(0)),
    "slice-roll": lambda o, y, b: (o[b : b + 1].roll(1, 1)[0], y[b].roll(1, 0)),
    "unbind-gather": lambda o, y, b: (
        o.unbind(0)[b].gather(-1, torch.arange(V).expand(T, V)),
        y[b],
    ),
}


@pytest.mark.parametrize("name", list(LOOPS))
def test_a_per_example_loop_behind_another_op_is_not_refused(name):
    # the loss the refusals advise (each example's own mean), with uneven padding
    pick = LOOPS[name]
    x, y = _data(padded=True)

    def loss(out, y):
        return sum(F.cross_entropy(*pick(out, y, b)) for b in range(len(y)))

    net = _lm()
    gsm = grad_sample_module(net, loss_reduction="sum")
    try:
        loss(gsm(x), y).backward()
        got = net[1].weight.grad_sample.clone()
    finally:
        gsm._close()
    alone, want = _lm(), []
    for b in range(B):
        alone.zero_grad()
        loss(alone(x[b : b + 1]), y[b : b + 1]).backward()
        want.append(alone[1].weight.grad.clone())
    torch.testing.assert_close(got, torch.stack(want), rtol=1e-5, atol=1e-6)


def test_a_mean_over_two_examples_picked_one_by_one_is_refused():
    x, y = _data(padded=True)
    net = _lm()
    gsm = grad_sample_module(net, loss_reduction="sum")
    try:
        out = gsm(x)
        both = torch.cat([out[0], out[1].roll(1, 0)])  # examples 0 and 1 keep 2 and 3
        with pytest.raises(ValueError, match=r"mean over the targets it kept"):
            F.cross_entropy(both, torch.cat([y[0], y[1].roll(1, 0)])).backward()
    finally:
        gsm._close()
