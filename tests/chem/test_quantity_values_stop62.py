"""Stop 62: a 0-d NumPy array is a Quantity's value; advice for other values that runs.

``Quantity(np.array(1.5), "angstrom")`` was refused (pint takes it; ``arr.sum()`` of a
0-d array and ``np.asarray(x)`` give one). The refusal of a complex value advised
``float(value)``, and of None ``float(value)`` too; both fail when followed.
"""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("rdkit")

from tying.chem import Quantity  # noqa: E402


@pytest.mark.parametrize(
    "value", [np.array(1.5), np.array(1.5, dtype=np.float32), np.array(1.5, dtype=object)]
)
def test_zero_d_array_is_its_number(value) -> None:
    q = Quantity(value, "angstrom")
    assert getattr(q.value, "shape", ()) == ()
    assert q == Quantity(1.5, "angstrom")
    assert hash(q) == hash(Quantity(1.5, "angstrom"))
    assert str(q) == "1.5 angstrom"
    assert q.to("nanometer") == Quantity(0.15, "nanometer")


def test_zero_d_int_array() -> None:
    assert Quantity(np.array(2), "angstrom") == Quantity(2.0, "angstrom")


@pytest.mark.parametrize(
    ("value", "fix", "works"),
    [
        (2j, r"pass value\.real when its imaginary part is 0", lambda v: v.real),
        (np.array(1.5 + 0j), r"pass value\.real", lambda v: v.real),
        (None, r"pass one real number, such as 1\.5", lambda v: 1.5),
        (np.array(True), r"a bool is not a number here", lambda v: 1.0),
        (np.array([1.5]), r"a Quantity holds one number", lambda v: v[0]),
    ],
)
def test_refused_values_advise_what_runs(value, fix, works) -> None:
    with pytest.raises(TypeError, match=r"value must be one real number.*" + fix):
        Quantity(value, "angstrom")
    Quantity(works(value), "angstrom")  # the advice, followed, builds one
