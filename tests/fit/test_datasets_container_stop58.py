"""Stop 58: datasets given as something other than a list get advice that works.

Every container that is not a list was told "wrap a single data set in a list": followed
for a dict of data sets by name (``{"r1": (x, y), "r2": (x, y)}``) it gave ``[data]``, one
dict that is no data set ("a dict data set needs keys 'x' and 'y'"); for a generator or a
pandas table it did not apply. One data set passed bare, ``GlobalFit(model, (x, y))``,
named no fix at all.
"""

from __future__ import annotations

import re

import numpy as np
import pytest

import tying.fit

X = np.linspace(0, 3, 12)


def _decay(x, a, b):
    return a * np.exp(-b * x)


DATA = {k: (X, _decay(X, a, 0.8) + 0.01 * np.cos(7 * X * a)) for k, a in (("r1", 1.0), ("r2", 2.0))}


def _fit(datasets):
    init = {"a": 1.0, "b": 1.0}
    return tying.fit.GlobalFit(_decay, datasets, shared=["b"], local=["a"], init=init).run()


def test_a_dict_of_data_sets_gets_a_fix_that_works():
    with pytest.raises(TypeError, match="got dict; a dict of data sets by name") as err:
        _fit(DATA)
    fixes = re.findall(
        r"pass (list\(data\.values\(\)\)), or name each .*: (\[.*\])$", str(err.value)
    )
    assert fixes, str(err.value)
    want = _fit([DATA["r1"], DATA["r2"]]).values["b"]
    for fix in fixes[0]:
        got = _fit(eval(fix, {"tying": tying, "data": DATA}))
        assert got.values["b"] == pytest.approx(want, rel=1e-10)
    assert got.dataset_names == ["r1", "r2"]


def test_other_containers_are_named_with_their_own_fix():
    with pytest.raises(TypeError, match=r"got generator; a generator is not a list; pass list"):
        _fit(d for d in DATA.values())
    with pytest.raises(TypeError, match=r"got ndarray; an array is one data set's x or y, not a "
                       r"data set: pass datasets=\[\(x, y\)\] for one"):  # fmt: skip
        tying.fit.GlobalFit(_decay, DATA["r1"], shared=["a", "b"], init={"a": 1, "b": 1}).run()
    # a single data set keeps its advice, which works
    single = {"x": X, "y": DATA["r1"][1]}
    with pytest.raises(TypeError, match=r"got dict; wrap a single data set in a list: \[data\]"):
        tying.fit.GlobalFit(_decay, single, shared=["a", "b"], init={"a": 1, "b": 1}).run()
    res = tying.fit.GlobalFit(_decay, [single], shared=["a", "b"], init={"a": 1, "b": 1}).run()
    assert res.values["b"] == pytest.approx(0.8, abs=0.02)


def test_a_pandas_table_is_told_to_split_by_group():
    pd = pytest.importorskip("pandas")
    df = pd.DataFrame({"x": np.r_[X, X], "y": np.r_[DATA["r1"][1], DATA["r2"][1]]})
    df["run"] = [1] * X.size + [2] * X.size
    with pytest.raises(TypeError, match=r"got DataFrame; a pandas table is not split") as err:
        _fit(df)
    fix = re.search(r"pass one \(x, y\) per group: (\[.*\]) \(your", str(err.value)).group(1)
    got = _fit(eval(fix, {"df": df}))
    assert got.values["a"] == pytest.approx([1.0, 2.0], abs=0.02)
