"""Stop 59 review of tying.fit (e52928f): the new labels, by-name values, == and lmfit idioms.

- Messages and the table name data set ``r2``'s local ``a`` as ``a[r2]``; given to ``init=``,
  ``fixed=`` or ``bounds=`` that name was refused as "not a fitted parameter" with no word
  of ``{'a': {data set name: value}}``, the form stop 59 added.
- After ``dataclasses.replace(result, dataset_names=...)`` (conf_interval's own advice for
  names that read as indices) ``predict`` named the held slot ``'b[0]'`` beside
  ``dataset 'run 0'``, where the table lists ``b[run 0]``.
- ``Dataset == copy.deepcopy(Dataset)`` was False for x held as a torch tensor that requires
  grad, and for an object metadata column with NaN.
- ``inspect.signature(result.best_fit)`` read ``(*args, **kwargs)``, ``__doc__`` was None and
  ``__name__`` raised once the methods were wrapped for lmfit's attribute idioms.
- ``solver="levenberg-marquardt"`` was told "least-squares solver only ... no counterpart"
  (it is ``"lm"``); ``solver=" lm"`` was told "solver names are lower case".
- A pandas Series labelled 2, 0, 1 (data sets named '2', '0', '1') was told to pass
  ``dict(series)``, which was then refused as "must be real numbers".
"""

from __future__ import annotations

import copy
import dataclasses
import inspect
import warnings

import numpy as np
import pytest

import tying.fit
from tying.fit import FitWarning

X = np.linspace(0.0, 5.0, 20)


def _decay(x, a, k):
    return a * np.exp(-k * x)


def _data(names=("r1", "r2", "r3")):
    return [
        tying.fit.Dataset(X, _decay(X, a, 0.7) + 0.001 * np.cos(3 * X + a), 0.01, name=n)
        for a, n in zip((1.0, 2.0, 3.0), names, strict=True)
    ]


def _fit(names=("r1", "r2", "r3"), **kw):
    args = {"shared": ["k"], "local": ["a"], "init": {"a": 1.0, "k": 1.0}, **kw}
    return tying.fit.GlobalFit(_decay, _data(names), **args)


@pytest.mark.parametrize(
    ("kw", "match"),
    [
        (
            {"init": {"a": 1.0, "k": 1.0, "a[r2]": 2.0}},
            r"init names 'a\[r2\]'.*give a local start by data set name, "
            r"init=\{'a': \{'r1': \.\.\., 'r2': \.\.\., 'r3': \.\.\.\}\}",
        ),
        (
            {"fixed": {"a[r2]": 2.0}},
            r"fixed names 'a\[r2\]'.*fixed=\{'a': \{'r1': \.\.\., .*\}\} .*drop it from local=",
        ),
        (
            {"bounds": {"a[r2]": (0.0, 3.0)}},
            r"bounds names 'a\[r2\]'.*one pair of bounds holds for every physical 'a': "
            r"bounds=\{'a': \(lower, upper\)\}",
        ),
    ],
)
def test_a_value_named_as_the_table_labels_it_is_told_the_form_that_works(kw, match):
    with pytest.raises(ValueError, match=match):
        _fit(**kw).run()
    # the advice, followed: a local start by data set name
    res = _fit(init={"a": {"r1": 1.0, "r2": 2.0, "r3": 3.0}, "k": 1.0}).run()
    assert res.values["a"] == pytest.approx([1.0, 2.0, 3.0], abs=2e-3)


def test_predict_names_a_held_slot_by_the_result_s_data_set_names():
    rng = np.random.default_rng(2)

    def f(x, a, b, s):
        return a + b * np.sin(x) + s * x

    x1, x2 = np.linspace(0, 2, 20), np.zeros(20)
    data = [
        tying.fit.Dataset(x1, f(x1, 1, 2, 0.3) + rng.normal(0, 0.01, 20), 0.01, name="1"),
        tying.fit.Dataset(x2, f(x2, 1.5, 2, 0.3) + rng.normal(0, 0.01, 20), 0.01, name="0"),
    ]
    with pytest.warns(FitWarning, match=r"'b\[0\]' do\(es\) not change the model"):
        res = tying.fit.GlobalFit(
            f, data, shared=["s"], local=["a", "b"], init={"a": 0.0, "b": 1.0, "s": 0.0}
        ).run()
    # conf_interval's advice for names that read as indices: rename, no refit
    renamed = dataclasses.replace(res, dataset_names=[f"run {n}" for n in res.dataset_names])
    assert "b[run 0]" in renamed.table()
    with pytest.warns(FitWarning, match=r"^'b\[run 0\]' held at its start value .*'run 0'"):
        renamed.predict(1, [0.0, 1.0])


def test_records_holding_a_grad_tensor_or_an_object_column_equal_their_copies():
    torch = pytest.importorskip("torch")
    d = tying.fit.Dataset(torch.tensor(X, requires_grad=True), X)
    assert d == copy.deepcopy(d)
    meta = {"T": np.array([1.0, np.nan, None], dtype=object)}
    d = tying.fit.Dataset(X, X, metadata=meta)
    assert d == copy.deepcopy(d)
    assert d != tying.fit.Dataset(X, X, metadata={"T": np.array([1.0, 2.0, None], dtype=object)})


def test_methods_wrapped_for_lmfit_idioms_keep_their_signature_and_doc():
    res = _fit().run()
    assert list(inspect.signature(res.best_fit).parameters) == ["i"]
    assert res.params.__doc__ and res.params.__doc__ == tying.fit.FitResult.params.__doc__
    assert res.residual.__name__ == "residual" and res.best_fit.__self__ is res
    with pytest.raises(TypeError, match=r"result\.params is a method"):
        res.params["a"]  # noqa: B018


@pytest.mark.parametrize(
    ("given", "match", "meant"),
    [
        ("levenberg-marquardt", r"Levenberg-Marquardt is solver='lm'", "lm"),
        ("trust-region-reflective", r"is solver='trf'", "trf"),
        (" lm", r"solver names are without spaces; pass solver='lm'", "lm"),
    ],
)
def test_solver_spellings_name_the_solver_meant(given, match, meant):
    with pytest.raises(ValueError, match=match):
        _fit(solver=given).run()
    assert _fit(solver=meant).run().success


def test_a_series_labelled_by_numbers_is_told_a_dict_that_is_read():
    pd = pytest.importorskip("pandas")
    series = pd.Series({2: 1.0, 0: 2.0, 1: 3.0})
    with pytest.raises(ValueError, match=r"\{str\(k\): v for k, v in series\.items\(\)\}"):
        _fit(names=("2", "0", "1"), init={"a": series, "k": 1.0}).run()
    given = {str(k): v for k, v in series.items()}  # the advice, followed
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        res = _fit(names=("2", "0", "1"), init={"a": given, "k": 1.0}).run()
    assert res.values["a"] == pytest.approx([1.0, 2.0, 3.0], abs=2e-3)


def test_a_covariance_matrix_as_sigma_is_told_the_sigma_it_holds():
    x = np.linspace(0.0, 1.0, 10)
    y = 2 * x + 1 + 0.01 * np.cos(5 * x)
    cov = np.diag(np.full(10, 0.01**2))  # scipy curve_fit's 2-D sigma

    def fit(sigma):
        return tying.fit.GlobalFit(
            lambda x, a, b: a * x + b, [(x, y, sigma)], shared=["a", "b"], init={"a": 1.0, "b": 0.0}
        ).run()

    with pytest.raises(
        ValueError, match=r"curve_fit's covariance .* np\.sqrt\(np\.diag\(sigma\)\)"
    ):
        fit(cov)
    assert fit(np.sqrt(np.diag(cov))).chi2 == pytest.approx(fit(0.01).chi2, rel=1e-12)
