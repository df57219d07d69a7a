"""Stop 58: a local value named as ``result.table()`` shows it.

The table labels data set ``i``'s local ``a`` by the data set's name (``a[s1]``),
``physical_names`` by its index (``a[2]``). ``conf_interval(["a[s1]"])`` was refused with
"did you mean 'a[1]'?", difflib's closest physical name: with data sets named
``["s2", "s0", "s1"]``, ``a[1]`` is data set ``s0``'s value, so the advice, followed,
gave the interval of another data set (best 2.0003 where the table shows a[s1] = 3.0013).
"""

from __future__ import annotations

import numpy as np
import pytest

import tying.fit


def _decay(x, a, b):
    return a * np.exp(-b * x)


@pytest.fixture(scope="module")
def named():
    def fit(names):
        rng = np.random.default_rng(9)
        x = np.linspace(0, 3, 12)
        data = [
            tying.fit.Dataset(x, _decay(x, 1 + k, 0.7) + rng.normal(0, 0.02, 12), 0.02, name=n)
            for k, n in enumerate(names)
        ]
        init = {"a": 1.0, "b": 1.0}
        return tying.fit.GlobalFit(_decay, data, shared=["b"], local=["a"], init=init).run()

    return fit


def test_a_local_value_is_profiled_by_its_table_label(named):
    res = named(["s2", "s0", "s1"])
    assert "a[s1]" in res.table()
    ci = res.conf_interval(["a[s1]", "a[0]"], sigmas=(1,))
    assert list(ci) == ["a[s1]", "a[0]"]
    assert ci["a[s1]"].best == res.values["a"][2]  # data set 's1' is at index 2
    assert ci["a[s1]"].lower[0] < res.values["a"][2] < ci["a[s1]"].upper[0]
    assert ci["a[0]"].best == res.values["a"][0]
    # a mistyped label gets a label that exists, not another data set's index
    with pytest.raises(ValueError, match=r"shows it, 'a\[s2\]'\); did you mean 'a\[s2\]'\?"):
        res.conf_interval(["a[s3]"], sigmas=(1,))
    with pytest.raises(
        ValueError, match=r"names lists 'a\[2\]' twice \(as 'a\[2\]' and 'a\[s1\]'\)"
    ):
        res.conf_interval(["a[s1]", "a[2]"], sigmas=(1,))


def test_a_data_set_named_by_another_ones_index_is_refused_not_guessed(named):
    res = named(["1", "0", "2"])
    # 'a[1]' is index 1's value (data set '0') and data set '1''s label (index 0)
    with pytest.raises(
        ValueError, match=r"'a\[1\]', which is ambiguous: .* data set '1' \(index 0"
    ):
        res.conf_interval(["a[1]"], sigmas=(1,))
    # where index and name agree there is no doubt, and the default names are physical
    assert res.conf_interval(["a[2]"], sigmas=(1,))["a[2]"].best == res.values["a"][2]
    assert list(res.conf_interval(sigmas=(1,))) == ["b"]
    # nor are the default names of a fit with only local values refused as ambiguous
    x = np.linspace(0, 3, 12)
    data = [tying.fit.Dataset(x, _decay(x, a, 0.7) + 0.01 * np.cos(5 * a * x), 0.02, name=n)
            for a, n in ((1.0, "1"), (2.0, "0"))]  # fmt: skip
    only_local = tying.fit.GlobalFit(_decay, data, local=["a", "b"], init={"a": 1, "b": 1}).run()
    assert list(only_local.conf_interval(sigmas=(1,))) == ["a[0]", "b[0]", "a[1]", "b[1]"]
    # the advice works: names that are not indices
    renamed = named(["run 1", "run 0", "run 2"])
    assert (
        renamed.conf_interval(["a[run 1]"], sigmas=(1,))["a[run 1]"].best
        == (renamed.values["a"][0])
    )
