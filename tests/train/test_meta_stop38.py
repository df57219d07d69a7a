"""Fast/slow weights on a tied model, and meta_fit's step count (stop 38).

With ``out.weight`` tied to ``emb.weight``, ``fast=["emb"]`` is refused for leaving the
tied path ``out.weight`` slow and advises a pattern for it, but ``fast=["emb", "out"]``
was refused too ("'out' matches no trainable parameter": ``named_parameters()`` names the
tensor by its first path only), so no list of paths made the tied tensor fast.
``meta_fit(meta_steps=-1)`` returned ``[]`` with the model untrained, with no error.
"""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

import tying
from tying.train import FastSlow


class TiedNet(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.emb = nn.Embedding(6, 4)
        self.mid = nn.Linear(4, 4)
        self.out = nn.Linear(4, 6, bias=False)
        tying.Plan([tying.share("out.weight", like="emb.weight")]).apply(self)

    def forward(self, t):  # (B,) -> (B, 6)
        return self.out(torch.tanh(self.mid(self.emb(t))))


def ce(out, y):
    return F.cross_entropy(out, y)


def _sgd_reference(model, fast_names, x, y, lr, steps):
    """Plain autograd SGD on a float64 copy, moving the fast tensors only."""
    m = copy.deepcopy(model).double()
    params = dict(m.named_parameters())
    for _ in range(steps):
        m.zero_grad()
        ce(m(x), y).backward()
        with torch.no_grad():
            for n in fast_names:
                params[n] -= lr * params[n].grad
    return m(x)


def test_both_paths_of_a_tie_can_be_named_fast_and_adapt_matches_autograd():
    net = TiedNet()
    x, y = torch.tensor([0, 1, 2, 3, 4]), torch.tensor([1, 2, 3, 4, 5])
    fs = FastSlow(net, fast=["emb", "out"], inner_lr=0.5)  # was: 'out' matches no parameter
    assert fs.fast_names == ["emb.weight"]
    fast = fs.adapt(ce, x, y, steps=2)
    want = _sgd_reference(net, fs.fast_names, x, y, 0.5, 2)
    torch.testing.assert_close(fs.predict(fast, x).double(), want, rtol=1e-5, atol=1e-6)
    with pytest.raises(
        ValueError, match=r"out\.weight is tied to emb\.weight .* \(add a pattern for emb\.weight\)"
    ):
        FastSlow(net, fast=["out"])
    with pytest.raises(ValueError, match=r"fast pattern 'head' matches no trainable parameter"):
        FastSlow(net, fast=["emb", "out", "head"])


@pytest.mark.parametrize("bad", [-1, 2.0, True, None])
def test_meta_fit_refuses_a_step_count_that_is_not_an_int_ge_0(bad):
    net = nn.Sequential(nn.Linear(1, 4), nn.Tanh(), nn.Linear(4, 1))
    before = copy.deepcopy(net.state_dict())
    fs = FastSlow(net, fast=["2"])
    with pytest.raises(
        ValueError, match=rf"meta_fit: meta_steps must be an int >= 0 \(outer steps\), got {bad!r}"
    ):
        fs.meta_fit(lambda g: None, lambda o, y: (o - y).pow(2).mean(), meta_steps=bad)
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())


PATHS = ["emb", "out", "mid", "mid.bias", "*.weight", "**"]


@settings(derandomize=True, deadline=None, max_examples=20)
@given(
    pats=st.lists(st.sampled_from(PATHS), min_size=1, max_size=3, unique=True),
    steps=st.integers(1, 2),
)
def test_property_adapt_equals_autograd_sgd_on_the_fast_tensors_or_is_refused(pats, steps):
    """Any fast patterns on a tied model: a clear refusal, or adapted outputs equal to SGD
    on exactly the matched tensors (a tie counted once, both uses in its gradient)."""
    net = TiedNet()
    x, y = torch.tensor([0, 1, 2, 5]), torch.tensor([3, 2, 1, 0])
    emb_fast = any(p in ("emb", "*.weight", "**") for p in pats)
    out_fast = any(p in ("out", "*.weight", "**") for p in pats)
    if emb_fast != out_fast:
        with pytest.raises(
            ValueError, match=r"is tied to .* a tensor cannot be both fast and slow"
        ):
            FastSlow(net, fast=pats, inner_lr=0.3)
        return
    fs = FastSlow(net, fast=pats, inner_lr=0.3)
    fast = fs.adapt(ce, x, y, steps=steps)
    want = _sgd_reference(net, fs.fast_names, x, y, 0.3, steps)
    torch.testing.assert_close(fs.predict(fast, x).double(), want, rtol=1e-5, atol=1e-6)
