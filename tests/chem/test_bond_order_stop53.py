"""Bonds interpolated by fractional bond order: labelled, their values refused by name (stop 53).

A ``<Bond>`` written with ``k_bondorder1``/``k_bondorder2`` (and ``length_bondorderN``)
is labelled here as by the toolkit's ``label_molecules`` (the label does not depend on
the bond order), but its k and length depend on the molecule's fractional bond order,
which tying.chem does not compute. ``bond["k"]`` was a bare ``KeyError: ... has no
attribute 'k'; it has: k_bondorder1, ...``, which did not say why; it now names the
interpolation and what to do.
"""

from __future__ import annotations

import warnings

import pytest

pytest.importorskip("rdkit")

from tying.chem import SmirksAssigner  # noqa: E402

from .helpers import bond, write_offxml  # noqa: E402

try:
    from openff.toolkit import ForceField as OpenFFForceField
    from openff.toolkit import Molecule as OpenFFMolecule
except ImportError as err:
    pytest.skip(f"OpenFF toolkit not importable: {err}", allow_module_level=True)

INTERPOLATED = (
    '        <Bond smirks="[#6X4:1]-[#6X4:2]" id="b-wbo" '
    'length_bondorder1="1.53 * angstrom" length_bondorder2="1.33 * angstrom" '
    'k_bondorder1="500 * kilocalorie_per_mole / angstrom ** 2" '
    'k_bondorder2="900 * kilocalorie_per_mole / angstrom ** 2"/>\n'
)


def test_an_interpolated_bond_is_labelled_as_the_toolkit_and_its_k_is_refused_by_name(tmp_path):
    path = write_offxml(
        tmp_path,
        [
            bond("[#6:1]-[#1:2]", "b-ch"),
            bond("[#6:1]-[#8:2]", "b-co"),
            bond("[#8:1]-[#1:2]", "b-oh"),
            INTERPOLATED,
        ],
    )
    header = '<Bonds version="0.4" potential="harmonic">'
    wbo = '<Bonds version="0.4" potential="harmonic" fractional_bondorder_method="AM1-Wiberg" fractional_bondorder_interpolation="linear">'
    path.write_text(path.read_text().replace(header, wbo))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        toolkit = OpenFFForceField(str(path), load_plugins=False)
        mol = OpenFFMolecule.from_smiles("CCO")
        theirs = toolkit.label_molecules(mol.to_topology())[0]["Bonds"]
    ours = SmirksAssigner(path, sections=["Bonds"]).assign("CCO")
    assert ours.ids("Bonds") == {tuple(sorted(k)): p.id for k, p in theirs.items()}
    cc = ours.bonds[(0, 1)]
    assert cc.id == "b-wbo"
    for name in ("k", "length"):
        with pytest.raises(
            KeyError,
            match=rf"'b-wbo' .*no single '{name}': it is interpolated "
            rf"by fractional bond order \({name}_bondorder1, {name}_bondorder2\)",
        ):
            cc[name]
    assert cc["k_bondorder2"].value == 900.0  # the values as written stay readable
    with pytest.raises(
        KeyError, match=r"'b-co' \(Bonds\) has no attribute 'phase'; it has: k, length"
    ):
        ours.bonds[(1, 2)]["phase"]
