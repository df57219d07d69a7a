"""Review of stop 60: Quantity truth with NumPy values, order against a dimensionless
number as == reads it, runnable comparison advice, and TermIds written as read.

- ``bool(Quantity(np.float64(1.5), angstrom))`` was ``TypeError: __bool__ should return
  bool, returned numpy.bool`` (``if q:``, the idiom stop 60 added, crashed);
- ``Quantity(0.33333333333334, dimensionless)`` was ``== 0.3333333333333`` and ``>`` it
  at once (== by the 13-digit key, order by the exact value);
- ``k < np.float64(3)`` advised ``parse_quantity('np.float64(3.0) * ...')``, a ValueError
  when followed (``inf`` too);
- ``ids[(1, 0)] = "mine"`` for a bond stored as ``(0, 1)`` made a second entry (9 keys
  for 8 bonds, ``ids[(0, 1)]`` kept the old id), and ``pop``/``del`` of ``(1, 0)`` were
  a KeyError for a key ``[]`` reads.
"""

from __future__ import annotations

import math
import pickle
import re

import pytest

np = pytest.importorskip("numpy")
pytest.importorskip("rdkit")
pytest.importorskip("openforcefields")

from tying.chem import Quantity, SmirksAssigner, parse_quantity, parse_unit  # noqa: E402


@pytest.mark.parametrize("value", [np.float64(1.5), np.float64(0.0), np.float32(2.0)])
def test_truth_of_a_numpy_value_is_a_bool(value):
    q = Quantity(value, parse_unit("angstrom"))
    assert bool(q) is (float(value) != 0)
    assert [x for x in [q] if x] == ([q] if value else [])


def test_dimensionless_order_agrees_with_equality():
    dl = parse_unit("dimensionless")
    for x, number in ((0.33333333333334, 0.3333333333333), (1 / 3, 1 / 3), (2.5, 2.5)):
        q = Quantity(x, dl)
        if q == number:
            assert q <= number and q >= number and not q < number and not q > number
        else:
            assert (q < number) != (q > number)
    assert Quantity(0.33333333333334, dl) == 0.3333333333333


@pytest.mark.parametrize("number", [np.float64(3.0), np.int64(2), math.inf, -3, 1e-05])
def test_order_advice_runs_when_followed(number):
    q = parse_quantity("3 * kilocalorie_per_mole / angstrom ** 2")
    with pytest.raises(TypeError, match="a plain number has no unit") as info:
        q < number  # noqa: B015
    message = str(info.value)
    first = re.search(r"e\.g\. (q < .*?), or the values", message).group(1)
    second = re.search(r"in one unit, (.*)$", message).group(1)
    for advice in (first, second):
        assert isinstance(
            eval(advice, {"q": q, "Quantity": Quantity, "parse_quantity": parse_quantity}), bool
        )  # noqa: S307


@pytest.fixture(scope="module")
def ethanol():
    return SmirksAssigner("openff-2.3.0").assign("CCO")


def test_ids_written_in_another_order_write_the_stored_term(ethanol):
    ids = ethanol.ids("Bonds")
    n = len(ids)
    (i, j) = next(iter(ids))
    ids[(j, i)] = "mine"
    assert len(ids) == n and ids[(i, j)] == ids[(j, i)] == "mine"
    assert ids.setdefault([j, i], "other") == "mine" and len(ids) == n
    assert ids.pop((j, i)) == "mine" and (i, j) not in ids and len(ids) == n - 1
    ids.update({(j, i): "back"})
    assert ids[(i, j)] == "back" and len(ids) == n
    del ids[[j, i]]
    assert (i, j) not in ids
    ids |= {(j, i): "again"}
    assert ids[(i, j)] == "again" and len(ids) == n


def test_ids_copy_reads_in_any_order_and_pickles(ethanol):
    ids = ethanol.ids("ImproperTorsions") or ethanol.ids("Bonds")
    copied = ids.copy()
    key = next(iter(ids))
    assert copied[key[::-1] if len(key) != 4 else (key[3], key[1], key[2], key[0])] == ids[key]
    assert pickle.loads(pickle.dumps(copied)) == ids
    bonds = ethanol.ids("Bonds").copy()
    (i, j) = next(iter(bonds))
    assert bonds[(j, i)] == bonds[(i, j)]
