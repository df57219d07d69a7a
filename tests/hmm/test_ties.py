"""Tie specs: named groups and core rules resolve to one mapping; bad specs fail clearly."""

from __future__ import annotations

import numpy as np
import pytest

import tying
from tying.hmm import StateTies

KINDS = ("transitions", "means", "covars")


def resolve(spec, n=5):
    return StateTies.resolve(spec, n_states=n, kinds=KINDS)


def test_named_groups_all_and_untied():
    t = resolve({"means": [[0, 1, 2], [3, 4]], "covars": "all", "transitions": None})
    assert t.groups("means") == [[0, 1, 2], [3, 4]]
    assert t.groups("covars") == [[0, 1, 2, 3, 4]]
    assert t.groups("transitions") == [[0], [1], [2], [3], [4]]
    assert t.is_tied("means") and not t.is_tied("transitions")
    assert t.to_spec() == {"means": [[0, 1, 2], [3, 4]], "covars": [[0, 1, 2, 3, 4]]}


def test_unlisted_states_are_singletons_and_groups_are_numbered_by_first_state():
    t = resolve({"means": [[4, 2]]})
    assert t.group_of["means"].tolist() == [0, 1, 2, 3, 2]
    assert t.groups("means") == [[0], [1], [2, 4], [3]]


def test_pool_sums_statistics_of_a_group_and_spread_reads_them_back():
    t = resolve({"means": [[0, 3]]}, n=4)
    stats = np.array([[1.0, 2.0], [10.0, 0.0], [0.0, 5.0], [3.0, 4.0]])
    pooled = t.pool("means", stats)
    assert pooled.tolist() == [[4.0, 6.0], [10.0, 0.0], [0.0, 5.0]]
    assert t.spread("means", pooled)[3].tolist() == [4.0, 6.0]


def test_core_rules_last_match_wins():
    rules = [
        tying.share("means.*", like="means.0"),
        tying.free("means.4"),
        tying.share("covars.2", like="covars.1"),
    ]
    t = resolve(rules)
    assert t.groups("means") == [[0, 1, 2, 3], [4]]
    assert t.groups("covars") == [[0], [1, 2], [3], [4]]
    # same result as the named spec
    assert t == resolve({"means": [[0, 1, 2, 3]], "covars": [[1, 2]]})


def test_core_rules_chains_and_mappings():
    t = resolve(
        [
            tying.share("means.2", like="means.1"),
            tying.share("means.1", like={"means.1": "means.0"}),
        ]
    )
    assert t.groups("means")[0] == [0, 1, 2]


@pytest.mark.parametrize(
    "spec, err, match",
    [
        ({"mean": "all"}, tying.TieError, r"unknown parameter 'mean'.*did you mean 'means'"),
        (
            {"means": [[0, 7]]},
            tying.TieError,
            r"state 7 does not exist \(n_components=5, states are 0..4\)",
        ),
        (
            {"means": [[0, 1, 2], [2, 3]]},
            tying.TieError,
            r"state 2 is in group 0 \[0, 1, 2\] and group 1 \[2, 3\]",
        ),
        ({"means": [[1, 1]]}, tying.TieError, r"state 1 is twice in group 0"),
        ({"means": [[]]}, tying.TieError, r"group 0 is empty"),
        ({"means": "some"}, tying.TieError, r"'some' is not a tie"),
        ({"means": [[0, 1.5]]}, TypeError, r"states are integers, got 1.5"),
        ({"means": [0, 1]}, TypeError, r"a group is a list of states"),
        ("means", TypeError, r"ties must be a dict"),
    ],
)
def test_bad_named_specs(spec, err, match):
    with pytest.raises(err, match=match):
        resolve(spec)


@pytest.mark.parametrize(
    "rules, match",
    [
        (
            [tying.share("mean.*", like="means.0")],
            r"matches no slot \(slots are .<kind>.<state>.*closest",
        ),
        ([tying.share("means.1", like="means.9")], r"would read 'means.9', which is not a slot"),
        ([tying.share("means.1", like="covars.1")], r"a tie joins slots of one parameter kind"),
        (
            [tying.share("means.1", like="means.2"), tying.share("means.2", like="means.1")],
            r"cycle of ties means.1 -> means.2 -> means.1",
        ),
        (
            [tying.share("means.1", like="means.0", relation=tying.Scaled())],
            r"relation .* is not supported",
        ),
    ],
)
def test_bad_rules(rules, match):
    with pytest.raises(tying.TieError, match=match):
        resolve(rules)


def test_count_logical_vs_physical():
    t = resolve({"means": [[0, 1, 2], [3, 4]], "covars": "all"})
    c = t.count({"startprob": 1, "transitions": 5, "means": 3, "covars": 3})
    assert c.logical == 5 + 25 + 15 + 15
    assert c.physical == 5 + 25 + 2 * 3 + 3
    assert isinstance(c, tying.Count)
    assert {g.physical_path for g in c.groups} == {"means.0", "means.3", "covars.0"}
    assert next(g for g in c.groups if g.physical_path == "means.0").slots == [
        "means.0",
        "means.1",
        "means.2",
    ]


def test_a_resolved_ties_object_must_fit_the_model():
    t = resolve({"means": "all"})
    got = StateTies.resolve(t, n_states=5, kinds=KINDS)
    assert got == t and got is not t  # a copy: the model does not share it (stop 58)
    with pytest.raises(tying.TieError, match="cannot serve a model with 4 states"):
        StateTies.resolve(t, n_states=4, kinds=KINDS)


def test_groups_memo_follows_changed_labels_and_hands_out_fresh_lists():
    """``groups`` is remembered between calls; a changed ``group_of`` is seen at once and
    a caller that edits the returned lists cannot change the next answer."""
    t = StateTies(4, {"means": [0, 0, 1, 2]})
    first = t.groups("means")
    assert first == [[0, 1], [2], [3]]
    first[0].append(99)
    assert t.groups("means") == [[0, 1], [2], [3]]
    t.group_of["means"] = np.array([0, 1, 1, 1])
    assert t.groups("means") == [[0], [1, 2, 3]]
    t.group_of["means"][3] = 2  # edited in place: the same array object
    assert t.groups("means") == [[0], [1, 2], [3]]


@pytest.mark.parametrize("shape", [(5,), (5, 3), (5, 3, 3)])
def test_pool_of_an_untied_kind_is_what_the_scatter_sum_gives_bit_for_bit(shape):
    """Untied kinds skip ``np.add.at`` (it took half of a full-covariance M-step), and
    still give its exact result: a fresh array, -0.0 turned into 0.0, NaN kept; and
    labels changed after a first call (now tied) are pooled again."""
    t = resolve(None)
    x = np.random.default_rng(0).normal(size=shape)
    x.flat[0], x.flat[1] = -0.0, np.nan
    want = np.zeros(shape)
    np.add.at(want, np.arange(5), x)
    got = t.pool("means", x)
    assert got is not x and got.tobytes() == want.tobytes()
    t.group_of["means"] = np.array([0, 0, 1, 2, 3])  # labels changed in place: seen
    assert t.pool("means", x).shape == (4,) + shape[1:]


def test_firsts_are_each_groups_first_state_and_follow_changed_labels():
    """``firsts`` (what the M-steps index priors with, without building ``groups``' lists
    every iteration) is ``[g[0] for g in groups(kind)]`` for any labelling, and sees
    labels edited in place; the caller gets its own array."""
    rng = np.random.default_rng(0)
    for n in (1, 2, 5, 9):
        for _ in range(20):
            raw = rng.integers(0, n, size=n)
            labels = np.unique(raw, return_inverse=True)[1]  # groups numbered 0..G-1
            order = np.unique(labels, return_index=True)[1].argsort()  # by first state
            labels = np.argsort(order)[labels]
            t = StateTies(n, {"means": labels})
            assert t.firsts("means").tolist() == [g[0] for g in t.groups("means")]
    t = StateTies(4, {"means": [0, 0, 1, 2]})
    got = t.firsts("means")
    got[0] = 99
    assert t.firsts("means").tolist() == [0, 2, 3]
    t.group_of["means"][1] = 1  # edited in place: [0, 1, 1, 2]
    assert t.firsts("means").tolist() == [0, 1, 3]
