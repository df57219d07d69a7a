"""Stop 41: an RDKit molecule with a bond without an integral order is refused, naming it.

A zero-order, ionic, hydrogen or unspecified bond (mol files of metal complexes,
``Chem.BondType.ZERO``) made each of its atoms one connection richer (``X``) with no
valence: with ``strict=False`` most of their terms lost their parameters without a
word (two methanes joined by a zero-order bond: no bond, angle or torsion left), and
with ``strict=True`` the force field was blamed for not covering C-C and C-H bonds.
The OpenFF toolkit reads such a bond as order 0 and then cannot label the molecule.
A fractional type (``ONEANDAHALF`` outside a ring) the toolkit truncates to 1, while
RDKit counts 1.5 of valence: two carbons so joined were labelled unlike the toolkit.
"""

from __future__ import annotations

import warnings

import pytest

pytest.importorskip("rdkit")
pytest.importorskip("openforcefields")

from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from rdkit import Chem  # noqa: E402

from tying.chem import SmilesError, SmirksAssigner  # noqa: E402

try:
    from openff.toolkit import Molecule

    from tying.chem import validate
except ImportError as err:  # the toolkit or one of its dependencies is missing
    pytest.skip(f"OpenFF toolkit not importable: {err}", allow_module_level=True)

pytestmark = pytest.mark.filterwarnings("ignore:RDKit Molecule passed to from_rdkit:Warning")

SAGE = "openff-2.3.0"
ORDERLESS = ["ZERO", "IONIC", "HYDROGEN", "UNSPECIFIED", "ONEANDAHALF"]
# (components, the atoms a bond joins across them)
JOINED = [("C.C", (0, 1)), ("[Na+].[O-]C", (0, 1)), ("CC.CC", (1, 2)), ("CO.[Cl-]", (1, 2))]


def _joined(smiles: str, atoms: tuple[int, int], kind: str):
    rw = Chem.RWMol(Chem.MolFromSmiles(smiles))
    rw.AddBond(*atoms, getattr(Chem.BondType, kind))
    mol = rw.GetMol()
    Chem.SanitizeMol(mol)
    return mol


def _toolkit_labels(mol, ff):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        off = Molecule.from_rdkit(mol, allow_undefined_stereo=True, hydrogens_are_explicit=False)
        labels = ff.label_molecules(off.to_topology())[0]
    return {s: {validate.KEYS[s](k): p.id for k, p in labels[s].items()} for s in validate.SECTIONS}


@pytest.fixture(scope="module")
def toolkit():
    return validate.openff_force_field(SAGE)


@pytest.mark.parametrize("kind", ORDERLESS)
def test_a_bond_without_order_is_refused_by_name_and_caches_nothing(kind, toolkit):
    strict, loose = SmirksAssigner(SAGE), SmirksAssigner(SAGE, strict=False)
    mol = _joined("C.C", (0, 1), kind)
    for assigner in (strict, loose):
        with pytest.raises(
            SmilesError,
            match=rf"bond 0 \(0-1, C-C\) is of type {kind}, which has (no|a fractional) bond "
            r"order.*; a force field assigns bonds of order 1, 2, 3 .*"
            r"remove the bond \(Chem\.RWMol\.RemoveBond",
        ):
            assigner.assign(mol)
        assert (assigner.hits, assigner.misses) == (0, 0)
    with pytest.warns(UserWarning, match=r"skipped 1 of 2 molecules .* molecule 1"):
        out = loose.assign_many([Chem.MolFromSmiles("CC"), mol], errors="skip")
    assert out[1] is None and "is of type" in str(out.skipped[1])
    if kind == "ONEANDAHALF":  # read by the toolkit as a single bond, 1.5 valence by RDKit
        return
    with pytest.raises(Exception):  # noqa: B017 (the anchor refuses it too, in its own words)
        _toolkit_labels(mol, toolkit)


def test_the_fix_the_message_names_labels_as_the_toolkit(toolkit):
    assigner = SmirksAssigner(SAGE)
    for smiles, atoms in JOINED:
        rw = Chem.RWMol(_joined(smiles, atoms, "ZERO"))
        rw.RemoveBond(*atoms)
        mol = rw.GetMol()
        Chem.SanitizeMol(mol)
        assert validate.compare(assigner.assign(mol), _toolkit_labels(mol, toolkit)) == []


def test_dative_bonds_keep_their_order_and_labels(toolkit):
    mol = Chem.MolFromSmiles("C[NH2]->[Cu+2]")
    assert (
        validate.compare(
            SmirksAssigner(SAGE, strict=False).assign(mol), _toolkit_labels(mol, toolkit)
        )
        == []
    )


@settings(derandomize=True, deadline=None, max_examples=30)
@given(kind=st.sampled_from(sorted(Chem.BondType.names)), joined=st.sampled_from(JOINED))
def test_property_every_bond_type_without_an_integral_order_is_refused(toolkit, kind, joined):
    """Whatever RDKit bond type joins two components: a SmilesError naming it when RDKit's
    own GetBondTypeAsDouble gives it no order (0, or fails) or a fractional one, never a
    label or another error; with an integral order, never refused for its type, and
    labelled as the toolkit labels it where both label."""
    smiles, atoms = joined
    rw = Chem.RWMol(Chem.MolFromSmiles(smiles))
    rw.AddBond(*atoms, getattr(Chem.BondType, kind))
    try:
        order = rw.GetBondBetweenAtoms(*atoms).GetBondTypeAsDouble()
    except RuntimeError:  # RDKit has no order for it
        order = 0.0
    refused = order == 0 or (order != int(order) and kind != "AROMATIC")
    mol = rw.GetMol()
    try:
        ours = SmirksAssigner(SAGE, strict=False).assign(mol)
    except SmilesError as err:
        assert (f"is of type {kind}, which has" in str(err)) == refused, err
        return
    assert not refused, f"{kind} (order {order}) was labelled"
    try:
        sanitized = Chem.Mol(mol)
        Chem.SanitizeMol(sanitized)
        theirs = _toolkit_labels(sanitized, toolkit)
    except Exception:  # noqa: BLE001 (e.g. a dative bond between two carbons)
        return
    assert validate.compare(ours, theirs) == []
