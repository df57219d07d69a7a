"""Multi-task sharing after an earlier ``share_hard`` (stop 38).

``soft_penalty`` read the trunk parameter names of trunk 0 only; once ``share_hard([[1, 0]])``
had made trunk 0 the tied one it listed none, and the penalty was 0 for every edge (6.0
before), with no error. ``share_hard`` only adds ties: ``share_hard([[0], [1]])`` after
``share_hard([[0, 1]])`` returned as if the trunks were separate again, with no error.
"""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

import tying
from tying.train import MultiTaskNet


def _net(K=3, seed=0):
    torch.manual_seed(seed)
    net = MultiTaskNet(
        nn.Sequential(nn.Linear(4, 3), nn.Tanh(), nn.Linear(3, 2)), nn.Linear(2, 1), K
    )
    with torch.no_grad():  # trunks start equal; move each so the penalty is not 0
        for k, t in enumerate(net.trunks):
            for p in t.parameters():
                p.add_(torch.randn_like(p) * (k + 1))
    return net


def _brute_penalty(net, edges, lam):
    """λ/2 Σ ‖θ_i − θ_j‖² from each trunk's values as its forward reads them (float64)."""
    flat = [
        torch.cat([t[0].weight.flatten(), t[0].bias, t[2].weight.flatten(), t[2].bias]).detach()
        for t in net.trunks
    ]
    return (
        lam / 2 * sum(float((flat[i].double() - flat[j].double()).square().sum()) for i, j in edges)
    )


def test_soft_penalty_counts_trunks_when_trunk_0_is_the_tied_one():
    net = _net()
    edges = [(0, 2), (1, 2)]
    before = net.soft_penalty(edges, 1.0).item()
    net.share_hard([[1, 0]])  # trunk 0 now reads trunk 1's tensors
    assert tying.ties(net)[0].target.startswith("trunks.0.")
    got = net.soft_penalty(edges, 1.0).item()
    assert got > 0  # was 0.0
    assert got == pytest.approx(_brute_penalty(net, edges, 1.0), rel=1e-5)
    assert got != pytest.approx(before)  # trunk 0 moved to trunk 1's value


def test_share_hard_refuses_to_put_tied_trunks_apart_and_changes_nothing():
    net = _net()
    net.share_hard([[0, 1]])
    net.share_hard([[0, 1], [2]])  # the same grouping again is fine
    ties_before = tying.ties(net)
    for groups in ([[0], [1], [2]], [[1, 2]], [[0, 2]]):
        with pytest.raises(
            ValueError,
            match=r"share_hard: the trunks of tasks 0 and 1 are already tied "
            r"\(trunks\.1\.0\.weight -> trunks\.0\.0\.weight, from an earlier share_hard\), but "
            r"groups .* puts them apart; .*Untie first \(tying\.untie\(net\)",
        ):
            net.share_hard(groups)
        assert tying.ties(net) == ties_before
    tying.untie(net)
    net.share_hard([[0], [1, 2]])  # after untie the new grouping holds
    assert net.trunks[0][0].weight is not net.trunks[1][0].weight
    assert net.trunks[1][0].weight is net.trunks[2][0].weight


def test_share_hard_names_a_task_in_two_groups_and_a_non_int_task():
    with pytest.raises(ValueError, match=r"task 1 is in two groups, \[0, 1\] and \[1, 2\]"):
        _net().share_hard([[0, 1], [1, 2]])
    with pytest.raises(ValueError, match=r"task 3 is out of range 0\.\.2; groups were"):
        _net().share_hard([[0, 3]])
    with pytest.raises(TypeError, match=r"task indices must be ints, got bool True"):
        _net().share_hard([[0, True]])


@settings(derandomize=True, deadline=None, max_examples=15)
@given(
    first=st.lists(st.integers(0, 3), min_size=2, max_size=4, unique=True),
    edges=st.lists(st.tuples(st.integers(0, 3), st.integers(0, 3)), min_size=1, max_size=5),
    lam=st.floats(0.1, 10.0),
)
def test_property_soft_penalty_equals_the_brute_force_laplacian_after_any_grouping(
    first, edges, lam
):
    net = _net(K=4)
    net.share_hard([first])  # first[0] is the source; any other task, 0 included, is tied
    # every listed edge counts, as in the brute force (an edge and its reverse too, stop 59)
    got = net.soft_penalty(edges, lam, undirected=False).item()
    assert got == pytest.approx(_brute_penalty(net, edges, lam), rel=1e-5, abs=1e-6)
