"""tying.chem vs the OpenFF toolkit's ``ForceField.label_molecules`` on the shipped molecule set.

Both sides start from SMILES and end with a parameter id for every bond, angle,
proper and improper torsion and atom of every molecule (the toolkit also labels
its constraint and charge sections, which add a few dozen patterns to its side).
Before timing, every term of every molecule is compared: the figures are only
worth reporting with 0 mismatches.

Rows:
- ``cold``: our per-molecule cache emptied before each pass (compiled SMIRKS and
  the pre-filter's signature tables kept, as they belong to the force field);
  the toolkit as it runs (its own RDKit-molecule cache is warm after the first
  pass). Wall time, and CPU time of the process (steadier on a shared machine).
- ``first use``: both sides load the force field, then label the set once.
- ``warm``: the same set again with our cache kept (what repeated molecules
  cost), against the toolkit's cold figure (it has no such cache).

Drug-like rows (issue 19): ``N`` distinct drug-like SMILES enumerated from the
shipped set's scaffolds and side chains (:func:`tying.chem.generate.drug_like_smiles`,
deterministic). First the labels of a prefix are compared with the toolkit's;
then a prefix is labelled cold by both sides (ms/molecule, wall and CPU); then all
``N`` are labelled cold by ``assign_many`` on 1 and on 2 processes (molecules per
second, worker start-up included).

The cold drug-like pairs run **each side in its own fresh process**
(:func:`_isolated_cold_pairs`): the same molecules, each side timing its own pass
in its own CPU time, five pairs with the first side alternating. In one process,
whichever side runs second labels in a heap the other has shaped: our cold pass
read 1.08-1.23x slower after the toolkit's rows than alone (measured 2026-12-01;
glibc malloc's free lists after the toolkit's cached RDKit molecules, see
:func:`_isolated_cold_pairs`). So neither side pays for the other's residue; ours
measured in this process after the toolkit is printed next to it, marked ``info``.

Two more drug-like sets are compared and timed cold the same way (isolated): another sample
of the generated library (seed 1) and the drug-like molecules of the toolkit's own
``MiniDrugBank.sdf`` (:func:`tying.chem.validate.toolkit_drug_like_smiles`).
Throughput is measured on the first 1,000 molecules and on all ``N``, and the
memory one process holds per result (packed, and as the dicts it held before).

A further row times the fast path (SMILES without written hydrogens) against the
reference path it replaced, interleaved on the same molecules; the last lines
printed are the issue's goal rows.

    python -m benchmarks chem                                   # N = 100,000 (about 15 min)
    TYING_BENCH_CHEM_N=4000 python -m benchmarks chem           # the same rows, smaller N
    python -m benchmarks.bench_chem --n 2000 --anchor 100 --quick   # < 1 minute
    python -m benchmarks.bench_chem --cold               # the three sets' cold rows only (~8 min)
    python -m benchmarks.bench_chem --cold --no-toolkit  # the same, ours only (~1 min)
    python -m benchmarks.bench_chem --cold --no-toolkit --baseline ../old-checkout  # before/after
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

from benchmarks.common import SMOKE, compare, pairs, smoke, write

FORCE_FIELD = "openff-2.3.0"


def main(n: int | None = None, anchor: int | None = None, quick: bool | None = None) -> None:
    """All rows; ``n`` drug-like molecules, ``anchor`` of them also labelled by the toolkit.

    Unset arguments come from ``TYING_BENCH_CHEM_N`` (default 100,000),
    ``TYING_BENCH_CHEM_ANCHOR`` (1000) and ``TYING_BENCH_CHEM_QUICK`` (0), so that
    ``python -m benchmarks chem`` can be sized without editing anything.
    """
    n_default, anchor_default = smoke(100_000, 60), smoke(1000, 12)
    n = int(os.environ.get("TYING_BENCH_CHEM_N", n_default)) if n is None else n
    anchor = (
        int(os.environ.get("TYING_BENCH_CHEM_ANCHOR", anchor_default)) if anchor is None else anchor
    )
    if quick is None:
        quick = os.environ.get("TYING_BENCH_CHEM_QUICK", "0") not in ("", "0")
    rows = [] if quick else _shipped_set_rows()
    rows += _drug_like_rows(n, anchor)
    write("chem", rows)
    _print_goals(rows)


def _print_goals(rows: list[dict]) -> None:
    """The issue's goal rows, last, so that a long run ends with what to read."""
    by_case = {r["case"]: r for r in rows}
    agree = by_case["drug-like: agreement with label_molecules"]
    cpu = by_case["drug-like cold, 1 process (CPU time)"]
    wall = by_case["drug-like cold, 1 process (wall time)"]
    one = by_case["drug-like throughput, 1 process"]
    two = by_case["drug-like throughput, 2 processes"]
    small = [
        r for r in rows if r["case"].startswith("drug-like throughput") and "first" in r["case"]
    ]
    over = by_case["drug-like: CPU of 2 workers (+ collecting parent) vs 1 process"]
    print("\n== chem goals (issue 19)")
    print(
        f"  mismatches vs label_molecules: {agree['mismatches']} in {agree['terms_compared']} "
        f"terms of {agree['molecules']} drug-like molecules (goal: 0)"
    )
    print(
        f"  cold labelling: {cpu['ours_ms_per_molecule']:.3f} ms/molecule CPU "
        f"(runs {min(cpu['ours_ms_all_runs']):.3f}-{max(cpu['ours_ms_all_runs']):.3f}), "
        f"{wall['ours_ms_per_molecule']:.3f} ms wall (goal: <= 1.0); "
        f"{cpu['speedup']:.1f}x the toolkit (CPU; pairs "
        f"{min(cpu['spread_of_ratio']):.1f}-{max(cpu['spread_of_ratio']):.1f}x)"
    )
    batch = by_case["drug-like: assign_many in batches vs assign one by one (CPU)"]
    print(
        f"  batches vs one by one, {batch['molecules']} molecules, CPU: "
        f"{batch['batched_ms_per_molecule']:.3f} vs {batch['one_by_one_ms_per_molecule']:.3f} "
        f"ms/molecule, {batch['speedup']:.2f}x "
        f"(runs {min(batch['spread_of_ratio']):.2f}-{max(batch['spread_of_ratio']):.2f}x)"
    )
    for r in rows:
        if ": cold, 1 process (CPU time)" in r["case"]:
            print(
                f"  {r['case'].split(':')[0]}, {r['molecules']} molecules: "
                f"{r['ours_ms_per_molecule']:.3f} ms/molecule CPU "
                f"(runs {min(r['ours_ms_all_runs']):.3f}-{max(r['ours_ms_all_runs']):.3f}; "
                f"goal: <= 1.0), {r['speedup']:.1f}x the toolkit; {r['mismatches']} mismatches "
                f"in {r['terms_compared']} terms"
            )
    _print_decided(rows)
    for r in rows:
        if "in the benchmark process after the toolkit" in r["case"]:
            print(
                f"  (info) {r['case'].split(':')[0]}, ours in this process after the toolkit: "
                f"{r['ours_ms_per_molecule']:.3f} ms/molecule CPU, "
                f"{r['vs_isolated']:.2f}x the isolated figure"
            )
    kept = by_case.get("drug-like throughput, 2 processes, workers kept")
    for r in [*small, *([kept] if kept else [])]:
        scaling = f", {r['scaling_vs_1']:.2f}x 1 process" if r["spread_of_ratio"] else ""
        print(
            f"  {r['case']}: {r['molecules_per_s']:.0f} molecules/s "
            f"({r['ms_per_molecule']:.3f} ms){scaling}"
        )
    memory = by_case["drug-like: memory held per result, 1 process (results + cache)"]
    print(
        f"  held per result, 1 process: {memory['packed_kb_per_molecule']:.1f} KB packed vs "
        f"{memory['dicts_kb_per_molecule']:.1f} KB as dicts (before): {memory['ratio']:.1f}x less"
    )
    print(
        f"  {one['molecules']} molecules: {one['molecules_per_s']:.0f} molecules/s on 1 process, "
        f"{two['molecules_per_s']:.0f} on 2: {two['scaling_vs_1']:.2f}x "
        f"(all pairs {min(two['spread_of_ratio']):.2f}-{max(two['spread_of_ratio']):.2f}x; goal: >= 1.8)"
    )
    print(
        f"  CPU overhead of spreading: {100 * over['overhead']:+.1f}% "
        f"(bound on 2 idle cores: {over['scaling_if_2_idle_cores']:.2f}x)"
    )


def _print_decided(rows: list[dict]) -> None:
    for r in rows:
        if "decided chain patterns" in r["case"]:
            print(
                f"  {r['case'].split(':')[0]}: decided {r['decided_ms_per_molecule']:.3f} vs "
                f"searched {r['searched_ms_per_molecule']:.3f} ms/molecule CPU, "
                f"{r['speedup']:.2f}x (pairs {min(r['spread_of_ratio']):.2f}-"
                f"{max(r['spread_of_ratio']):.2f}x)"
            )


def cold(anchor: int = 1000, toolkit: bool = True, baseline: str | None = None) -> list[dict]:
    """Only the cold rows of the three drug-like sets (the issue's ms goal): minutes, not 15.

    Per set: ours (and, with ``toolkit``, the toolkit's) each in its own fresh process,
    5 passes alternating as in :func:`main`; then decided vs searched, interleaved in this
    process. Writes ``bench-results/chem-cold.json`` (``<!-- bench: chem-cold -->``).

    With ``baseline`` (another checkout of this repository, e.g. the code before a
    change), a third fresh process labels the same molecules with ``tying`` imported
    from ``baseline/src``, its passes interleaved with ours in the same minutes, so
    that the machine's speed drift does not fake a gain: each row then carries the
    baseline's ms/molecule and the ratio baseline / ours per pass pair.
    """
    from tying.chem import SmirksAssigner
    from tying.chem.generate import drug_like_smiles
    from tying.chem.validate import toolkit_drug_like_smiles

    sets = {
        "generated, seed 0": drug_like_smiles(anchor),
        "generated, seed 1": drug_like_smiles(anchor, seed=1),
        "MiniDrugBank (toolkit)": _few([s for s, _ in toolkit_drug_like_smiles()]),
    }
    assigner = SmirksAssigner(FORCE_FIELD)
    rows = []
    for label, smiles in sets.items():
        pair = _isolated_cold_pairs(smiles, repeat=smoke(5, 1), toolkit=toolkit, baseline=baseline)
        row = _row(
            f"{label}: cold, own process (CPU time)",
            len(smiles),
            pair["ours_CPU"],
            pair["theirs_CPU"],
        )
        row.update(ours_ms_all_runs=pair["ours_CPU_ms"], spread_of_ratio=pair["ratios_CPU"])
        if baseline is not None:
            row.update(
                baseline=baseline,
                baseline_ms_per_molecule=round(1e3 * pair["baseline_CPU"] / len(smiles), 4),
                baseline_ms_all_runs=pair["baseline_CPU_ms"],
                vs_baseline=pair["vs_baseline_CPU"],
            )
        rows += [row, _decided_row(label, assigner, smiles)]
    write("chem-cold", rows)
    print(f"\n== chem cold labelling (issue 19; goal <= 1.0 ms/molecule), load {_load()}")
    for r in rows:
        if "own process" in r["case"]:
            vs = f", {r['speedup']:.1f}x the toolkit" if toolkit else ""
            print(
                f"  {r['case'].split(':')[0]} ({r['molecules']}): "
                f"{r['ours_ms_per_molecule']:.3f} ms/molecule CPU (runs "
                f"{min(r['ours_ms_all_runs']):.3f}-{max(r['ours_ms_all_runs']):.3f}){vs}"
            )
            if "baseline" in r:
                print(
                    f"    baseline {r['baseline']}: {r['baseline_ms_per_molecule']:.3f} ms/molecule "
                    f"(runs {min(r['baseline_ms_all_runs']):.3f}-"
                    f"{max(r['baseline_ms_all_runs']):.3f}); ours is "
                    f"{1 - 1 / statistics.median(r['vs_baseline']):.0%} less CPU, pairs "
                    f"{min(r['vs_baseline']):.2f}-{max(r['vs_baseline']):.2f}x"
                )
    _print_decided(rows)
    return rows


def _load() -> str:
    try:
        return "/".join(f"{x:.1f}" for x in os.getloadavg())
    except OSError:  # pragma: no cover - not on every platform
        return "?"


def _drug_like_rows(n: int, anchor: int) -> list[dict]:

    from tying.chem import SmirksAssigner
    from tying.chem.generate import drug_like_smiles
    from tying.chem.validate import compare_set

    t0 = time.perf_counter()
    smiles = drug_like_smiles(n)
    generated_s = time.perf_counter() - t0
    anchor = min(anchor, n)
    prefix = smiles[:anchor]
    checked = prefix  # every molecule the toolkit is timed on is also compared
    compared, mismatches = compare_set([(s, s) for s in checked], FORCE_FIELD)
    rows: list[dict] = [
        {
            "case": "drug-like: agreement with label_molecules",
            "molecules": len(checked),
            "terms_compared": compared,
            "mismatches": len(mismatches),
            "generated": n,
            "generate_s": generated_s,
        }
    ]
    assigner = SmirksAssigner(FORCE_FIELD)
    cold = _isolated_cold_pairs(prefix, repeat=smoke(5, 1))
    for label in ("wall", "CPU"):
        row = _row(
            f"drug-like cold, 1 process ({label} time)",
            anchor,
            cold[f"ours_{label}"],
            cold[f"theirs_{label}"],
        )
        row.update(
            ours_ms_all_runs=cold[f"ours_{label}_ms"],
            spread_of_ratio=cold[f"ratios_{label}"],
            isolation="each side in its own fresh process, order alternated",
        )
        rows.append(row)
    rows.append(_in_process_row("drug-like", prefix, assigner, cold["ours_CPU"]))
    rows.append(_decided_row("drug-like", assigner, prefix))
    rows.append(_paths_row(assigner, prefix))
    rows.append(_batch_row(assigner, smiles[:2000]))
    # Two more drug-like sets, each compared term by term and timed cold against the
    # toolkit the same way: another sample of the generated library, and the drug-like
    # molecules of the toolkit's own MiniDrugBank.sdf (no generator of ours made them).
    from tying.chem.validate import toolkit_drug_like_smiles

    others = {
        "generated, seed 1": drug_like_smiles(anchor, seed=1),
        "MiniDrugBank (toolkit)": _few([s for s, _ in toolkit_drug_like_smiles()]),
    }
    for label, other in others.items():
        rows += _other_set_rows(label, other, assigner)

    rows.append(_memory_row(assigner, smiles[:2000]))
    # Throughput on the first 1,000 molecules and on all n: 2 processes with fresh
    # workers (released before the call: their start-up is part of the cost), and with
    # the workers kept from the call before (a second call with the same force field).
    from tying.chem import parallel

    sizes = sorted({min(1000, n), n})
    kinds = (1, 2, "2 kept")
    times: dict[tuple[int, object], list[float]] = {(k, j): [] for k in sizes for j in kinds}
    for _ in range(smoke(2, 1)):
        for size in sizes:
            for jobs in kinds:
                assigner.clear_cache()
                if jobs == 2:
                    parallel.release_workers()
                t0 = time.perf_counter()
                assigner.assign_many(smiles[:size], n_jobs=2 if jobs == "2 kept" else jobs)
                times[size, jobs].append(time.perf_counter() - t0)
    parallel.release_workers()
    for size in sizes:
        for jobs in kinds:
            best, one = min(times[size, jobs]), min(times[size, 1])
            label = {1: "1 process", 2: "2 processes", "2 kept": "2 processes, workers kept"}
            row = {
                "case": f"drug-like throughput, {label[jobs]}"
                + ("" if size == n else f", first {size:,}"),
                "molecules": size,
                "s": best,
                "s_all_runs": [round(t, 2) for t in times[size, jobs]],
                "molecules_per_s": size / best,
                "ms_per_molecule": 1e3 * best / size,
                "scaling_vs_1": one / best,
                "spread_of_ratio": [
                    round(a / b, 2) for a in times[size, 1] for b in times[size, jobs]
                ]
                if jobs != 1
                else None,
            }
            rows.append(row)
    rows.append(_worker_cpu_row(assigner, smiles))
    return rows


def _memory_row(assigner, smiles: list[str]) -> dict:
    """What one process holds per labelled molecule (results and cache), packed or as dicts.

    tracemalloc over the same molecules, labelled by ``_assign_batch`` as ``assign_many``
    does, with (the default) and without packing (how results were held before).
    """
    import gc
    import tracemalloc

    from tying.chem import SmirksAssigner

    items = [(s, None) for s in smiles]
    held = {}
    for pack in (True, False):
        gc.collect()
        tracemalloc.start()
        fresh = SmirksAssigner(assigner.force_field)
        kept = [fresh._assign_batch(items[k : k + 64], pack=pack) for k in range(0, len(items), 64)]
        gc.collect()
        held[pack] = tracemalloc.get_traced_memory()[0]
        tracemalloc.stop()
        del kept, fresh
    return {
        "case": "drug-like: memory held per result, 1 process (results + cache)",
        "molecules": len(smiles),
        "packed_kb_per_molecule": held[True] / 1e3 / len(smiles),
        "dicts_kb_per_molecule": held[False] / 1e3 / len(smiles),
        "ratio": held[False] / held[True],
    }


def _other_set_rows(label: str, smiles: list[str], assigner) -> list[dict]:
    """Agreement with label_molecules and cold CPU time (interleaved) on one more set."""

    from tying.chem.validate import compare_set

    compared, mismatches = compare_set([(s, s) for s in smiles], FORCE_FIELD)

    cold = _isolated_cold_pairs(smiles, repeat=smoke(5, 1))
    row = _row(
        f"{label}: cold, 1 process (CPU time)", len(smiles), cold["ours_CPU"], cold["theirs_CPU"]
    )
    row.update(
        terms_compared=compared,
        mismatches=len(mismatches),
        ours_ms_all_runs=cold["ours_CPU_ms"],
        spread_of_ratio=cold["ratios_CPU"],
        isolation="each side in its own fresh process, order alternated",
    )
    return [
        row,
        _in_process_row(label, smiles, assigner, cold["ours_CPU"]),
        _decided_row(label, assigner, smiles),
    ]


def _in_process_row(label: str, smiles: list[str], assigner, isolated_s: float) -> dict:
    """Our cold CPU time in this benchmark process, after the toolkit's rows (information).

    Not a goal row: what a process that has run the toolkit (or holds any large object
    graph) reads, next to the isolated figure of the same molecules.
    """

    def ours():
        assigner.clear_cache()
        assigner.assign_many(smiles)

    ours()
    runs = []
    for _ in range(smoke(5, 1)):
        t0 = time.process_time()
        ours()
        runs.append(time.process_time() - t0)
    t = statistics.median(runs)
    return {
        "case": f"{label}: cold, ours in the benchmark process after the toolkit (CPU, info)",
        "molecules": len(smiles),
        "ours_ms_per_molecule": 1e3 * t / len(smiles),
        "ours_ms_all_runs": [round(1e3 * r / len(smiles), 3) for r in runs],
        "vs_isolated": t / isolated_s,
    }


def _isolated_cold_pairs(
    smiles: list[str], *, repeat: int, toolkit: bool = True, baseline: str | None = None
) -> dict:
    """Cold labelling of ``smiles``, ours and the toolkit's, each in its own fresh process.

    Two spawned processes, one per side, each builds its labeller and labels the set
    once (the toolkit's molecule cache is warm after that pass, as in its normal use;
    ours starts each pass with its per-molecule cache emptied). Then ``repeat`` pairs:
    this process asks one side for a pass, then the other, and the first side
    alternates from pair to pair so that drift favours neither. Each side measures
    its pass in its own CPU time (``time.process_time``) and wall time.

    Why separate processes: in one process, whichever side runs second labels in a
    heap the other has shaped. Measured 2026-12-01 (1 thread, load 1.4-2): our cold
    pass read 1.08-1.23x slower after the toolkit's rows than in its own process. Two
    causes were found. Python's cyclic garbage collector walked the toolkit's objects
    during our batches: ours, fixed (``tying.chem.assign.gc_paused``). And glibc's
    malloc, once many RDKit molecules have been made and some kept (the toolkit
    caches its molecules), spends longer finding free blocks for RDKit's own
    allocations: ``_int_malloc`` went from 3.6 to 9.2 % of the samples. Keeping 400
    of 4,000 RDKit molecules, without the toolkit, slowed the same pass from 0.85 to
    1.01 ms/molecule; keeping 150,000 Python objects instead, 3 %; the same pass in
    a helper thread (its own malloc arena) read 0.85-0.89 where the main thread read
    1.10. That second cause is the process's C heap, not our code: neither side
    should pay for the other's.
    """
    import multiprocessing

    context = multiprocessing.get_context("spawn")
    sides, conns = {}, {}
    names = ("ours", "theirs") if toolkit else ("ours",)
    if baseline is not None:
        names += ("baseline",)
    for side in names:
        parent, child = context.Pipe()
        process = context.Process(
            target=_side_worker, args=(child, side, smiles, baseline), daemon=True
        )
        process.start()
        child.close()
        sides[side], conns[side] = process, parent
    try:
        for conn in conns.values():
            if conn.recv() != "ready":
                raise RuntimeError("a cold-labelling side failed to start")
        times: dict[str, list[tuple[float, float]]] = {side: [] for side in names}
        for r in range(repeat):
            order = names if r % 2 == 0 else names[::-1]
            for side in order:
                conns[side].send("run")
                times[side].append(conns[side].recv())
        for conn in conns.values():
            conn.send("stop")
    finally:
        for process in sides.values():
            process.join(60)
            if process.is_alive():
                process.terminate()
    n = len(smiles)
    out: dict = {}
    for k, label in ((0, "CPU"), (1, "wall")):
        ours = [t[k] for t in times["ours"]]
        theirs = [t[k] for t in times["theirs"]] if toolkit else [float("nan")] * len(ours)
        out[f"ours_{label}"] = statistics.median(ours)
        out[f"theirs_{label}"] = statistics.median(theirs)
        out[f"ours_{label}_ms"] = [round(1e3 * t / n, 3) for t in ours]
        out[f"ratios_{label}"] = sorted(round(b / a, 2) for a, b in zip(ours, theirs, strict=True))
        if baseline is not None:
            base = [t[k] for t in times["baseline"]]
            out[f"baseline_{label}"] = statistics.median(base)
            out[f"baseline_{label}_ms"] = [round(1e3 * t / n, 3) for t in base]
            out[f"vs_baseline_{label}"] = sorted(
                round(b / a, 3) for a, b in zip(ours, base, strict=True)
            )
    return out


def _side_worker(conn, side: str, smiles: list[str], baseline: str | None = None) -> None:
    """One side of :func:`_isolated_cold_pairs`: label ``smiles`` each time it is asked."""
    if side == "baseline":  # tying from the other checkout: imported here first
        import pathlib
        import sys

        src = pathlib.Path(baseline, "src").resolve()
        if "tying" in sys.modules:
            raise RuntimeError("baseline side: tying was imported before its path was set")
        sys.path.insert(0, str(src))
        import tying

        if not pathlib.Path(tying.__file__).resolve().is_relative_to(src):
            raise RuntimeError(f"baseline side imported {tying.__file__}, not from {src}")
        side = "ours"
    if side == "ours":
        from tying.chem import SmirksAssigner

        assigner = SmirksAssigner(FORCE_FIELD)

        def run():
            assigner.clear_cache()
            assigner.assign_many(smiles)

    else:
        from openff.toolkit import Molecule

        from tying.chem.validate import openff_force_field

        ff = openff_force_field(FORCE_FIELD)

        def run():
            for s in smiles:
                ff.label_molecules(
                    Molecule.from_smiles(s, allow_undefined_stereo=True).to_topology()
                )

    run()  # warm-up: imports, compiled patterns, the toolkit's caches
    conn.send("ready")
    while conn.recv() == "run":
        t0, w0 = time.process_time(), time.perf_counter()
        run()
        conn.send((time.process_time() - t0, time.perf_counter() - w0))


def _batch_row(assigner, smiles: list[str]) -> dict:
    """assign_many (stage by stage, 64 molecules at a time) against assign one by one (CPU).

    Both cold, same molecules, interleaved; one by one is what assign_many did before
    it labelled in batches.
    """

    def batched():
        assigner.clear_cache()
        assigner.assign_many(smiles)

    def one_by_one():
        assigner.clear_cache()
        for s in smiles:
            assigner.assign(s)

    t_batch, t_one, ratios = pairs(batched, one_by_one, repeat=5, warmup=0, clock=time.process_time)
    return {
        "case": "drug-like: assign_many in batches vs assign one by one (CPU)",
        "molecules": len(smiles),
        "batched_ms_per_molecule": 1e3 * t_batch / len(smiles),
        "one_by_one_ms_per_molecule": 1e3 * t_one / len(smiles),
        "speedup": t_one / t_batch,
        "spread_of_ratio": [round(r, 3) for r in sorted(ratios)],
    }


def _paths_row(assigner, smiles: list[str]) -> dict:
    """The fast path against the reference path it replaced, same molecules, interleaved (CPU)."""
    from tying.chem.molecules import canonical_order, parse_smiles

    def run(fast: bool):
        for s in smiles:
            mol, n_written = parse_smiles(s)
            canonical, _ = canonical_order(mol)
            if fast:
                assigner._assign_scanned(mol, canonical, s, n_written)
            else:
                assigner._assign_reference(mol, canonical, s)

    t_fast, t_ref = compare(
        lambda: run(True), lambda: run(False), repeat=5, warmup=1, clock=time.process_time
    )
    return {
        "case": "drug-like: fast path vs the reference path (CPU, parse included)",
        "molecules": len(smiles),
        "fast_ms_per_molecule": 1e3 * t_fast / len(smiles),
        "reference_ms_per_molecule": 1e3 * t_ref / len(smiles),
        "speedup": t_ref / t_fast,
    }


def _decided_row(label: str, assigner, smiles: list[str]) -> dict:
    """Cold ``assign_many`` with chain patterns decided (the default) vs every candidate
    searched by RDKit (the path before ``tying.chem.chain_table``), interleaved, CPU.

    Both sides run in this process on the same molecules, alternating pass by pass, so
    the machine's speed of the moment and the process's heap hit both alike: the ratio
    is the before/after figure of that change.
    """

    def run(tabled: bool):
        assigner._tabled = tabled
        assigner.clear_cache()
        assigner.assign_many(smiles)

    try:
        t_new, t_old, ratios = pairs(
            lambda: run(True), lambda: run(False), repeat=5, warmup=1, clock=time.process_time
        )
    finally:
        assigner._tabled = True
    return {
        "case": f"{label}: decided chain patterns vs searching every candidate (CPU, cold)",
        "molecules": len(smiles),
        "decided_ms_per_molecule": 1e3 * t_new / len(smiles),
        "searched_ms_per_molecule": 1e3 * t_old / len(smiles),
        "speedup": t_old / t_new,
        "spread_of_ratio": [round(r, 3) for r in sorted(ratios)],
    }


def _worker_cpu_row(assigner, smiles: list[str]) -> dict:
    """CPU seconds the 2 workers spend vs one process on the same molecules.

    On a machine shared with other jobs, wall-clock scaling says more about the
    neighbours than about us; the CPU the workers burn shows the overhead that
    spreading adds (start-up, pickling) whatever the load.
    """
    import concurrent.futures as cf

    from tying.chem import parallel

    assigner.clear_cache()
    t0 = time.process_time()
    assigner.assign_many(smiles)
    serial_cpu = time.process_time() - t0
    items = [(i, s, None) for i, s in enumerate(smiles)]
    size = parallel.default_chunksize(len(items), 2)  # as assign_many chunks for 2 processes
    chunks = [items[k : k + size] for k in range(0, len(items), size)]
    config = parallel.worker_config(assigner)
    ff = assigner.force_field
    parameters = assigner._parameters  # as assign_many decodes
    t0, parent0 = time.perf_counter(), time.process_time()
    with cf.ProcessPoolExecutor(
        2, mp_context=parallel._context(), initializer=_timed_init, initargs=config
    ) as pool:
        spent = []
        for future in [pool.submit(_timed_chunk, c) for c in chunks]:
            cpu, packed = future.result()
            spent.append(cpu)
            # what assign_many's parent does with each chunk
            parallel._decode(packed, parameters, ff.name, assigner.not_assigned)
    wall = time.perf_counter() - t0
    parent_cpu = time.process_time() - parent0
    worker_cpu = sum(spent)
    return {
        "case": "drug-like: CPU of 2 workers (+ collecting parent) vs 1 process",
        "molecules": len(smiles),
        "serial_cpu_s": serial_cpu,
        "workers_cpu_s": worker_cpu,
        "parent_cpu_s": parent_cpu,
        "overhead": (worker_cpu + parent_cpu) / serial_cpu - 1,
        "scaling_if_2_idle_cores": 2 * serial_cpu / (worker_cpu + parent_cpu),
        "wall_s_under_current_load": wall,
    }


_INIT_CPU: list[float] = []


def _timed_init(*config) -> None:
    from tying.chem import parallel

    t0 = time.process_time()
    parallel._init_worker(*config)
    _INIT_CPU.append(time.process_time() - t0)


def _timed_chunk(chunk) -> float:
    from tying.chem import parallel

    t0 = time.process_time()
    packed = parallel._label_chunk(chunk)
    start_up = _INIT_CPU.pop() if _INIT_CPU else 0.0  # counted once, with a worker's first chunk
    return time.process_time() - t0 + start_up, packed


def _shipped_set_rows() -> list[dict]:
    from tying.chem import SmirksAssigner, load_molecule_set, offxml
    from tying.chem.validate import compare_set, openff_force_field

    molecules = _few(load_molecule_set())
    compared, mismatches = compare_set(molecules, FORCE_FIELD)
    rows = [
        {
            "case": "agreement with label_molecules",
            "molecules": len(molecules),
            "terms_compared": compared,
            "mismatches": len(mismatches),
        }
    ]

    from openff.toolkit import Molecule

    theirs_ff = openff_force_field(FORCE_FIELD)
    assigner = SmirksAssigner(FORCE_FIELD)

    def ours_cold():
        assigner.clear_cache()
        return assigner.assign_many(molecules)

    def ours_warm():
        return assigner.assign_many(molecules)

    def theirs(ff=theirs_ff):
        for smiles, _ in molecules:
            mol = Molecule.from_smiles(smiles, allow_undefined_stereo=True)
            ff.label_molecules(mol.to_topology())

    t_ours, t_theirs = compare(ours_cold, theirs, repeat=3, warmup=1)
    rows.append(_row("cold: label the set (SMILES -> ids)", len(molecules), t_ours, t_theirs))
    t_theirs_cold = t_theirs

    # The machine may be shared: CPU time of this process is the steadier figure.
    c_ours, c_theirs = compare(ours_cold, theirs, repeat=3, warmup=0, clock=time.process_time)
    rows.append(_row("cold, CPU time", len(molecules), c_ours, c_theirs))

    def ours_first():
        offxml._LOADED.clear()  # read and parse the file again
        return SmirksAssigner(FORCE_FIELD).assign_many(molecules)

    def theirs_first():
        theirs(openff_force_field(FORCE_FIELD))

    t_ours, t_theirs = compare(ours_first, theirs_first, repeat=2, warmup=0)
    rows.append(
        _row("first use: load force field + label the set", len(molecules), t_ours, t_theirs)
    )

    ours_warm()
    t_ours = min(_timed(ours_warm) for _ in range(smoke(5, 1)))
    rows.append(
        _row("warm: the same set again (our cache kept)", len(molecules), t_ours, t_theirs_cold)
    )
    return rows


def _few(molecules: list) -> list:
    """All of ``molecules``, or a dozen under ``TYING_BENCH_SMOKE=1`` (the run is then a check)."""
    return molecules[:12] if SMOKE else molecules


def _timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def _row(case: str, n: int, t_ours: float, t_theirs: float) -> dict:
    return {
        "case": case,
        "molecules": n,
        "ours_s": t_ours,
        "label_molecules_s": t_theirs,
        "ours_ms_per_molecule": 1e3 * t_ours / n,
        "speedup": t_theirs / t_ours,
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=None, help="drug-like molecules (100,000)")
    parser.add_argument("--anchor", type=int, default=None, help="of them, labelled by OpenFF too")
    parser.add_argument("--quick", action="store_true", default=None, help="no shipped-set rows")
    parser.add_argument(
        "--cold", action="store_true", help="only the cold rows of the three drug-like sets"
    )
    parser.add_argument(
        "--no-toolkit", action="store_true", help="with --cold: ours only (about 1 minute)"
    )
    parser.add_argument(
        "--baseline",
        metavar="CHECKOUT",
        help="with --cold: also time another checkout's code (e.g. before a change), "
        "interleaved with ours in fresh processes",
    )
    args = parser.parse_args()
    if args.cold:
        cold(args.anchor or 1000, toolkit=not args.no_toolkit, baseline=args.baseline)
    else:
        main(args.n, args.anchor, args.quick)
