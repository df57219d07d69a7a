"""The Winograd path's chunks (tying.nn._winograd): a batch runs a few images at a time.

The forward transforms, multiplies and transforms back one chunk of whole images while
its products are still in cache; the backward walks the same chunks and sums the weight
gradient over them in order. Forcing small chunks (two images, the last one alone)
must not change any result: float64 equals the direct convolution to 1e-12, NCHW and
channels-last, with and without the input gradient, and float32 stays bit-identical
between 1 and 2 threads.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from tying.nn import _winograd as W

pytestmark = pytest.mark.skipif(not W.available(), reason="needs numba (tying[fast])")

F64 = torch.float64


def _data(b, ci, co, h, w, dtype=F64, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(b, ci, h, w, generator=g, dtype=F64)
    wt = torch.randn(co, ci, 3, 3, generator=g, dtype=F64) / (3 * ci**0.5)
    bs = torch.randn(co, generator=g, dtype=F64)
    return [t.to(dtype).requires_grad_() for t in (x, wt, bs)]


def _two_images_a_chunk(monkeypatch, b, co, h, w, padding, itemsize):
    _, _, th, tw = W._tiles(h, w, padding)
    monkeypatch.setattr(W, "_CHUNK_BYTES", 2 * th * tw * 36 * co * itemsize)
    assert W._chunk(b, th * tw, co, itemsize) == 2  # chunks (0, 2), (2, 4), (4, 5)


@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("padding", [0, 1, 2])
def test_chunks_of_images_equal_the_direct_convolution_in_float64(
    monkeypatch, channels_last, padding
):
    b, ci, co, h, w = 5, 3, 4, 11, 9
    _two_images_a_chunk(monkeypatch, b, co, h, w, padding, 8)
    x, wt, bs = _data(b, ci, co, h, w)
    if channels_last:
        x = x.detach().contiguous(memory_format=torch.channels_last).requires_grad_()
    y = W.winograd_conv2d(x, wt, bs, padding)
    ref = F.conv2d(x, wt, bs, padding=padding)
    g = torch.randn(ref.shape, dtype=F64, generator=torch.Generator().manual_seed(7))
    ours = [y.detach(), *torch.autograd.grad(y, (x, wt, bs), g)]
    theirs = [ref.detach(), *torch.autograd.grad(ref, (x, wt, bs), g)]
    for a, r in zip(ours, theirs, strict=True):
        assert float((a - r).norm() / r.norm()) <= 1e-12
    if channels_last:
        assert y.is_contiguous(memory_format=torch.channels_last)
        assert ours[1].is_contiguous(memory_format=torch.channels_last)


def test_chunks_of_images_give_the_weight_gradient_alone(monkeypatch):
    b, ci, co, h, w = 5, 2, 3, 8, 8
    _two_images_a_chunk(monkeypatch, b, co, h, w, 1, 8)
    x, wt, bs = _data(b, ci, co, h, w)
    x = x.detach()  # the goal row's step: gradients to the parameters only
    y = W.winograd_conv2d(x, wt, bs, 1)
    ref = F.conv2d(x, wt, bs, padding=1)
    dw, db = torch.autograd.grad(y.square().sum(), (wt, bs))
    dw_ref, db_ref = torch.autograd.grad(ref.square().sum(), (wt, bs))
    assert float((dw - dw_ref).norm() / dw_ref.norm()) <= 1e-12
    assert float((db - db_ref).norm() / db_ref.norm()) <= 1e-12


def test_chunked_results_do_not_depend_on_the_thread_count(monkeypatch):
    b, ci, co, h, w = 5, 16, 16, 19, 23
    _two_images_a_chunk(monkeypatch, b, co, h, w, 1, 4)
    x, wt, bs = _data(b, ci, co, h, w, dtype=torch.float32)
    before = torch.get_num_threads()
    runs = []
    try:
        for n in (1, 2):
            torch.set_num_threads(n)
            y = W.winograd_conv2d(x, wt, bs, 1)
            runs.append([y, *torch.autograd.grad(y.square().sum(), (x, wt, bs))])
    finally:
        torch.set_num_threads(before)
    for one, two in zip(*runs, strict=True):
        assert torch.equal(one, two)


@pytest.mark.parametrize("where", ["input", "upstream"])
def test_a_non_finite_value_in_a_later_chunk_falls_back_to_the_direct_convolution(
    monkeypatch, where
):
    b, ci, co, h, w = 5, 2, 3, 8, 8
    _two_images_a_chunk(monkeypatch, b, co, h, w, 1, 4)
    x, wt, bs = (t.detach() for t in _data(b, ci, co, h, w, dtype=torch.float32))
    g = torch.randn(b, co, h, w, generator=torch.Generator().manual_seed(3))
    (x if where == "input" else g)[4, 1, 3, 5] = float("inf")  # the last chunk only
    outs = []
    for fn in (lambda *a: W.winograd_conv2d(*a, 1), lambda *a: F.conv2d(*a, padding=1)):
        leaves = [t.clone().requires_grad_() for t in (x, wt, bs)]
        y = fn(*leaves)
        outs.append([y, *torch.autograd.grad(y, leaves, g)])
    for ours, direct in zip(*outs, strict=True):
        assert torch.equal(torch.isnan(ours), torch.isnan(direct))
        assert torch.equal(torch.isinf(ours), torch.isinf(direct))
