"""Review of stop 59 (10b5e1f, train): false refusals and misses of the new loss-divisor
checks under Opacus' hooks (grad_sample_module).

- A plain ``F.cross_entropy(out, y)`` (nothing dropped) was refused as "unevenly padded"
  when one example's prediction was saturated (its gradient row is exactly zero: margin
  >= 104 in float32, ~12-15 in float16): "divides by the 2 kept in the whole batch" of 4.
- A per-example loss written as a loop (``out[b]``), each example's own (weighted) mean,
  the very thing the refusal advises, was refused as the batch's mean.
- A weighted or unevenly padded mean behind ``torch.stack(...).mean()`` or a cast
  (``.double()``) went unseen (per-sample gradients 0.215 / 0.02 off the loop, no error).
- The padding advice gave no way for a model that computes its loss in the forward
  (transformers' ``labels=``), nor the causal shift.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from tying.train import grad_sample_module

pytestmark = pytest.mark.filterwarnings("ignore:Full backward hook is firing:UserWarning")

B, T, C = 4, 5, 6
_G = torch.Generator().manual_seed(0)
X = torch.randn(B, T, 3, generator=_G)
Y = torch.randint(0, C, (B, T), generator=_G)
PADDED = Y.clone()
PADDED[0, 3:] = -100
PADDED[2, 1:] = -100
W = torch.arange(1.0, C + 1)


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(3, 8), nn.Tanh(), nn.Linear(8, C))


def _loop(one, x=X) -> torch.Tensor:
    net, rows = _net(), []
    for b in range(x.shape[0]):
        net.zero_grad()
        one(net(x[b : b + 1]), b).backward()
        rows.append(net[0].weight.grad.clone())
    return torch.stack(rows)


def test_a_saturated_example_is_not_read_as_a_dropped_target():
    net = _net()
    with torch.no_grad():
        net[2].bias.copy_(torch.tensor([150.0, 0, 0, 0, 0, 0]))  # class 0 by a margin of ~150
    x, y = X[:, 0], torch.tensor([0, 1, 2, 0])
    gsm = grad_sample_module(net)
    out = gsm(x)
    F.cross_entropy(out, y).backward()  # nothing dropped: was refused ("2 kept" of 4)
    alone, rows = _net(), []
    with torch.no_grad():
        alone[2].bias.copy_(net[2].bias)
    for b in range(B):
        alone.zero_grad()
        F.cross_entropy(alone(x[b : b + 1]), y[b : b + 1]).backward()
        rows.append(alone[0].weight.grad.clone())
    torch.testing.assert_close(net[0].weight.grad_sample, torch.stack(rows))


def test_padding_is_still_refused_while_the_output_is_alive():
    gsm = grad_sample_module(_net())
    out = gsm(X)
    with pytest.raises(ValueError, match=r"keep from 1 to 5 each.*labels\[:, 1:\]"):
        F.cross_entropy(out.flatten(0, 1), PADDED.flatten()).backward()


@pytest.mark.parametrize("weight", [None, W], ids=["own mean", "own weighted mean"])
def test_a_per_example_loop_of_own_means_passes_and_equals_the_loop(weight):
    net = _net()
    out = grad_sample_module(net)(X)
    (sum(F.cross_entropy(out[b], PADDED[b], weight=weight) for b in range(B)) / B).backward()
    want = _loop(lambda o, b: F.cross_entropy(o[0], PADDED[b], weight=weight))
    torch.testing.assert_close(net[0].weight.grad_sample, want)


@pytest.mark.parametrize(
    ("loss", "match"),
    [
        (
            lambda o: torch.stack([F.cross_entropy(o.flatten(0, 1), PADDED.flatten())]).mean(),
            r"mean over the targets it kept",
        ),
        (
            lambda o: F.cross_entropy(o.flatten(0, 1), Y.flatten(), weight=W).double(),
            r"class-weighted mean",
        ),
    ],
    ids=["stack-mean", "cast"],
)
def test_a_batch_set_mean_behind_a_stack_or_a_cast_is_refused(loss, match):
    net = _net()
    with pytest.raises(ValueError, match=match):
        loss(grad_sample_module(net)(X)).backward()
    assert net[0].weight.grad is None


class _CausalLM(nn.Module):
    """Computes its loss inside forward when given labels=, as transformers' models do."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.emb, self.head = nn.Embedding(C, 8), nn.Linear(8, C)

    def forward(self, ids, labels=None):
        logits = self.head(torch.tanh(self.emb(ids)))  # (B, T, C)
        if labels is None:
            return logits
        return F.cross_entropy(logits[:, :-1].flatten(0, 1), labels[:, 1:].flatten()), logits


def test_the_padding_advice_for_a_loss_inside_forward_works_as_written():
    ids, labels = Y, PADDED
    model = _CausalLM()
    gsm = grad_sample_module(model)
    with pytest.raises(ValueError, match=r"call it without labels") as err:
        gsm(ids, labels=labels)[0].backward()
    assert "F.cross_entropy(logits[:, :-1].flatten(0, 1), labels[:, 1:].flatten()" in str(err.value)
    logits = gsm(ids)  # the advice, literally
    losses = F.cross_entropy(
        logits[:, :-1].flatten(0, 1), labels[:, 1:].flatten(), ignore_index=-100, reduction="none"
    )
    kept = labels[:, 1:] != -100
    (losses.view(B, -1).sum(1) / kept.view(B, -1).sum(1).clamp(min=1)).mean().backward()
    alone, rows = _CausalLM(), []
    for b in range(B):
        alone.zero_grad()
        if kept[b].any():
            alone(ids[b : b + 1], labels=labels[b : b + 1])[0].backward()
            rows.append(alone.emb.weight.grad.clone())
        else:
            rows.append(torch.zeros_like(alone.emb.weight))
    torch.testing.assert_close(model.emb.weight.grad_sample, torch.stack(rows))


def test_a_uniform_weight_is_told_to_be_dropped_and_dropping_it_passes():
    # following the old advice (reduction='none' with the weight) scaled the loss by 3
    uniform = torch.full((C,), 3.0)
    net = _net()
    gsm = grad_sample_module(net)
    with pytest.raises(ValueError, match=r"one value throughout .* drop it"):
        F.cross_entropy(gsm(X).flatten(0, 1), Y.flatten(), weight=uniform).backward()
    F.cross_entropy(gsm(X).flatten(0, 1), Y.flatten()).backward()
    want = _loop(lambda o, b: F.cross_entropy(o.flatten(0, 1), Y[b]))
    torch.testing.assert_close(net[0].weight.grad_sample, want)
