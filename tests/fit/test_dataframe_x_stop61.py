"""A model reading a DataFrame x by column name is told that x arrives as an array (stop 61).

lmfit hands the model whatever x it was given; here a DataFrame x is read as its values,
so ``x["t"]`` failed with NumPy's "only integers, slices ..." and no word of the fix.
"""

import warnings

import numpy as np
import pytest

from tying.fit import GlobalFit

pd = pytest.importorskip("pandas")


def test_a_column_read_by_name_gets_the_positional_read_that_fits():
    df = pd.DataFrame({"t": np.linspace(0, 1, 10), "u": np.linspace(1, 2, 10)})
    y = 2 * df.t + 3 * df.u
    fit = GlobalFit(
        lambda x, a, b: a * x["t"] + b * x["u"], [(df, y)], shared=["a", "b"], init={"a": 1, "b": 1}
    )
    with warnings.catch_warnings():  # torch warns about x['t'] on its try: not tested
        warnings.simplefilter("ignore")
        with pytest.raises(ValueError, match=r"read x\[:, 0\], x\[:, 1\], \.\.\.$"):
            fit.run()
    fit.model_fn = lambda x, a, b: a * x[:, 0] + b * x[:, 1]  # the advice, followed
    res = fit.run()
    assert res.values["a"] == pytest.approx(2.0) and res.values["b"] == pytest.approx(3.0)
