"""Copies of an assigner and of a force field: pickle, copy.copy, copy.deepcopy.

An assigner holds RDKit's compiled queries and match parameters, which do not pickle:
``pickle.dumps(assigner)`` and ``copy.deepcopy(assigner)`` died in Boost.Python
(``RuntimeError: Pickling of "rdkit.Chem.rdchem.SubstructMatchParameters" instances is
not enabled``), so an assigner could not be handed to a process pool, a Dask task or a
deepcopied config. A force field read from a file came back from pickle as a stranger
(copied field by field) that ``assign_many(n_jobs=2)`` then refused as "not read from a
file as it is". Both are now copied as what they were built from.
"""

from __future__ import annotations

import copy
import pickle

import pytest

pytest.importorskip("rdkit")
pytest.importorskip("openforcefields")

from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from tying.chem import SmirksAssigner, load_force_field  # noqa: E402

try:
    from tying.chem import validate
except Exception as err:  # the toolkit is the anchor
    pytest.skip(f"OpenFF toolkit not importable: {err}", allow_module_level=True)

MOLECULES = ["CCO", "c1ccccc1O", "CC(=O)[O-]", "C[NH3+]", "c1cnc[nH]1", "CS(C)(=O)=O"]
COPIES = {
    "pickle": lambda x: pickle.loads(pickle.dumps(x)),
    "deepcopy": copy.deepcopy,
    "copy": copy.copy,
}


def _ids(a):
    return {s: a.ids(s) for s in a.terms}


@pytest.fixture(scope="module")
def sage():
    return SmirksAssigner("openff-2.3.0", sections=["Bonds", "vdW"], strict=False)


@pytest.mark.parametrize("how", list(COPIES))
def test_a_copied_assigner_labels_as_the_original_and_keeps_its_options(sage, how):
    sage.assign("CCO")
    twin = COPIES[how](sage)
    assert twin is not sage
    assert (twin.sections, twin.strict, twin.cache) == (sage.sections, sage.strict, sage.cache)
    assert twin.force_field.digest == sage.force_field.digest  # the same file's bytes
    # The copy starts with an empty cache: clearing it leaves the original's alone.
    assert (twin.hits, twin.misses, twin._by_canonical) == (0, 0, {})
    hits, cached = sage.hits, dict(sage._by_canonical)
    twin.assign("OCC")
    twin.clear_cache()
    assert (sage.hits, sage._by_canonical) == (hits, cached)
    for smiles in MOLECULES:
        assert _ids(twin.assign(smiles)) == _ids(sage.assign(smiles))


def test_a_pickled_assigner_labels_over_processes(sage):
    twin = pickle.loads(pickle.dumps(sage))
    out = twin.assign_many(MOLECULES, n_jobs=2, chunksize=1)
    assert [_ids(a) for a in out] == [_ids(sage.assign(s)) for s in MOLECULES]


def test_a_force_field_read_from_a_file_pickles_as_its_bytes(tmp_path):
    from tying.chem.offxml import _PARSED

    ff = load_force_field("openff-1.0.0")
    for how, copied in COPIES.items():
        twin = copied(ff)
        assert twin is not ff and twin in _PARSED, how  # a fresh reading of the same bytes
        assert (twin.path, twin.digest, twin.source) == (ff.path, ff.digest, ff.source)
        assert twin["Bonds"]["b1"] == ff["Bonds"]["b1"]
    # The unpickled one still goes to worker processes (it was refused as "not read from
    # a file as it is").
    twin = SmirksAssigner(pickle.loads(pickle.dumps(ff)), strict=False)
    uncached = SmirksAssigner(ff, strict=False, cache=False)
    assert [_ids(a) for a in twin.assign_many(MOLECULES, n_jobs=2, chunksize=1)] == [
        _ids(uncached.assign(s)) for s in MOLECULES
    ]


def test_a_pickled_force_field_keeps_the_bytes_it_was_read_from(tmp_path):
    from .helpers import bond, write_offxml

    path = write_offxml(tmp_path, [bond("[#6:1]-[#6:2]", "old")])
    ff = load_force_field(path)
    data = pickle.dumps(ff)
    write_offxml(tmp_path, [bond("[#6:1]-[#6:2]", "new")])  # the file edited since
    back = pickle.loads(data)
    assert back["Bonds"].parameters[0].id == "old"
    assert SmirksAssigner(back, strict=False).assign("CC").bonds[(0, 1)].id == "old"


_SAGE = {}


@settings(derandomize=True, deadline=None, max_examples=10)
@given(
    smiles=st.lists(st.sampled_from(MOLECULES), min_size=1, max_size=4),
    how=st.sampled_from(list(COPIES)),
    depth=st.integers(1, 2),
)
def test_copies_of_copies_label_as_the_openff_toolkit(smiles, how, depth):
    """However many times an assigner is copied, its labels stay the toolkit's."""
    if not _SAGE:
        _SAGE["ours"] = SmirksAssigner("openff-2.3.0", strict=False)
        _SAGE["openff"] = validate.openff_force_field("openff-2.3.0")
    a = _SAGE["ours"]
    a.assign_many(smiles)  # a warm cache, to be left behind by the copy
    for _ in range(depth):
        a = COPIES[how](a)
    for s, ours in zip(smiles, a.assign_many(smiles), strict=True):
        assert validate.compare(ours, validate.openff_labels(s, _SAGE["openff"])) == []


def test_an_assigner_unpickled_in_another_process_labels_alike(sage, tmp_path):
    """What a process pool does with an assigner passed as an argument."""
    import subprocess
    import sys

    blob = tmp_path / "assigner.pickle"
    blob.write_bytes(pickle.dumps(sage))
    script = (
        "import pickle, sys; a = pickle.loads(open(sys.argv[1], 'rb').read()); "
        "print(sorted(a.assign('OCC(=O)[O-]').ids('Bonds').items()))"
    )
    out = subprocess.run(
        [sys.executable, "-c", script, str(blob)], capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == str(sorted(sage.assign("OCC(=O)[O-]").ids("Bonds").items()))
