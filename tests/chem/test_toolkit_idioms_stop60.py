"""Stop 60: idioms of the OpenFF toolkit's labels and quantities read as the toolkit reads them.

- ``labels["Bonds"].keys()`` of the toolkit is a view whose ``in`` reads a term by either
  direction; ours was a plain ``dict_keys``: ``(2, 1) in a.bonds.keys()`` was False for
  a stored ``(1, 2)`` on the ``assign`` route (True through ``assign_many``), no error;
- the toolkit takes a list (any sequence) of atoms as a key (``tuple(key)``); ours was a
  bare ``TypeError: unhashable type: 'list'``;
- ``0 * angstrom == 0`` is True in pint / openff.units; ``bond["k"] == 0`` or
  ``torsion["phase1"] == 0`` was False here for a zero value.
"""

from __future__ import annotations

import math
import pickle

import pytest

pytest.importorskip("rdkit")
pytest.importorskip("openforcefields")

from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from tying.chem import Quantity, SmirksAssigner, parse_quantity, parse_unit  # noqa: E402

np = pytest.importorskip("numpy")


@pytest.fixture(scope="module")
def sage():
    return SmirksAssigner("openff-2.3.0")


@pytest.fixture(scope="module", params=["assign", "assign_many"])
def result(request, sage):
    smiles = "CC(=O)Nc1ccccc1"  # has impropers too
    if request.param == "assign":
        return sage.assign(smiles)
    return sage.assign_many([smiles])[0]


def test_keys_view_reads_either_direction(result):
    for section in ("bonds", "angles", "propers"):
        terms = getattr(result, section)
        for key in list(terms)[:5]:
            assert key[::-1] in terms.keys()
            assert (key[::-1], terms[key]) in terms.items()
            assert (key[::-1], object()) not in terms.items()
    assert (0, 5) not in result.bonds.keys()


def test_improper_keys_view_reads_any_outer_order(result):
    key = next(iter(result.impropers))
    i, j, k, m = key
    assert (m, j, i, k) in result.impropers.keys()
    assert (j, i, k, m) not in result.impropers.keys()  # the center moved: another term


def test_views_iterate_and_compare_as_dict_views(result):
    b = result.bonds
    assert list(b.keys()) == list(dict(b).keys())
    assert list(b.items()) == list(dict(b).items())
    assert b.keys() == dict(b).keys() and len(b.keys()) == len(b) == len(b.items())
    assert b.keys() - dict(b).keys() == set()
    assert set(b.keys()) & {(0, 1)} == {(0, 1)}


def test_list_and_array_keys_read_as_tuples(result):
    (i, j), p = next(iter(result.bonds.items()))
    assert result.bonds[[j, i]] is p
    assert result.bonds[np.array([i, j])] is p
    assert [j, i] in result.bonds
    assert result.bonds.get([i, j]) is p
    assert result.bonds.get([i, 99]) is None
    with pytest.raises(KeyError, match=r"\(0, 99\)"):
        result.bonds[[0, 99]]
    key = next(iter(result.impropers))
    assert result.impropers[list(key)] is result.impropers[key]


def test_results_still_pickle_and_equal_dicts(sage):
    a = sage.assign("CCO")
    again = pickle.loads(pickle.dumps(a))
    assert again.bonds == a.bonds == dict(a.bonds)
    assert (1, 0) in again.bonds.keys() and (2, 1) in again.bonds.keys()


@pytest.mark.parametrize("number", [0, 0.0, -0.0, np.float64(0), np.int64(0)])
def test_zero_quantity_equals_zero_as_pint(number):
    for text in ("0 * angstrom", "0.0 * kilocalorie_per_mole", "0 * degree"):
        q = parse_quantity(text)
        assert q == number and number == q and not (q != number)
        assert hash(q) == hash(number)


def test_zero_phase_of_a_torsion_is_zero(sage):
    a = sage.assign("CCCC")
    p = a.propers[(0, 1, 2, 3)]
    assert p["phase1"] == 0


def test_nonzero_quantity_is_not_a_number():
    q = parse_quantity("1.5 * angstrom")
    assert q != 1.5 and not (q == 1.5) and q != 0
    assert parse_quantity("0 * angstrom") != 1
    nan = Quantity(math.nan, parse_unit("angstrom"))
    assert nan != math.nan and nan != 0


def test_dimensionless_quantity_equals_its_number():
    q = parse_quantity("2 * dimensionless")
    assert q == 2 and q == 2.0 and q != 3
    assert hash(q) == hash(2)
    assert {q, 2.0} == {2}


def test_quantity_equality_between_units_unchanged():
    assert parse_quantity("1.5 * angstrom") == parse_quantity("0.15 * nanometer")
    assert parse_quantity("0 * angstrom") == parse_quantity("0 * nanometer")
    assert parse_quantity("0 * angstrom") != parse_quantity("0 * degree")  # dimensions differ
    assert parse_quantity("1.0 * angstrom") != True  # noqa: E712 (a bool is not a number here)


def test_zero_quantity_is_false_as_pint(sage):
    assert not parse_quantity("0 * kilocalorie_per_mole")
    assert parse_quantity("0.1 * kilocalorie_per_mole")
    assert Quantity(math.nan, parse_unit("angstrom"))  # NaN is true, as float('nan')
    zeros = [p.id for p in sage.force_field["ProperTorsions"] if not p["k1"]]
    assert zeros == [p.id for p in sage.force_field["ProperTorsions"] if p["k1"].value == 0]


def test_quantities_of_one_dimension_order_by_value(sage):
    a, b = parse_quantity("1 * angstrom"), parse_quantity("0.2 * nanometer")
    assert a < b and a <= b and b > a and b >= a and not (a > b)
    assert a <= parse_quantity("0.1 * nanometer") and a >= parse_quantity("0.1 * nanometer")
    assert max(a, b) is b and sorted([b, a]) == [a, b]
    assert a > 0 and not (a < 0) and -a < 0
    assert parse_quantity("2 * dimensionless") < 3
    bonds = sorted(sage.assign("CCO").bonds.values(), key=lambda p: p["length"])
    assert [p["length"].value for p in bonds] == sorted(p["length"].value for p in bonds)


def test_order_against_a_unit_less_number_or_other_dimension_refused_with_fix():
    k = parse_quantity("3 * kilocalorie_per_mole / angstrom ** 2")
    with pytest.raises(
        TypeError,
        match=r"cannot compare 3.0 kilocalorie / mole / angstrom \*\* 2 < 3: a plain number has no unit.*q.to\('kilocalorie / mole / angstrom \*\* 2'\).value < 3",
    ):
        k < 3  # noqa: B015
    # the advice runs
    assert not k < parse_quantity("3 * kilocalorie / mole / angstrom ** 2")
    assert not k.to("kilocalorie / mole / angstrom ** 2").value < 3
    with pytest.raises(TypeError, match=r"different dimensions \(length\^1 against angle\^1\)"):
        parse_quantity("1 * angstrom") < parse_quantity("1 * degree")  # noqa: B015
    with pytest.raises(TypeError, match="not supported"):
        parse_quantity("1 * angstrom") < "x"  # noqa: B015


_UNITS = ["angstrom", "nanometer", "picometer", "degree", "radian", "dimensionless"]


@settings(max_examples=200, deadline=None)
@given(
    st.floats(allow_nan=False, allow_infinity=False, min_value=-1e6, max_value=1e6)
    | st.sampled_from([0.0, -0.0, 1.0, 2.0]),
    st.sampled_from(_UNITS),
    st.floats(allow_nan=False, allow_infinity=False, min_value=-1e6, max_value=1e6)
    | st.sampled_from([0.0, -0.0, 1.0, 2.0]),
    st.sampled_from(_UNITS),
    st.sampled_from([0, 0.0, 1, 2.0, -3]),
)
def test_equality_hash_truth_and_order_agree(x, ux, y, uy, number):
    a, b = Quantity(x, parse_unit(ux)), Quantity(y, parse_unit(uy))
    for left, right in ((a, b), (a, number), (b, number)):
        if left == right:
            assert hash(left) == hash(right) and right == left and not left != right
    assert bool(a) == (x != 0)
    if a.unit.dimension == b.unit.dimension:
        assert (a == b) == (a <= b and a >= b)
        assert (a < b) == (not a >= b) and (a < b) == (b > a)


def test_ids_read_in_any_atom_order_as_the_section(result):
    ids = result.ids("Bonds")
    for (i, j), p in result.bonds.items():
        assert ids[(j, i)] == ids.get((j, i)) == ids[[j, i]] == p.id
        assert (j, i) in ids and (j, i) in ids.keys()
    assert ids.get((0, 99)) is None and ids == {k: p.id for k, p in dict(result.bonds).items()}
    angles = result.ids("Angles")
    key = next(iter(angles))
    assert angles[key[::-1]] == result.angles[key].id
    impropers = result.ids("ImproperTorsions")
    i, j, k, m = next(iter(impropers))
    assert impropers[(m, j, k, i)] == result.impropers[(i, j, k, m)].id
    assert (j, i, k, m) not in impropers  # the center moved: another term


def test_ids_stay_a_changeable_dict_that_pickles(result):
    ids = result.ids("Bonds")
    ids[(98, 99)] = "mine"
    assert ids[(99, 98)] == "mine" and (98, 99) not in result.ids("Bonds")
    again = pickle.loads(pickle.dumps(result.ids("ImproperTorsions")))
    assert again == result.ids("ImproperTorsions")
    i, j, k, m = next(iter(again))
    assert again[(k, j, i, m)] == again[(i, j, k, m)]
