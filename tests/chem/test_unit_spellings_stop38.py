"""Unit spellings the OpenFF toolkit reads, read here to the same values (stop 38).

openff-units (pint) reads ``nm``, ``Å``, ``kcal``, ``mol``, ``kJ``, ``rad``, ``deg`` and
British or plural spellings; tying.chem refused a file written with them as "unknown
unit". Each is now read, and every labelled value equals the toolkit's, converted to
the same unit. ``A`` (pint: ampere) stays refused, as the toolkit refuses a length in
amperes.
"""

from __future__ import annotations

import warnings

import pytest

pytest.importorskip("rdkit")

from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from tying.chem import OffxmlError, SmirksAssigner, load_force_field  # noqa: E402

from .helpers import write_offxml  # noqa: E402

try:
    from openff.toolkit import ForceField as OpenFFForceField
    from openff.toolkit import Molecule as OpenFFMolecule
except ImportError as err:
    pytest.skip(f"OpenFF toolkit not importable: {err}", allow_module_level=True)

LENGTHS = {  # spelling of 1.5 angstrom
    "angstrom": "1.5 * angstrom",
    "Å": "1.5 * \u00c5",
    "angstrom sign": "1.5 * \u212b",
    "nm": "0.15 * nm",
    "nanometre": "0.15 * nanometre",
    "nanometers": "0.15 * nanometers",
    "ångström": "1.5 * ångström",
}
FORCE_CONSTANTS = {  # spelling of 500 kcal/mol/Å**2 (or its kJ equivalent)
    "kcal/mol": "500.0 * kcal/mol/angstrom**2",
    "kcal / mol / Å ** 2": "500.0 * kcal / mol / \u00c5 ** 2",
    "kilocalories per moles": "500.0 * kilocalories / moles / angstroms ** 2",
    "kJ/mol/nm**2": "209200.0 * kJ/mol/nm**2",
}


def _values(path, spelling_key):
    ours = SmirksAssigner(load_force_field(path), strict=False).assign("CC").bonds
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs = OpenFFForceField(str(path)).label_molecules(
            OpenFFMolecule.from_smiles("CC").to_topology()
        )[0]["Bonds"]
    return ours, theirs


SETTINGS = settings(
    max_examples=12,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)


@SETTINGS
@given(length=st.sampled_from(sorted(LENGTHS)), k=st.sampled_from(sorted(FORCE_CONSTANTS)))
def test_property_every_spelling_reads_the_toolkits_values(tmp_path_factory, length, k):
    line = (
        f'        <Bond smirks="[#6:1]-[#6:2]" id="b1" length="{LENGTHS[length]}" '
        f'k="{FORCE_CONSTANTS[k]}"></Bond>\n'
    )
    path = write_offxml(tmp_path_factory.mktemp("ff"), [line])
    ours, theirs = _values(path, (length, k))
    assert ours and set(ours) == set(theirs)
    for key, param in ours.items():
        want_len = theirs[key].length.m_as("angstrom")
        want_k = theirs[key].k.m_as("kilocalorie / mole / angstrom ** 2")
        assert param["length"].to("angstrom").value == pytest.approx(want_len, rel=1e-12)
        assert param["k"].to("kilocalorie / mole / angstrom ** 2").value == pytest.approx(
            want_k, rel=1e-12
        )


def test_a_in_a_length_stays_refused_as_the_toolkit_refuses_amperes(tmp_path):
    line = (
        '        <Bond smirks="[#6:1]-[#6:2]" id="b1" length="1.5 * A" '
        'k="500.0 * kcal/mol/angstrom**2"></Bond>\n'
    )
    path = write_offxml(tmp_path, [line])
    with pytest.raises(OffxmlError, match="unknown unit 'A'"):
        load_force_field(path)
    with pytest.raises(Exception, match="ampere"):
        OpenFFForceField(str(path)).label_molecules(OpenFFMolecule.from_smiles("CC").to_topology())


def _torsion_file(tmp_path, periodicity: str):
    from .helpers import GENERIC_VDW, HEADER

    body = (
        HEADER
        + (
            '    <ProperTorsions version="0.4" potential="k*(1+cos(periodicity*theta-phase))" '
            'default_idivf="auto" fractional_bondorder_method="AM1-Wiberg" '
            'fractional_bondorder_interpolation="linear">\n'
            f'        <Proper smirks="[*:1]~[#6:2]-[#6:3]~[*:4]" id="t1" periodicity1="{periodicity}" '
            'phase1="0.0 * degree" k1="0.15 * kilocalorie_per_mole" idivf1="1.0"></Proper>\n'
            "    </ProperTorsions>\n"
        )
        + GENERIC_VDW
        + "</SMIRNOFF>\n"
    )
    path = tmp_path / "torsion-1.0.0.offxml"
    path.write_text(body)
    return path


@pytest.mark.parametrize("text", ["3", "+3", "3.0", "3e0", "3.000"])
def test_an_integral_periodicity_reads_as_the_toolkit_reads_it(tmp_path, text):
    path = _torsion_file(tmp_path, text)
    ours = SmirksAssigner(load_force_field(path), strict=False).assign("CC").propers
    theirs = OpenFFForceField(str(path)).label_molecules(
        OpenFFMolecule.from_smiles("CC").to_topology()
    )[0]["ProperTorsions"]
    assert ours and {k: p["periodicity1"] for k, p in ours.items()} == {
        k: p.periodicity[0] for k, p in theirs.items()
    }


@pytest.mark.parametrize(
    "text, match, toolkit_reads",
    [
        ("3.5", "expected an integer .*truncates .3.5. to 3", 3),  # the toolkit truncates
        ("03", "a leading zero is read as another number", 0),  # the toolkit reads 0
    ],
)
def test_a_periodicity_the_toolkit_misreads_is_refused(tmp_path, text, match, toolkit_reads):
    path = _torsion_file(tmp_path, text)
    with pytest.raises(OffxmlError, match=match):
        load_force_field(path)
    theirs = OpenFFForceField(str(path)).label_molecules(
        OpenFFMolecule.from_smiles("CC").to_topology()
    )[0]["ProperTorsions"]
    assert {p.periodicity[0] for p in theirs.values()} == {toolkit_reads}
