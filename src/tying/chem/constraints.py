"""``<Constraints>`` labelled as the OpenFF toolkit labels them, when asked for (stop 34).

Opt-in: ``SmirksAssigner(ff, sections=(..., "Constraints"))``; the default sections
(:data:`~tying.chem.assign.SECTIONS`) leave it out, and name it in ``not_assigned``.

A constraint fixes the distance between two atoms. Each parameter's SMIRKS tags two
atoms, which need not be bonded (every water model constrains water's H-H distance
with ``[#1:1]-[#8X2H2+0]-[#1:2]``); a pair is keyed as a bond (the smaller index
first, :func:`~tying.chem.terms.valence_key`) and takes the parameter of the **last**
pattern that matched it, as ``label_molecules`` does (its ``ConstraintHandler`` finds
matches like the ``BondHandler``).

What a label holds is exactly what the toolkit's label holds: the parameter, with a
``distance`` when the file writes one (water's ``c-tip3p-H-O``, ``c-tip3p-H-O-H``) and
without one when it does not (Parsley's and Sage's ``c1``, ``[#1:1]-[*:2]``, every
bond to a hydrogen). A constraint without a distance holds its pair at the
equilibrium length of the bond parameter the pair gets (``assignment.bonds[key]
["length"]``), as the toolkit's system builders do; it is not filled in here,
because ``label_molecules`` does not fill it in either (its ``distance`` is None).

Constraints are never checked complete (``strict``): a force field constrains some
pairs only, and a molecule may have none (``{}``).

Only the per-molecule paths label them (the scanned and the reference path, not the
batch arrays of :meth:`~tying.chem.assign.SmirksAssigner._assign_arrays`): a
force field has three constraint patterns, searched by RDKit for every molecule.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from tying.chem._rdkit import Chem
from tying.chem.offxml import ForceField, Parameter
from tying.chem.smirks import compile_section
from tying.chem.terms import valence_key

SECTION = "Constraints"


def constraint_labeller(
    force_field: ForceField, sections: Sequence[str]
) -> Callable[[Any], dict[tuple[int, ...], Parameter]] | None:
    """A function ``mol -> {(i, j): Parameter}`` labelling a prepared molecule's constraints.

    Args:
        force_field: the assigner's force field.
        sections: the sections the assigner labels.

    Returns:
        The labeller (the last matching pattern wins each pair), or None when
        ``sections`` does not ask for ``"Constraints"``.

    Raises:
        KeyError: when they are asked for and the force field has no ``<Constraints>``.
        SmirksError: for a pattern RDKit cannot parse or whose tags are not ``:1``, ``:2``.

    Example:
        >>> from tying.chem import load_force_field, molecule_from_smiles
        >>> label = constraint_labeller(load_force_field("tip3p"), ["vdW", "Constraints"])
        >>> {k: p.id for k, p in label(molecule_from_smiles("O")).items()}
        {(0, 1): 'c-tip3p-H-O', (0, 2): 'c-tip3p-H-O', (1, 2): 'c-tip3p-H-O-H'}
    """
    if SECTION not in sections:
        return None
    compiled = [(c.query, c.tagged, c.parameter) for c in compile_section(force_field, SECTION)]
    params = Chem.SubstructMatchParameters()
    params.uniquify = False  # every ordering, as the OpenFF toolkit asks
    params.maxMatches = 2**32 - 1  # RDKit stops at 1000 by default
    params.useChirality = True
    params.recursionPossible = True

    def label(mol: Any) -> dict[tuple[int, ...], Parameter]:
        found: dict[tuple[int, ...], Parameter] = {}
        match = mol.GetSubstructMatches
        for query, (a, b), parameter in compiled:  # file order: later patterns overwrite
            for m in match(query, params):
                found[valence_key((m[a], m[b]))] = parameter
        return dict(sorted(found.items()))

    return label
