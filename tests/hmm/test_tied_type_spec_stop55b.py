"""covariance_type='tied' reads its tie spec by type, as StateTies does (stop 55, second pass).

A ``covars`` entry given as a NumPy array used to reach ``spec.get("covars") != "all"``,
whose truth value NumPy refuses ("The truth value of an array ... is ambiguous"), naming
neither ``ties`` nor the fix; a read-only mapping (``types.MappingProxyType``), which
every other covariance type accepts, was refused as "not a dict".
"""

from types import MappingProxyType

import numpy as np
import pytest

from tying.hmm import GaussianHMM

X = np.random.default_rng(0).normal(size=(60, 2))


@pytest.mark.parametrize("groups", [np.array([[0, 1]]), np.array([[0, 2]])])
def test_array_covars_groups_are_refused_by_name(groups):
    m = GaussianHMM(3, "tied", n_iter=2, tol=-np.inf, random_state=0)
    with pytest.raises(ValueError, match=r"covariance_type='tied' shares one covariance.*'full'"):
        m.set_params(ties={"covars": groups})
    assert m.ties is None  # set_params changed nothing
    m.ties = {"covars": groups}
    with pytest.raises(ValueError, match=r"covariance_type='tied' shares one covariance.*'full'"):
        m.fit(X)
    assert not hasattr(m, "means_")


def test_a_read_only_mapping_ties_a_tied_model_as_a_dict_does():
    spec = {"means": [[0, 1]]}
    kw = dict(n_iter=3, tol=-np.inf, random_state=0)
    proxy = GaussianHMM(3, "tied", ties=MappingProxyType(spec), **kw).fit(X)
    plain = GaussianHMM(3, "tied", ties=spec, **kw).fit(X)
    assert proxy.ties_.groups("means") == [[0, 1], [2]]
    assert np.array_equal(proxy.means_[0], proxy.means_[1])
    assert np.array_equal(proxy.means_, plain.means_)
    assert np.array_equal(proxy.covars_, plain.covars_)


def test_a_tied_models_own_ties_serve_another_tied_model():
    """A fitted 'tied' model's ties_ (one covariance group) was refused as 'not a dict',
    with advice about tying.share rules it was not given."""
    kw = dict(n_iter=3, tol=-np.inf, random_state=0)
    first = GaussianHMM(3, "tied", ties={"means": [[0, 1]]}, **kw).fit(X)
    again = GaussianHMM(3, "tied", ties=first.ties_, **kw).fit(X)
    assert again.ties_.groups("means") == [[0, 1], [2]]
    assert np.array_equal(again.means_, first.means_)
    assert np.array_equal(again.covars_, first.covars_)


def test_a_state_ties_with_covariance_groups_is_refused_by_a_tied_model():
    untied = GaussianHMM(3, "full", n_iter=2, tol=-np.inf, random_state=0).fit(X).ties_
    m = GaussianHMM(3, "tied", n_iter=2, tol=-np.inf, random_state=0)
    with pytest.raises(
        ValueError, match=r"\(a StateTies\) groups covars as \[\[0\], \[1\], \[2\]\]"
    ):
        m.set_params(ties=untied)
    assert m.ties is None
