"""Stop 55: a buffer replaced after ``td.ddp`` (DDP broadcasting buffers) is refused by name.

DDP broadcasts rank 0's buffers before each training forward, but only the tensors it
listed when it was built. A model whose forward assigns a new tensor to a buffer (an EMA
written ``self.run = 0.9 * self.run + ...``; here one buffer shared by two modules, the
buffer form of a tie, re-assigned in both) was broadcast no more: on two gloo ranks the
buffer was 0.042 apart after 3 steps, with no error, under plain DDP and ``td.ddp`` alike
(``/tmp/h55_distributed/hunt8.py``). ``td.ddp`` now refuses it at the next training
forward; in-place updates, ``forward_sync_buffers=False`` (``broadcast_buffers=False`` before
torch 2.13) and evaluation forwards are left
alone.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

import tying
import tying.distributed as td


class _Ema(nn.Module):
    """One buffer in two modules, updated at each training forward."""

    def __init__(self, in_place: bool):
        super().__init__()
        torch.manual_seed(0)
        self.a, self.b = nn.Linear(3, 3), nn.Linear(3, 3)
        run = torch.ones(3)
        self.a.register_buffer("run", run)
        self.b.register_buffer("run", run)
        self.in_place = in_place

    def forward(self, x):  # (B, 3) -> (B, 3)
        if self.training:
            with torch.no_grad():
                if self.in_place:
                    self.a.run.mul_(0.9).add_(0.1 * x.abs().mean(0))
                else:
                    new = 0.9 * self.a.run + 0.1 * x.abs().mean(0)
                    self.a.run = new
                    self.b.run = new
        return self.a(x) * self.a.run + self.b(x) * self.b.run


def _x() -> torch.Tensor:
    return torch.randn(4, 3, generator=torch.Generator().manual_seed(1))


def test_a_buffer_replaced_after_ddp_is_refused_at_the_next_training_forward(group):
    w = td.ddp(_Ema(in_place=False))
    w(_x()).sum().backward()  # the first forward replaces a.run and b.run
    with pytest.raises(
        tying.TieError,
        match=r"tying\.distributed\.ddp: buffer\(s\) a\.run, b\.run were replaced after "
        r"wrapping .* broadcasts rank 0's values of the buffers it was built with only, .* "
        r"update buffers in place",
    ):
        w(_x())
    with torch.no_grad():  # an evaluation forward broadcasts nothing DDP trains with
        w(_x())


def test_in_place_buffer_updates_and_unbroadcast_buffers_are_left_alone(group):
    w = td.ddp(_Ema(in_place=True))
    for _ in range(3):
        w(_x()).sum().backward()
    assert w.module.a.run is w.module.b.run
    assert not torch.equal(w.module.a.run, torch.ones(3))  # it was updated
    free = td.ddp(_Ema(in_place=False), forward_sync_buffers=False)
    for _ in range(3):
        free(_x()).sum().backward()


def test_a_dtype_change_undone_after_ddp_is_no_way_back_for_a_model_with_buffers(group):
    # model.double() then model.float() gives BatchNorm new running stats, which DDP would
    # broadcast no more: the stop-53 advice "undo it and train on" must not be offered
    torch.manual_seed(0)
    m = nn.Sequential(nn.Linear(3, 3), nn.BatchNorm1d(3))
    w = td.ddp(m)
    w(_x()).sum().backward()
    m.double()
    with pytest.raises(tying.TieError, match=r"a dtype or device change is no way back for this "):
        w(_x().double())
    m.float()
    with pytest.raises(tying.TieError, match=r"buffer\(s\) 1\.running_mean, 1\.running_var were "):
        w(_x())
