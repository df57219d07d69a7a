"""conf_interval given a per-group or local name whole ('w', as lmfit users ask for each
copy) names every value of it, and the names= written there run (stop 62; before,
"did you mean 'w[B]'?", one group of two picked by difflib).
"""

import numpy as np
import pytest

import tying.fit


def _peak(x, cen, wid, amp):
    return amp * np.exp(-0.5 * ((x - cen) / wid) ** 2)


@pytest.fixture(scope="module")
def res():
    x = np.linspace(-3, 3, 40)
    data = [
        (
            x,
            _peak(x, 0.3, {"A": 0.8, "B": 0.5}[g], 1 + k) + 0.03 * np.sin(7 * x + k),
            0.03,
            {"inst": g},
        )
        for k, g in enumerate("ABAB")
    ]
    return tying.fit.GlobalFit(
        _peak,
        data,
        shared=["cen"],
        per_group={"wid": "inst"},
        local=["amp"],
        init={"cen": 0.0, "wid": 1.0, "amp": 1.0},
    ).run()


def _advised(err, result):
    return eval(str(err.value).rsplit("names=", 1)[1], {"result": result})


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("wid", ["wid[A]", "wid[B]"]),
        ("amp", ["amp[0]", "amp[1]", "amp[2]", "amp[3]"]),
    ],
)
def test_a_whole_name_names_every_value_and_the_advice_runs(res, name, expected):
    role = "per_group, one value per group" if name == "wid" else "local, one value per data set"
    with pytest.raises(ValueError, match=rf"'{name}' is {role}: name each, names=") as err:
        res.conf_interval([name], sigmas=(1,))
    assert "did you mean" not in str(err.value)
    names = _advised(err, res)
    assert names == expected
    if name == "wid":  # followed: every group's interval (two refits per side, fast)
        ci = res.conf_interval(names, sigmas=(1,))
        assert list(ci) == expected
        for n, v in zip(expected, res.values["wid"].values()):
            assert ci[n].lower[0] < v < ci[n].upper[0]


def test_many_local_values_are_named_by_a_comprehension_that_runs():
    x = np.linspace(0, 1, 6)
    data = [(x, 2 * x + k + 0.01 * np.sin(9 * x + k)) for k in range(14)]
    res = tying.fit.GlobalFit(
        lambda x, a, b: a * x + b, data, shared=["a"], local=["b"], init={"a": 1.0, "b": 0.0}
    ).run()
    with pytest.raises(ValueError, match=r"'b' is local, .*names=\[n for n in result") as err:
        res.conf_interval(["b"])
    assert _advised(err, res) == [f"b[{i}]" for i in range(14)]


def test_other_unknown_names_keep_the_did_you_mean(res):
    with pytest.raises(ValueError, match=r"did you mean 'cen'\?"):
        res.conf_interval(["cem"])


@pytest.mark.parametrize(
    ("kwargs", "advice", "follow"),
    [
        ({"names": "cen"}, r"got 'cen': pass names=\['cen'\]$", {"names": ["cen"]}),
        (
            {"names": ["cen"], "sigmas": np.float64(2.0)},
            r"pass sigmas=\(2\.0,\)$",
            {"names": ["cen"], "sigmas": (2.0,)},
        ),
    ],
)
def test_one_name_or_one_level_gets_its_list(res, kwargs, advice, follow):
    with pytest.raises(TypeError, match=advice):
        res.conf_interval(**kwargs)
    assert list(res.conf_interval(**follow)) == ["cen"]


@pytest.mark.parametrize(
    ("asked", "expected"),
    [
        (["cen", "wid"], ["cen", "wid[A]", "wid[B]"]),
        (["wid", "amp"], ["wid[A]", "wid[B]", "amp[0]", "amp[1]", "amp[2]", "amp[3]"]),
        (["wid[A]", "wid"], ["wid[A]", "wid[B]"]),
    ],
)
def test_the_advice_keeps_the_other_names_asked(res, asked, expected):
    # review 62: for ['cen', 'wid'] the advice was names=['wid[A]', 'wid[B]'], and followed
    # it profiled wid alone, cen dropped with no word
    with pytest.raises(ValueError, match=r"name each, names=") as err:
        res.conf_interval(asked, sigmas=(1,))
    assert _advised(err, res) == expected


def test_many_local_values_beside_another_name_keep_it():
    x = np.linspace(0, 1, 6)
    data = [(x, 2 * x + k + 0.01 * np.sin(9 * x + k)) for k in range(14)]
    res = tying.fit.GlobalFit(
        lambda x, a, b: a * x + b, data, shared=["a"], local=["b"], init={"a": 1.0, "b": 0.0}
    ).run()
    with pytest.raises(ValueError, match=r"names=\['a'\] \+ \[n for n in result") as err:
        res.conf_interval(["a", "b"])
    assert _advised(err, res) == ["a"] + [f"b[{i}]" for i in range(14)]
    with pytest.raises(ValueError, match=r"names=\['b\[0\]', 'b\[1\]', ") as err:
        res.conf_interval(["b[0]", "b"])  # listed once each: a comprehension would repeat b[0]
    assert _advised(err, res) == [f"b[{i}]" for i in range(14)]
