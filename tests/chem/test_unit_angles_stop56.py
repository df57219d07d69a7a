"""Units the OpenFF toolkit reads that tying.chem read differently or not at all (stop 56).

- ``bohr`` and ``meter`` (openff-units' lengths) were unknown units: a file written
  with them loads in the toolkit; they now read to the toolkit's values, to the bit.
- pint counts radian as the number 1 and degree as pi/180, so the toolkit reads
  ``length="1.5 * degree*angstrom"`` as 0.026 Å and a bond ``k`` per ``radian ** 2``
  as a bond k. tying.chem keeps angles a dimension and refuses such a unit; the error
  now says what the toolkit would read, instead of only "wrong unit".
- an angle's ``k`` in ``kilocalorie/mole/radian**2`` or per ``degree**2`` reads equal to
  the toolkit's.
"""

from __future__ import annotations

import math
import warnings

import pytest

pytest.importorskip("rdkit")

from tying.chem import OffxmlError, SmirksAssigner, load_force_field  # noqa: E402

from .helpers import GENERIC_VDW, HEADER, bond, write_offxml  # noqa: E402

try:
    from openff.toolkit import ForceField as OpenFFForceField
    from openff.toolkit import Molecule as OpenFFMolecule
except ImportError as err:
    pytest.skip(f"OpenFF toolkit not importable: {err}", allow_module_level=True)

K = "500.0 * kilocalorie_per_mole ** 1 * angstrom ** -2"


def _toolkit_labels(path, smiles):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ff = OpenFFForceField(str(path))
        return ff.label_molecules(OpenFFMolecule.from_smiles(smiles).to_topology())[0]


@pytest.mark.parametrize(
    "length", ["1.5 * bohr", "2 * bohrs", "1.5e-10 * meter", "1.5e-10 * metres"]
)
def test_a_length_in_bohr_or_meters_reads_as_the_toolkit_reads_it(tmp_path, length):
    path = write_offxml(
        tmp_path, [bond("[#6:1]-[#6:2]", "b1").replace("1.5 * angstrom ** 1", length)]
    )
    ours = SmirksAssigner(path, strict=False).assign("CC").bonds[(0, 1)]["length"]
    theirs = _toolkit_labels(path, "CC")["Bonds"][(0, 1)].length
    for unit in ("angstrom", "nanometer"):
        assert math.isclose(ours.to(unit).value, theirs.m_as(unit), rel_tol=1e-15), (length, unit)


@pytest.mark.parametrize(
    ("attribute", "written", "toolkit_reads"),
    [
        ("length", "1.5 * degree*angstrom", 1.5 * math.pi / 180),
        ("length", "1.5 * angstrom / radian", 1.5),
        ("k", "500 * kilocalorie/mole/angstrom**2/radian**2", 500.0),
    ],
)
def test_a_unit_off_by_an_angle_is_refused_saying_what_the_toolkit_reads(
    tmp_path, attribute, written, toolkit_reads
):
    text = bond("[#6:1]-[#6:2]", "b1")
    text = text.replace("1.5 * angstrom ** 1" if attribute == "length" else K, written)
    path = write_offxml(tmp_path, [text])
    theirs = getattr(_toolkit_labels(path, "CC")["Bonds"][(0, 1)], attribute)
    expected = "angstrom" if attribute == "length" else "kilocalorie / mole / angstrom ** 2"
    assert math.isclose(theirs.m_as(expected), toolkit_reads, rel_tol=1e-12)
    with pytest.raises(
        OffxmlError,
        match=rf"attribute {attribute}=.* has the wrong unit: .*the OpenFF toolkit counts "
        r"radian as the number 1 and degree as pi/180.*refuses it",
    ):
        load_force_field(path)


def test_a_wrong_unit_not_off_by_an_angle_does_not_blame_angles(tmp_path):
    path = write_offxml(
        tmp_path, [bond("[#6:1]-[#6:2]", "b1").replace("1.5 * angstrom ** 1", "1.5 * mole")]
    )
    with pytest.raises(OffxmlError, match=r"has the wrong unit: expected a length") as info:
        load_force_field(path)
    assert "radian" not in str(info.value)


@pytest.mark.parametrize(
    "k",
    [
        "100 * kilocalorie/mole/radian**2",
        "0.03 * kilocalorie / mole / degree ** 2",
        "418.4 * kJ/mol/rad**2",
    ],
)
def test_an_angle_k_per_radian_or_degree_squared_reads_as_the_toolkit_reads_it(tmp_path, k):
    angles = (
        '<Angles version="0.3" potential="harmonic">'
        f'<Angle smirks="[*:1]~[*:2]~[*:3]" id="a1" angle="1.9 * radian" k="{k}"/></Angles>\n'
    )
    path = tmp_path / "angles.offxml"
    path.write_text(HEADER + angles + GENERIC_VDW + "</SMIRNOFF>\n")
    ours = SmirksAssigner(path, sections=["Angles"]).assign("CCO").angles[(0, 1, 2)]
    theirs = _toolkit_labels(path, "CCO")["Angles"][(0, 1, 2)]
    unit = "kilocalorie / mole / radian ** 2"
    assert math.isclose(
        ours["k"].to(unit).value, theirs.k.m_as("kilocalorie/mole/radian**2"), rel_tol=1e-13
    )
    assert math.isclose(
        ours["angle"].to("degree").value, theirs.angle.m_as("degree"), rel_tol=1e-13
    )
