"""Stop 58, second pass: a data set written as a list ``[x, y, sigma, metadata]``.

Rows built as lists (from JSON, or appended to in a loop) were refused with the hint for a
bare array, "an array is one data set's x or y, not a data set: pass datasets=[(x, y)]",
which names neither the list nor its fix. The hint now names the tuple, and it works.
"""

from __future__ import annotations

import numpy as np
import pytest

from tying.fit import GlobalFit


def _line(x, a, b):
    return a * x + b


def test_a_data_set_as_a_list_is_told_to_pass_a_tuple_and_that_works():
    x = np.linspace(0, 1, 10)
    datasets = [[x, 2 * x + 1 + 0.01 * np.sin(9 * x), 0.01, {"g": 1}],
                [x, 2 * x + 2 + 0.01 * np.cos(7 * x), 0.01, {"g": 2}]]  # fmt: skip
    kw = {"shared": ["a"], "local": ["b"], "init": {"a": 0.0, "b": 0.0}}
    with pytest.raises(TypeError, match=r"got list; a list of 4 items holding arrays reads as "
                       r"one data set written as a list: pass it as a tuple, "
                       r"datasets=\[tuple\(d\) for d in datasets\]"):  # fmt: skip
        GlobalFit(_line, datasets, **kw).run()
    res = GlobalFit(_line, [tuple(d) for d in datasets], **kw).run()
    assert res.success and res.values["a"] == pytest.approx(2.0, abs=0.05)
    # one data set's x and y given as the list of data sets keep their own hint
    with pytest.raises(TypeError, match=r"an array is one data set's x or y"):
        GlobalFit(_line, [list(x), list(2 * x)], **kw).run()
