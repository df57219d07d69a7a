"""A malformed SMIRKS in a section tying.chem does not label is refused (stop 51).

Only the labelled sections were compiled: a force field whose ``<LibraryCharges>``,
``<GBSA>`` or ``<VirtualSites>`` (or a valence section left out by ``sections=``) held a
pattern RDKit cannot parse built an assigner and labelled molecules, where the OpenFF
toolkit refuses it (``SMIRKSParsingError`` when loading ``LibraryCharges``; an error from
``label_molecules`` for ``GBSA``).
"""

from __future__ import annotations

import re
import warnings

import pytest

pytest.importorskip("rdkit")

from tying.chem import SmirksAssigner, SmirksError  # noqa: E402

from .helpers import bond, write_offxml  # noqa: E402

try:
    from openff.toolkit import ForceField as OpenFFForceField
    from openff.toolkit import Molecule as OpenFFMolecule
except ImportError as err:
    pytest.skip(f"OpenFF toolkit not importable: {err}", allow_module_level=True)

GBSA = """<GBSA version="0.3" gb_model="OBC1" solvent_dielectric="78.5" solute_dielectric="1"
 sa_model="ACE" surface_area_penalty="5.4*calories/mole/angstroms**2" solvent_radius="1.4*angstroms">
  <Atom smirks="{smirks}" radius="0.15*nanometer" scale="0.8"/>
</GBSA>"""
LIBRARY = """<LibraryCharges version="0.3">
  <LibraryCharge smirks="{smirks}" charge1="0.1 * elementary_charge"
   charge2="-0.1 * elementary_charge" name="x"/>
</LibraryCharges>"""
VSITE = """<VirtualSites version="0.3" exclusion_policy="parents">
  <VirtualSite smirks="{smirks}" epsilon="0.0 * mole**-1 * kilojoule"
   type="DivalentLonePair" match="once" distance="-0.0106 * nanometer"
   outOfPlaneAngle="0.0 * degree" sigma="1.0 * nanometer" name="EP"
   charge_increment1="0.0 * elementary_charge" charge_increment2="0.5 * elementary_charge"
   charge_increment3="0.5 * elementary_charge"/>
</VirtualSites>"""
CASES = [
    ("GBSA", GBSA, "[#6:1]", "[#6:1"),
    ("LibraryCharges", LIBRARY, "[#6X4:1]-[#1:2]", "[#6X4:1]([#1:2]"),
    ("VirtualSites", VSITE, "[#1:2]-[#8X2H2+0:1]-[#1:3]", "[#1:2]-[#8X2H2+0:1]-[#1:3"),
]


def _force_field(tmp_path, section: str) -> str:
    path = write_offxml(tmp_path, [bond("[*:1]~[*:2]", "b0"), bond("[#6:1]-[#8:2]", "b2")])
    path.write_text(path.read_text().replace("</SMIRNOFF>", section + "\n</SMIRNOFF>"))
    return str(path)


def _toolkit_labels(path: str) -> bool:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            ff = OpenFFForceField(path, load_plugins=False)
            ff.label_molecules(OpenFFMolecule.from_smiles("CCO").to_topology())
        except Exception:
            return False
    return True


@pytest.mark.parametrize("name, template, good, bad", CASES)
def test_a_malformed_pattern_in_an_unlabelled_section_is_refused(
    tmp_path, name, template, good, bad
):
    fine = _force_field(tmp_path, template.format(smirks=good))
    assert name in SmirksAssigner(fine).assign("CCO").not_assigned
    assert _toolkit_labels(fine)
    (tmp_path / "bad").mkdir()
    broken = _force_field(tmp_path / "bad", template.format(smirks=bad))
    assert not _toolkit_labels(broken)
    with pytest.raises(
        SmirksError,
        match=rf"tiny-1.0.0 {name} parameter .*: RDKit cannot parse its SMIRKS "
        + re.escape(repr(bad))
        + rf"; tying.chem does not label <{name}>, .* fix the pattern",
    ):
        SmirksAssigner(broken)


def test_a_malformed_pattern_in_a_section_left_out_is_refused(tmp_path):
    path = write_offxml(tmp_path, [bond("[*:1]~[*:2]", "b0"), bond("[#6:1]-[#8:2", "b2")])
    assert not _toolkit_labels(str(path))
    for sections in (None, ["vdW"]):
        with pytest.raises(SmirksError, match=r"Bonds parameter 'b2': RDKit cannot parse"):
            SmirksAssigner(str(path), sections=sections)
