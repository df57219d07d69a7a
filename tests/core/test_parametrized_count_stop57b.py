"""count reads torch.nn.utils.parametrize tensors by their computed value (stop 57).

A LocallyConnected2d tied with tie_filters() (one filter repeated over every position
through parametrize) counted logical 5 = physical 5, "no tie groups": count saw the
stored original only. Every number here is counted by hand from the shapes.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.nn.utils import parametrize, prune
from torch.nn.utils.parametrizations import orthogonal, spectral_norm, weight_norm

import tying
from tying.nn import LocallyConnected2d


class _Tile(nn.Module):
    """A (4, 4) weight whose rows are one stored (4,) row."""

    def forward(self, x):
        return x.expand(4, 4)

    def right_inverse(self, w):
        return w[0].clone()


class _Repeat(nn.Module):
    """(2, 4) stored, (6, 4) read: a change of shape, allowed with unsafe=True only."""

    def forward(self, x):
        return x.repeat(3, 1)


class _Broken(nn.Module):
    def forward(self, x):
        raise RuntimeError("no value here")


def _groups(c):
    return {g.physical_path: (g.physical, g.logical, g.slots) for g in c.groups}


def test_tie_filters_counts_every_position_it_reads():
    lc = LocallyConnected2d(1, 1, input_size=3, kernel_size=2).tie_filters()
    c = tying.count(lc)
    # weight (2, 2, 1, 1, 2, 2) read from one (1, 1, 2, 2) filter, bias (2, 2, 1) from (1,)
    assert (c.logical, c.physical) == (16 + 4, 4 + 1)
    assert c.bytes_logical == 20 * 4 and c.bytes_physical == 5 * 4
    assert _groups(c) == {
        "parametrizations.weight.original": (4, 16, ["weight"]),
        "parametrizations.bias.original": (1, 4, ["bias"]),
    }


def test_any_parametrization_that_builds_more_entries_than_it_stores_forms_a_group():
    tile = nn.Linear(4, 4)
    parametrize.register_parametrization(tile, "weight", _Tile())
    c = tying.count(tile)
    assert (c.logical, c.physical) == (16 + 4, 4 + 4)
    assert _groups(c) == {"parametrizations.weight.original": (4, 16, ["weight"])}
    # unsafe=True changes the shape: (6, 4) read from (2, 4)
    rep = nn.Linear(4, 2)
    parametrize.register_parametrization(rep, "weight", _Repeat(), unsafe=True)
    c = tying.count(rep)
    assert (c.logical, c.physical) == (24 + 2, 8 + 2)
    # the module seated twice: each seat reads its 16
    twice = nn.ModuleList([tile, tile])
    c = tying.count(twice)
    assert (c.logical, c.physical) == (2 * 20, 8)
    assert _groups(c)["0.parametrizations.weight.original"] == (4, 32, ["0.weight", "1.weight"])


@pytest.mark.parametrize(
    "build, logical",
    [
        (lambda: orthogonal(nn.Linear(4, 4)), 16 + 4),
        (lambda: weight_norm(nn.Linear(4, 3)), 3 + 12 + 3),  # g, v and bias are stored
    ],
    ids=["orthogonal", "weight_norm"],
)
def test_a_parametrization_that_shares_nothing_counts_as_stored(build, logical):
    c = tying.count(build())
    assert (c.logical, c.physical, c.groups) == (logical, logical, [])


def test_pruning_and_hand_ties_count_by_hand():
    pruned = nn.Linear(4, 3)
    prune.l1_unstructured(pruned, "weight", 0.5)  # weight_orig + a mask buffer
    c = tying.count(pruned)
    assert (c.logical, c.physical, c.groups) == (15, 15, [])
    a, b = nn.Linear(3, 3), nn.Linear(3, 3)
    b.weight = a.weight  # no Plan
    c = tying.count(nn.ModuleList([a, b]))
    assert (c.logical, c.physical) == (24, 15)
    assert _groups(c) == {"0.weight": (9, 18, ["0.weight", "1.weight"])}


def test_a_parametrization_that_cannot_be_computed_is_named_not_guessed():
    lin = nn.Linear(4, 4)
    parametrize.register_parametrization(lin, "weight", _Tile())
    lin.parametrizations.weight.append(_Broken())
    with pytest.raises(tying.TieError, match=r"count: weight is computed by .*_Broken.*no value"):
        tying.count(lin)


class _Counting(_Tile):
    """A parametrization that writes a buffer of its own on every computation."""

    def __init__(self):
        super().__init__()
        self.register_buffer("calls", torch.zeros(()))

    def forward(self, x):
        self.calls += 1
        return super().forward(x)


def test_counting_a_parametrized_tensor_changes_nothing():
    sn = spectral_norm(nn.Linear(4, 3)).train()  # its power iteration updates u in training
    u = sn.parametrizations.weight[0]._u
    u_before, version = u.clone(), u._version
    assert tying.count(sn).logical == 15
    assert torch.equal(u, u_before) and u._version == version
    assert sn.training and sn.parametrizations.weight[0].training
    lin = nn.Linear(4, 4)
    parametrize.register_parametrization(lin, "weight", _Counting())
    calls = lin.parametrizations.weight[0].calls.item()
    assert tying.count(lin).logical == 20
    assert lin.parametrizations.weight[0].calls.item() == calls
