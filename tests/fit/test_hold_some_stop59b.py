"""A parameter held in some data sets only: the refusal gives a switch that works (stop 59b).

``local=['b'], fixed={'b': [1.0, None]}`` was refused with "remove it from one" / "must be
real numbers", advice that drops what the user meant.
"""

import numpy as np
import pytest

from tying.core import TieError
from tying.fit import FitWarning, GlobalFit

X = np.linspace(0, 1, 10)
DATA = [(X, 2 * X + 1 + 0.01 * np.cos(7 * X)), (X, 2 * X + 3 + 0.01 * np.sin(8 * X))]


def _line(x, a=1.0, b=0.0):
    return a * x + b


def _switched(x, a=1.0, b=0.0, held=0, b_held=0.0):  # the advice, as written
    b = np.where(held, b_held, b)
    return a * x + b


@pytest.mark.parametrize(
    ("roles", "error", "match"),
    [
        (
            {"local": ["b"], "fixed": {"b": 1.0}},
            TieError,
            r"local and fixed.*'held': \[1, 0, \.\.\.\]",
        ),
        ({"shared": ["a", "b"], "fixed": {"b": 1.0}}, TieError, r"keep its role \(shared"),
        (
            {"fixed": {"b": [1.0, None]}},
            ValueError,
            r"got \[1.0, None\]; to hold 'b'.*'held': \[1, 0\]",
        ),
        ({"fixed": {"b": [1.0, np.nan]}}, ValueError, r"b = np.where\(held, b_held, b\)"),
    ],
)
def test_holding_in_some_data_sets_names_the_switch(roles, error, match):
    roles = {"shared": ["a"], **roles}
    with pytest.raises(error, match=match):
        GlobalFit(_line, DATA, **roles).run()


def test_the_switch_holds_one_data_set_and_fits_the_other():
    fit = GlobalFit(
        _switched, DATA, shared=["a"], local=["b"], fixed={"held": [1, 0], "b_held": [1.5, 0.0]}
    )
    with pytest.warns(FitWarning, match=r"'b\[dataset 0\]' do\(es\) not change the model"):
        result = fit.run()
    # by hand: linear least squares over (a, b1) with data set 0's b held at 1.5
    y0, y1 = DATA[0][1], DATA[1][1]
    design = np.block([[X[:, None], np.zeros((10, 1))], [X[:, None], np.ones((10, 1))]])
    (a, b1), *_ = np.linalg.lstsq(design, np.concatenate([y0 - 1.5, y1]), rcond=None)
    assert result.values["a"] == pytest.approx(a, rel=1e-9)
    assert result.values["b"].tolist() == pytest.approx([0.0, b1], rel=1e-9)
    assert np.isnan(result.stderr["b"][0]) and np.isfinite(result.stderr["b"][1])
