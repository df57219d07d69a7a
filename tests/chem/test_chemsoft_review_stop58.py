"""Stop 58 review (commits 2e7afc6, 8d7363a): advice that failed when followed.

- A SMILES whose heavy atoms alone are mapped, out of written order, with their hydrogens
  implicit (an RDKit index map written canonically, a reaction's atom map) made
  ``label_lines`` (new in 2e7afc6) and ``assign`` warn "Pass mapped=True"; passing it
  raised SmilesError ("4 hydrogens are implicit"). Such a map is partial: no warning.
- ``laplacian_penalty(model.named_parameters(), ...)`` (a generator, listed since 8d7363a)
  said an edge's name was "not in params [0, 1, 2, 3]", or "params[0] is a tuple" with
  advice naming neither the cause nor ``dict(...)``.
"""

import warnings

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("rdkit")

from tying.chem import SmilesError, SmirksAssigner  # noqa: E402
from tying.chem.lines import label_lines  # noqa: E402
from tying.core.soft import laplacian_penalty  # noqa: E402

HEAVY_ONLY = "[OH:3][CH2:2][CH3:1]"  # ethanol, heavy atoms mapped C, C, O; written from O
FULL = "[C:2]([H:3])([H:4])([H:5])[O:1][H:6]"  # methanol, every atom mapped, O first


def test_a_heavy_atom_map_gets_no_warning_whose_advice_fails():
    with pytest.raises(SmilesError, match="hydrogens are implicit"):
        label_lines([f"{HEAVY_ONLY} ethanol"], mapped=True)  # the advice, followed
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        (record,) = label_lines([f"{HEAVY_ONLY} ethanol", "[CH3:1]CO partial"])[:1]
        assigner = SmirksAssigner("openff-2.3.0")
        assigner.assign(HEAVY_ONLY)
        assigner.assign_many(["CC", HEAVY_ONLY])
    assert record["ids"]["Bonds"]["0-1"] == "b14"  # written order: O is atom 0, its C atom 1


def test_a_complete_reordering_map_still_warns_and_mapped_true_works():
    with pytest.warns(UserWarning, match=r"label_lines: line 1: .*Pass mapped=True"):
        label_lines([f"{FULL} methanol"])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        (record,) = label_lines([f"{FULL} methanol"], mapped=True)
    assert record["ids"]["Bonds"]["0-1"] == "b14"


def test_named_parameters_are_named_with_the_fix():
    model = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.Linear(2, 2))
    for edges in ([("0.weight", "1.weight")], [(0, 2)]):
        with pytest.raises(
            TypeError, match=r"\(name, tensor\) pairs .*dict\(model\.named_parameters\(\)\)"
        ):
            laplacian_penalty(model.named_parameters(), edges, 1.0)
    # the advice, followed, gives the same penalty either way
    by_name = laplacian_penalty(dict(model.named_parameters()), [("0.weight", "1.weight")], 1.0)
    by_index = laplacian_penalty(list(model.parameters()), [(0, 2)], 1.0)
    assert torch.equal(by_name, by_index)
    by_name.backward()
    assert model[0].weight.grad is not None
