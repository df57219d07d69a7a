"""Stop 59: messages name values as the table does; ``==`` on results; lmfit's weights advice.

- A fit's messages named data set ``i``'s local ``b`` by its index (``'b[1]'``) where
  ``result.table()`` lists ``b[run2]``: with data sets named out of order the name in the
  warning pointed the reader at another data set's row.
- ``result == copy.deepcopy(result)`` (and ``Dataset == Dataset`` with array x) raised
  NumPy's "truth value of an array ... is ambiguous": the dataclass's tuple ``==``.
- ``result.weights`` advised ``1 / sigma`` for a fit whose data came without sigma.
"""

from __future__ import annotations

import copy
import pickle

import numpy as np
import pytest

import tying.fit
from tying.fit import FitWarning

X = np.linspace(0.0, 1.0, 12)


def _line(x, a, b):
    return a * x + b


def _data(names, sigma=0.01):
    return [
        tying.fit.Dataset(X, 2 * X + off + 0.003 * np.cos(7 * X + off), sigma, name=n)
        for off, n in zip((1.0, 3.0, 0.5), names, strict=False)
    ]


@pytest.fixture(scope="module")
def bounded():
    # 'run2' (index 0) wants b = 3 but is capped at 2; the table lists it as b[run2]
    fit = tying.fit.GlobalFit(
        _line,
        _data(["run1", "run2", "run0"])[::-1][1:],
        shared=["a"],
        local=["b"],
        init={"a": 1.0, "b": 0.0},
        bounds={"b": (None, 2.0)},
    )
    with pytest.warns(FitWarning, match=r"'?b\[run2\]'? \(= 2, its upper bound\) ended"):
        return fit.run()


def test_messages_name_a_local_value_by_its_table_label(bounded):
    assert bounded.dataset_names == ["run2", "run1"]
    assert "b[run2] (= 2, its upper bound)" in bounded.message
    assert "b[run2]" in bounded.table() and "b[0]" not in bounded.message
    # physical_names (result.x's labels) keep the index, as before
    assert bounded.physical_names == ["a", "b[0]", "b[1]"]


def test_a_singular_local_pair_is_named_by_its_data_set():
    data = _data(["early", "late"])
    data.append(tying.fit.Dataset(np.full(4, 0.5), np.ones(4), 0.01, name="flat"))
    fit = tying.fit.GlobalFit(
        lambda x, a, b, c: a * x + b + c * x**2,
        data,
        shared=["c"],
        local=["a", "b"],
        init={"a": 1.0, "b": 0.0, "c": 0.0},
    )
    with pytest.warns(FitWarning, match=r"'a\[flat\]' and 'b\[flat\]' change the model the same"):
        fit.run()


def test_a_start_outside_a_local_bound_is_named_by_its_data_set():
    fit = tying.fit.GlobalFit(
        _line,
        _data(["p", "q"]),
        shared=["a"],
        local=["b"],
        init={"a": 1.0, "b": [0.0, 5.0]},
        bounds={"b": (-1.0, 2.0)},
    )
    with pytest.raises(ValueError, match=r"start value of b\[q\] is 5.0, outside its bounds"):
        fit.run()


def test_results_compare_by_value():
    bounded = tying.fit.GlobalFit(
        _line, _data(["p", "q"]), shared=["a"], local=["b"], init={"a": 1.0, "b": 0.0}
    ).run()
    twin = copy.deepcopy(bounded)
    assert twin == bounded and not twin != bounded
    assert pickle.loads(pickle.dumps(bounded)) == bounded
    other = copy.deepcopy(bounded)
    other.chi2 += 1e-9
    assert other != bounded
    other = copy.deepcopy(bounded)
    other.values["b"][1] += 1e-9
    assert other != bounded
    assert bounded != 3 and bounded in [twin]
    with pytest.raises(TypeError, match="unhashable"):
        hash(bounded)


def test_records_holding_arrays_compare_by_value():
    a, b = _data(["p", "q"])
    assert a == tying.fit.Dataset(X.copy(), a.y.copy(), 0.01, name="p")
    assert a != b and a != tying.fit.Dataset(X, a.y, 0.02, name="p")
    assert tying.fit.Dataset(X, [np.nan] * 12) == tying.fit.Dataset(X, [np.nan] * 12)
    assert tying.fit.Dataset(X[:3], X[:3]) != tying.fit.Dataset(X[:4], X[:4])


@pytest.mark.parametrize(
    ("sigmas", "advice"),
    [
        ((None, None), r"read np\.ones_like\(y\) with the data set's y .*every weight is 1"),
        ((0.01, 0.01), r"read 1 / sigma of the data set \(sigma as you gave it\) instead"),
        ((0.01, None), r"1 / sigma .* given a sigma, and np\.ones_like\(y\) .* without \('q'\)"),
    ],
)
def test_weights_advice_fits_the_data_as_given(sigmas, advice):
    data = [
        tying.fit.Dataset(d.x, d.y, s, name=d.name)
        for d, s in zip(_data(["p", "q"]), sigmas, strict=True)
    ]
    res = tying.fit.GlobalFit(_line, data, shared=["a", "b"], init={"a": 1.0, "b": 0.0}).run()
    with pytest.raises(AttributeError, match=advice):
        res.weights  # noqa: B018
    # the advice, followed, gives lmfit's weights: residual = (y - model) * weights
    for i, (d, s) in enumerate(zip(data, sigmas, strict=True)):
        weights = np.ones_like(d.y) if s is None else 1 / np.broadcast_to(s, d.y.shape)
        np.testing.assert_allclose(res.residual(i), (d.y - res.best_fit(i)) * weights)


@pytest.mark.parametrize(
    ("ported", "match"),
    [
        (lambda r, y: r.params["a"].value, r"result\.params is a method.*result\.values\['a'\]"),
        (lambda r, y: r.best_fit - y, r"result\.best_fit is a method.*result\.best_fit\(i\)"),
        (lambda r, y: y - r.best_fit, r"result\.best_fit is a method"),
        (lambda r, y: np.sum(r.residual**2), r"result\.residual\(i\) is data set i's"),
        (lambda r, y: np.asarray(r.residual), r"result\.residual is a method"),
    ],
)
def test_lmfit_attributes_that_are_methods_here_name_the_call(ported, match):
    data = _data(["p"])
    res = tying.fit.GlobalFit(_line, data, shared=["a", "b"], init={"a": 1.0, "b": 0.0}).run()
    with pytest.raises(TypeError, match=match):
        ported(res, data[0].y)
    # called, they are the methods they were
    assert res.params(0)["a"] == res.values["a"] and res.params("p") == res.params(0)
    np.testing.assert_array_equal(res.best_fit(0), data[0].y - res.residual(0) * 0.01)
    assert res.params == res.params and bool(res.best_fit)
