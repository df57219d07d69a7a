"""result.table(max_local=...) refuses what it would misread (stop 53).

``max_local=-1`` listed no data set, as 0 does, and ``True`` listed one, with no error;
``2.5`` and ``None`` failed inside ``range`` or a comparison, naming no argument.
"""

import numpy as np
import pytest

from tying.fit import GlobalFit


@pytest.fixture(scope="module")
def result():
    x = np.linspace(0, 1, 6)
    data = [(x, 2 * x + i) for i in range(4)]
    return GlobalFit(lambda x, a, b: a * x + b, data, shared=["a"], local=["b"],
                     init={"a": 0.0, "b": 0.0}).run()  # fmt: skip


def _listed(table):
    return [row.split()[0] for row in table.splitlines() if row.startswith("b[")]


def test_max_local_lists_that_many_data_sets(result):
    assert _listed(result.table(max_local=2)) == ["b[dataset", "b[dataset", "b[...]"]
    assert _listed(result.table(max_local=np.int64(0))) == ["b[...]"]
    assert len(_listed(result.table(max_local=4))) == 4


@pytest.mark.parametrize(
    ("value", "error", "match"),
    [
        (-1, ValueError, r"max_local must be 0 or more .*got -1; 0 lists none"),
        (True, TypeError, r"max_local must be an int .*got True \(bool\)"),
        (2.5, TypeError, r"max_local must be an int .*got 2\.5 \(float\)"),
        (None, TypeError, r"max_local must be an int .*got None \(NoneType\)"),
    ],
)
def test_max_local_of_the_wrong_kind_is_refused(result, value, error, match):
    with pytest.raises(error, match=match):
        result.table(max_local=value)
