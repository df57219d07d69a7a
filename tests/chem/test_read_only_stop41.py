"""Stop 41: what tying.chem shares (force fields per file, cached results) is read-only.

``load_force_field`` gives one object per file to the whole process, and ``assign``
returns the object its cache keeps. Both were plain dicts inside, so an edit in place
gave wrong labels with no error: an assigner built after ``ff.sections["Bonds"]`` was
replaced still labelled with the old parameters (the SMIRKS compiled before the edit),
and a bond deleted from one result was missing from every later cache hit.
"""

from __future__ import annotations

import copy
import dataclasses
import pathlib
import pickle
import shutil

import pytest

pytest.importorskip("rdkit")
pytest.importorskip("openforcefields")

from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from tying.chem import (  # noqa: E402
    SmirksAssigner,
    count_unique_parameters,
    find_force_field,
    load_force_field,
    parse_quantity,
)
from tying.chem.read_only import ReadOnlyDict  # noqa: E402

SAGE = "openff-2.3.0"
# Each way a dict can be changed in place, as a user might write it.
EDITS = {
    "set": lambda d, k: d.__setitem__(k, d[k]),
    "delete": lambda d, k: d.__delitem__(k),
    "pop": lambda d, k: d.pop(k),
    "popitem": lambda d, k: d.popitem(),
    "setdefault": lambda d, k: d.setdefault(("new",), None),
    "update": lambda d, k: d.update({k: d[k]}),
    "ior": lambda d, k: d.__ior__({k: d[k]}),
    "clear": lambda d, k: d.clear(),
}


@pytest.fixture(scope="module")
def fresh_copy(tmp_path_factory) -> pathlib.Path:
    """Sage at another path: read anew, never the shared object the tests try to edit."""
    path = tmp_path_factory.mktemp("ff") / "sage-copy.offxml"
    shutil.copy(find_force_field(SAGE), path)
    return path


def _plain(a) -> dict:
    return {s: dict(t) for s, t in a.terms.items()}


def test_the_shared_force_field_refuses_edits_in_place_and_names_the_copy_to_make():
    ff = load_force_field(SAGE)
    bonds = ff["Bonds"]
    without_b1 = tuple(
        dataclasses.replace(p, index=i) for i, p in enumerate(p for p in bonds if p.id != "b1")
    )
    with pytest.raises(
        TypeError,
        match=r"cannot set 'Bonds': the sections of force field "
        r"'openff-2\.3\.0' are read-only.*dataclasses\.replace\(ff, sections=",
    ):
        ff.sections["Bonds"] = dataclasses.replace(bonds, parameters=without_b1)
    with pytest.raises(TypeError, match=r"values of parameter 'b1' \(Bonds\) are read-only"):
        bonds["b1"].values["length"] = parse_quantity("9.0 * angstrom")
    with pytest.raises(TypeError, match=r"attributes of section Bonds are read-only"):
        bonds.attributes.pop("potential")
    # nothing changed: the next reader of the file gets the file's parameters
    again = load_force_field(SAGE)
    assert again is ff and len(again["Bonds"]) == 93 and again["Bonds"]["b1"] is bonds["b1"]
    assert str(again["Bonds"]["b1"]["length"]) == "1.525970013793 angstrom"
    assert SmirksAssigner(SAGE, cache=False).assign("CCO").bonds[(0, 1)] is bonds["b1"]


def test_the_copy_the_message_names_labels_as_the_toolkit_with_the_same_edit():
    from tying.chem import validate

    ff = load_force_field(SAGE)
    kept = [p for p in ff["Bonds"] if p.id != "b1"]
    bonds = dataclasses.replace(
        ff["Bonds"], parameters=tuple(dataclasses.replace(p, index=i) for i, p in enumerate(kept))
    )
    edited = dataclasses.replace(ff, sections={**ff.sections, "Bonds": bonds})
    toolkit = validate.openff_force_field(SAGE)
    del toolkit.get_parameter_handler("Bonds").parameters["[#6X4:1]-[#6X4:2]"]
    for smiles in ("CCO", "CC(C)Cc1ccc(cc1)C(C)C(=O)O"):
        ours = SmirksAssigner(edited, strict=False).assign(smiles)
        assert validate.compare(ours, validate.openff_labels(smiles, toolkit)) == []
    assert (0, 1) not in SmirksAssigner(edited, strict=False).assign("CCO").bonds
    assert SmirksAssigner(SAGE).assign("CCO").bonds[(0, 1)].id == "b1"  # the shared one


def test_editing_a_result_does_not_change_the_next_cache_hit(fresh_copy):
    assigner = SmirksAssigner(SAGE)
    first = assigner.assign("CCO")
    with pytest.raises(
        TypeError,
        match=r"cannot delete \(0, 1\): an Assignment's terms are "
        r"read-only.*dict\(terms\) for section, terms in assignment\.terms",
    ):
        del first.bonds[(0, 1)]
    with pytest.raises(TypeError, match=r"cannot pop 'Angles': an Assignment's terms"):
        first.terms.pop("Angles")
    batch = assigner.assign_many(["CCN", "OCC"])  # packed sections; the outer dict too
    with pytest.raises(TypeError, match=r"cannot clear it: an Assignment's terms"):
        batch[0].terms.clear()
    reference = SmirksAssigner(fresh_copy, cache=False)
    for smiles in ("OCC", "NCC", "CCO"):
        hit = assigner.assign(smiles)
        assert _plain(hit) == _plain(reference.assign(smiles))
    assert assigner.hits == 4 and len(assigner.assign("OCC").bonds) == 8
    # the copy the message names is an ordinary, changeable dict
    mine = _plain(first)
    del mine["Bonds"][(0, 1)]
    assert len(mine["Bonds"]) == 7 and len(assigner.assign("CCO").bonds) == 8


def test_read_only_results_and_force_fields_pickle_copy_and_count_as_before():
    assigner = SmirksAssigner(SAGE)
    results = [assigner.assign("c1ccccc1O"), *assigner.assign_many(["CCO", "CC(=O)[O-]"])]
    for a in results:
        back = pickle.loads(pickle.dumps(a))
        assert back == a and _plain(back) == _plain(a)
        assert type(back.terms) is type(a.terms)  # still read-only after the round trip
        with pytest.raises(TypeError, match="an Assignment's terms are read-only"):
            back.terms["Bonds"] = {}
        renamed = dataclasses.replace(a, name="x")
        assert renamed.terms is a.terms and renamed.name == "x"
        assert len(dataclasses.asdict(a)["terms"]["Bonds"]) == len(a.bonds)
        with pytest.raises(TypeError, match="an Assignment's terms are read-only"):
            del back.terms["Bonds"][next(iter(back.bonds))]  # packed ones come back as dicts
    assert count_unique_parameters(results)["total"] == sum(
        len({p.id for t in (r.terms[s] for r in results) for p in t.values()})
        for s in results[0].terms
    )
    ff = load_force_field(SAGE)
    twin = copy.deepcopy(ff)
    assert twin is not ff and twin["Bonds"]["b1"] == ff["Bonds"]["b1"]
    with pytest.raises(TypeError, match="sections of force field 'openff-2.3.0' are read-only"):
        twin.sections.clear()
    assert _plain(SmirksAssigner(twin).assign("CCO")) == _plain(assigner.assign("CCO"))


def test_read_only_dict_is_a_dict_and_its_copy_is_plain():
    d = ReadOnlyDict({"a": 1}, what="a test table; copy it")
    assert d == {"a": 1} and isinstance(d, dict) and d.get("a") == 1
    assert (
        type(d.copy()) is dict and type(d | {"b": 2}) is dict and type(copy.copy(d)) is ReadOnlyDict
    )
    for name, edit in EDITS.items():
        with pytest.raises(TypeError, match=r"^cannot .*: a test table; copy it$"):
            edit(d, "a")
        assert d == {"a": 1}, name


@settings(derandomize=True, deadline=None, max_examples=30)
@given(
    target=st.sampled_from(["sections", "attributes", "values", "terms", "section terms"]),
    edit=st.sampled_from(sorted(EDITS)),
    smiles=st.sampled_from(["CCO", "c1ccncc1", "CC(=O)Nc1ccc(O)cc1", "C[NH3+]", "O"]),
    many=st.booleans(),
)
def test_property_no_edit_in_place_changes_a_later_label(fresh_copy, target, edit, smiles, many):
    """Whatever shared mapping is edited, and however: a TypeError, and every later label
    equals that of a force field read anew from a copy of the file, with no cache."""
    ff = load_force_field(SAGE)
    assigner = SmirksAssigner(SAGE)
    a = assigner.assign_many([smiles])[0] if many else assigner.assign(smiles)
    section = "vdW" if smiles == "O" else "Bonds"
    mapping, key = {
        "sections": (ff.sections, "Bonds"),
        "attributes": (ff["Bonds"].attributes, "potential"),
        "values": (ff["Bonds"]["b1"].values, "length"),
        "terms": (a.terms, section),
        "section terms": (a.terms[section], next(iter(a.terms[section]))),
    }[target]
    if many and target == "section terms":
        mapping = a.terms[section]  # packed: a read-only Mapping with no such methods
        with pytest.raises((TypeError, AttributeError)):
            EDITS[edit](mapping, key)
    else:
        with pytest.raises(TypeError, match="read-only"):
            EDITS[edit](mapping, key)
    reference = SmirksAssigner(fresh_copy, cache=False).assign(smiles)
    for again in (assigner.assign(smiles), *assigner.assign_many([smiles, smiles])):
        assert _plain(again) == _plain(reference)  # ids, SMIRKS, positions and values
    assert len(load_force_field(SAGE)["Bonds"]) == 93
