"""Stop 58, second pass: ``result.plot(i)`` for data given without sigma.

The weight of 1 such a data set gets was drawn as error bars of ±1 in y's units: on data
near 1e-3 the bars were 1,000 times the data's spread, and the residual axis said
"(y - model)/σ" of a σ nobody gave. lmfit's ``plot_fit`` draws no error bars without
weights; neither does ``plot`` now, and the residual axis reads ``y - model``.
"""

from __future__ import annotations

import numpy as np
from matplotlib.container import ErrorbarContainer

from tying.fit import GlobalFit


def _fit():
    rng = np.random.default_rng(58)
    x = np.linspace(0, 3, 25)
    y = 2e-3 * np.exp(-1.3 * x)
    data = [(x, y + rng.normal(0, 1e-5, 25)),  # no sigma
            (x, 1.5 * y + rng.normal(0, 1e-5, 25), 1e-5)]  # fmt: skip
    return GlobalFit(lambda x, a, k: a * np.exp(-k * x), data, shared=["k"], local=["a"],
                     init={"a": 1e-3, "k": 1.0}).run()  # fmt: skip


def _bars(ax):
    return [c for c in ax.containers if isinstance(c, ErrorbarContainer)]


def test_data_without_sigma_are_drawn_without_error_bars():
    res = _fit()
    top, bottom = res.plot(0).axes
    assert _bars(top) == []  # ±1 bars on data of 2e-3 before
    (points,) = [ln for ln in top.get_lines() if ln.get_label() == "data"]
    np.testing.assert_array_equal(points.get_ydata(), res._data.y[0, :25])
    (line,) = [ln for ln in top.get_lines() if ln.get_label() == "global fit"]
    np.testing.assert_array_equal(line.get_ydata(), res.best_fit(0))
    assert bottom.get_ylabel() == "y - model"
    np.testing.assert_allclose(bottom.get_lines()[0].get_ydata(), res.residual(0), rtol=0)
    assert top.get_ylim()[1] < 0.01  # the axis spans the data, not bars reaching 1


def test_data_with_sigma_keep_their_error_bars():
    res = _fit()
    top, bottom = res.plot(1, sigma=2).axes
    (bars,) = _bars(top)
    segments = bars.lines[2][0].get_segments()
    np.testing.assert_allclose([s[1][1] - s[0][1] for s in segments], 2e-5, rtol=1e-9)
    assert bottom.get_ylabel() == "(y - model)/σ"
