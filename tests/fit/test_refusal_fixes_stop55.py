"""Refusals that named the rule but no fix now name the fix (stop 55).

Each was a clear refusal with nothing to do next: x given as a list of arrays (lmfit's
two independent variables: "x has 2 point(s) along its first axis but y has 10"), a
constant model returning one number (lmfit's ``ConstantModel`` broadcasts it), and a
fit whose every parameter is fixed ("no parameter to fit").
"""

import numpy as np
import pytest

from tying.fit import GlobalFit

X = np.linspace(0, 1, 10)


def test_x_as_rows_of_variables_is_told_to_column_stack():
    fit = GlobalFit(lambda x, a, b: a * x[:, 0] + b * x[:, 1], [([X, X**2], 2 * X + 3 * X**2)],
                    shared=["a", "b"], init={"a": 0.0, "b": 0.0})  # fmt: skip
    with pytest.raises(ValueError, match=r"x has 2 point\(s\) along its first axis but y has "
                       r"10; they must match \(x has shape \(2, 10\): 2 variables in rows\?\); "
                       r"put one point per row, x = np\.column_stack"):  # fmt: skip
        fit.run()
    fit.datasets = [(np.column_stack([X, X**2]), 2 * X + 3 * X**2)]  # the fix fits
    res = fit.run()
    assert res.values["a"] == pytest.approx(2.0, abs=1e-9)
    assert res.values["b"] == pytest.approx(3.0, abs=1e-9)


def test_a_mismatch_that_is_not_rows_gets_no_rows_advice():
    with pytest.raises(ValueError, match=r"x has 9 point\(s\) .* they must match$"):
        GlobalFit(lambda x, a: a * x, [(X[:9], X)], shared=["a"], init={"a": 1.0}).run()


@pytest.mark.parametrize("vectorized", ["auto", False])
def test_a_constant_model_returning_one_number_is_told_to_broadcast(vectorized):
    data = [(X, np.full(10, 3.0)), (X[:5], np.full(5, 4.0))]
    kw = dict(local=["c"], init={"c": 1.0}, vectorized=vectorized)
    with pytest.raises(ValueError, match=r"returned shape \(\) for dataset 'dataset 0' "
                       r"\(index 0\), expected \(10,\).* return c \+ 0 \* x"):  # fmt: skip
        GlobalFit(lambda x, c: c, data, **kw).run()
    res = GlobalFit(lambda x, c: c + 0 * x, data, **kw).run()  # the fix fits
    np.testing.assert_allclose(res.values["c"], [3.0, 4.0], atol=1e-12)


def test_every_parameter_fixed_names_them_and_the_fix():
    with pytest.raises(ValueError, match=r"every parameter is fixed \(\['a', 'b'\]\); move at "
                       r"least one name to shared=, per_group= or local="):  # fmt: skip
        GlobalFit(lambda x, a, b: a * x + b, [(X, 2 * X + 1)], fixed={"a": 2.0, "b": 1.0}).run()


def test_vectorized_true_names_an_integer_model_by_dtype_not_the_batched_call():
    # it said "cannot be evaluated on all data sets at once ...; pass vectorized='auto' or
    # False", and False met the same refusal by dtype
    fit = GlobalFit(lambda x, a, b: np.round(a * x + b).astype(int), [(X, 2 * X + 1)] * 2,
                    shared=["a"], local=["b"], init={"a": 1.0, "b": 0.0}, vectorized=True)  # fmt: skip
    with pytest.raises(ValueError, match=r"model_fn returned int64 values for the call on all "
                       r"data sets at once.*astype\(int\)") as err:  # fmt: skip
        fit.run()
    assert "pass vectorized" not in str(err.value)
