"""A per-group start of the wrong length names the list in group order, and which (stop 61).

``init={"c": [...]}`` for a per-group ``c`` takes one value per group in the order the
groups first appear; the refusal said only "a number or {group: value}", and a list of one
value per data set (the local form) got no fix.
"""

import re

import numpy as np
import pytest

from tying.fit import GlobalFit


def _fit(init):
    x = np.linspace(0, 1, 10)
    data = [(x, 2 * x + (1.0 if g == "A" else -1.0), {"g": g}) for g in "BAB"]
    return GlobalFit(lambda x, a, c: a * x + c, data, shared=["a"], per_group={"c": "g"}, init=init)


def test_a_list_of_the_wrong_length_names_the_group_order():
    with pytest.raises(
        ValueError,
        match=re.escape(
            "must be a number, {group: value} or 2 values (one per group, in the order the "
            "groups first appear in the data sets: ['B', 'A']), got shape (4,)"
        ),
    ):
        _fit({"a": 1.0, "c": [0.0, 0.0, 0.0, 0.0]}).run()
    # the advice followed: a list in that order
    res = _fit({"a": 1.0, "c": [-0.5, 0.5]}).run()
    assert res.values["c"] == pytest.approx({"B": -1.0, "A": 1.0})


def test_one_value_per_data_set_gets_the_dict_that_works():
    fit = _fit({"a": 1.0, "c": np.array([-0.5, 0.5, -0.5])})
    with pytest.raises(ValueError, match=r"pass init=\{'c': \{'B': -0.5, 'A': 0.5\}\}") as err:
        fit.run()
    fit.init = {"a": 1.0, **eval(str(err.value).split("pass init=")[1])}  # noqa: S307
    assert fit.run().values["c"] == pytest.approx({"B": -1.0, "A": 1.0})


def test_one_value_per_data_set_that_differs_in_a_group_is_told_local():
    with pytest.raises(
        ValueError, match=r"differ within group 'B': .* local=\['c'\], not per_group"
    ):
        _fit({"a": 1.0, "c": [-0.5, 0.5, -0.4]}).run()


@pytest.mark.parametrize("role", ["fixed", "init"])
def test_a_value_by_group_for_a_non_group_parameter_names_the_list(role):
    x = np.linspace(0, 1, 10)
    data = [(x, 2 * x + (1.0 if g == "A" else -1.0), {"g": g}) for g in "BAB"]
    by_group = {"c": {"A": 1.0, "B": -1.0}}
    kw = (
        {"fixed": by_group, "shared": ["a"]}
        if role == "fixed"
        else {"local": ["c"], "shared": ["a"]}
    )
    init = {"a": 1.0, **(by_group if role == "init" else {})}
    fit = GlobalFit(lambda x, a, c: a * x + c, data, init=init, **kw)
    with pytest.raises(ValueError, match=r"labels of metadata key 'g'") as err:
        fit.run()
    advice = eval(str(err.value).split(f"by its group is {role}=")[1])  # noqa: S307
    assert advice == {"c": [-1.0, 1.0, -1.0]}
    setattr(fit, role, {**init, **advice} if role == "init" else advice)  # the advice, followed
    res = fit.run()
    assert res.values["a"] == pytest.approx(2.0)
    np.testing.assert_allclose(res.values["c"], [-1.0, 1.0, -1.0], atol=1e-8)
