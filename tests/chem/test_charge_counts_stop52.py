"""Charges that do not fit their SMIRKS' tagged atoms are refused, as by the toolkit (stop 52).

A ``<LibraryCharge>`` carries one ``chargeN`` per tagged atom and a ``<ChargeIncrement>``
one ``charge_incrementN`` per tagged atom or one fewer (the toolkit fills in the last so
the increments sum to zero). The OpenFF toolkit refuses any other count when it loads the
file (``SMIRNOFFSpecError``); before stop 52 such a file built an assigner here and
labelled molecules.
"""

from __future__ import annotations

import warnings

import pytest

pytest.importorskip("rdkit")

from tying.chem import SmirksAssigner, SmirksError  # noqa: E402

from .helpers import bond, write_offxml  # noqa: E402

try:
    from openff.toolkit import ForceField as OpenFFForceField
except ImportError as err:
    pytest.skip(f"OpenFF toolkit not importable: {err}", allow_module_level=True)

SECTIONS = {
    "LibraryCharges": ('<LibraryCharges version="0.3">', "LibraryCharge", "charge"),
    "ChargeIncrementModel": (
        '<ChargeIncrementModel version="0.3" number_of_conformers="1"'
        ' partial_charge_method="AM1-Mulliken">',
        "ChargeIncrement",
        "charge_increment",
    ),
}
# (section, SMIRKS, number of charges, loaded by the toolkit)
CASES = [
    ("LibraryCharges", "[#6:1]-[#1:2]", 2, True),
    ("LibraryCharges", "[#6:1]-[#1:2]", 1, False),
    ("LibraryCharges", "[#6:1]-[#1:2]", 3, False),
    ("LibraryCharges", "[#6:1]-[#1]", 1, True),  # an untagged atom takes no charge
    ("LibraryCharges", "[#6:1]-[#1]", 2, False),
    ("ChargeIncrementModel", "[#6:1](-[#1:2])-[#1:3]", 3, True),
    ("ChargeIncrementModel", "[#6:1](-[#1:2])-[#1:3]", 2, True),  # the last left out
    ("ChargeIncrementModel", "[#6:1](-[#1:2])-[#1:3]", 1, False),
    ("ChargeIncrementModel", "[#6:1](-[#1:2])-[#1:3]", 4, False),
]


def _force_field(tmp_path, section: str, smirks: str, n: int) -> str:
    header, tag, prefix = SECTIONS[section]
    charges = " ".join(f'{prefix}{i}="0.1 * elementary_charge"' for i in range(1, n + 1))
    body = f'{header}\n  <{tag} smirks="{smirks}" {charges} id="q1"/>\n</{section}>\n'
    path = write_offxml(tmp_path, [bond("[*:1]~[*:2]", "b0")])
    path.write_text(path.read_text().replace("</SMIRNOFF>", body + "</SMIRNOFF>"))
    return str(path)


def _toolkit_loads(path: str) -> bool:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            OpenFFForceField(path, load_plugins=False)
        except Exception:
            return False
    return True


@pytest.mark.parametrize("section, smirks, n, loads", CASES)
def test_charges_that_do_not_fit_the_tagged_atoms_are_refused_as_by_the_toolkit(
    tmp_path, section, smirks, n, loads
):
    path = _force_field(tmp_path, section, smirks, n)
    assert _toolkit_loads(path) is loads
    if loads:
        assert section in SmirksAssigner(path).assign("CCO").not_assigned
        return
    tags = smirks.count(":")
    prefix = SECTIONS[section][2]
    with pytest.raises(
        SmirksError,
        match=rf"tiny-1.0.0 {section} parameter 'q1': SMIRKS .* has {tags} tagged atoms? but "
        rf"the parameter has {n} {prefix} values? .*expected .*{tags} .*add or remove",
    ):
        SmirksAssigner(path)


def test_the_refusal_names_both_counts_for_every_section_list(tmp_path):
    path = _force_field(tmp_path, "LibraryCharges", "[#6:1]-[#1:2]", 3)
    for sections in (None, ["vdW"], ["Bonds"]):
        with pytest.raises(SmirksError, match=r"has 2 tagged atoms but the parameter has 3 charge"):
            SmirksAssigner(path, sections=sections)
