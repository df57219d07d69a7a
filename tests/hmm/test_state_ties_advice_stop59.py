"""A hand-built StateTies over some of a model's kinds: the refusal's advice works.

Stop 59: StateTies(3, {"means": [0, 0, 1]}) given to a GaussianHMM (kinds transitions,
means, covars) was refused with "resolve a spec for this model: StateTies.resolve(spec,
n_states=3, kinds=model.tie_kinds)"; with that StateTies as the spec, the call was
refused again by the same words. Its ``to_spec()`` dict, which leaves the kinds it does
not name untied, is what works.
"""

import ast

import numpy as np
import pytest

import tying
from tying.hmm import GMMHMM, CategoricalHMM, GaussianHMM, StateTies

RNG = np.random.default_rng(0)
X = RNG.normal(size=(60, 2))
SYMBOLS = RNG.integers(0, 3, (60, 1))
KW = dict(n_iter=2, tol=-np.inf, random_state=0)


@pytest.mark.parametrize(
    ("make", "kind", "data"),
    [
        (lambda t: GaussianHMM(3, ties=t, **KW), "means", X),
        (lambda t: GaussianHMM(3, "tied", ties=t, **KW), "means", X),
        (lambda t: CategoricalHMM(3, ties=t, **KW), "emissions", SYMBOLS),
        (lambda t: GMMHMM(3, 2, ties=t, **KW), "weights", X),
    ],
)
def test_the_advice_for_a_state_ties_over_some_kinds_works(make, kind, data):
    hand = StateTies(3, {kind: [0, 0, 1]})
    m = make(hand)
    with pytest.raises(tying.TieError, match=r"ties=<that StateTies>\.to_spec\(\)") as err:
        m.fit(data)
    assert not hasattr(m, "monitor_")
    spec = ast.literal_eval(str(err.value).split("to_spec() (")[1].split("), which")[0])
    assert spec == hand.to_spec() == {kind: [[0, 1]]}
    fitted = make(spec).fit(data)  # the advice, followed
    assert fitted.ties_.groups(kind) == [[0, 1], [2]]


def test_kinds_or_states_the_model_lacks_are_named():
    with pytest.raises(tying.TieError, match=r"its kinds \['emissions'\] are not this model's"):
        GaussianHMM(3, ties=StateTies(3, {"emissions": [0, 0, 1]}), **KW).fit(X)
    with pytest.raises(
        tying.TieError, match=r"its groups name states past 2; .*states 0\.\.2"
    ) as e:
        GaussianHMM(3, ties=StateTies(4, {"means": [0, 0, 1, 1]}), **KW).fit(X)
    example = ast.literal_eval(str(e.value).split("e.g. ties=")[1])
    assert GaussianHMM(3, ties=example, **KW).fit(X).ties_.groups("means") == [[0, 1], [2]]
