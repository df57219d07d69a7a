"""Review of a31489a: molecules labelled by RDKit's new CIP labeller are refused with a
cause that names it (the message blamed an edit the user never made)."""

import pytest

pytest.importorskip("rdkit")
from rdkit import Chem  # noqa: E402
from rdkit.Chem import rdCIPLabeler  # noqa: E402

from tying.chem.errors import SmilesError  # noqa: E402
from tying.chem.stale import refuse_stale_perception  # noqa: E402


@pytest.mark.parametrize("smiles", ["C/C=C/C", "C[C@H](O)[C@@H](O)[C@@H](C)O"])
def test_new_cip_labels_are_refused_naming_the_labeller_and_the_fix_works(smiles):
    mol = Chem.MolFromSmiles(smiles)
    rdCIPLabeler.AssignCIPLabels(mol)  # STEREOTRANS bonds, pseudoasymmetric 'r'
    with pytest.raises(SmilesError, match=r"rdCIPLabeler\.AssignCIPLabels"):
        refuse_stale_perception(mol, repr(smiles))
    Chem.AssignStereochemistry(mol, cleanIt=True, force=True)  # the fix the message gives
    refuse_stale_perception(mol, repr(smiles))
