"""assign_many over processes, and the Dask recipe on a local 2-worker cluster (issue 19)."""

from __future__ import annotations

import pytest

pytest.importorskip("rdkit")
pytest.importorskip("openforcefields")

from tying.chem import SmilesError, SmirksAssigner, load_molecule_set  # noqa: E402
from tying.chem.generate import building_blocks, drug_like_smiles  # noqa: E402
from tying.chem.parallel import check_n_jobs, label_lines, parse_smiles_line  # noqa: E402

SUBSET = load_molecule_set()[::7]


@pytest.fixture(scope="module")
def sage():
    return SmirksAssigner("openff-2.3.0")


def _ids(assignments):
    return [{s: a.ids(s) for s in a.terms} for a in assignments]


def test_processes_give_the_same_labels_in_input_order(sage):
    molecules = [*SUBSET, *drug_like_smiles(40)]
    sage.clear_cache()
    serial = sage.assign_many(molecules)
    sage.clear_cache()
    parallel = sage.assign_many(molecules, n_jobs=2, chunksize=7)
    assert _ids(parallel) == _ids(serial)
    assert [a.name for a in parallel] == [a.name for a in serial]
    assert [a.smiles for a in parallel] == [a.smiles for a in serial]
    # Rebuilt against this force field: one Parameter object per parameter, not copies.
    b1 = sage.force_field["Bonds"]["b1"]
    used = [p for a in parallel for p in a.bonds.values() if p.id == "b1"]
    assert used and all(p is b1 for p in used)


def test_repeats_and_names_survive_the_pool(sage):
    molecules = [("CCO", "ethanol"), "CCO", ("OCC", "ethanol again"), ("CCO", "third"), "CC"]
    sage.clear_cache()
    serial = sage.assign_many(molecules)
    sage.clear_cache()
    out = sage.assign_many(molecules, n_jobs=2, chunksize=1)
    assert [a.name for a in out] == [a.name for a in serial]
    assert [a.name for a in out] == ["ethanol", "ethanol", "ethanol again", "third", "CC"]
    assert _ids(out) == _ids(serial) and out[0].ids("Bonds") == out[1].ids("Bonds")
    assert out[2].bonds[(0, 1)].id == "b14"  # O-C in "OCC": its own atom order


def test_the_first_failing_molecule_is_named_with_its_index(sage):
    bad = ["CC", "C1CC", "CCO", "[CH3]", "CCC"]
    for n_jobs in (1, 2):
        with pytest.raises(SmilesError, match=r"molecule 1 \('C1CC'\): cannot parse SMILES"):
            sage.assign_many(bad, n_jobs=n_jobs, chunksize=1)
    with pytest.raises(SmilesError, match=r"molecule 3 \('\[CH3\]', 'methyl'\): .* radical"):
        sage.assign_many(["CC", "CO", "CN", ("[CH3]", "methyl")], n_jobs=2, chunksize=1)


@pytest.mark.parametrize("n_jobs", [0, -2, True, 1.5, "2"])
def test_bad_n_jobs_is_refused(sage, n_jobs):
    with pytest.raises(ValueError, match="n_jobs must be a positive int or -1"):
        sage.assign_many(["C"], n_jobs=n_jobs)
    assert check_n_jobs(-1) >= 1


def test_bad_chunksize_and_items_are_refused(sage):
    with pytest.raises(ValueError, match="chunksize must be a positive int, got 0"):
        sage.assign_many(["C"], chunksize=0)
    with pytest.raises(ValueError, match=r"molecule 1: expected .* got a tuple of 3 items"):
        sage.assign_many(["C", ("C", "a", "b")])


def test_progress_bar_counts_every_molecule(sage, capsys):
    sage.clear_cache()
    sage.assign_many(["C", "CC", "CCC"], progress=True)
    out = capsys.readouterr().out
    assert "labelling (1 process)" in out and "3/3" in out


def test_generated_drug_like_set_is_deterministic_and_distinct():
    first = drug_like_smiles(300)
    assert first == drug_like_smiles(300) and len(set(first)) == 300
    assert first[:50] == drug_like_smiles(50)  # a quick run labels a prefix of the long one
    assert drug_like_smiles(300, seed=1) != first
    scaffolds, substituents = building_blocks()
    assert len(scaffolds) > 100 and len(substituents) > 50
    with pytest.raises(ValueError, match="n must be a positive int, got 0"):
        drug_like_smiles(0)


def test_used_up_building_blocks_are_an_error_not_a_hang(monkeypatch):
    from tying.chem import generate

    # benzene with methyl groups: every product is below the drug-like size, none is kept
    monkeypatch.setattr(generate, "building_blocks", lambda: (("c1ccccc1",), ("C",)))
    monkeypatch.setattr(generate, "_MAX_STALE_DRAWS", 200)
    with pytest.raises(ValueError, match="only 0 distinct drug-like molecules can be built"):
        drug_like_smiles(1)
    # no scaffold atom carries a hydrogen: nothing can be attached anywhere
    monkeypatch.setattr(generate, "building_blocks", lambda: (("FC(F)(F)C(F)(F)F",), ("C",)))
    with pytest.raises(ValueError, match="only 0 distinct drug-like molecules can be built"):
        drug_like_smiles(1)


def test_label_lines_reads_a_smiles_file_partition():
    records = label_lines(["# library", "CCO ethanol", "", "c1ccccc1\tbenzene ring"])
    assert [r["name"] for r in records] == ["ethanol", "benzene ring"]
    assert records[0]["ids"]["Bonds"]["0-1"] == "b1"
    assert parse_smiles_line("  ") is None
    with pytest.raises(SmilesError, match=r"line 1 \('C1CC broken'\): cannot parse SMILES 'C1CC'"):
        label_lines(["C1CC broken"])


def test_dask_recipe_on_a_local_two_worker_cluster(tmp_path, sage):
    pytest.importorskip("dask.bag")
    distributed = pytest.importorskip("distributed")
    import dask.bag as db

    molecules = SUBSET[:24]
    for k in range(3):  # a library split over several files
        part = molecules[k * 8 : (k + 1) * 8]
        (tmp_path / f"library-{k}.smi").write_text("".join(f"{s}\t{n}\n" for s, n in part))
    with (
        distributed.LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
        ) as cluster,
        distributed.Client(cluster) as client,
    ):
        bag = db.read_text(str(tmp_path / "library-*.smi"))
        records = bag.map_partitions(label_lines, "openff-2.3.0").compute()
        workers = {w for w in client.run(lambda: __import__("os").getpid()).values()}
    assert len(workers) == 2
    assert [r["name"] for r in records] == [n for _, n in molecules]
    for record, (smiles, _) in zip(records, molecules):
        a = sage.assign(smiles)
        assert record["ids"] == {
            s: {"-".join(map(str, k)): p.id for k, p in sorted(t.items())}
            for s, t in a.terms.items()
        }


def test_an_unguarded_script_gets_the_main_guard_advice(tmp_path):
    import subprocess
    import sys

    script = tmp_path / "unguarded.py"
    script.write_text(
        "from tying.chem import SmirksAssigner\n"
        "SmirksAssigner().assign_many(['C', 'CC', 'CCC', 'CCCC'], n_jobs=2, chunksize=1)\n"
    )
    import os
    import pathlib

    import tying

    env = {**os.environ, "PYTHONPATH": str(pathlib.Path(tying.__file__).parents[1])}
    out = subprocess.run(
        [sys.executable, str(script)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
        env=env,
    )
    assert out.returncode != 0
    assert "put the call under `if __name__ == '__main__':`" in out.stderr


def test_unnamed_repeats_written_differently_are_named_as_in_one_process(sage):
    # Each worker caches only what it saw; names must not depend on which worker ran what.
    molecules = ["CCO", "c1ccccc1O", "OCC", "Oc1ccccc1", "C(O)C", ("OCC", "named")]
    sage.clear_cache()
    serial = sage.assign_many(molecules)
    for chunksize in (1, 2, 4):
        sage.clear_cache()
        out = sage.assign_many(molecules, n_jobs=2, chunksize=chunksize)
        assert [a.name for a in out] == [a.name for a in serial], chunksize
        assert _ids(out) == _ids(serial)
    assert [a.name for a in serial] == ["CCO", "c1ccccc1O", "CCO", "c1ccccc1O", "CCO", "named"]


def test_worker_results_round_trip_to_the_parents_parameters(sage):
    # A worker packs a chunk as arrays of atoms and parameter positions; the parent
    # decodes them with its own objects: equal Assignments, shared Parameters.
    import copy
    import pickle

    from tying.chem.parallel import _decode, _encode

    ff = sage.force_field
    other = SmirksAssigner(copy.deepcopy(ff))  # as in a worker: equal, not the same objects
    parameters = {s: ff[s].parameters for s in sage.sections}
    molecules = [s for s, _ in SUBSET] + drug_like_smiles(30, seed=5)
    molecules += ["C", "[Na+].[Cl-]", "O", "C1CC1", "[H]C#N"]
    theirs = [(10 + i, other.assign(m)) for i, m in enumerate(molecules)]
    assert all(p is not ff["Bonds"][p.id] for p in theirs[0][1].bonds.values())
    failure = ValueError("molecule 99: broken")
    packed = pickle.loads(pickle.dumps(_encode(theirs, other.sections, failure)))
    back, error = _decode(packed, parameters, ff.name, sage.not_assigned)
    assert str(error) == "molecule 99: broken" and sorted(back) == [i for i, _ in theirs]
    for (i, a), m in zip(theirs, molecules):
        b = back[i]
        assert b == a == sage.assign(m)
        for s, t in b.terms.items():
            assert list(t) == list(a.terms[s])  # same keys, same order
            assert all(p is ff[s].parameters[p.index] for p in t.values())


def test_packed_terms_behave_as_the_dict_they_stand_for(sage):
    import pickle

    from tying.chem.parallel import _decode, _encode

    ff = sage.force_field
    parameters = {s: ff[s].parameters for s in sage.sections}
    plain = sage.assign("CC(=O)Nc1ccc(O)cc1")
    encoded = _encode([(0, plain)], sage.sections, None)
    packed = _decode(encoded, parameters, ff.name, sage.not_assigned)[0][0]
    for s, t in plain.terms.items():
        lazy = packed.terms[s]
        assert len(lazy) == len(t) and lazy == t and t == lazy and not (lazy != t)
        assert lazy.keys() == t.keys() and list(lazy.items()) == list(t.items())
        assert all(k in lazy for k in t) and (99, 98) not in lazy
        assert repr(lazy) == repr(t)
        assert type(pickle.loads(pickle.dumps(lazy))) is dict
    assert packed.ids("Bonds") == plain.ids("Bonds") and packed.used() == plain.used()
    assert list(packed.rows()) == list(plain.rows())
    assert pickle.loads(pickle.dumps(packed)) == plain
    with pytest.raises(TypeError, match="unhashable"):
        hash(packed.terms["Bonds"])


def test_label_lines_over_several_batches_equals_assign_line_by_line():
    smiles = drug_like_smiles(80, seed=6)
    lines = [f"{s} m{k}" for k, s in enumerate(smiles)] + ["# end", smiles[0]]
    records = label_lines(lines)
    assigner = SmirksAssigner("openff-2.3.0")
    assert len(records) == 81
    for record, s in zip(records, smiles + smiles[:1]):
        a = assigner.assign(s)
        assert record["smiles"] == s
        assert record["ids"]["ProperTorsions"] == {
            "-".join(map(str, k)): p.id for k, p in sorted(a.propers.items())
        }
        assert record["ids"]["vdW"] == {str(k[0]): p.id for k, p in sorted(a.vdw.items())}
    # The first failing line is named, in a later batch, with a bad line after it too.
    bad = [f"{s} m{k}" for k, s in enumerate(smiles)] + ["C1CC first", "[Xe] second"]
    with pytest.raises(SmilesError, match=r"line 81 \('C1CC first'\)"):
        label_lines(bad)


def _cache_state(assigner):
    return (
        assigner.hits,
        assigner.misses,
        dict(assigner._by_text),
        dict(assigner._by_canonical),
    )


@pytest.mark.parametrize("cache", [True, False])
def test_counters_and_caches_are_those_of_one_process(sage, cache):
    # Text repeats, the same molecule written differently (in one chunk and across
    # chunks), molecules cached before the call, names, and an RDKit molecule.
    from rdkit import Chem

    warm = ["CCO", "c1ccccc1O"]
    molecules = [
        "OCC",  # ethanol, cached beforehand under another writing: a canonical hit
        "CCO",  # the text cache
        "CC(=O)Nc1ccc(O)cc1",
        ("CC(=O)Nc1ccc(O)cc1", "paracetamol"),  # a text repeat, named
        "c1cc(O)ccc1NC(C)=O",  # paracetamol written differently
        Chem.MolFromSmiles("CCN"),
        "NCC",
        "CCN",
        *drug_like_smiles(12, seed=9),
        "C(O)C",
    ]
    states = []
    for n_jobs, chunksize in ((1, None), (2, 1), (2, 3)):
        assigner = SmirksAssigner(sage.force_field, cache=cache)
        for s in warm:
            assigner.assign(s)
        out = assigner.assign_many(molecules, n_jobs=n_jobs, chunksize=chunksize)
        # a later call remaps from what this one cached, as in one process
        later = assigner.assign_many(["C(C)N", "c1ccc(NC(C)=O)cc1O"])
        states.append((_ids(out), [a.name for a in out], _ids(later), _cache_state(assigner)))
    assert states[1] == states[0]
    assert states[2] == states[0]
    hits, misses = states[0][3][:2]
    assert hits + misses == len(warm) + len(molecules) + 2
    assert (hits > 0) == cache


def test_a_failing_call_over_processes_leaves_counters_and_caches_unchanged(sage):
    assigner = SmirksAssigner(sage.force_field)
    assigner.assign("CCO")
    before = _cache_state(assigner)
    with pytest.raises(SmilesError, match=r"molecule 3 \('C1CC'\)"):
        assigner.assign_many(["CC", "CCC", "OCC", "C1CC", "CCCC"], n_jobs=2, chunksize=1)
    assert _cache_state(assigner) == before


def test_workers_label_with_the_force_field_the_parent_read(tmp_path):
    """Workers used to read the file as it was when they started; the parent decodes their
    answers against the parameters it read: an edit in between mislabelled silently."""
    path = tmp_path / "mine.offxml"
    path.write_bytes(SmirksAssigner("openff-2.3.0").force_field.path.read_bytes())
    mine = SmirksAssigner(path)
    # the file changes: b1 (C-C) goes, so every later bond sits one place earlier
    text = path.read_text()
    start = text.index('<Bond smirks="[#6X4:1]-[#6X4:2]" id="b1"')
    path.write_text(text[:start] + text[text.index("</Bond>", start) + len("</Bond>") :])
    molecules = drug_like_smiles(30)
    mine.clear_cache()
    one = mine.assign_many(molecules)
    mine.clear_cache()
    two = mine.assign_many(molecules, n_jobs=2, chunksize=4)
    assert _ids(two) == _ids(one)
    assert any("b1" in a.ids("Bonds").values() for a in one)
    assert "b1" not in [p.id for p in SmirksAssigner(path).force_field["Bonds"]]  # as now


def test_the_worker_pool_is_kept_between_calls_then_released(sage, monkeypatch):
    from tying.chem import parallel

    monkeypatch.setattr(parallel, "KEEP_WORKERS_S", 30.0)
    parallel.release_workers()
    molecules = drug_like_smiles(12)
    sage.assign_many(molecules, n_jobs=2, chunksize=3)
    first = parallel._KEPT["use"].pool
    sage.clear_cache()
    sage.assign_many(molecules, n_jobs=2, chunksize=3)
    assert parallel._KEPT["use"].pool is first  # no new processes for the same set-up
    other = SmirksAssigner("openff-2.3.0", sections=["Bonds"])
    other.assign_many(molecules, n_jobs=2, chunksize=3)
    assert parallel._KEPT["use"].pool is not first  # another set-up: other workers
    assert first._shutdown_thread
    first._broken = "a worker died"  # a broken pool is never handed out again
    second = parallel._KEPT["use"].pool
    second._broken = "a worker died"
    other.clear_cache()
    assert _ids(other.assign_many(molecules, n_jobs=2, chunksize=3)) == _ids(
        other.assign_many(molecules)
    )
    assert parallel._KEPT["use"].pool is not second
    assert parallel.release_workers() and parallel._KEPT["use"] is None
    assert not parallel.release_workers()


def test_an_idle_pool_shuts_itself_down(sage, monkeypatch):
    import time

    from tying.chem import parallel

    monkeypatch.setattr(parallel, "KEEP_WORKERS_S", 0.2)
    sage.clear_cache()
    sage.assign_many(drug_like_smiles(8), n_jobs=2, chunksize=2)
    pool = parallel._KEPT["use"].pool
    deadline = time.monotonic() + 20
    while parallel._KEPT["use"] is not None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert parallel._KEPT["use"] is None and pool._shutdown_thread
    monkeypatch.setattr(parallel, "KEEP_WORKERS_S", 0.0)  # 0: never kept
    sage.clear_cache()
    sage.assign_many(drug_like_smiles(8), n_jobs=2, chunksize=2)
    assert parallel._KEPT["use"] is None


def test_a_long_lived_worker_labels_with_the_force_field_file_as_it_is_now(tmp_path):
    """The Dask recipe's per-process assigner was kept by name: an edited file was ignored."""
    from tying.chem.parallel import label_lines, worker_assigner

    path = tmp_path / "mine.offxml"
    original = SmirksAssigner("openff-2.3.0").force_field.path.read_text()
    path.write_text(original)
    before = label_lines(["CCO ethanol"], force_field=str(path))
    assert worker_assigner(str(path)) is worker_assigner(str(path))
    path.write_text(original.replace('id="b1" ', 'id="b1-edited" ', 1))
    after = label_lines(["CCO ethanol"], force_field=str(path))
    assert "b1" in str(before) and "b1-edited" not in str(before)
    assert "b1-edited" in str(after)


def test_a_force_field_not_read_from_a_file_is_refused_over_processes(sage):
    """Workers rebuild the force field from its file's bytes: one changed in memory
    (dataclasses.replace) would be labelled with the file's parameters instead."""
    import dataclasses

    ff = sage.force_field
    bonds = ff["Bonds"]
    fewer = dataclasses.replace(bonds, parameters=bonds.parameters[1:])  # b1 gone
    edited = dataclasses.replace(ff, sections={**ff.sections, "Bonds": fewer})
    # positions are stored as each parameter's index: a shifted section would name the
    # next parameter for every term (b3 for b2's), silently, so it is refused by name
    with pytest.raises(ValueError, match=r"section Bonds: parameter 'b2' sits at position 0"):
        SmirksAssigner(edited, strict=False)
    renumbered = [dataclasses.replace(p, index=i) for i, p in enumerate(fewer.parameters)]
    fewer = dataclasses.replace(fewer, parameters=tuple(renumbered))
    edited = dataclasses.replace(ff, sections={**ff.sections, "Bonds": fewer})
    mine = SmirksAssigner(edited, strict=False)
    molecules = drug_like_smiles(12)
    one = mine.assign_many(molecules)  # in this process: the edited parameters
    assert all("b1" not in a.ids("Bonds").values() for a in one)
    assert [a.ids("Bonds") for a in one] == [mine.assign(m).ids("Bonds") for m in molecules]
    plain = [a.ids("Bonds") for a in sage.assign_many(molecules)]
    assert [a.ids("Bonds") for a in one] != plain  # the edit is seen (b1 bonds unassigned)
    mine.clear_cache()  # (cached molecules need no worker: nothing would be refused)
    with pytest.raises(ValueError, match=r"was not read from a file as it is.*use n_jobs=1"):
        mine.assign_many(molecules, n_jobs=2, chunksize=3)


def test_a_call_whose_molecules_are_all_cached_starts_no_worker(sage):
    """Every SMILES in the cache already: nothing to send, and max_workers=0 was an error."""
    molecules = drug_like_smiles(20)
    sage.clear_cache()
    first = sage.assign_many(molecules, n_jobs=2, chunksize=4)
    hits = sage.hits
    again = sage.assign_many(molecules, n_jobs=2, chunksize=4)
    assert _ids(again) == _ids(first) and [a.name for a in again] == [a.name for a in first]
    assert sage.hits == hits + len(molecules)


@pytest.mark.parametrize(
    "molecules, match",
    [
        ("CCO", r"assign_many: expected an iterable of molecules, got the str 'CCO', which "
         r"would be read one character at a time; pass a list, e.g. assign_many\(\['CCO'\]\)"),
        (b"CCO", r"got the bytes b'CCO'.*assign_many\(\['CCO'\]\)"),
        ({"CCO": "ethanol"}, r"got a dict, whose iteration gives its keys only; pass "
         r"list\(d.items\(\)\) for \(SMILES, name\) pairs"),
        (None, r"expected an iterable of molecules, got NoneType"),
    ],
)  # fmt: skip
def test_one_molecule_or_a_mapping_is_not_taken_for_many(sage, molecules, match):
    # Stop 31: assign_many("CCO") labelled methane, methane and water, and a
    # {smiles: name} dict lost its names, both without an error.
    hits, misses = sage.hits, sage.misses
    with pytest.raises(TypeError, match=match):
        sage.assign_many(molecules)
    assert (sage.hits, sage.misses) == (hits, misses)  # nothing labelled or counted
    with pytest.raises(TypeError, match=r"label_lines: expected an iterable of lines, got the str"):
        label_lines("CCO ethanol")


# -- stop 35 ------------------------------------------------------------------------------------


def test_n_jobs_minus_one_counts_the_cpus_this_process_may_use(monkeypatch):
    # Stop 35: -1 was os.cpu_count(), the machine's CPUs: a Slurm job given 3 CPUs of a
    # 128-core node started 128 workers. It is now the affinity mask's CPUs.
    import os

    from tying.chem import parallel

    if not hasattr(os, "sched_getaffinity"):
        pytest.skip("no CPU affinity mask on this platform")
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 5, 7})
    monkeypatch.setattr(os, "cpu_count", lambda: 128)
    assert parallel.usable_cpus() == 3
    assert check_n_jobs(-1) == 3
    assert check_n_jobs(64) == 64  # validated only; capped_n_jobs caps


def test_n_jobs_beyond_the_usable_cpus_is_capped_with_a_warning(sage, monkeypatch):
    # Stop 35: n_jobs=64 on 2 CPUs started 64 workers, each building its assigner and
    # taking turns on the 2 CPUs (n_jobs=16 took 1.7x as long as 2), with no word.
    from tying.chem import parallel

    monkeypatch.setattr(parallel, "usable_cpus", lambda: 2)
    assert parallel.capped_n_jobs(2) == 2 and parallel.capped_n_jobs(1) == 1
    with pytest.warns(UserWarning, match=r"n_jobs=64 is more than the CPUs this process may use "
                      r"\(2\); starting 2 worker processes instead .* Pass n_jobs=-1"):  # fmt: skip
        assert parallel.capped_n_jobs(64) == 2
    monkeypatch.setattr(parallel, "usable_cpus", lambda: 1)
    assert parallel.capped_n_jobs(2) == 2  # two workers are always allowed
    # Through assign_many: the warning points at the caller; the results do not change.
    molecules = drug_like_smiles(6)
    sage.clear_cache()
    serial = sage.assign_many(molecules)  # all cached: the call below starts no worker
    with pytest.warns(
        UserWarning, match=r"n_jobs=64 is more than the CPUs this process may use \(1\)"
    ) as caught:
        capped = sage.assign_many(molecules, n_jobs=64)
    assert caught[0].filename == __file__
    assert _ids(capped) == _ids(serial)
    with pytest.raises(ValueError, match="n_jobs must be a positive int or -1"):
        sage.assign_many(molecules, n_jobs=0)  # still refused before any capping


def test_label_lines_names_the_failing_lines_number():
    # Stop 35: the error named the line's text only; in a file of 1,000 lines (where the
    # same text may be written twice) the number is what finds it. Blanks and comments count.
    lines = ["# library", "CCO ethanol", "", "C1CC broken", "C1CC broken", "CC ethane"]
    with pytest.raises(SmilesError, match=r"^line 4 \('C1CC broken'\): cannot parse SMILES"):
        label_lines(lines)
    many = [f"{s} m{k}" for k, s in enumerate(drug_like_smiles(100, seed=3))]
    many[70] = "[CH3] methyl"
    with pytest.raises(SmilesError, match=r"^line 71 \('\[CH3\] methyl'\): .* radical"):
        label_lines(many)


@pytest.mark.parametrize("line", [b"CCO ethanol", None, 7])
def test_label_lines_refuses_a_line_that_is_not_text(line):
    # Stop 35: bytes (a file opened in binary) and None ended in an AttributeError or a
    # TypeError about str.startswith, naming no line.
    # Stop 62 (review): None (a table's empty cell, polars' null) is named as missing,
    # with advice that works; bytes and other objects are still told to decode.
    fix = "a missing value" if line is None else "decode"
    with pytest.raises(TypeError, match=rf"label_lines: line 2 is a .*expected str; {fix}"):
        label_lines(["CC ethane", line])


def test_label_lines_labels_the_sections_asked_for(sage):
    # Stop 35: label_lines had no sections=, so a Dask run could not label Constraints
    # (opt-in since stop 34) though assign_many could.
    from tying.chem import SECTIONS

    lines = ["CCO ethanol", "O water", "c1ccccc1O phenol", "OCC ethanol again"]
    sections = (*SECTIONS, "Constraints")
    records = label_lines(lines, sections=sections)
    expected = SmirksAssigner("openff-2.3.0", sections=sections).assign_many(
        [parse_smiles_line(line) for line in lines]
    )
    for record, a in zip(records, expected, strict=True):
        assert set(record["ids"]) == set(sections)
        assert record["not_assigned"] == list(a.not_assigned)
        assert "Constraints" not in record["not_assigned"]
        for s in sections:
            assert record["ids"][s] == {
                "-".join(map(str, k)): i for k, i in sorted(a.ids(s).items())
            }
    assert records[1]["ids"]["Constraints"] == {"0-1": "c-tip3p-H-O", "0-2": "c-tip3p-H-O",
                                                "1-2": "c-tip3p-H-O-H"}  # fmt: skip
    only = label_lines(["CCO ethanol"], sections=iter(["Bonds"]))  # read once, not used up
    assert list(only[0]["ids"]) == ["Bonds"] and len(only[0]["ids"]["Bonds"]) == 8
    plain = label_lines(["CCO ethanol"])  # the default five, as before
    assert "Constraints" in plain[0]["not_assigned"] and "Constraints" not in plain[0]["ids"]


@pytest.mark.parametrize(
    "sections, error, match",
    [
        ("Bonds", TypeError, r"sections must be a list of section names, got the string 'Bonds'"),
        ([1], TypeError, r"sections must be a list of section names \(str\), got int: 1 in \[1\]"),
        (["Bond"], ValueError, r"cannot assign sections \['Bond'\]; supported: Bonds"),
        ([], ValueError, r"sections is empty"),
    ],
)
def test_label_lines_refuses_bad_sections(sections, error, match):
    with pytest.raises(error, match=match):
        label_lines(["CCO ethanol"], sections=sections)


def test_label_lines_refuses_several_lines_read_as_one():
    # Stop 35: a classic-Mac ("\r") file split on "\n" gave one line; its first molecule
    # was labelled and the others became its name, lost without an error.
    text = "CCO ethanol\rCC ethane\rc1ccccc1 benzene\r"
    with pytest.raises(SmilesError, match=r"^line 1 \('CCO ethanol\\rCC ethane.*'\): one line "
                       r"holds a line break '\\r' at position 11, so it is several lines"):  # fmt: skip
        label_lines(text.split("\n"))
    with pytest.raises(SmilesError, match=r"^line 2 .* line break '\\u2028'"):
        label_lines(["CC ethane", "CCO ethanol\u2028CC ethane"])
    records = label_lines(text.splitlines())  # split as a text-mode file is: all three
    assert [r["name"] for r in records] == ["ethanol", "ethane", "benzene"]
    assert parse_smiles_line("CCO ethanol\r\n") == ("CCO", "ethanol")  # line ends stay fine
