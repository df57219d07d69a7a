"""errors="skip": a bad line of a large SMILES file no longer loses the others (stop 36)."""

from __future__ import annotations

import pickle

import pytest

pytest.importorskip("rdkit")
pytest.importorskip("openforcefields")

from tying.chem import SmilesError, SmirksAssigner, parallel, skipping  # noqa: E402
from tying.chem.generate import drug_like_smiles  # noqa: E402
from tying.chem.parallel import label_lines  # noqa: E402

BAD = {136: "C1CC broken", 537: "[CH3] methyl", 901: "[Fe] iron"}  # 0-based positions


@pytest.fixture(scope="module")
def lines():
    out = [f"{s} m{k}" for k, s in enumerate(drug_like_smiles(1000, seed=1))]
    for k, text in BAD.items():
        out[k] = text
    return out


def _ids(assignments):
    return [None if a is None else {s: a.ids(s) for s in a.terms} for a in assignments]


def _cache_state(assigner):
    return assigner.hits, assigner.misses, sorted(assigner._by_text), sorted(assigner._by_canonical)


def test_label_lines_skips_the_bad_lines_of_a_file_and_names_them(lines):
    # Stop 36: one bad line among 1,000 stopped the whole call, every good record lost.
    with pytest.raises(SmilesError, match=r"^line 137 \('C1CC broken'\)"):
        label_lines(lines)  # errors="raise", the default, as before
    with pytest.warns(UserWarning, match=r"label_lines: skipped 3 of 1000 molecules .*line 137"):
        records = label_lines(lines, errors="skip")
    assert [r["line"] for r in records] == list(range(1, 1001))  # nothing dropped
    failed = {r["line"]: r["error"] for r in records if "error" in r}
    assert sorted(failed) == [137, 538, 902]
    assert failed[137].startswith("SmilesError: line 137 ('C1CC broken'): cannot parse")
    assert "radical" in failed[538]
    assert failed[902].startswith("UnassignedParameterError: line 902 ('[Fe] iron')")
    assert records[136]["smiles"] == "C1CC" and records[136]["name"] == "broken"
    assert "ids" not in records[136]
    # The others are exactly what labelling the good lines alone gives.
    good = label_lines([t for k, t in enumerate(lines) if k not in BAD])
    assert [{k: v for k, v in r.items() if k != "line"} for r in records if "error" not in r] == (
        good
    )


def test_label_lines_skips_lines_that_cannot_be_read():
    lines = ["CC ethane", b"CCO ethanol", "CO methanol\rCN methylamine", "# note", "O water"]
    with pytest.warns(UserWarning, match="skipped 2 of 4 molecules"):
        records = label_lines(lines, errors="skip")
    assert [r["line"] for r in records] == [1, 2, 3, 5]
    assert records[1]["error"].startswith("TypeError: label_lines: line 2 is a bytes")
    assert records[2]["error"].startswith("SmilesError: line 3 (")
    assert records[3]["ids"]["vdW"] == {"0": "n-tip3p-O", "1": "n-tip3p-H", "2": "n-tip3p-H"}


@pytest.fixture(scope="module")
def one_by_one(lines):
    """The 1,005 molecules below labelled one by one in one process, failures as None.

    Shared by both n_jobs (stop 55: each built this reference twice, 1,005 molecules
    labelled three times a case; 33 s and 25 s under load).
    """
    molecules = [tuple(t.split(None, 1)) for t in lines]
    molecules += molecules[:3] + [molecules[136], molecules[901]]  # repeats, bad ones too
    assigner, expected = SmirksAssigner("openff-2.3.0"), []
    for smiles, name in molecules:
        try:
            expected.append(assigner.assign(smiles, name=name))
        except ValueError:
            expected.append(None)
    return molecules, expected, _cache_state(assigner)


@pytest.mark.parametrize("n_jobs", [1, 2])
def test_assign_many_skips_bad_molecules_in_place(one_by_one, n_jobs):
    molecules, expected, state = one_by_one
    bad = {*BAD, 1003, 1004}
    assert [k for k, a in enumerate(expected) if a is None] == sorted(bad)
    sage = SmirksAssigner("openff-2.3.0")
    with pytest.warns(
        UserWarning, match=r"assign_many: skipped 5 of 1005 molecules .*molecule 136"
    ):
        out = sage.assign_many(molecules, n_jobs=n_jobs, chunksize=100, errors="skip")
    assert len(out) == len(molecules) and sorted(out.skipped) == sorted(bad)
    assert [k for k, a in enumerate(out) if a is None] == sorted(bad)
    assert _ids(out) == _ids(expected)
    assert [a and a.name for a in out] == [a and a.name for a in expected]
    assert isinstance(out.skipped[537], SmilesError) and "radical" in str(out.skipped[537])
    assert str(out.skipped[1004]).startswith("molecule 1004 ('[Fe]', 'iron'): openff-2.3.0 has no")
    # The cache and counters end as one process labelling one by one leaves them.
    assert _cache_state(sage) == state
    assert pickle.loads(pickle.dumps(out)).skipped.keys() == out.skipped.keys()


def test_errors_raise_is_unchanged_and_bad_choices_are_refused(lines):
    sage = SmirksAssigner("openff-2.3.0")
    with pytest.raises(SmilesError, match=r"^molecule 1 \('C1CC'\): cannot parse"):
        sage.assign_many(["CC", "C1CC"], errors="raise")
    out = sage.assign_many(["CC", "CO"], errors="skip")  # nothing skipped: no warning
    assert out.skipped == {} and [a.bonds[(0, 1)].id for a in out] == ["b1", "b14"]
    with pytest.raises(
        ValueError, match=r"errors must be one of \('raise', 'skip'\), got 'ignore'"
    ):
        sage.assign_many(["CC"], errors="ignore")
    with pytest.raises(TypeError, match=r"label_lines: errors must be one of .* got bool: True"):
        label_lines(["CC"], errors=True)
    assert skipping._BATCH == parallel._BATCH


def test_mapped_molecules_whose_map_is_bad_are_skipped_too():
    sage = SmirksAssigner("openff-2.3.0")
    good, gap = "[C:2]([O:1][H:6])([H:3])([H:4])[H:5]", "[C:2]([O:1][H:9])([H:3])([H:4])[H:5]"
    with pytest.warns(UserWarning, match="skipped 1 of 2 molecules"):
        out = sage.assign_many([good, gap], mapped=True, errors="skip")
    assert out[0].ids("Bonds") == sage.assign(good, mapped=True).ids("Bonds") and out[1] is None
    assert str(out.skipped[1]).startswith(f"molecule 1 ({gap!r}): mapped=True")
