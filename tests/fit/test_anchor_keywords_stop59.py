"""lmfit's conf_interval keywords name ours instead of Python's bare TypeError (stop 59)."""

import numpy as np
import pytest

from tying.fit import GlobalFit
from tying.fit.profile import conf_interval


@pytest.fixture(scope="module")
def res():
    rng = np.random.default_rng(3)
    x = np.linspace(0, 2, 40)
    data = [(x, 2.0 * np.exp(-1.5 * x) + rng.normal(0, 0.02, 40), 0.02)]
    fit = GlobalFit(
        lambda x, a, k: a * np.exp(-k * x), data, shared=["a", "k"], init={"a": 1.0, "k": 1.0}
    )
    return fit.run()


def test_maxiter_names_max_steps_and_the_advice_works(res):
    # before: "conf_interval() got an unexpected keyword argument 'maxiter'", no fix
    with pytest.raises(TypeError, match=r"'maxiter': the budget is max_steps=.*pass max_steps=3"):
        res.conf_interval(["k"], maxiter=2)
    # lmfit's maxiter=2 takes 3 steps of one stderr; max_steps=3 reaches 3 stderr too
    ci = res.conf_interval(["k"], sigmas=(1, 2), max_steps=3)["k"]
    assert ci.lower[0] < res.values["k"] < ci.upper[0]
    # lmfit's default maxiter=200 reaches 201 stderr: ours in 10 doubling steps
    with pytest.raises(TypeError, match=r"pass max_steps=10$"):
        conf_interval(res, ["k"], maxiter=200)


@pytest.mark.parametrize(
    ("key", "match"),
    [
        ("p_names", r"names= \(the first argument\): pass names=\['k'\]"),
        ("trace", r"\.profile, the \(value, chi2\) points tried"),
        ("verbose", r"progress=True"),
        ("prob_func", r"there is none: .*F-test"),
        ("min_rel_change", r"there is none: .*levels off"),
        ("prob", r"sigmas= in σ .*erfinv"),
        ("nonsense", r"its keywords are names, sigmas, max_steps and progress"),
    ],
)
def test_other_lmfit_keywords_name_ours(res, key, match):
    value = ["k"] if key == "p_names" else True
    with pytest.raises(TypeError, match=rf"unexpected keyword argument '{key}': .*{match}"):
        res.conf_interval(**{key: value})


def test_p_names_advice_followed_works(res):
    ci = res.conf_interval(names=["k"], sigmas=(1,))
    assert list(ci) == ["k"]
