"""offxml content the OpenFF toolkit reads and tying.chem refused (stop 57).

- Zero and negative periodicities (``"0"``, ``"-2"``, ``"-2.0"``) load in the toolkit,
  as written; here they were refused as "expected a positive integer". They now read to
  the toolkit's values; ``"-2.5"`` and ``"-02"``, which the toolkit misreads (-2 and 0,
  with no error), stay refused, as ``"3.5"`` and ``"03"`` are.
- Lengths in pint's other bohr names (``a0``, ``a_0``: ``a0`` was read as a unit ``a``
  and the number 0) and in centimetres, millimetres and micrometres loaded in the
  toolkit and were refused here as unknown units.
- Two parameters under one id load in the toolkit; they stay refused here (ties and
  counts go by id), and the message now says the toolkit loads the file.
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


def _toolkit_labels(path, smiles, section):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ff = OpenFFForceField(str(path))
        return ff.label_molecules(OpenFFMolecule.from_smiles(smiles).to_topology())[0][section]


def _torsion_file(tmp_path, periodicities):
    terms = "".join(
        f' periodicity{n}="{p}" phase{n}="{10 * n}.0 * degree" k{n}="{n}.5 * kilocalorie_per_mole"'
        f' idivf{n}="1.0"'
        for n, p in enumerate(periodicities, 1)
    )
    path = tmp_path / "periodicities.offxml"
    path.write_text(
        HEADER + '<ProperTorsions version="0.4" potential="k*(1+cos(periodicity*theta-phase))"'
        ' default_idivf="auto">'
        f'<Proper smirks="[*:1]~[#6:2]-[#6:3]~[*:4]" id="t1"{terms}/></ProperTorsions>\n'
        + GENERIC_VDW + "</SMIRNOFF>\n"
    )  # fmt: skip
    return path


def test_zero_and_negative_periodicities_read_as_the_toolkit_reads_them(tmp_path):
    path = _torsion_file(tmp_path, ["-2", "0", "-2.0", "+3", "-0"])
    ours = SmirksAssigner(path, sections=["ProperTorsions"]).assign("CC").propers
    theirs = _toolkit_labels(path, "CC", "ProperTorsions")
    assert ours and set(ours) == set(theirs)
    for key, p in ours.items():
        assert [t.periodicity for t in p.terms] == theirs[key].periodicity == [-2, 0, -2, 3, 0]
        assert [t.k.to("kilocalorie_per_mole").value for t in p.terms] == [
            k.m_as("kilocalorie_per_mole") for k in theirs[key].k
        ]


@pytest.mark.parametrize(
    ("text", "match", "toolkit_reads"),
    [
        ("-2.5", r"expected an integer .*truncates '3\.5' to 3", -2),
        ("-02", "a leading zero is read as another number", 0),
    ],
)
def test_a_negative_periodicity_the_toolkit_misreads_is_refused(
    tmp_path, text, match, toolkit_reads
):
    path = _torsion_file(tmp_path, [text])
    with pytest.raises(
        OffxmlError, match=rf"ProperTorsions id 't1': attribute periodicity1='{text}'"
    ):
        load_force_field(path)
    with pytest.raises(OffxmlError, match=match):
        load_force_field(path)
    theirs = _toolkit_labels(path, "CC", "ProperTorsions")
    assert {p.periodicity[0] for p in theirs.values()} == {toolkit_reads}


def test_lengths_in_bohr_radii_centimetres_and_micrometres_read_as_the_toolkit_reads_them(
    tmp_path,
):
    lengths = {
        "[#6:1]-[#6:2]": "2.9 * a0",
        "[#6:1]-[#8:2]": "2.7 * a_0",
        "[#6:1]-[#1:2]": "1.1e-8 * centimeter",
        "[#8:1]-[#1:2]": "9.6e-8 * mm",
    }
    bonds = [
        bond(smirks, f"b{i}").replace("1.5 * angstrom ** 1", length)
        for i, (smirks, length) in enumerate(lengths.items())
    ]
    bonds[0] = bonds[0].replace("angstrom ** -2", "a0 ** -2")
    bonds.append(bond("[#1:1]-[#1:2]", "b9").replace("1.5 * angstrom ** 1", "7.4e-5 * µm"))
    path = write_offxml(tmp_path, bonds)
    ours = SmirksAssigner(path, sections=["Bonds"]).assign("CCO").bonds
    theirs = _toolkit_labels(path, "CCO", "Bonds")
    assert set(ours) == set(theirs) and len({p.id for p in ours.values()}) == 4
    for key, p in ours.items():
        assert p.id == theirs[key].id
        for unit in ("angstrom", "nanometer"):
            assert math.isclose(
                p["length"].to(unit).value, theirs[key].length.m_as(unit), rel_tol=1e-15
            ), (p.id, unit)
        k = "kilocalorie / mole / angstrom ** 2"
        assert math.isclose(p["k"].to(k).value, theirs[key].k.m_as(k), rel_tol=1e-15)
    h2 = load_force_field(path)["Bonds"]["b9"]["length"]
    assert math.isclose(h2.to("angstrom").value, 0.74, rel_tol=1e-15)


def test_a_unit_name_with_digits_is_one_name():
    from tying.chem.units import parse_unit

    with pytest.raises(ValueError, match=r"unknown unit 'angstrom2' in 'angstrom2'"):
        parse_unit("angstrom2")  # pint: undefined too (not angstrom ** 2)


def test_a_duplicate_id_is_refused_saying_the_toolkit_loads_it(tmp_path):
    path = write_offxml(tmp_path, [bond("[#6:1]-[#6:2]", "b1"), bond("[#6:1]-[#1:2]", "b1", 1.1)])
    theirs = _toolkit_labels(path, "CC", "Bonds")
    assert {p.id for p in theirs.values()} == {"b1"} and len(
        {p.length for p in theirs.values()}
    ) == 2
    with pytest.raises(
        OffxmlError,
        match=r"Bonds id 'b1': duplicate id 'b1' \(parameters 1 and 2 of <Bonds>\); the OpenFF "
        r"toolkit loads such a file, but tying.chem ties and counts parameters by id",
    ):
        load_force_field(path)
