"""lmfit's per-result calls without a data set (out.eval_uncertainty(x=xn), out.best_fit())
name i and write the call that works (stop 62; Python's bare "missing 1 required positional
argument: 'i'" before, or "'x'" for result.eval_uncertainty(xn), x read as i).
"""

import inspect

import numpy as np
import pytest

import tying.fit

X = np.linspace(0, 1, 8)


@pytest.fixture(scope="module")
def one():
    data = [(X, 2 * X + 1 + 0.01 * np.sin(9 * X))]
    return tying.fit.GlobalFit(
        lambda x, a, b: a * x + b, data, shared=["a", "b"], init={"a": 1.0, "b": 0.0}
    ).run()


@pytest.fixture(scope="module")
def two():
    data = [(X, 2 * X + 1 + 0.01 * np.sin(9 * X)), (X[:5], 2 * X[:5] + 0.01 * np.cos(X[:5]))]
    return tying.fit.GlobalFit(
        lambda x, a, b: a * x + b, data, shared=["a"], local=["b"], init={"a": 1.0, "b": 0.0}
    ).run()


def _follow(message, result, **names):
    call = message.rsplit("pass ", 1)[1]
    if call.startswith("that data set's x, "):
        call = call[len("that data set's x, ") :]
    return eval(call, {"result": result, "x": X, "x_i": X, **names})


@pytest.mark.parametrize(
    ("call", "advice", "expected"),
    [
        (
            lambda r: r.eval_uncertainty(x=X, sigma=2),
            r"pass result\.eval_uncertainty\(0, x=x, sigma=2\)$",
            lambda r: r.eval_uncertainty(0, X, sigma=2),
        ),
        (
            lambda r: r.eval_uncertainty(X),
            r"pass result\.eval_uncertainty\(0, x\)$",
            lambda r: r.eval_uncertainty(0, X),
        ),
        (
            lambda r: r.eval_uncertainty(sigma=2),
            r"x has no default \(lmfit's is the data's own x\).*"
            r"result\.eval_uncertainty\(0, x_i, sigma=2\)$",
            lambda r: r.eval_uncertainty(0, X, sigma=2),
        ),
        (
            lambda r: r.predict(X, stderr=True),
            r"pass result\.predict\(0, x, stderr=True\)$",
            lambda r: r.predict(0, X, stderr=True),
        ),
        (lambda r: r.best_fit(), r"pass result\.best_fit\(0\)$", lambda r: r.best_fit(0)),
        (lambda r: r.residual(), r"pass result\.residual\(0\)$", lambda r: r.residual(0)),
        (lambda r: r.chi2_of(), r"pass result\.chi2_of\(0\)$", lambda r: r.chi2_of(0)),
    ],
)
def test_lmfit_calls_name_i_and_the_advice_works(one, call, advice, expected):
    with pytest.raises(TypeError, match=advice) as err:
        call(one)
    got, want = _follow(str(err.value), one), expected(one)
    if isinstance(want, tuple):
        for g, w in zip(got, want):
            np.testing.assert_array_equal(g, w)
    else:
        np.testing.assert_array_equal(got, want)


def test_many_data_sets_name_the_choices_and_a_given_i_keeps_it(two):
    with pytest.raises(
        TypeError,
        match=r"an index 0\.\.1 or a name, e\.g\. 'dataset 0'.*"
        r"pass result\.eval_uncertainty\(i, x\)$",
    ) as err:
        two.eval_uncertainty(X)
    np.testing.assert_array_equal(_follow(str(err.value), two, i=1), two.eval_uncertainty(1, X))
    with pytest.raises(
        TypeError,
        match=r"^result\.eval_uncertainty\(i, x, sigma\): x has no "
        r"default .*result\.eval_uncertainty\('dataset 1', x_i\)$",
    ):
        two.eval_uncertainty("dataset 1")


def test_lmfit_keywords_and_other_refusals(one):
    with pytest.raises(TypeError, match=r"unexpected keyword argument 'dscale': lmfit's step"):
        one.eval_uncertainty(0, X, dscale=0.01)
    with pytest.raises(TypeError, match=r"'foo': its keywords are i, x, sigma$"):
        one.eval_uncertainty(0, X, foo=1)
    with pytest.raises(TypeError, match=r"takes from 3 to 4 positional arguments but 5"):
        one.eval_uncertainty(0, X, 2, 3)  # Python's own message says it all


def test_signatures_docs_and_inner_type_errors_unchanged(one):
    assert list(inspect.signature(one.eval_uncertainty).parameters) == ["i", "x", "sigma"]
    assert list(inspect.signature(one.best_fit).parameters) == ["i"]
    assert "confidence band" in one.eval_uncertainty.__doc__
    with pytest.raises(TypeError, match=r"a data set is chosen by its index \(int\) or name"):
        one.best_fit(1.0)  # a TypeError from inside the method passes as it was


def test_module_functions_name_i_too(one):
    with pytest.raises(TypeError, match=r"pass result\.eval_uncertainty\(0, x\)$") as err:
        tying.fit.eval_uncertainty(one, X)
    np.testing.assert_array_equal(_follow(str(err.value), one), one.eval_uncertainty(0, X))
    np.testing.assert_array_equal(tying.fit.eval_uncertainty(one, 0, X), one.eval_uncertainty(0, X))
