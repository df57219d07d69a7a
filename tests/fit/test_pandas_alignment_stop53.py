"""pandas x, y and σ with different row labels are refused, not paired by position (stop 53).

pandas pairs Series by label; ``np.asarray`` drops the labels, so ``y.sort_values()``
against an unsorted x gave a plausible wrong fit with no error. pandas is not a
dependency (nor installed here), so a stand-in named ``Series`` in pandas' module plays
it (the check reads only the type's module and name, ``v.index`` and ``index.equals``).
"""

import numpy as np
import pytest

from tying.fit import Dataset, GlobalFit


class _Index(list):
    def equals(self, other):
        return list(self) == list(other)


class Series:
    __module__ = "pandas.core.series"

    def __init__(self, values, index):
        self._values = np.asarray(values, dtype=float)
        self.index = _Index(index)

    def __array__(self, dtype=None, copy=None):
        return self._values if dtype is None else self._values.astype(dtype)

    def __len__(self):
        return len(self._values)

    def take(self, order):  # as Series.iloc[order]: labels travel with their values
        return Series(self._values[order], [self.index[i] for i in order])


def _line(x, a, b):
    return a * x + b


def _data():
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 1, 12)  # unsorted, as read from a table
    y = 3 * x + 1 + rng.normal(0, 0.01, 12)
    return Series(x, range(12)), Series(y, range(12))


KW = {"shared": ["a", "b"], "init": {"a": 0.0, "b": 0.0}}


def test_series_with_the_same_labels_fit_as_arrays():
    x, y = _data()
    got = GlobalFit(_line, [(x, y)], **KW).run()
    want = GlobalFit(_line, [(np.asarray(x), np.asarray(y))], **KW).run()
    assert got.values == pytest.approx(want.values, rel=1e-12)
    assert got.values["a"] == pytest.approx(3.0, abs=0.05)


@pytest.mark.parametrize("form", ["tuple", "dict", "Dataset", "sigma"])
def test_series_in_another_order_are_refused_by_label(form):
    x, y = _data()
    order = np.argsort(np.asarray(y))[::-1]  # y.sort_values(ascending=False)
    ys = y.take(order)
    item = {
        "tuple": (x, ys),
        "dict": {"x": x, "y": ys},
        "Dataset": Dataset(x, ys, name="run"),
        "sigma": (x, y, Series(np.full(12, 0.01), list(range(11, -1, -1)))),
    }[form]
    fit = GlobalFit(_line, [item], **KW)
    other = "sigma" if form == "sigma" else "y"
    with pytest.raises(ValueError, match=rf"x and {other} are pandas objects with different row "
                       rf"indexes \(x: \[0, 1, 2, 3, \.\.\.\], {other}: \[\d+, .*paired by "
                       rf"position, not by label; align them first \({other} = "
                       rf"{other}\.reindex\(x\.index\)"):  # fmt: skip
        fit.run()
    assert not hasattr(fit, "result_")


def test_disjoint_labels_are_refused_too():
    x, y = _data()
    shifted = Series(np.asarray(y), range(100, 112))
    with pytest.raises(ValueError, match=r"x: \[0, 1, 2, 3, \.\.\.\], y: \[100, 101, 102, 103"):
        GlobalFit(_line, [(x, shifted)], **KW).run()


def _two_groups():
    rng = np.random.default_rng(1)
    x = np.linspace(0, 1, 10)
    return [(x, 2 * x + c + rng.normal(0, 0.01, 10), 0.01, {"g": g}) for g, c in
            [("A", 1.0), ("B", 5.0), ("A", 1.0)]]  # fmt: skip


def test_a_labelled_series_as_fixed_values_is_refused():
    # the fixed offsets by data-set name, in another order than the data sets: read by
    # position, each data set was held at another's offset
    data = _two_groups()
    fixed = Series([5.0, 1.0, 1.0], ["dataset 1", "dataset 0", "dataset 2"])
    fit = GlobalFit(_line, data, shared=["a"], fixed={"b": fixed}, init={"a": 0.0})
    with pytest.raises(ValueError, match=r"fixed\['b'\] is a pandas object labelled "
                       r"\['dataset 1', 'dataset 0', 'dataset 2'\], but it would be read by "
                       r"position, not by label; .*series\.to_numpy\(\)"):  # fmt: skip
        fit.run()
    # positional labels 0..K-1 are read as they stand
    fit.fixed = {"b": Series([1.0, 5.0, 1.0], range(3))}
    assert fit.run().values["a"] == pytest.approx(2.0, abs=0.05)


def test_a_series_by_group_as_init_is_refused_and_a_dict_works():
    data = _two_groups()
    init = {"a": 0.0, "b": Series([5.0, 1.0], ["B", "A"])}
    fit = GlobalFit(_line, data, shared=["a"], per_group={"b": "g"}, init=init)
    with pytest.raises(ValueError, match=r"init\['b'\] is a pandas object labelled \['B', "
                       r"'A'\].*pass a dict for a per_group parameter"):  # fmt: skip
        fit.run()
    fit.init = {"a": 0.0, "b": {"B": 5.0, "A": 1.0}}
    assert fit.run().values["b"] == pytest.approx({"A": 1.0, "B": 5.0}, abs=0.05)
