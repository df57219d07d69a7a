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

    python -m benchmarks chem
"""

from __future__ import annotations

import time

from benchmarks.common import compare, write

FORCE_FIELD = "openff-2.3.0"


def main() -> None:
    from tying.chem import SmirksAssigner, load_molecule_set, offxml
    from tying.chem.validate import compare_set, openff_force_field

    molecules = load_molecule_set()
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
        offxml._load.cache_clear()
        return SmirksAssigner(FORCE_FIELD).assign_many(molecules)

    def theirs_first():
        theirs(openff_force_field(FORCE_FIELD))

    t_ours, t_theirs = compare(ours_first, theirs_first, repeat=2, warmup=0)
    rows.append(
        _row("first use: load force field + label the set", len(molecules), t_ours, t_theirs)
    )

    ours_warm()
    t_ours = min(_timed(ours_warm) for _ in range(5))
    rows.append(
        _row("warm: the same set again (our cache kept)", len(molecules), t_ours, t_theirs_cold)
    )
    write("chem", rows)


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
    main()
