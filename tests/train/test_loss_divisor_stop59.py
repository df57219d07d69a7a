"""Stop 59: a mean loss whose divisor the whole batch sets, under Opacus' hooks.

Torch's ``cross_entropy``/``nll_loss`` with ``reduction="mean"`` divides by the class
weights of the kept targets, ``sum(w[y])``, not by the batch size that
``loss_reduction="mean"`` multiplies back: a class weight gave every example 1.26x its
own gradient (a factor the other examples' labels set), and ``ignore_index`` over padded
rows 0.29x-1.43x, no error, in Opacus too. Now refused at the backward with advice that,
followed, equals the per-example loop; a mean whose examples all keep as many targets
(HF's shifted labels, no padding) is right and passes.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import tying
from tying.train import grad_sample_module

pytestmark = pytest.mark.filterwarnings("ignore:Full backward hook is firing:UserWarning")

B, T, V = 4, 5, 7
_G = torch.Generator().manual_seed(1)
TOK = torch.randint(0, V, (B, T), generator=_G)
LAB = torch.randint(0, V, (B, T), generator=_G)
W = torch.rand(V, generator=_G) + 0.2
PADDED = LAB.clone()
PADDED[0, 3:] = -100
PADDED[2, 1:] = -100
_LAST_TWO = torch.arange(T).expand(B, T) >= 3


def _lm() -> nn.Module:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Embedding(V, 4), nn.Tanh(), nn.Linear(4, V, bias=False))
    tying.Plan([tying.share("2.weight", like="0.weight")]).apply(net)
    return net


def _loop(per_example) -> torch.Tensor:
    """Each example's gradient of its own loss on the tied embedding, one at a time."""
    net, rows = _lm(), []
    for b in range(B):
        net.zero_grad()
        per_example(net(TOK[b : b + 1]), b).backward()
        rows.append(net[0].weight.grad.clone())
    return torch.stack(rows)


def _hooks(loss, declared="mean"):
    net = _lm()
    gsm = grad_sample_module(net, loss_reduction=declared)
    loss(gsm(TOK)).backward()
    return net[0].weight.grad_sample


def _flat(o):
    return o.flatten(0, 1)


REFUSED = [
    (
        "weighted",
        "mean",
        lambda o: F.cross_entropy(_flat(o), LAB.flatten(), weight=W),
        r"class-weighted mean .*F\.cross_entropy\(out, y, weight=w, reduction='none'\)\.mean\(\)",
    ),
    (
        "weighted, scaled for accumulation",
        "mean",
        lambda o: nn.CrossEntropyLoss(weight=W)(_flat(o), LAB.flatten()) / 2,
        r"class-weighted mean",
    ),
    (
        "weighted, label smoothing",
        "mean",
        lambda o: F.cross_entropy(_flat(o), LAB.flatten(), weight=W, label_smoothing=0.1),
        r"class-weighted mean",
    ),
    (
        "weighted mean scaled back to a sum",
        "sum",
        lambda o: F.cross_entropy(_flat(o), LAB.flatten(), weight=W) * B,
        r"loss_reduction='sum'\): the loss is a class-weighted mean .*reduction='none'\)\.sum\(\)",
    ),
    (
        "ignore_index, uneven padding",
        "mean",
        lambda o: F.cross_entropy(_flat(o), PADDED.flatten()),
        r"mean over the targets it kept .*ignore_index=-100.* 4 examples keep from 1 to 5 each",
    ),
    (
        "rows masked out",
        "mean",
        lambda o: F.cross_entropy(o[PADDED != -100], LAB[PADDED != -100]),
        r"divides by the 14 kept in the whole batch",
    ),
]


@pytest.mark.parametrize(
    ("what", "declared", "loss", "match"), REFUSED, ids=[r[0] for r in REFUSED]
)
def test_a_mean_divided_by_the_batchs_targets_is_refused_and_nothing_written(
    what, declared, loss, match
):
    net = _lm()
    gsm = grad_sample_module(net, loss_reduction=declared)
    with pytest.raises(ValueError, match=match):
        loss(gsm(TOK)).backward()
    w = net[0].weight
    assert w.grad is None and getattr(w, "grad_sample", None) is None
    # the refused forward's records were taken back: the next backward is the loop's
    losses = F.cross_entropy(_flat(gsm(TOK)), LAB.flatten(), weight=W, reduction="none")
    reduce = torch.mean if declared == "mean" else torch.sum
    reduce(losses).backward()
    want = _loop(lambda o, b: reduce(F.cross_entropy(_flat(o), LAB[b], weight=W, reduction="none")))
    torch.testing.assert_close(w.grad_sample, want, rtol=1e-5, atol=1e-6)


def test_the_old_way_was_off_by_a_factor_the_other_examples_set():
    # what Opacus' hooks gave before the refusal (plain Opacus gives the same): the
    # advised per-example reduction, the right gradients, scaled by B*T / sum(w[y])
    factor = B * T / float(W[LAB.flatten()].sum())
    want = _loop(lambda o, b: F.cross_entropy(_flat(o), LAB[b], weight=W, reduction="none").mean())
    assert abs(factor - 1.261) < 1e-3  # the figure of the report
    got = _hooks(
        lambda o: F.cross_entropy(_flat(o), LAB.flatten(), weight=W, reduction="none").mean()
    )
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)


ADVICE = [
    # the weighted message's advice, under each reduction
    (
        "mean",
        lambda o: F.cross_entropy(_flat(o), LAB.flatten(), weight=W, reduction="none").mean(),
        lambda o, b: F.cross_entropy(_flat(o), LAB[b], weight=W, reduction="none").mean(),
    ),
    (
        "sum",
        lambda o: F.cross_entropy(_flat(o), LAB.flatten(), weight=W, reduction="none").sum(),
        lambda o, b: F.cross_entropy(_flat(o), LAB[b], weight=W, reduction="none").sum(),
    ),
    # the padding message's two ways
    (
        "mean",
        lambda o: F.cross_entropy(_flat(o), PADDED.flatten(), reduction="none").mean(),
        lambda o, b: F.cross_entropy(_flat(o), PADDED[b], reduction="none").sum() / T,
    ),
    (
        "mean",
        lambda o: (
            F.cross_entropy(_flat(o), PADDED.flatten(), reduction="none").view(B, -1).sum(1)
            / (PADDED != -100).view(B, -1).sum(1).clamp(min=1)
        ).mean(),
        lambda o, b: F.cross_entropy(_flat(o), PADDED[b]),
    ),
    # legitimate means whose divisor is B times each example's own: not refused
    (
        "mean",
        lambda o: F.cross_entropy(_flat(o), LAB.flatten()),
        lambda o, b: F.cross_entropy(_flat(o), LAB[b]),
    ),
    (  # HF's causal LM loss: shifted labels, every example keeps T - 1
        "mean",
        lambda o: F.cross_entropy(_flat(o[:, :-1]), LAB[:, 1:].flatten(), ignore_index=-100),
        lambda o, b: F.cross_entropy(_flat(o[:, :-1]), LAB[b, 1:]),
    ),
    (  # the same number ignored in every example (the last two positions)
        "mean",
        lambda o: F.cross_entropy(_flat(o), LAB.masked_fill(_LAST_TWO, -100).flatten()),
        lambda o, b: F.cross_entropy(_flat(o)[:3], LAB[b, :3]),
    ),
    (
        "mean",
        lambda o: F.cross_entropy(_flat(o), LAB.flatten(), label_smoothing=0.1) / 2,
        lambda o, b: F.cross_entropy(_flat(o), LAB[b], label_smoothing=0.1) / 2,
    ),
    (  # a weighted sum is each example's own w[y_b] * loss_b
        "sum",
        lambda o: F.cross_entropy(_flat(o), PADDED.flatten(), weight=W, reduction="sum"),
        lambda o, b: F.cross_entropy(_flat(o), PADDED[b], weight=W, reduction="sum"),
    ),
]


@pytest.mark.parametrize(("declared", "loss", "per_example"), ADVICE)
def test_the_advice_and_legitimate_means_equal_the_per_example_loop(declared, loss, per_example):
    got = _hooks(loss, declared)
    torch.testing.assert_close(got, _loop(per_example), rtol=1e-5, atol=1e-6)


def test_a_uniform_weight_passes_where_the_backward_keeps_it_and_is_refused_where_freed():
    # one value throughout divides out of the mean (right); the backward frees the weight
    # before the check, so its values are seen only under retain_graph=True
    uniform = torch.full((V,), 3.0)
    net = _lm()
    gsm = grad_sample_module(net)
    F.cross_entropy(_flat(gsm(TOK)), LAB.flatten(), weight=uniform).backward(retain_graph=True)
    want = _loop(lambda o, b: F.cross_entropy(_flat(o), LAB[b]))
    torch.testing.assert_close(net[0].weight.grad_sample, want, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match=r"class-weighted mean"):
        F.cross_entropy(_flat(gsm(TOK)), LAB.flatten(), weight=uniform).backward()


def test_a_segmentation_mean_over_unevenly_ignored_pixels_is_refused():
    torch.manual_seed(0)
    net, alone = nn.Conv2d(2, 3, 1), nn.Conv2d(2, 3, 1)
    alone.load_state_dict(net.state_dict())
    gsm = grad_sample_module(net)
    x, y = torch.randn(3, 2, 4, 4), torch.randint(0, 3, (3, 4, 4))
    y[0, :2] = 255
    with pytest.raises(
        ValueError, match=r"NllLoss2DBackward0 .*ignore_index=255.* keep from 8 to 16"
    ):
        F.cross_entropy(gsm(x), y, ignore_index=255).backward()
    assert net.weight.grad is None
    F.cross_entropy(gsm(x), y, ignore_index=255, reduction="none").mean().backward()
    want = []
    for b in range(3):  # each example's kept pixels summed, over its 16 positions
        alone.zero_grad()
        losses = F.cross_entropy(
            alone(x[b : b + 1]), y[b : b + 1], ignore_index=255, reduction="none"
        )
        (losses.sum() / 16).backward()
        want.append(alone.weight.grad.clone())
    torch.testing.assert_close(net.weight.grad_sample, torch.stack(want), rtol=1e-5, atol=1e-6)


class _Causal(nn.Module):
    """Returns (hidden, logits) with hidden as wide as the vocabulary; each position's logits
    read every earlier hidden row (a cumulative sum, per example)."""

    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(V, V)
        self.head = nn.Linear(V, V)

    def forward(self, tok):
        h = self.emb(tok)  # (B, T, V)
        return h, self.head(h.cumsum(1))


def test_a_hidden_output_as_wide_as_the_classes_is_not_read_for_kept_targets():
    # every example keeps 3 of 5 targets, at other positions: the logits' kept rows are
    # even, a hidden state's non-zero rows are not (a row reaches later kept targets)
    lab = LAB.clone()
    lab[0, 3:] = -100
    lab[1, :2] = -100
    lab[2, 1:3] = -100
    lab[3, 0] = lab[3, 4] = -100

    def make():
        torch.manual_seed(0)
        return _Causal()

    net = make()
    gsm = grad_sample_module(net)
    F.cross_entropy(_flat(gsm(TOK)[1]), lab.flatten()).backward()
    alone, want = make(), []
    for b in range(B):
        alone.zero_grad()
        F.cross_entropy(_flat(alone(TOK[b : b + 1])[1]), lab[b]).backward()
        want.append(alone.emb.weight.grad.clone())
    torch.testing.assert_close(net.emb.weight.grad_sample, torch.stack(want), rtol=1e-5, atol=1e-6)


def test_a_channels_first_sequence_loss_counts_positions_not_classes():
    # (B, C, T) logits with C == T: the classes are dimension 1; uneven padding refused,
    # even padding equal to the loop
    torch.manual_seed(0)
    net = nn.Conv1d(3, 5, 1)
    x = torch.randn(B, 3, 5)
    y = torch.randint(0, 5, (B, 5), generator=torch.Generator().manual_seed(3))
    gsm = grad_sample_module(net)
    uneven = y.clone()
    uneven[1, 2:] = -100
    with pytest.raises(ValueError, match=r"NllLoss2DBackward0 .* keep from 2 to 5 each"):
        F.cross_entropy(gsm(x), uneven).backward()
    even = y.clone()
    even[:, 0] = -100
    F.cross_entropy(gsm(x), even).backward()
    alone, want = nn.Conv1d(3, 5, 1), []
    alone.load_state_dict(net.state_dict())
    for b in range(B):
        alone.zero_grad()
        F.cross_entropy(alone(x[b : b + 1]), even[b : b + 1]).backward()
        want.append(alone.weight.grad.clone())
    torch.testing.assert_close(net.weight.grad_sample, torch.stack(want), rtol=1e-5, atol=1e-6)
