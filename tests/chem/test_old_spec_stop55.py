"""SMIRNOFF 0.1 and 0.2 documents read as the OpenFF toolkit reads them (stop 55).

Before 0.3 a section wrote its units once (``<Bonds length_unit="angstroms"
k_unit="...">`` over bare numbers) and 0.1 named its sections after OpenMM's forces.
The toolkit converts such files (``convert_0_1_smirnoff_to_0_2``,
``convert_0_2_smirnoff_to_0_3``); here they were refused (``unknown attribute
length_unit``, ``potential='charmm'``). Each hand-written file below is loaded by both
tools: both refuse it, or both read it with every number equal in SI units; the
toolkit's own test files in the three spec versions give the toolkit's labels.
"""

from __future__ import annotations

import logging
import math
import pathlib
import re
import warnings

import pytest

pytest.importorskip("rdkit")
pytest.importorskip("openforcefields")

from tying.chem import OffxmlError, Quantity, SmirksAssigner, load_force_field  # noqa: E402

try:
    from openff.toolkit import ForceField as OpenFFForceField
    from openff.toolkit.utils import get_data_file_path
    from openff.units import Quantity as PintQuantity
except ImportError as err:
    pytest.skip(f"OpenFF toolkit not importable: {err}", allow_module_level=True)

from tests.chem.test_every_force_field_stop42 import _toolkit_labels  # noqa: E402

BONDS = '<Bond smirks="[#6:1]-[#6:2]" id="b1" length="1.526" k="620.0"/>'
BOND_UNITS = 'length_unit="angstroms" k_unit="kilocalories_per_mole/angstrom**2"'
VDW_ATOMS = (
    '<Atom smirks="[#1:1]" id="n1" epsilon="0.0157" rmin_half="0.6"/>'
    '<Atom smirks="[#6:1]" id="n2" epsilon="0.086" sigma="3.4"/>'
)
NONBONDED_01 = (
    '<NonbondedForce coulomb14scale="0.833333" lj14scale="0.5" rmin_half_unit="angstroms" '
    f'epsilon_unit="kilocalories_per_mole">{VDW_ATOMS}</NonbondedForce>'
)
TORSIONS_01 = (
    '<PeriodicTorsionForce phase_unit="degrees" k_unit="kilocalories_per_mole">'
    '<Proper smirks="[*:1]-[#6X4:2]-[#6X4:3]-[*:4]" id="t1" idivf1="9" periodicity1="3" '
    'phase1="0.0" k1="1.40"/>'
    '<Improper smirks="[*:1]~[#6X3:2](~[*:3])~[*:4]" id="i1" periodicity1="2" phase1="180." '
    'k1="1.1"/></PeriodicTorsionForce>'
)
# (name, version, body): each is read by both tools, or refused by both
CASES = [
    ("0.2 units on the section", "0.2", f"<Bonds {BOND_UNITS}>{BONDS}</Bonds>"),
    ("0.2 section version kept", "0.2", f'<Bonds version="0.3" {BOND_UNITS}>{BONDS}</Bonds>'),
    ("0.2 any section version", "0.2", f'<Bonds version="0.9" {BOND_UNITS}>{BONDS}</Bonds>'),
    (
        "0.2 a parameter's own unit wins",
        "0.2",
        f'<Bonds {BOND_UNITS}><Bond smirks="[#6:1]-[#6:2]" id="b1" length="0.1526" '
        f'length_unit="nanometer" k="620.0"/></Bonds>',
    ),
    (
        "0.2 a unit only on the parameter",
        "0.2",
        '<Bonds><Bond smirks="[#6:1]-[#6:2]" id="b1" length="1.526" length_unit="angstrom" '
        'k="620.0 * kilocalories_per_mole/angstrom**2"/></Bonds>',
    ),
    (
        "0.2 a value with its own unit too",
        "0.2",
        f'<Bonds {BOND_UNITS}><Bond smirks="[#6:1]-[#6:2]" id="b1" length="1.526 * angstrom" '
        f'k="620.0"/></Bonds>',
    ),
    (
        "0.2 k_unit reaches k_bondorder",
        "0.2",
        '<Bonds length_unit="angstrom" k_unit="kilocalories_per_mole/angstrom**2" '
        'fractional_bondorder_method="AM1-Wiberg" fractional_bondorder_interpolation="linear">'
        '<Bond smirks="[#6:1]~[#6:2]" id="b1" length="1.4" k_bondorder1="500" '
        'k_bondorder2="900"/></Bonds>',
    ),
    (
        "0.2 charmm torsions",
        "0.2",
        '<ProperTorsions potential="charmm" phase_unit="degrees" k_unit="kilocalories_per_mole">'
        '<Proper smirks="[*:1]-[#6X4:2]-[#6X4:3]-[*:4]" id="t1" idivf1="9" periodicity1="3" '
        'phase1="0.0" k1="1.40" periodicity2="1" phase2="180" k2="0.2" idivf2="1"/>'
        "</ProperTorsions>"
        '<ImproperTorsions potential="charmm" phase_unit="degrees" k_unit="kilocalories_per_mole">'
        '<Improper smirks="[*:1]~[#6X3:2](~[*:3])~[*:4]" id="i1" periodicity1="2" phase1="180." '
        'k1="1.1"/></ImproperTorsions>',
    ),
    (
        "0.2 rmin_half_unit serves sigma",
        "0.2",
        '<vdW potential="Lennard-Jones-12-6" combining_rules="Lorentz-Berthelot" scale12="0.0" '
        'scale13="0.0" scale14="0.5" scale15="1" cutoff="9.0" cutoff_unit="angstrom" '
        'switch_width="1.0" switch_width_unit="angstrom" method="cutoff" '
        f'rmin_half_unit="angstroms" epsilon_unit="kilocalories_per_mole">{VDW_ATOMS}</vdW>',
    ),
    (
        "0.2 charges",
        "0.2",
        '<LibraryCharges charge_unit="elementary_charge"><LibraryCharge smirks="[#11+1:1]" '
        'id="Na+" charge1="1.0"/></LibraryCharges>',
    ),
    (
        "0.2 a unit on the document",
        "0.2",
        f'<Bonds length_unit="angstroms">{BONDS}</Bonds>',
    ),
    ("0.2 a <SMIRFF> root", "0.2", f"<Bonds {BOND_UNITS}>{BONDS}</Bonds>"),
    ("0.3 a unit attribute", "0.3", f'<Bonds version="0.4" {BOND_UNITS}>{BONDS}</Bonds>'),
    (
        "0.3 a unit on a parameter",
        "0.3",
        '<Bonds version="0.4"><Bond smirks="[#6:1]-[#6:2]" id="b1" length="1.526" '
        'length_unit="angstrom" k="620.0 * kilocalories_per_mole/angstrom**2"/></Bonds>',
    ),
    (
        "0.1 OpenMM sections",
        "0.1",
        f"<HarmonicBondForce {BOND_UNITS}>{BONDS}</HarmonicBondForce>{TORSIONS_01}{NONBONDED_01}",
    ),
    (
        "0.1 a <SMIRFF> root",
        "0.1",
        f"<HarmonicBondForce {BOND_UNITS}>{BONDS}</HarmonicBondForce>{NONBONDED_01}",
    ),
    (
        "0.1 no coulomb14scale",
        "0.1",
        f"<HarmonicBondForce {BOND_UNITS}>{BONDS}</HarmonicBondForce>"
        + NONBONDED_01.replace('coulomb14scale="0.833333" ', ""),
    ),
    ("0.1 no vdW", "0.1", f"<HarmonicBondForce {BOND_UNITS}>{BONDS}</HarmonicBondForce>"),
    (
        "0.1 a section with a potential",
        "0.1",
        f'<HarmonicBondForce potential="harmonic" {BOND_UNITS}>{BONDS}</HarmonicBondForce>'
        + NONBONDED_01,
    ),
    (
        "0.1 impropers without units",
        "0.1",
        TORSIONS_01.replace(' phase_unit="degrees"', "").replace('phase1="180."', 'phase1="3.1 * radian"')
        + NONBONDED_01,
    ),
]  # fmt: skip


def _write(tmp_path: pathlib.Path, name: str, version: str, body: str) -> pathlib.Path:
    root = "SMIRFF" if "<SMIRFF>" in name else "SMIRNOFF"
    extra = ' k_unit="kilocalories_per_mole/angstrom**2"' if "on the document" in name else ""
    path = tmp_path / "old.offxml"
    path.write_text(
        f'<{root} version="{version}" aromaticity_model="OEAroModel_MDL"{extra}>{body}</{root}>'
    )
    return path


def _toolkit(path: pathlib.Path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        logging.disable(logging.WARNING)  # the 0.1 converter logs what it assumes
        try:
            return OpenFFForceField(str(path))
        except Exception:  # noqa: BLE001 - its error types vary (SMIRNOFFSpecError, KeyError, ...)
            return None
        finally:
            logging.disable(logging.NOTSET)


def _si(value: Quantity) -> float:
    return PintQuantity(value.value, str(value.unit).replace(" ** ", "**")).to_base_units().m


def _numbers_differ(ours, theirs) -> list[tuple]:
    """Every quantity and number we read that is not the toolkit's (empty when equal)."""
    bad = []
    handlers = set(theirs.registered_parameter_handlers)
    assert set(ours.sections) == handlers, (set(ours.sections), handlers)
    for name, section in ours.sections.items():
        handler = theirs.get_parameter_handler(name)
        for key, value in section.attributes.items():
            if isinstance(value, Quantity):
                if not math.isclose(_si(value), getattr(handler, key).to_base_units().m):
                    bad.append((name, key, value, getattr(handler, key)))
            elif isinstance(value, float) and value != float(getattr(handler, key)):
                bad.append((name, key, value, getattr(handler, key)))
        assert len(section.parameters) == len(handler.parameters), name
        for ours_p, theirs_p in zip(section.parameters, handler.parameters, strict=True):
            assert (ours_p.smirks, ours_p.id) == (theirs_p.smirks, theirs_p.id)
            for key, value in ours_p.values.items():
                other = _toolkit_value(theirs_p, key)
                if isinstance(value, Quantity):
                    if not math.isclose(_si(value), other.to_base_units().m, rel_tol=1e-12):
                        bad.append((name, ours_p.id, key, value, other))
                elif isinstance(value, (int, float)) and float(value) != float(other):
                    bad.append((name, ours_p.id, key, value, other))
    return bad


def _toolkit_value(parameter, key: str):
    """The toolkit's value of our attribute ``key`` (``k_bondorder1`` is its k_bondorder[1])."""
    m = re.fullmatch(r"([a-z]+)(\d*)_bondorder(\d+)", key)
    if m is None:
        return getattr(parameter, key)
    by_order = getattr(parameter, f"{m.group(1)}_bondorder")
    term = int(m.group(2)) - 1 if m.group(2) else None
    return (by_order if term is None else by_order[term])[int(m.group(3))]


@pytest.mark.parametrize(("name", "version", "body"), CASES, ids=[c[0] for c in CASES])
def test_an_old_spec_file_reads_as_the_toolkit_reads_it(tmp_path, name, version, body):
    path = _write(tmp_path, name, version, body)
    theirs = _toolkit(path)
    if theirs is None:
        with pytest.raises(OffxmlError, match=r"old\.offxml"):
            load_force_field(path)
        return
    ours = load_force_field(path)  # refused before stop 55 (unknown attribute length_unit)
    assert _numbers_differ(ours, theirs) == []
    assert sum(len(s) for s in ours.sections.values()) > 0


def test_the_table_holds_files_the_toolkit_reads_and_files_it_refuses(tmp_path):
    """A guard on the table: both branches of the test above are taken, in each version."""
    read = {(c[1], _toolkit(_write(tmp_path, *c)) is not None) for c in CASES}
    assert read >= {("0.1", True), ("0.1", False), ("0.2", True), ("0.2", False), ("0.3", False)}


def test_old_spec_refusals_name_the_item_and_the_fix(tmp_path):
    cases = {
        "0.3 a unit attribute": r"Bonds: unknown attribute length_unit=.*0\.1 and 0\.2 documents only.*length=\"1\.5 \* <unit>\"",
        "0.1 no coulomb14scale": r"old\.offxml vdW: a SMIRNOFF 0\.1 <NonbondedForce> needs coulomb14scale",
        "0.1 a section with a potential": r"old\.offxml Bonds: a SMIRNOFF 0\.1 section has no potential attribute.*remove potential='harmonic'",
        "0.2 a <SMIRFF> root": r"old\.offxml: a <SMIRFF> document must be SMIRNOFF version 0\.1",
        "0.1 impropers without units": r"ProperTorsions: SMIRNOFF 0\.1 impropers take k_unit and phase_unit .*lacks phase_unit",
    }  # fmt: skip
    by_name = {c[0]: c for c in CASES}
    for name, match in cases.items():
        path = _write(tmp_path, *by_name[name])
        with pytest.raises(OffxmlError, match=match):
            load_force_field(path)


SPEC_FILES = [f"test_forcefields/old/test_ff_0_0_4_spec_0_{v}.offxml" for v in (1, 2, 3)]
MOLECULES = ["CCO", "CC(=O)Nc1ccc(O)cc1", "C=CC(=O)OC", "c1ccncc1C#N", "CC(C)(C)[NH3+]"]


@pytest.fixture(scope="module")
def spec_versions(tmp_path_factory) -> list[pathlib.Path]:
    """The three files, t56's ``[!1:1]`` (an isotope test, refused here) written ``[!#1:1]``."""
    folder = tmp_path_factory.mktemp("spec_versions")
    out = []
    for name in SPEC_FILES:
        text = pathlib.Path(get_data_file_path(name)).read_text()
        assert text.count("[!1:1]") == 1
        out.append(folder / pathlib.Path(name).name)
        out[-1].write_text(text.replace("[!1:1]", "[!#1:1]"))
    return out


def test_one_force_field_in_three_spec_versions_labels_as_the_toolkit(spec_versions):
    """The toolkit's own 0.1 / 0.2 / 0.3 copies of one force field: same labels, its labels."""
    theirs = _toolkit(spec_versions[-1])
    assert theirs is not None
    expected = {smiles: _toolkit_labels(theirs, smiles) for smiles in MOLECULES}
    for path in spec_versions:
        ours_ff = load_force_field(path)
        assert _numbers_differ(ours_ff, _toolkit(path)) == []
        assigner = SmirksAssigner(ours_ff, strict=False)
        for smiles, ours in zip(MOLECULES, assigner.assign_many(MOLECULES), strict=True):
            for section, ids in expected[smiles].items():
                assert ours.ids(section) == ids, (path.name, smiles, section)
    old = load_force_field(spec_versions[0])
    assert list(old.sections)[-2:] == ["Electrostatics", "ToolkitAM1BCC"]
    assert old["ImproperTorsions"].attributes["potential"] == "k*(1+cos(periodicity*theta-phase))"
