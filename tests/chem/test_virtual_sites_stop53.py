"""Merged virtual-site water, virtual-site parameters and header numbers (stop 53).

- A force field merged by the toolkit from a Sage file and a water model with virtual
  sites (``ForceField(sage, "opc.offxml").to_file(...)``) writes the angle a site type
  does not use as ``inPlaneAngle=""``: it was refused here as a bad quantity (and the
  toolkit cannot read the file back). It means what ``"None"`` means, and the merged
  file now labels every molecule as the toolkit's merged force field does.
- A ``<VirtualSite>`` the toolkit refuses (an unknown ``type``, an angle its type does
  not take, the wrong number of charge increments, a ``match`` its type does not
  support) loaded here, kept as text.
- Header numbers the toolkit converts with ``int()``/``float()``
  (``number_of_conformers="x"`` of ``<ChargeIncrementModel>``, ``<GBSA>``'s dielectrics)
  loaded here as text.
"""

from __future__ import annotations

import warnings

import pytest

pytest.importorskip("rdkit")
pytest.importorskip("openforcefields")

from tying.chem import (  # noqa: E402
    SECTIONS,
    OffxmlError,
    SmirksAssigner,
    load_force_field,
    schema,
)

from .helpers import bond, write_offxml  # noqa: E402

try:
    from openff.toolkit import ForceField as OpenFFForceField
except ImportError as err:
    pytest.skip(f"OpenFF toolkit not importable: {err}", allow_module_level=True)

from tests.chem.test_every_force_field_stop42 import _toolkit_labels  # noqa: E402

MOLECULES = ["O", "CCO", "[Na+].[Cl-]", "CC(=O)[O-]", "c1ccccc1O", "O.O"]


@pytest.fixture(scope="module")
def merged_opc(tmp_path_factory):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        toolkit = OpenFFForceField("openff-2.1.0.offxml", "opc.offxml")
    path = tmp_path_factory.mktemp("merged") / "sage-opc.offxml"
    toolkit.to_file(str(path))
    return toolkit, path


def test_a_merged_virtual_site_water_file_labels_as_the_toolkits_merged_force_field(merged_opc):
    toolkit, path = merged_opc
    assert 'inPlaneAngle=""' in path.read_text()  # what the toolkit writes
    ff = load_force_field(path)
    site = ff["VirtualSites"].parameters[0]
    assert site.values["inPlaneAngle"] == "None"  # as the shipped opc.offxml reads
    assert site.values == load_force_field("opc")["VirtualSites"].parameters[0].values
    sage = SmirksAssigner(path, sections=(*SECTIONS, "Constraints"), strict=False)
    for smiles in MOLECULES:
        ours = sage.assign(smiles)
        theirs = _toolkit_labels(toolkit, smiles)
        assert {s: ours.ids(s) for s in theirs} == theirs, smiles
    assert "VirtualSites" in ours.not_assigned
    assert ours.ids("vdW")[(0,)] == "n-opc-O"


def _site(**change: str) -> str:
    values = {
        "smirks": "[#1:2]-[#8X2H2+0:1]-[#1:3]",
        "epsilon": "0.0 * kilocalorie_per_mole",
        "type": "DivalentLonePair",
        "match": "once",
        "distance": "-0.15 * angstrom",
        "outOfPlaneAngle": "0.0 * degree",
        "inPlaneAngle": "None",
        "charge_increment1": "0.0 * elementary_charge",
        "charge_increment2": "0.5 * elementary_charge",
        "charge_increment3": "0.5 * elementary_charge",
        "rmin_half": "1.0 * angstrom",
        "name": "EP",
    }
    values.update(change)
    attrs = " ".join(f'{k}="{v}"' for k, v in values.items() if v is not None)
    return (
        f'<VirtualSites version="0.3" exclusion_policy="parents"><VirtualSite {attrs}/>'
        "</VirtualSites>"
    )


# (the site's change, the refusal's words or None: loads as the toolkit reads it)
# inPlaneAngle="" is the one file read here that the toolkit's reader refuses: it is what
# the toolkit's own to_file writes for None (above), and is read as "None".
WRITTEN_BY_TO_FILE = {"inPlaneAngle": ""}
# The toolkit checks the number of charge increments only when a site is built in Python
# (VirtualSiteType(charge_increment=[...])), not when read from a file: refused here.
TOO_FEW_INCREMENTS = {"charge_increment3": None}
SITES = [
    ({}, None),
    (WRITTEN_BY_TO_FILE, None),
    ({"inPlaneAngle": None}, None),
    ({"outOfPlaneAngle": "54.7 * degree", "match": "all_permutations"}, None),
    ({"type": "DivalentLonePairs"}, "type='DivalentLonePairs' is not a virtual-site type"),
    ({"inPlaneAngle": "10 * degree"}, "a DivalentLonePair site has no inPlaneAngle"),
    ({"outOfPlaneAngle": "None"}, "a DivalentLonePair site needs outOfPlaneAngle"),
    ({"outOfPlaneAngle": "54.7 * degree"}, "match='once' is not supported .* out of plane"),
    (TOO_FEW_INCREMENTS, "takes 3 charge increments .* got 2"),
    ({"match": "twice"}, "match='twice' is not supported"),
    (
        {"type": "BondCharge", "smirks": "[#8:1]-[#1:2]", "charge_increment3": None},
        "a BondCharge site has no outOfPlaneAngle",
    ),
    (
        {
            "type": "BondCharge",
            "smirks": "[#8:1]-[#1:2]",
            "charge_increment3": None,
            "outOfPlaneAngle": None,
            "match": "all_permutations",
        },
        None,
    ),
]


@pytest.mark.parametrize("change, refused", SITES)
def test_a_virtual_site_loads_exactly_when_the_toolkit_reads_it(tmp_path, change, refused):
    path = write_offxml(tmp_path, [bond("[*:1]~[*:2]", "b1")])
    path.write_text(path.read_text().replace("</SMIRNOFF>", _site(**change) + "\n</SMIRNOFF>"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            OpenFFForceField(str(path), load_plugins=False)
            toolkit_loads = True
        except Exception:
            toolkit_loads = False
    if change is TOO_FEW_INCREMENTS:
        assert toolkit_loads
    else:
        assert toolkit_loads is (refused is None and change is not WRITTEN_BY_TO_FILE)
    if refused is None:
        site = load_force_field(path)["VirtualSites"].parameters[0]
        for angle in ("outOfPlaneAngle", "inPlaneAngle"):
            if change.get(angle, "x") in ("", None):  # "" and absent read as "None"
                assert site.values.get(angle, "None") == "None"
        return
    with pytest.raises(
        OffxmlError, match=rf"tiny-1.0.0.offxml VirtualSites parameter 1: .*{refused}"
    ):
        load_force_field(path)


HEADERS_53 = [
    ('<ChargeIncrementModel version="0.4" number_of_conformers="3"/>', None),
    ('<ChargeIncrementModel version="0.4" number_of_conformers=" 3 "/>', None),
    ('<ChargeIncrementModel version="0.4" number_of_conformers="x"/>', "number_of_conformers='x'"),
    ('<ChargeIncrementModel version="0.4" number_of_conformers="2.0"/>', None),
    ('<ChargeIncrementModel version="0.4" number_of_conformers=""/>', "number_of_conformers=''"),
    ('<GBSA version="0.3" solvent_dielectric="78.5" solute_dielectric="1"/>', None),
    ('<GBSA version="0.3" solvent_dielectric="water"/>', "solvent_dielectric='water'"),
    ('<GBSA version="0.3" solvent_radius="1.4 * degree"/>', "solvent_radius='1.4 \\* degree'"),
    ('<GBSA version="0.3" gb_model="OBC3"/>', "gb_model='OBC3' is not supported"),
    ('<GBSA version="0.3" sa_model="None"/>', None),
]


# Read by the toolkit, refused here: a count it truncates (2.5 -> 2) or that cannot be
# one (0, -1), and a dielectric it reads as infinite.
STRICTER = [
    ('<ChargeIncrementModel version="0.4" number_of_conformers="2.5"/>', "conformers='2.5'"),
    ('<ChargeIncrementModel version="0.4" number_of_conformers="0"/>', "conformers='0'"),
    ('<ChargeIncrementModel version="0.4" number_of_conformers="-1"/>', "conformers='-1'"),
    ('<GBSA version="0.3" solute_dielectric="1e400"/>', "solute_dielectric='1e400'"),
]


@pytest.mark.parametrize("section, refused", STRICTER)
def test_a_count_the_toolkit_would_misread_is_refused(tmp_path, section, refused):
    path = write_offxml(tmp_path, [bond("[*:1]~[*:2]", "b1")])
    path.write_text(path.read_text().replace("</SMIRNOFF>", section + "\n</SMIRNOFF>"))
    with pytest.raises(OffxmlError, match=rf"offxml \w+: attribute (number_of_)?{refused}: "):
        load_force_field(path)


@pytest.mark.parametrize("section, refused", HEADERS_53)
def test_a_header_number_loads_exactly_when_the_toolkit_reads_it(tmp_path, section, refused):
    path = write_offxml(tmp_path, [bond("[*:1]~[*:2]", "b1")])
    path.write_text(path.read_text().replace("</SMIRNOFF>", section + "\n</SMIRNOFF>"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            toolkit = OpenFFForceField(str(path), load_plugins=False)
        except Exception:
            toolkit = None
    assert (toolkit is not None) is (refused is None)
    if refused is None:
        ff = load_force_field(path)
        name = section[1:].split()[0]
        handler = toolkit.get_parameter_handler(name)
        for key, value in ff[name].attributes.items():
            if key in ("number_of_conformers", "solvent_dielectric", "solute_dielectric"):
                assert value == getattr(handler, key)
        return
    with pytest.raises(OffxmlError, match=rf"tiny-1.0.0.offxml \w+: attribute {refused}"):
        load_force_field(path)


def test_the_scale_factors_are_one_list():
    scales = ["scale12", "scale13", "scale14", "scale15"]
    assert list(schema.SCALES) == scales
    for section in ("vdW", "Electrostatics"):
        assert [k for k in schema.HEADERS[section].attributes if k.startswith("scale")] == scales
    assert all(schema.HEADER_KINDS[k].kind == "number" for k in scales)
