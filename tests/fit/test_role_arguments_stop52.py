"""The dict arguments of a fit (init, fixed, bounds, per_group) and the names in roles (stop 52).

``dict(value or {})`` took whatever came: an array (``init=result.x``) raised NumPy's
"truth value of an array is ambiguous", a result (``init=result``) "'FitResult' object is
not iterable", a list of values "dictionary update sequence element #0", and a list of
names in ``shared`` "unhashable type: 'list'": none named the argument or the fix.
"""

from __future__ import annotations

import numpy as np
import pytest

from tying.fit import GlobalFit

X = np.linspace(0.0, 3.0, 20)
DATA = [(X, 2.0 * np.exp(-1.3 * X) + 0.01 * np.sin(7 * X), 0.01)] * 2


def _model(x, a, k):
    return a * np.exp(-k * x)


@pytest.fixture(scope="module")
def result():
    return GlobalFit(_model, DATA, shared=["k"], local=["a"], init={"a": 1.0, "k": 1.0}).run()


def test_a_refit_from_a_result_takes_its_values_and_says_so_for_anything_else(result):
    # refit from result.values: the start is the minimum (lmfit's answer: same values)
    again = GlobalFit(_model, DATA, shared=["k"], local=["a"], init=result.values).run()
    assert again.success and again.values["k"] == pytest.approx(result.values["k"], rel=1e-9)
    with pytest.raises(
        TypeError,
        match=r"init must be a dict \{name: value\}, got FitResult; e.g. init=\{'a': 1.0\}; "
        r"to start from a fit's result pass init=result.values",
    ):
        GlobalFit(_model, DATA, shared=["k"], local=["a"], init=result).run()
    for vector in (result.x, list(result.x)):
        with pytest.raises(
            TypeError,
            match=rf"init must be a dict \{{name: value\}}, got {type(vector).__name__} .*"
            r"a vector of values \(result.x\) has no names: pass init=result.values",
        ):
            GlobalFit(_model, DATA, shared=["k"], local=["a"], init=vector).run()


@pytest.mark.parametrize(
    ("label", "value", "example"),
    [
        ("fixed", np.array([1.0]), r"fixed=\{'c': 0.1\}"),
        ("fixed", [("k", 1.0)], r"fixed=\{'c': 0.1\}"),
        ("bounds", np.array([0.0, 1.0]), r"bounds=\{'a': \(0.0, None\)\}"),
        ("bounds", [("k", (0.0, 1.0))], r"bounds=\{'a': \(0.0, None\)\}"),
        ("per_group", ["k"], r"per_group=\{'offset': 'instrument'\}"),
        ("init", "k", r"init=\{'a': 1.0\}"),
    ],
    ids=[
        "fixed-array",
        "fixed-pairs",
        "bounds-array",
        "bounds-pairs",
        "per_group-list",
        "init-str",
    ],
)
def test_a_dict_argument_that_is_not_a_dict_is_named(label, value, example):
    roles = {"shared": ["k", "a"], "init": {"a": 1.0, "k": 1.0}}
    if label == "per_group":
        roles["shared"] = ["a"]
    roles[label] = value
    fit = GlobalFit(_model, DATA, **roles)
    with pytest.raises(TypeError, match=rf"^{label} must be a dict \{{name: value\}}.*{example}"):
        fit.run()
    assert fit.init == roles["init"] or label == "init"  # nothing was changed


@pytest.mark.parametrize("label", ["shared", "local"])
def test_a_name_in_a_role_that_is_not_a_str_is_named(label):
    roles = {"shared": ["k"], "local": ["a"]}
    roles[label] = [roles[label]]  # [["k"]]: a list in the list
    with pytest.raises(
        TypeError,
        match=rf"{label} must be a list of parameter names \(str\), got \['.'\] \(list\) in it",
    ):
        GlobalFit(_model, DATA, init={"a": 1.0, "k": 1.0}, **roles).run()


@pytest.mark.parametrize("solver", ["lm", "trf"])
def test_a_budget_past_what_minpack_can_count_is_refused_by_name(solver):
    # max_iter=2**31 raised MINPACK's bare OverflowError "signed integer is greater than
    # maximum"; 2**31 - 1 is a budget like any other
    fit = GlobalFit(_model, DATA, shared=["k", "a"], init={"a": 1.0, "k": 1.0}, solver=solver)
    fit.max_iter = 2**31
    with pytest.raises(ValueError, match=r"max_iter must be at most 2,147,483,647 .*C int"):
        fit.run()
    fit.max_iter = 2**31 - 1
    assert fit.run().success
