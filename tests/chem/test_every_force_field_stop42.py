"""Every section tying.chem labels x every shipped force field = ``label_molecules`` (stop 42).

The sweep of the kind "a label differs from the OpenFF toolkit": for each ``.offxml``
file the installed openff-forcefields package ships (enumerated, not listed by hand),
every section :data:`tying.chem.terms.KEYS` can label (``Constraints`` included), on
molecules from the shipped set plus charged species, zwitterions, macrocycles, salts,
isotopes, explicit hydrogens and metal ions. Labels are compared term by term (parameter
id per atom tuple), from ``assign_many`` (batches, packed arrays) and from ``assign``
one by one. Files whose labelled sections are the same (the same ``(id, smirks)`` in the
same order, read from the XML with the standard library, and the same aromaticity
model) label every molecule alike, so one file of each such group is labelled.

Named exceptions (each a documented refusal or convention, in ``docs/chem.md``):

- ``REFUSED``: files tying.chem refuses to load, with the reason it gives;
- the ``tip3p`` ions have no id: the toolkit names each ``None``, tying.chem
  ``vdW[<position>]``; compared as that position.

A new section in ``KEYS`` or a new shipped file fails the guards below until it is
swept (``test_every_labelled_section_is_swept``, ``test_every_shipped_file_is_swept``).
"""

from __future__ import annotations

import pathlib
import re
import warnings
import xml.etree.ElementTree as ET

import pytest

pytest.importorskip("rdkit")
openforcefields = pytest.importorskip("openforcefields")

from tying.chem import (  # noqa: E402
    OffxmlError,
    SmirksAssigner,
    available_force_fields,
    load_force_field,
    load_molecule_set,
)
from tying.chem.terms import KEYS  # noqa: E402

try:
    from openff.toolkit import ForceField as OpenFFForceField
    from openff.toolkit import Molecule as OpenFFMolecule
except ImportError as err:
    pytest.skip(f"OpenFF toolkit not importable: {err}", allow_module_level=True)

#: the sections swept here; KEYS growing fails test_every_labelled_section_is_swept
SWEPT = ("Bonds", "Angles", "ProperTorsions", "ImproperTorsions", "vdW", "Constraints")

#: shipped files tying.chem refuses to load (the toolkit loads them): name -> the reason
#: in its message. Two parameters under one id (docs/chem.md, "What is refused").
REFUSED = {
    "openff-2.0.0-rc.1": "duplicate id 'c1'",
    "openff-2.0.0-rc.2": "duplicate id 'c1'",
    "openff_unconstrained-2.0.0-rc.1": "duplicate id 'n1'",
    "openff_unconstrained-2.0.0-rc.2": "duplicate id 'n1'",
}

#: molecules the shipped SMILES set has few or none of
EXTRA = [
    "[NH4+]",
    "CC(=O)[O-]",
    "[NH3+]CC(=O)[O-]",  # zwitterion
    "C[N+](C)(C)C",
    "C[S+](C)C",
    "c1cc[n-]c1",
    "O=[N+]([O-])c1ccccc1",
    "[O-][n+]1ccccc1",
    "C1CCCCCCCCCCC1",  # 12-ring
    "C1COCCOCCOCCOCCOCCO1",  # 18-crown-6
    "C1CCC2(CC1)CCCCC2",  # spiro
    "[Na+].[Cl-]",  # salt
    "CC(=O)[O-].[Na+]",
    "[Li+]",
    "[K+]",
    "[Mg+2]",
    "[Br-]",
    "O",
    "O.O",
    "[2H]C([2H])([2H])O",  # isotopes
    "[13CH4]",
    "[H]C([H])([H])[H]",  # hydrogens written
    "C[C@H](N)C(=O)O",  # stereo given
    "Oc1ccccn1",  # and its tautomer
    "O=c1cccc[nH]1",
    "OP(=O)(O)O",
    "CS(=O)(=O)N",
    "C1=CC=CC=CC=C1",
    "B(O)O",
    "FC(F)(F)Br",
]
SHORT = ["[NH3+]CC(=O)[O-]", "C1COCCOCCOCCOCCOCCO1", "CC(=O)[O-].[Na+]", "[K+]", "O", "[13CH4]"]


def _shipped() -> dict[str, pathlib.Path]:
    out = {}
    for folder in openforcefields.get_forcefield_dirs_paths():
        for path in sorted(pathlib.Path(folder).glob("*.offxml")):
            out.setdefault(path.stem, path)
    return out


def _content(path: pathlib.Path) -> tuple:
    """What decides every label of a file: its aromaticity model and each labelled
    section's (id, smirks) in order, read with the standard library (neither parser)."""
    root = ET.parse(path).getroot()
    sections = {child.tag: child for child in root}
    return (root.get("aromaticity_model"),) + tuple(
        (s, tuple((p.get("id"), p.get("smirks")) for p in sections[s]))
        for s in SWEPT
        if s in sections
    )


def _groups() -> dict[tuple, list[str]]:
    groups: dict[tuple, list[str]] = {}
    for name, path in _shipped().items():
        groups.setdefault(_content(path), []).append(name)
    return groups


GROUPS = _groups()
# a release rather than its candidate where a group has both (the file users name)
REPRESENTATIVES = sorted(
    min(names, key=lambda n: (re.search(r"rc|RC|alpha", n) is not None, n))
    for names in GROUPS.values()
)


def _toolkit_labels(force_field, smiles: str) -> dict[str, dict[tuple[int, ...], str]]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # e.g. a salt read as one molecule: warned, labelled
        mol = OpenFFMolecule.from_smiles(smiles, allow_undefined_stereo=True)
        labels = force_field.label_molecules(mol.to_topology())[0]
    out = {}
    for section in SWEPT:
        if section not in labels:
            continue
        handler = force_field.get_parameter_handler(section)
        position = {id(p): k for k, p in enumerate(handler.parameters)}
        out[section] = {
            KEYS[section](key): p.id if p.id is not None else f"{section}[{position[id(p)]}]"
            for key, p in labels[section].items()
        }
    return out


def _mismatches(name: str, molecules: list[str]) -> tuple[int, list]:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the toolkit's own deprecation notices
            toolkit = OpenFFForceField(str(_shipped()[name]))
    except Exception as err:  # another toolkit release may not read a file: no anchor
        pytest.skip(f"the OpenFF toolkit cannot load {name}: {type(err).__name__}: {err}")
    ours_ff = load_force_field(name)
    sections = [s for s in SWEPT if s in ours_ff.sections]
    batch = SmirksAssigner(ours_ff, strict=False).assign_many(molecules)
    single = SmirksAssigner(ours_ff, sections=sections, strict=False, cache=False)
    compared, bad = 0, []
    for smiles, many in zip(molecules, batch, strict=True):
        theirs = _toolkit_labels(toolkit, smiles)
        one = single.assign(smiles)
        assert set(theirs) == set(sections), (name, smiles)
        for section, their_ids in theirs.items():
            compared += len(their_ids)
            for how, a in (("assign", one), ("assign_many", many)):
                if section not in a.terms:  # Constraints: opt-in, labelled by `one` only
                    continue
                ids = a.ids(section)
                for key in sorted(ids.keys() | their_ids.keys()):
                    if ids.get(key) != their_ids.get(key):
                        bad.append((name, smiles, how, section, key, ids.get(key), their_ids[key]))
    return compared, bad


def test_every_labelled_section_is_swept():
    # A section tying.chem learns to label must be added to SWEPT (and so compared).
    assert set(KEYS) == set(SWEPT)


def test_every_shipped_file_is_swept():
    shipped = _shipped()
    assert len(shipped) >= 70
    assert set(available_force_fields()) == set(shipped)  # what users can name
    covered = {n for names in GROUPS.values() for n in names}
    assert covered == set(shipped)
    assert set(REFUSED) <= set(shipped)  # a stale name here would hide nothing silently


@pytest.mark.parametrize("name", sorted(REFUSED))
def test_refused_files_are_refused_with_their_reason(name):
    with pytest.raises(OffxmlError, match=rf"{name}\.offxml .*{REFUSED[name]}.*give each"):
        load_force_field(name)


@pytest.mark.parametrize("name", sorted(set(_shipped()) - set(REFUSED)))
def test_every_other_file_loads_with_the_sections_the_toolkit_labels(name):
    expected = [s for s in _content(_shipped()[name])[1:]]
    ff = load_force_field(name)
    assert [(s, tuple((p.id, p.smirks) for p in ff[s])) for s, _ in expected] == [
        (s, tuple((pid if pid is not None else f"{s}[{k}]", sm) for k, (pid, sm) in enumerate(ps)))
        for s, ps in expected
    ]


@pytest.mark.parametrize("name", [n for n in REPRESENTATIVES if n not in REFUSED])
def test_labels_equal_the_toolkits_on_every_shipped_force_field(name):
    compared, bad = _mismatches(name, SHORT)
    assert compared > 0
    assert bad == []


@pytest.mark.slow
@pytest.mark.parametrize("name", [n for n in REPRESENTATIVES if n not in REFUSED])
def test_labels_equal_the_toolkits_on_every_shipped_force_field_all_molecules(name):
    subset = [s for s, _ in load_molecule_set()[::60]]
    compared, bad = _mismatches(name, subset + EXTRA)
    assert compared > 0
    assert bad == []


def test_groups_are_of_files_that_label_alike():
    # The grouping is sound where it matters most: two files of one group (Sage 2.2.0
    # and 2.2.1) give equal labels, each from its own file.
    group = next(g for g in GROUPS.values() if "openff-2.2.1" in g)
    assert "openff-2.2.0" in group
    first, second = (
        SmirksAssigner(n, strict=False).assign_many(EXTRA) for n in ("openff-2.2.0", "openff-2.2.1")
    )
    sections = first[0].terms.keys()
    assert [{s: a.ids(s) for s in sections} for a in first] == [
        {s: a.ids(s) for s in sections} for a in second
    ]
