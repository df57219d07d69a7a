"""Forwards that mix only some examples are refused by the ways that take rows for examples.

The probe moved example 0 and then the last one; a forward in which example k reads
example i for other i (examples 1 and 2 mixed, every example reading the middle one)
left both moves without effect elsewhere, and ghost clipping and Opacus' hooks took
each row's gradient for that example's own, with no error (stop 42). The probe now also
moves the examples by each bit of their index (:func:`~tying.train._vetting.
_refuse_group_mixing`), which separates every pair.
"""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from tests.train.models import Reads, loop_grads, sq_err
from tying.train import ghost_norms, grad_sample_module, private_grad

pytest.importorskip("opacus", reason="the privacy extra: pip install 'tying[privacy]'")

pytestmark = pytest.mark.filterwarnings("ignore:Full backward hook is firing:UserWarning")


def _pair(k, i):
    def mix(h, c):
        rows = torch.arange(h.shape[0], device=h.device)
        return h + c * (rows == k).to(h.dtype)[:, None] * h[i]

    return mix


MIXES = {
    "examples 1 and 2 only": lambda h, c: torch.cat([h[:1], (h[1:3] + c * h[1:3].flip(0)), h[3:]]),
    "every example reads the middle one": lambda h, c: h + c * h[h.shape[0] // 2],
    "roll by 2": lambda h, c: h + c * h.roll(2, 0),
    "running mean over a window of 3": lambda h, c: torch.stack(
        [h[max(0, b - 2) : b + 1].mean(0) for b in range(h.shape[0])]
    ),
}


def _batch(B, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(B, 4, generator=g, dtype=torch.float64)
    return x, torch.randn(B, 3, generator=g, dtype=torch.float64)


def _loop_norms(model, x, y):
    g = loop_grads(model, sq_err, x, y)
    return torch.cat([v.flatten(1) for v in g.values()], 1).norm(dim=1)


def _row_norms(model, x, y):
    """Each example's gradient of its own loss on the batch's forward (autograd, one
    backward per row): the reference when the forward reads positions but no other row."""
    losses, params = sq_err(model(x), y), list(model.parameters())
    rows = [torch.autograd.grad(losses[b], params, retain_graph=True) for b in range(len(y))]
    return torch.stack([torch.cat([t.flatten() for t in r]).norm() for r in rows])


@pytest.mark.parametrize("B", [5, 7, 8])
@pytest.mark.parametrize("name", sorted(MIXES))
def test_ghost_refuses_a_forward_that_mixes_some_examples(name, B):
    torch.manual_seed(0)
    model = Reads(MIXES[name]).double()
    x, y = _batch(B)
    with pytest.raises(ValueError, match="ghost clipping: the forward mixes examples"):
        ghost_norms(model, sq_err, x, y)
    with pytest.raises(ValueError, match="ghost clipping: the forward mixes examples"):
        private_grad(model, sq_err, x, y, max_grad_norm=1.0, noise_multiplier=0.0, mode="ghost")


@pytest.mark.parametrize("name", sorted(MIXES))
def test_opacus_hooks_refuse_a_forward_that_mixes_some_examples(name):
    torch.manual_seed(0)
    model = Reads(MIXES[name]).double()
    x, _ = _batch(7)
    gsm = grad_sample_module(model, loss_reduction="sum")
    try:
        with pytest.raises(ValueError, match="grad_sample_module: the forward mixes examples"):
            gsm(x)
    finally:
        gsm._close()
    assert all(p.grad is None and not hasattr(p, "grad_sample") for p in model.parameters())


def test_the_group_probe_names_the_mixing_module_and_the_moved_examples():
    class Mid(nn.Module):
        def forward(self, h):
            return h + 0.5 * h[h.shape[0] // 2]

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 6), Mid(), nn.Linear(6, 3)).double()
    x, y = _batch(7)
    with pytest.raises(ValueError, match=r"giving examples 1, 3, 5 the inputs of other .*"
                       r"first in the output of module 1 \(Mid\)"):  # fmt: skip
        ghost_norms(model, sq_err, x, y)


@settings(derandomize=True, deadline=None, max_examples=25)
@given(
    B=st.integers(3, 9),
    k=st.integers(0, 8),
    i=st.integers(0, 8),
    c=st.sampled_from([0.0, 1e-3, 0.5]),
)
def test_property_any_pair_that_mixes_is_refused_and_no_mix_equals_the_loop(B, k, i, c):
    """Example k reading example i, for any pair: refused by ghost clipping; with no
    mixing, ghost norms equal each row's own gradient norm on the batch (k = i: row k
    scaled, which reads no other example) and, with c = 0, a per-example loop's."""
    k, i = k % B, i % B
    torch.manual_seed(B)
    model = Reads(_pair(k, i) if c else (lambda h, c: h), c).double()
    x, y = _batch(B, seed=k + 10 * i)
    if c == 0.0 or k == i:
        got = ghost_norms(model, sq_err, x, y)
        torch.testing.assert_close(got, _row_norms(model, x, y), rtol=1e-10, atol=1e-12)
        if c == 0.0:
            torch.testing.assert_close(got, _loop_norms(model, x, y), rtol=1e-10, atol=1e-12)
    else:
        with pytest.raises(ValueError, match="the forward mixes examples"):
            ghost_norms(model, sq_err, x, y)
