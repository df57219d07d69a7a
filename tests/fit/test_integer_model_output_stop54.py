"""A model that returns integers is refused, naming the dtype and the fix (stop 54).

x and the parameters reach the model as float64, so integer values come from a round or
a cast of them: flat between integers, every derivative 0 or a jump. Before stop 54 such
a fit returned its start values (int64 counts) or values short of the minimum (int32
after a scale), ``success=False`` with advice about 'a' and 'k' "changing the model the
same way" or a Gauss-Newton step that would lower chi2: a defect of the model, reported
as one of the data.
"""

import numpy as np
import pytest

from tying.fit import GlobalFit

X = np.linspace(0, 4, 30)
Y = 2 * np.exp(-0.7 * X) + np.random.default_rng(0).normal(0, 0.02, 30)


@pytest.mark.parametrize("dtype", [np.int64, np.int32, np.uint8])
@pytest.mark.parametrize("vectorized", ["auto", False])
def test_an_integer_valued_model_is_refused_by_dtype(dtype, vectorized):
    def counts(x, a, k):
        return (100 * a * np.exp(-k * x)).astype(dtype)

    fit = GlobalFit(counts, [(X, 100 * Y), (X, 150 * Y)], shared=["k"], local=["a"],
                    init={"a": 1.0, "k": 1.0}, vectorized=vectorized)  # fmt: skip
    with pytest.raises(ValueError, match=rf"model_fn returned {np.dtype(dtype).name} values for "
                       r".*cast to integers is flat between integers.*astype\(int\)"):  # fmt: skip
        fit.run()
    assert not hasattr(fit, "result_")


def test_the_same_model_in_floats_fits():
    fit = GlobalFit(lambda x, a, k: 100 * a * np.exp(-k * x), [(X, 100 * Y)],
                    shared=["a", "k"], init={"a": 1.0, "k": 1.0})  # fmt: skip
    res = fit.run()
    assert res.success and res.values["k"] == pytest.approx(0.7, abs=0.02)
