"""The advice of a refused ``set_params(init_params=...)`` on a fitted model works.

It said "to go on fitting from the current values, assign them (m.means_ = m.means_)";
a user who did just that got a next fit whose start probabilities, transitions and
covariances were drawn afresh (a GaussianHMM started at -439.61 where the fitted model
scores -438.74). The message now names every fitted attribute, and assigning those
continues the fit from where it stopped (stop 60).
"""

import re

import numpy as np
import pytest

from tying.hmm import GMMHMM, CategoricalHMM, GaussianHMM

rng = np.random.default_rng(0)
X = np.concatenate([rng.normal(-2, 1, (100, 1)), rng.normal(2, 1, (100, 1))])
SYMBOLS = rng.integers(0, 3, (80, 1))


@pytest.mark.parametrize(
    "make, data",
    [
        (lambda: GaussianHMM(2, random_state=0), X),
        (lambda: GaussianHMM(3, "full", ties={"means": [[0, 1]]}, random_state=0), X),
        (lambda: GMMHMM(2, 2, random_state=0), X),
        (lambda: CategoricalHMM(2, random_state=0), SYMBOLS),
    ],
    ids=["gaussian", "tied-full", "gmm", "categorical"],
)
def test_following_the_advice_goes_on_fitting_from_the_current_values(make, data):
    m = make().set_params(n_iter=None)  # our defaults: init_params would switch them
    m.set_params(n_iter=3, tol=-np.inf)
    m.fit(data)
    m.set_params(n_iter=None, tol=None)
    score = m.score(data)
    with pytest.raises(ValueError, match="nothing was set") as err:
        m.set_params(init_params="")
    advice = re.search(r"assign (?:every one of )?them \((.*?)\) instead", str(err.value))
    assert advice is not None, str(err.value)
    for statement in advice.group(1).split("; "):
        exec(statement, {"m": m})
    m.set_params(n_iter=1, tol=-np.inf)
    m.fit(data)
    assert m.monitor_.history[0] == pytest.approx(score, rel=1e-12)
