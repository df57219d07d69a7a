"""C9 `smirks-typing`: SMIRKS patterns where the last match wins need far fewer parameters
than a force field built on atom types.

A typed force field needs one parameter per *tuple* of atom types that occurs
(a bond per type pair, an angle per triple, a torsion per quadruple), so its
tables multiply as chemistry is added. A SMIRNOFF force field assigns the same
terms through an ordered list of SMIRKS patterns, general first and specific
later, the last match winning: the number of parameters is the length of that
list, whatever the molecules.

The experiment assigns a real OpenFF force field (Sage, ``openff-2.3.0``) to the
shipped set of real molecules with :class:`tying.chem.SmirksAssigner` (checked
term by term against the OpenFF toolkit in ``tests/chem``), and counts, as
molecules are added in random orders, the distinct parameters used against the
distinct atom-type tuples a typed force field would need — atom types being
element + hybridisation + aromaticity + connectivity
(:mod:`tying.chem.typing_baseline`).
"""

from __future__ import annotations

import dataclasses
import logging

import numpy as np

from tying.experiments.registry import Result, Table, check_size, experiment
from tying.report.format import format_number

log = logging.getLogger(__name__)

SECTIONS = ("vdW", "Bonds", "Angles", "ProperTorsions", "ImproperTorsions")


@dataclasses.dataclass(frozen=True)
class Config:
    """What one run does; ``quick`` keeps the checks, on fewer molecules and orders."""

    force_field: str = "openff-2.3.0"  # Sage 2.3: the newest OpenFF release the package ships
    n_molecules: int | None = (
        None  # None: the whole shipped set; quick takes an evenly spread subset
    )
    n_orders: int = 10  # random orders of adding molecules; growth curves are their mean
    min_ratio: float = 3.0  # claim: typed tuples / SMIRKS parameters at the end, at least this


SIZES = {
    "quick": Config(n_molecules=150, n_orders=3),
    "report": Config(),
}


def _growth(per_molecule: list[dict[str, set]], order: np.ndarray) -> np.ndarray:
    """Distinct items after each added molecule, per section: shape (n_molecules, n_sections)."""
    seen = {s: set() for s in SECTIONS}
    out = np.zeros((len(order), len(SECTIONS)), dtype=np.int64)
    for step, i in enumerate(order):
        for j, s in enumerate(SECTIONS):
            seen[s] |= per_molecule[i][s]
            out[step, j] = len(seen[s])
    return out


@experiment("smirks-typing", requires=("rdkit", "openforcefields"))
def smirks_typing(size: str, seed: int) -> Result:
    check_size(size)
    cfg = SIZES[size]
    # The chem extra is imported here, so that the registry loads without it.
    from tying.chem import SmirksAssigner, load_molecule_set, molecule_from_smiles
    from tying.chem.typing_baseline import type_tuples

    molecules = load_molecule_set()
    if cfg.n_molecules is not None and cfg.n_molecules < len(molecules):
        picks = np.linspace(0, len(molecules) - 1, cfg.n_molecules).round().astype(int)
        molecules = [molecules[i] for i in picks]
    assigner = SmirksAssigner(cfg.force_field)
    smirks_used, typed_needed = [], []
    for smiles, name in molecules:
        a = assigner.assign(smiles, name=name)
        smirks_used.append({s: {p.id for p in a.terms[s].values()} for s in SECTIONS})
        typed_needed.append(type_tuples(molecule_from_smiles(smiles, name=name)))
    log.info("assigned %s to %d molecules", cfg.force_field, len(molecules))

    rng = np.random.default_rng(seed)
    orders = [rng.permutation(len(molecules)) for _ in range(cfg.n_orders)]
    smirks_curve = np.mean([_growth(smirks_used, o) for o in orders], axis=0)  # (N, S)
    typed_curve = np.mean([_growth(typed_needed, o) for o in orders], axis=0)  # (N, S)
    n = len(molecules)
    smirks_total, typed_total = smirks_curve.sum(axis=1), typed_curve.sum(axis=1)  # (N,)

    final_smirks = {s: int(smirks_curve[-1, j]) for j, s in enumerate(SECTIONS)}
    final_typed = {s: int(typed_curve[-1, j]) for j, s in enumerate(SECTIONS)}
    in_file = {s: len(assigner.force_field[s]) for s in SECTIONS}
    ratio = float(typed_total[-1] / smirks_total[-1])
    # Growth over the last quarter of molecules, as a share of the final count.
    q = max(1, n // 4)
    late_smirks = float((smirks_total[-1] - smirks_total[-q - 1]) / smirks_total[-1])
    late_typed = float((typed_total[-1] - typed_total[-q - 1]) / typed_total[-1])

    rows = [
        {
            "section": s,
            "SMIRKS parameters used": final_smirks[s],
            "SMIRKS parameters in file": in_file[s],
            "typed tuples needed": final_typed[s],
            "typed / SMIRKS": final_typed[s] / max(final_smirks[s], 1),
        }
        for s in SECTIONS
    ]
    rows.append(
        {
            "section": "total",
            "SMIRKS parameters used": int(smirks_total[-1]),
            "SMIRKS parameters in file": sum(in_file.values()),
            "typed tuples needed": int(typed_total[-1]),
            "typed / SMIRKS": ratio,
        }
    )
    checkpoints = sorted({max(1, round(n * f)) for f in (0.1, 0.25, 0.5, 0.75, 1.0)})
    growth_rows = [
        {
            "molecules": k,
            "SMIRKS parameters": float(smirks_total[k - 1]),
            "typed tuples": float(typed_total[k - 1]),
        }
        for k in checkpoints
    ]
    passed = ratio >= cfg.min_ratio and late_typed > late_smirks
    return Result(
        tables=[
            Table(f"Parameters needed for {n} molecules ({cfg.force_field})", rows),
            Table(f"Growth as molecules are added (mean of {cfg.n_orders} orders)", growth_rows),
        ],
        figures={
            "growth": _figure(
                smirks_curve, typed_curve, final_smirks, final_typed, sum(in_file.values())
            )
        },
        passed=passed,
        measured={
            "molecules": n,
            "smirks_parameters": int(smirks_total[-1]),
            "typed_tuples": int(typed_total[-1]),
            "typed_over_smirks": ratio,
            "last_quarter_growth_smirks": late_smirks,
            "last_quarter_growth_typed": late_typed,
            "atom_types": final_typed["vdW"],
        },
        key_figure=(
            f"{int(smirks_total[-1])} SMIRKS parameters vs {int(typed_total[-1])} type tuples "
            f"({format_number(ratio)}x) for {n} molecules"
        ),
        notes=(
            f"Passes when a typed force field needs at least {cfg.min_ratio:g}x as many "
            "parameters as the SMIRKS assignment, and its count still grows faster over the "
            "last quarter of molecules added. Assignments match the OpenFF toolkit's "
            "label_molecules term by term (tests/chem/test_against_openff.py)."
        ),
    )


def _figure(smirks_curve, typed_curve, final_smirks, final_typed, in_file_total):
    from matplotlib.figure import Figure

    fig = Figure(figsize=(10, 4), layout="constrained")
    ax1, ax2 = fig.subplots(1, 2)
    x = np.arange(1, smirks_curve.shape[0] + 1)
    ax1.plot(x, typed_curve.sum(axis=1), color="tab:red", label="atom-type tuples (typed FF)")
    ax1.plot(
        x, smirks_curve.sum(axis=1), color="tab:blue", label="SMIRKS parameters (last match wins)"
    )
    for j, s in enumerate(("Angles", "ProperTorsions")):
        k = SECTIONS.index(s)
        style = ("--", ":")[j]
        ax1.plot(x, typed_curve[:, k], style, color="tab:red", lw=1, label=f"typed: {s}")
        ax1.plot(x, smirks_curve[:, k], style, color="tab:blue", lw=1, label=f"SMIRKS: {s}")
    ax1.axhline(in_file_total, color="gray", ls=":", lw=1)
    ax1.annotate(
        f"every SMIRKS in the file ({in_file_total}): the ceiling",
        (x[-1], in_file_total),
        ha="right",
        va="bottom",
        fontsize=7,
        color="gray",
    )
    ax1.set_xlabel("molecules added")
    ax1.set_ylabel("distinct parameters needed")
    ax1.set_title("Growth as chemistry is added")
    ax1.legend(fontsize=7)
    idx = np.arange(len(SECTIONS))
    ax2.bar(idx - 0.2, [final_typed[s] for s in SECTIONS], 0.4, color="tab:red", label="typed")
    ax2.bar(idx + 0.2, [final_smirks[s] for s in SECTIONS], 0.4, color="tab:blue", label="SMIRKS")
    ax2.set_xticks(idx, ["vdW", "bonds", "angles", "propers", "impropers"])
    ax2.set_ylabel("parameters")
    ax2.set_title("Per term type, whole set")
    ax2.legend(fontsize=8)
    return fig
