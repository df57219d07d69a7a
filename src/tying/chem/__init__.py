"""tying.chem: SMIRNOFF force-field parameters by SMIRKS, the last match wins (claim C9).

Needs the ``chem`` extra (RDKit and the OpenFF force-field files):
``pip install 'tying[chem]'``.

Example:
    >>> from tying.chem import SmirksAssigner
    >>> a = SmirksAssigner("openff-2.3.0").assign("CC(=O)O", name="acetic acid")
    >>> a.bonds[(1, 2)].id, str(a.bonds[(1, 2)]["length"].unit)
    ('b21', 'angstrom')
"""

from tying.chem.assign import (
    SECTIONS,
    Assignment,
    SmirksAssigner,
    assign_parameters,
    count_unique_parameters,
    last_match_wins,
)
from tying.chem.errors import (
    ForceFieldNotFoundError,
    MissingExtraError,
    OffxmlError,
    SmilesError,
    SmirksError,
    UnassignedParameterError,
)
from tying.chem.molecules import (
    canonical_order,
    load_molecule_set,
    molecule_from_smiles,
    prepare_molecule,
)
from tying.chem.offxml import (
    ForceField,
    Parameter,
    Section,
    TorsionTerm,
    available_force_fields,
    find_force_field,
    load_force_field,
)
from tying.chem.smirks import CompiledSmirks, compile_section, compile_smirks
from tying.chem.terms import improper_key, topology_terms, trefoil, valence_key
from tying.chem.typing_baseline import atom_types, count_type_tuples, type_tuples
from tying.chem.units import Quantity, Unit, parse_quantity, parse_unit

__all__ = [
    "SECTIONS",
    "Assignment",
    "CompiledSmirks",
    "ForceField",
    "ForceFieldNotFoundError",
    "MissingExtraError",
    "OffxmlError",
    "Parameter",
    "Quantity",
    "Section",
    "SmilesError",
    "SmirksAssigner",
    "SmirksError",
    "TorsionTerm",
    "UnassignedParameterError",
    "Unit",
    "assign_parameters",
    "atom_types",
    "available_force_fields",
    "canonical_order",
    "compile_section",
    "compile_smirks",
    "count_type_tuples",
    "count_unique_parameters",
    "find_force_field",
    "improper_key",
    "last_match_wins",
    "load_force_field",
    "load_molecule_set",
    "molecule_from_smiles",
    "parse_quantity",
    "parse_unit",
    "prepare_molecule",
    "topology_terms",
    "trefoil",
    "type_tuples",
    "valence_key",
]
