"""An OpenFF Topology passed to assign / assign_many says how to label its molecules (stop 57).

``assign(topology)`` advised "pass an OpenFF Molecule as molecule.to_rdkit()", and
``assign_many(topology)`` "pass a list, e.g. assign_many([molecule])", which then
failed on the Topology inside the list. Both now name the way that gives what
``label_molecules(topology)`` gives: one result per molecule, each with its own atom
indices. ``assign_many(molecule)`` for one OpenFF Molecule names ``to_rdkit()`` too.
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
    from openff.toolkit import Topology
except ImportError as err:
    pytest.skip(f"OpenFF toolkit not importable: {err}", allow_module_level=True)


def test_a_topology_is_refused_naming_how_to_label_its_molecules(tmp_path):
    path = write_offxml(
        tmp_path,
        [bond("[*:1]~[*:2]", "b1"), bond("[#6:1]-[#8:2]", "b2"), bond("[#8:1]-[#1:2]", "b3")],
    )
    molecules = [OpenFFMolecule.from_smiles(s) for s in ("OCC", "O", "CCO")]
    topology = Topology.from_molecules(molecules)
    ours = SmirksAssigner(path, sections=["Bonds"])
    advice = r"assign_many\(\[m\.to_rdkit\(\) for m in topology\.molecules\]\), one result per"
    with pytest.raises(TypeError, match=rf"assign: .*got Topology: .*Topology holds .*{advice}"):
        ours.assign(topology)
    with pytest.raises(TypeError, match=rf"assign_many: .*got Topology; an OpenFF .*{advice}"):
        ours.assign_many(topology)
    with pytest.raises(TypeError, match=r"got Molecule; pass a list, e.g. assign_many\(\[molecule"):
        ours.assign_many(molecules[0])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs = OpenFFForceField(str(path)).label_molecules(topology)
    labelled = ours.assign_many([m.to_rdkit() for m in topology.molecules])  # the advice
    assert [{k: p.id for k, p in a.bonds.items()} for a in labelled] == [
        {k: p.id for k, p in t["Bonds"].items()} for t in theirs
    ]
    assert [len(a.bonds) for a in labelled] == [8, 2, 8]
