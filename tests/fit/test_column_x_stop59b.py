"""x given as a column or a DataFrame: the shape refusal names x's columns and a fix that works.

``a * x + b`` on x of shape (n, 1) returns (n, 1); the refusal said only "expected (n,):
one value per point of x" (stop 59, second pass).
"""

import numpy as np
import pytest

from tying.fit import GlobalFit

X = np.linspace(0, 1, 15)
Y = 2 * X + 1 + 0.01 * np.sin(9 * X)


def _line(x, a=1.0, b=0.0):
    return a * x + b


@pytest.mark.parametrize("k", [1, 2])
def test_a_column_x_names_the_column_and_both_fixes_work(k):
    data = [(X[:, None], Y)] * k
    with pytest.raises(
        ValueError,
        match=r"x has shape \(15, 1\) \(one column\).*read x\[:, 0\] in model_fn, or give x 1-D \(x.ravel\(\)",
    ):
        GlobalFit(_line, data, shared=["a", "b"]).run()
    # the advice, as written: either fix fits y = 2x + 1
    col = GlobalFit(lambda x, a=1.0, b=0.0: a * x[:, 0] + b, data, shared=["a", "b"]).run()
    flat = GlobalFit(_line, [(X[:, None].ravel(), Y)] * k, shared=["a", "b"]).run()
    assert abs(col.values["a"] - 2.0) < 0.02 and col.values["a"] == pytest.approx(
        flat.values["a"], rel=1e-9
    )


def test_a_one_column_dataframe_advice_works():
    pd = pytest.importorskip("pandas")
    df = pd.DataFrame({"t": X})
    with pytest.raises(ValueError, match=r"df\['name'\].to_numpy\(\) for a one-column DataFrame"):
        GlobalFit(_line, [(df, Y)], shared=["a", "b"]).run()
    result = GlobalFit(_line, [(df["t"].to_numpy(), Y)], shared=["a", "b"]).run()
    assert abs(result.values["b"] - 1.0) < 0.02


def test_two_columns_name_each_column():
    x2 = np.column_stack([X, X**2])
    with pytest.raises(
        ValueError,
        match=r"\(a column per variable\).*read x\[:, 0\], x\[:, 1\], \.\.\. in model_fn$",
    ):
        GlobalFit(_line, [(x2, Y)], shared=["a", "b"]).run()
