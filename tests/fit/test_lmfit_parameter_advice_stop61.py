"""An lmfit Parameter's one-sided bounds advised as code that runs (stop 61).

``init=params`` with ``params.add("a", 1, min=0)`` is refused (its bounds would be
dropped); the fix read ``give bounds={'a': (0, inf)}``, a NameError when typed.
"""

import re

import numpy as np
import pytest

lmfit = pytest.importorskip("lmfit")

from tying.fit import GlobalFit  # noqa: E402


@pytest.mark.parametrize(
    "kw, pair",
    [({"min": 0}, "(0, None)"), ({"max": 5}, "(None, 5)"), ({"min": -1, "max": 5}, "(-1, 5)")],
)
def test_an_open_side_is_advised_as_none_and_the_advice_fits(kw, pair):
    x = np.linspace(0, 1, 10)
    params = lmfit.Parameters()
    params.add("a", 1, **kw)
    fit = GlobalFit(lambda x, a: a * x, [(x, 2 * x)], shared=["a"], init=params)
    with pytest.raises(
        TypeError, match=re.escape(f"give bounds={{'a': {pair}}} and init={{'a': 1}}")
    ):
        fit.run()
    msg = str(pytest.raises(TypeError, fit.run).value)
    advice = msg.split("give ")[1]
    bounds_src, init_src = advice.split(" and ")
    fit.bounds = eval(bounds_src.split("=", 1)[1])  # noqa: S307 (the advice, as typed)
    fit.init = eval(init_src.split("=", 1)[1])  # noqa: S307
    assert fit.run().values["a"] == pytest.approx(2.0)
