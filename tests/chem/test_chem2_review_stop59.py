"""Review of stop 59 (chem, second pass): what the merge fix missed.

1. ``ForceField(a, b)`` repeats every parameter both files hold; the fix drops the earlier
   copy only for parameters with an id. Every shipped virtual site has no id, so the merge
   of two OPC / TIP4P-FB versions kept both copies of the one virtual site (the earlier can
   never win: same SMIRKS, name and type), and counted two.
2. ``section[smirks]`` returns the last parameter with that SMIRKS, as the toolkit's
   ``parameters[smirks]``; but virtual sites on one SMIRKS are told apart by name and type
   and each applies (the toolkit refuses ``VirtualSites[smirks]``): returning the last
   silently picked one of two distinct sites.
"""

from __future__ import annotations

import pathlib

import pytest

from tying.chem import find_force_field, load_force_field

HEADER = (
    '<?xml version="1.0" encoding="utf-8"?>\n'
    '<SMIRNOFF version="0.3" aromaticity_model="OEAroModel_MDL">\n'
)
VDW = """    <vdW version="0.4" potential="Lennard-Jones-12-6" scale14="0.5">
        <Atom smirks="[#1:1]" epsilon="0.0157 * kilocalorie_per_mole ** 1" rmin_half="0.6 * angstrom ** 1" id="n-h"></Atom>
    </vdW>
"""


def _bond(smirks: str, length: float) -> str:  # no id, as the toolkit allows
    return (
        f'        <Bond smirks="{smirks}" length="{length} * angstrom ** 1" '
        f'k="500.0 * kilocalorie_per_mole ** 1 * angstrom ** -2"></Bond>\n'
    )


def _with_sites(tmp_path: pathlib.Path, names: list[str], file: str) -> pathlib.Path:
    # the shipped OPC file with its one (id-less) virtual site written once per name
    opc = pathlib.Path(find_force_field("opc-1.0.2")).read_text()
    (line,) = [s for s in opc.splitlines() if "<VirtualSite " in s]
    sites = "".join(line.replace('name="EP"', f'name="{n}"') + "\n" for n in names)
    text = opc.replace(line + "\n", sites)
    path = tmp_path / f"{file}.offxml"
    path.write_text(text)
    return path


def test_an_id_less_parameter_restated_later_is_the_one_kept(tmp_path):
    body = '    <Bonds version="0.4" potential="harmonic">\n'
    body += _bond("[#6:1]-[#6:2]", 1.5) + _bond("[#6:1]-[#1:2]", 1.09)
    body += _bond("[#6:1]-[#6:2]", 1.2) + "    </Bonds>\n"
    path = tmp_path / "anon-merged.offxml"
    path.write_text(HEADER + body + VDW + "</SMIRNOFF>\n")
    bonds = load_force_field(path)["Bonds"]
    # both copies were kept (3 parameters): the first can never win, the last applies
    assert [(p.smirks, p["length"].value) for p in bonds] == [
        ("[#6:1]-[#1:2]", 1.09),
        ("[#6:1]-[#6:2]", 1.2),
    ]


def test_a_virtual_site_repeated_by_a_merge_is_kept_once(tmp_path):
    # what ForceField("opc-1.0.0.offxml", "opc-1.0.2.offxml").to_file(...) writes in
    # VirtualSites: the same id-less site twice
    sites = load_force_field(_with_sites(tmp_path, ["EP", "EP"], "opc-merged"))["VirtualSites"]
    assert len(sites) == 1  # 2 before: one site counted twice


def test_two_distinct_virtual_sites_on_one_smirks_are_both_kept(tmp_path):
    sites = load_force_field(_with_sites(tmp_path, ["EP1", "EP2"], "two-sites"))["VirtualSites"]
    assert [p["name"] for p in sites] == ["EP1", "EP2"]


def test_a_virtual_site_is_not_read_by_an_ambiguous_smirks(tmp_path):
    sites = load_force_field(_with_sites(tmp_path, ["EP1", "EP2"], "two-sites"))["VirtualSites"]
    smirks = sites.parameters[0].smirks
    # returned EP2 silently before, one of two distinct sites
    with pytest.raises(
        KeyError, match=r"2 virtual sites with SMIRKS .*EP1.*EP2.*read one by its id"
    ):
        sites[smirks]
    first = sites.parameters[0].id
    assert sites[first]["name"] == "EP1"  # the advice, followed
    one = load_force_field("opc-1.0.2")["VirtualSites"]
    assert one[smirks]["name"] == "EP"  # one site on the SMIRKS: read as before
