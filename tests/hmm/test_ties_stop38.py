"""Tie specs given as one-shot iterators (stop 38).

A model reads its ``ties`` again at every fit (and when a parameter is assigned), so
groups given as a generator were read once: the first fit was tied, a second fit of the
same model found the generator empty and ran untied, with no error (or, for a group
given as ``iter([...])``, refused the group as "empty"). They are refused now, naming
the spec entry, and every re-readable container resolves the same at every read.
"""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tying.hmm import GaussianHMM, StateTies

KINDS = ("transitions", "means", "covars")


def test_a_generator_of_groups_is_refused_before_a_second_fit_could_run_untied():
    X = np.random.default_rng(0).normal(size=(40, 2))
    m = GaussianHMM(3, ties={"means": (g for g in [[0, 1]])}, n_iter=3, tol=-np.inf, random_state=0)
    with pytest.raises(TypeError, match=r"ties\['means'\] is a generator, which can be read only"):
        m.fit(X)
    assert "ties_" not in vars(m)  # the refused fit changed nothing
    m.set_params(ties={"means": [[0, 1]]})
    m.fit(X)
    first = m.ties_.groups("means")
    m.fit(X)
    assert m.ties_.groups("means") == first == [[0, 1], [2]]
    np.testing.assert_array_equal(m.means_[0], m.means_[1])


@pytest.mark.parametrize(
    "groups, match",
    [
        (iter([[0, 1]]), r"ties\['means'\] is a list_iterator"),
        ([iter([0, 1])], r"ties\['means'\] group 0 is a list_iterator"),
        ([[2], map(int, "01")], r"ties\['means'\] group 1 is a map"),
    ],
)
def test_one_shot_groups_are_refused_by_entry(groups, match):
    with pytest.raises(TypeError, match=match + r".*pass a list, e\.g\. list\(\.\.\.\)"):
        StateTies.resolve({"means": groups}, n_states=3, kinds=KINDS)


_CONTAINERS = {
    "list": list,
    "tuple": tuple,
    "set": set,
    "array": lambda g: np.array(g, dtype=np.int64),
    "iterator": iter,
}


@settings(derandomize=True, deadline=None, max_examples=60)
@given(
    labels=st.lists(st.integers(0, 3), min_size=1, max_size=7),
    outer=st.sampled_from(["list", "tuple", "iterator"]),  # a set of lists cannot be made
    inner=st.sampled_from(sorted(_CONTAINERS)),
)
def test_property_a_spec_resolves_the_same_at_every_read_or_is_refused(labels, outer, inner):
    """Any container of groups: read twice (as two fits read it) it gives the groups a
    brute-force grouping of the labels gives, both times; a one-shot one is refused."""
    n = len(labels)
    groups = [[s for s in range(n) if labels[s] == g] for g in sorted(set(labels))]
    expected = sorted(sorted(g) for g in groups)
    inner_groups = [_CONTAINERS[inner](g) for g in groups]
    spec = {"means": _CONTAINERS[outer](inner_groups)}
    if "iterator" in (outer, inner):
        with pytest.raises(TypeError, match=r"can be read only once"):
            StateTies.resolve(spec, n_states=n, kinds=KINDS)
        return
    reads = [StateTies.resolve(spec, n_states=n, kinds=KINDS) for _ in range(2)]
    assert reads[0] == reads[1]
    assert sorted(reads[1].groups("means")) == expected


def test_set_params_with_a_generator_is_refused_before_it_is_read_empty_by_fit():
    """set_params checks the spec (reading it): the generator was then empty at the first
    fit, which ran untied."""
    m = GaussianHMM(3, n_iter=2, tol=-np.inf, random_state=0)
    with pytest.raises(TypeError, match=r"ties\['covars'\] is a generator"):
        m.set_params(ties={"covars": (g for g in [[0, 1, 2]])})
    assert m.ties is None  # the refused set_params changed nothing
