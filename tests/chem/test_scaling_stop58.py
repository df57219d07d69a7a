"""Stop 58: advice that works when followed, and NumPy integers where ints are asked for.

- A vdW parameter writes ``rmin_half`` (Parsley, Sage's small molecules) or ``sigma``
  (Sage's water); the toolkit's vdW type computes the other. ``parameter.sigma`` advised
  ``sigma = 2 * rmin_half / 2 ** (1 / 6)``, which was a ``TypeError`` when followed
  (``Quantity`` did not scale by a number), and ``parameter["sigma"]`` gave no advice.
  Followed now, each gives the toolkit's value.
- ``assign_many(n_jobs=np.int64(2))``, ``chunksize=np.int64(8)`` and
  ``drug_like_smiles(np.int64(5))`` were refused as not ints (``tying.hmm``'s ``n_jobs``
  and ``drug_like_smiles``' own ``seed`` take NumPy integers).
- A force-field name in another case (``"OPENFF-2.3.0"``) got no "Did you mean".
"""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("rdkit")
pytest.importorskip("openforcefields")

from tying.chem import SmirksAssigner, load_force_field, parse_quantity  # noqa: E402
from tying.chem.generate import drug_like_smiles  # noqa: E402
from tying.chem.parallel import check_n_jobs  # noqa: E402

# The toolkit's vdWType values for these parameters (openff-toolkit 0.18.0, openff-2.3.0):
# sigma of n16 computed from its rmin_half, rmin_half of n-tip3p-O from its sigma.
N16_SIGMA_ANGSTROM = 3.387971073428982
TIP3P_O_RMIN_HALF_ANGSTROM = 1.768270587804171


def _follow(advice: str, parameter) -> object:
    """Run the ``name = expression`` the error advises, with ``parameter`` in scope."""
    expression = advice.rsplit(" = ", 1)[1].rstrip("'\"")
    return eval(expression, {"parameter": parameter})  # noqa: S307 - our own message


@pytest.mark.parametrize("how", ["item", "attribute"])
def test_sigma_advice_works_when_followed(how):
    n16 = load_force_field("openff-2.3.0")["vdW"]["n16"]
    error = KeyError if how == "item" else AttributeError
    with pytest.raises(
        error, match=r"sigma = 2 \* parameter\['rmin_half'\] / 2 \*\* \(1 / 6\)"
    ) as e:
        _ = n16["sigma"] if how == "item" else n16.sigma
    sigma = _follow(str(e.value), n16)
    assert str(sigma.unit) == "angstrom"
    assert sigma.to("angstrom").value == pytest.approx(N16_SIGMA_ANGSTROM, rel=1e-12)


def test_rmin_half_advice_works_when_followed():
    water_o = load_force_field("openff-2.3.0")["vdW"]["n-tip3p-O"]  # written with sigma
    with pytest.raises(KeyError, match=r"rmin_half = parameter\['sigma'\] \* 2 \*\* \(1 / 6\) / 2"):
        _ = water_o["rmin_half"]
    with pytest.raises(AttributeError, match="the file writes sigma") as e:
        _ = water_o.rmin_half
    rmin_half = _follow(str(e.value), water_o)
    assert rmin_half.to("angstrom").value == pytest.approx(TIP3P_O_RMIN_HALF_ANGSTROM, rel=1e-12)


def test_quantity_scales_by_numbers_only():
    q = parse_quantity("1.5 * angstrom")
    assert (2 * q).value == 3.0 and (q * np.float64(2)).value == 3.0
    assert (q / 3).to("nanometer").value == pytest.approx(0.05)
    assert (-q).value == -1.5 and str((q / 2).unit) == "angstrom"
    for bad in (lambda: q * q, lambda: q / q, lambda: q + q, lambda: q * True, lambda: 1 / q):
        with pytest.raises(TypeError, match="unsupported operand"):
            bad()


def test_a_term_divided_by_its_divisor():
    ff = load_force_field("openff-2.3.0")
    term = ff["ImproperTorsions"]["i1"].terms[0]
    per_ordering = term.k / ff.idivf("ImproperTorsions", term)  # the trefoil: k / 3
    assert per_ordering.value == pytest.approx(term.k.value / 3)


def test_numpy_integers_are_counts():
    assert check_n_jobs(np.int64(1)) == 1 and type(check_n_jobs(np.int32(2))) is int
    sage = SmirksAssigner("openff-2.3.0")
    many = sage.assign_many(["CCO", "CC", "CO"], n_jobs=np.int64(1), chunksize=np.int64(2))
    assert [a.ids("Bonds") for a in many] == [
        sage.assign(s).ids("Bonds") for s in ("CCO", "CC", "CO")
    ]
    assert drug_like_smiles(np.int64(3)) == drug_like_smiles(3)
    for bad in (True, 1.0, np.float64(2.0), 0, -2):
        with pytest.raises(ValueError, match="n_jobs must be a positive int"):
            check_n_jobs(bad)
    with pytest.raises(ValueError, match="chunksize must be a positive int"):
        sage.assign_many(["CCO"], chunksize=np.float64(2))
    with pytest.raises(ValueError, match="n must be a positive int"):
        drug_like_smiles(np.float64(3))


@pytest.mark.parametrize("name", ["OPENFF-2.3.0", "OpenFF-2.3.0.offxml"])
def test_a_name_in_other_case_gets_the_suggestion(name):
    from tying.chem import ForceFieldNotFoundError

    with pytest.raises(ForceFieldNotFoundError, match=r"Did you mean 'openff-2\.3\.0'"):
        load_force_field(name)
    assert load_force_field("openff-2.3.0").name == "openff-2.3.0"  # the advice, followed
