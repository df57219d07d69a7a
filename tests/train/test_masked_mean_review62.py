"""Review 62: the masked-mean refusal under Opacus' hooks, read by entry.

A kept entry whose gradient is exactly zero (``clamp``; a saturated logit alike) was read
as dropped, so an even mask was refused; ``torch.stack([each example's own masked mean])
.mean()`` (a per-example loop) was refused as a batch mean; and a mask over single
entries of a ``(B, T, D)`` or ``(B, C, H, W)`` output (missing targets, valid pixels)
kept the same rows per example, so the uneven mean went unseen: 0.6x-1.2x and
0.67x-1.33x the per-example loop's gradients, no error.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from tying.train import grad_sample_module

pytestmark = pytest.mark.filterwarnings("ignore:Full backward hook is firing:UserWarning")

B, T = 3, 4
G = torch.Generator().manual_seed(0)
X, Y = torch.randn(B, T, 5, generator=G), torch.randn(B, T, 2, generator=G)
EVEN = torch.ones(B, T, dtype=torch.bool)
EVEN[:, 3] = False
UNEVEN = torch.ones(B, T, dtype=torch.bool)
UNEVEN[0, 2:] = False  # keeps 2, 3 and 4 of 4
UNEVEN[1, 3:] = False
ENTRIES = torch.ones(B, T, 2, dtype=torch.bool)
ENTRIES[0, :, 1] = False  # every example keeps 4 rows; example 0 keeps 4 entries, not 8


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(5, 8), nn.Tanh(), nn.Linear(8, 2))


TAKEN = {
    "clamp, even mask": (lambda o, y, m: F.mse_loss(o[m].clamp(min=0), y[m]), EVEN),
    "stacked per-example means": (
        lambda o, y, m: torch.stack(
            [F.mse_loss(o[b][m[b]], y[b][m[b]]) for b in range(len(o))]
        ).mean(),
        UNEVEN,
    ),
}


def _loop(loss, mask) -> torch.Tensor:
    net, want = _net(), []
    for b in range(B):
        net.zero_grad()
        loss(net(X[b : b + 1]), Y[b : b + 1], mask[b : b + 1]).backward()
        want.append(net[0].weight.grad.clone())
    return torch.stack(want)


@pytest.mark.parametrize("name", list(TAKEN))
def test_kept_entries_with_a_zero_gradient_and_per_example_means_are_taken(name):
    loss, mask = TAKEN[name]
    net = _net()
    gsm = grad_sample_module(net)
    try:
        out = gsm(X)
        loss(out, Y, mask).backward()
        got = net[0].weight.grad_sample.clone()
    finally:
        gsm._close()
    torch.testing.assert_close(got, _loop(loss, mask), rtol=1e-5, atol=1e-6)


def test_a_mask_over_single_entries_is_refused_and_nothing_written():
    net = _net()
    gsm = grad_sample_module(net)
    try:
        with pytest.raises(ValueError, match=r"mean over the entries a mask .* keep from 4 to 8"):
            F.mse_loss(gsm(X)[ENTRIES], Y[ENTRIES]).backward()
        assert all(getattr(p, "grad_sample", None) is None for p in net.parameters())
    finally:
        gsm._close()


def test_a_valid_pixel_mask_is_refused():
    torch.manual_seed(0)
    conv = nn.Conv2d(2, 1, 3, padding=1)
    x, y = torch.randn(2, 2, 4, 4, generator=G), torch.randn(2, 1, 4, 4, generator=G)
    valid = torch.ones(2, 1, 4, 4, dtype=torch.bool)
    valid[0, :, :, 2:] = False  # 8 and 16 pixels: every row of W keeps some
    gsm = grad_sample_module(conv)
    try:
        with pytest.raises(ValueError, match=r"keep from 8 to 16"):
            F.l1_loss(gsm(x)[valid], y[valid]).backward()
    finally:
        gsm._close()


def test_an_even_mask_under_fp16_autocast_is_taken():
    # residuals of 1e-3 over 40,000 kept entries: 2 r / N underflows float16 (6e-8) for
    # some kept entries, which were read as dropped: an even mask refused as uneven
    torch.manual_seed(0)
    lin = nn.Linear(3, 1)
    x = torch.randn(2, 20000, 3, generator=G)
    with torch.no_grad():
        y = lin(x) + 1e-3 * torch.randn(2, 20000, 1, generator=G)
    keep = torch.ones(2, 20000, dtype=torch.bool)
    keep[:, -5:] = False
    gsm = grad_sample_module(lin)
    try:
        with torch.autocast("cpu", dtype=torch.float16):
            out = gsm(x)
        F.mse_loss(out[keep].float(), y[keep]).backward()
        assert lin.weight.grad_sample.shape == (2, 1, 3)
    finally:
        gsm._close()


def test_a_mean_over_a_column_of_the_kept_rows_is_still_refused():
    # its gradient covers one entry of each kept row: no "could be even" from the count
    net = _net()
    gsm = grad_sample_module(net)
    try:
        with pytest.raises(ValueError, match=r"keep from 2 to 4"):
            (gsm(X)[UNEVEN][:, 0] ** 2).mean().backward()
    finally:
        gsm._close()
