"""Section headers load here exactly when the OpenFF toolkit reads them (stop 52).

The ``<Electrostatics>`` header was not checked: a misspelled ``cutof=``, an unknown
``periodic_potential``, a ``method`` in version 0.4 or an unsupported version loaded and
were kept as text, and ``vdW``/``Electrostatics`` scale factors the toolkit (and so
Interchange) cannot apply (``scale12="0.5"``) loaded too, where the OpenFF toolkit
refuses each file. The headers of ``LibraryCharges``, ``ToolkitAM1BCC``,
``ChargeIncrementModel``, ``NAGLCharges``, ``VirtualSites`` and ``GBSA`` were kept as
text the same way. Cutoffs are read as lengths, equal to the toolkit's.
"""

from __future__ import annotations

import warnings

import pytest

pytest.importorskip("rdkit")

from tying.chem import OffxmlError, load_force_field  # noqa: E402

from .helpers import bond, write_offxml  # noqa: E402

try:
    from openff.toolkit import ForceField as OpenFFForceField
except ImportError as err:
    pytest.skip(f"OpenFF toolkit not importable: {err}", allow_module_level=True)

ELECTROSTATICS = (
    '<Electrostatics version="0.4" scale12="0.0" scale13="0.0" scale14="0.8333333333" '
    'scale15="1.0" cutoff="9.0 * angstrom ** 1" switch_width="0.0 * angstrom ** 1" '
    'periodic_potential="Ewald3D-ConductingBoundary" nonperiodic_potential="Coulomb" '
    'exception_potential="Coulomb"/>'
)
# (section, text in the header, its replacement, the refusal's words or None: loads)
CASES = [
    ("Electrostatics", 'cutoff="9.0 * angstrom ** 1"', 'cutoff="0.9 * nanometer"', None),
    ("Electrostatics", 'cutoff="9.0 * angstrom ** 1"', 'cutof="9.0 * angstrom"', "unknown attr"),
    ("Electrostatics", 'cutoff="9.0 * angstrom ** 1"', 'cutoff="9.0 * degree"', "wrong unit"),
    ("Electrostatics", 'version="0.4"', 'version="0.5"', "version='0.5' is not supported"),
    ("Electrostatics", 'version="0.4"', 'version="0.3" method="PME"', None),
    ("Electrostatics", 'version="0.4"', 'version="0.4" method="PME"', "only read in version 0.3"),
    ("Electrostatics", '"Ewald3D-ConductingBoundary"', '"PME"', None),
    ("Electrostatics", '"Ewald3D-ConductingBoundary"', '"Ewald3D"', "periodic_potential="),
    ("Electrostatics", 'exception_potential="Coulomb"', 'exception_potential="PME"', "exception"),
    ("Electrostatics", 'scale13="0.0"', 'scale13="0.1"', "only apply scale13 = 0"),
    ("Electrostatics", 'scale15="1.0"', 'scale15="1"', None),
    ("Electrostatics", 'switch_width="0.0 * angstrom ** 1"', 'switch_width="1 * angstrom"', "= 0"),
    ("vdW", 'scale12="0.0"', 'scale12="0"', None),
    ("vdW", 'scale12="0.0"', 'scale12="0.5"', "only apply scale12 = 0"),
    ("vdW", 'scale15="1.0"', 'scale15="0.5"', "only apply scale15 = 1"),
    ("vdW", 'scale14="0.5"', 'scale14="0.4"', None),
]
VDW = (
    '    <vdW version="0.4" potential="Lennard-Jones-12-6" combining_rules="Lorentz-Berthelot" '
    'scale12="0.0" scale13="0.0" scale14="0.5" scale15="1.0" cutoff="9.0 * angstrom" '
    'switch_width="1.0 * angstrom" periodic_method="cutoff" nonperiodic_method="no-cutoff">\n'
    '        <Atom smirks="[*:1]" epsilon="0.1 * kilocalorie_per_mole" sigma="3 * angstrom" '
    'id="n1"/>\n    </vdW>\n'
)


def _toolkit_loads(path) -> bool:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            OpenFFForceField(str(path), load_plugins=False)
        except Exception:
            return False
    return True


@pytest.mark.parametrize("section, old, new, refused", CASES)
def test_a_nonbonded_header_loads_exactly_when_the_toolkit_reads_it(
    tmp_path, section, old, new, refused
):
    electrostatics, vdw = ELECTROSTATICS, VDW
    if section == "Electrostatics":
        assert old in electrostatics
        electrostatics = electrostatics.replace(old, new)
    else:
        assert old in vdw
        vdw = vdw.replace(old, new)
    path = write_offxml(tmp_path, [bond("[*:1]~[*:2]", "b1")], vdw=vdw)
    path.write_text(path.read_text().replace("</SMIRNOFF>", electrostatics + "\n</SMIRNOFF>"))
    assert _toolkit_loads(path) is (refused is None)
    if refused is None:
        ff = load_force_field(path)
        toolkit = OpenFFForceField(str(path), load_plugins=False)
        for name in ("vdW", "Electrostatics"):
            ours = ff[name].attributes["cutoff"]
            theirs = toolkit.get_parameter_handler(name).cutoff
            assert ours.to("angstrom").value == pytest.approx(theirs.m_as("angstrom"), rel=1e-12)
        return
    with pytest.raises(OffxmlError, match=rf"tiny-1.0.0.offxml {section}: .*{refused}"):
        load_force_field(path)


# Headers of the sections tying.chem does not label were kept as text, unchecked.
OTHERS = [
    ('<ToolkitAM1BCC version="0.3"/>', None),
    ('<ToolkitAM1BCC version="0.3" foo="1"/>', "ToolkitAM1BCC: unknown attribute foo='1'"),
    ('<ToolkitAM1BCC version="0.4"/>', "ToolkitAM1BCC: attribute version='0.4' is not supp"),
    ("<ToolkitAM1BCC/>", "ToolkitAM1BCC: missing attribute version"),
    ('<LibraryCharges version="0.3" foo="1"/>', "LibraryCharges: unknown attribute foo"),
    ('<LibraryCharges version="0.9"/>', "LibraryCharges: attribute version='0.9'"),
    (
        '<ChargeIncrementModel version="0.4" number_of_conformers="1" '
        'partial_charge_method="AM1-Mulliken"/>',
        None,
    ),
    ('<ChargeIncrementModel version="0.3" foo="1"/>', "ChargeIncrementModel: unknown attr"),
    ('<VirtualSites version="0.3" exclusion_policy="parents"/>', None),
    ('<VirtualSites version="0.3" exclusion_polcy="parents"/>', "VirtualSites: unknown attr"),
    ('<NAGLCharges version="0.3" model_file="m.pt" fo="1"/>', "NAGLCharges: unknown attr"),
    ('<GBSA version="0.3" gb_model="OBC1" sa_model="ACE"/>', None),
    ('<GBSA version="0.3" gb_modle="OBC1"/>', "GBSA: unknown attribute gb_modle"),
]


@pytest.mark.parametrize("section, refused", OTHERS)
def test_an_unlabelled_sections_header_loads_exactly_when_the_toolkit_reads_it(
    tmp_path, section, refused
):
    path = write_offxml(tmp_path, [bond("[*:1]~[*:2]", "b1")])
    path.write_text(path.read_text().replace("</SMIRNOFF>", section + "\n</SMIRNOFF>"))
    assert _toolkit_loads(path) is (refused is None)
    if refused is None:
        load_force_field(path)
        return
    with pytest.raises(OffxmlError, match=rf"tiny-1.0.0.offxml {refused}"):
        load_force_field(path)
