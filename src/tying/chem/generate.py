"""Drug-like molecules for benchmarks, enumerated from the shipped set's scaffolds and substituents.

Every molecule of :func:`~tying.chem.molecules.load_molecule_set` that has a ring
is split into its Bemis-Murcko scaffold and its side chains (RDKit's
``MurckoScaffold`` and ``ReplaceCore``). New molecules put one or two of those
side chains on hydrogen-bearing atoms of a scaffold, visited in a fixed
pseudo-random order, keeping those of drug-like size that are not repeats. The
result depends only on ``n`` and ``seed``: the same list on every machine, so a
benchmark of 100,000 molecules can be re-run and compared.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator

import numpy as np

from tying.chem._rdkit import Chem, quiet
from tying.chem.molecules import load_molecule_set

# Drug-like size: small fragments say little about a labeller's speed, and very
# large molecules are not what "drug-like" means (Lipinski: MW <= 500, ~35 heavy atoms).
MIN_HEAVY, MAX_HEAVY = 12, 36
# Draws in a row without a new molecule after which the building blocks count as used
# up: the enumeration itself never ends, and 100,000 molecules use a few percent of them.
_MAX_STALE_DRAWS = 50_000


@functools.lru_cache(maxsize=1)
def building_blocks() -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The shipped set's ring scaffolds and single-attachment side chains (SMILES, sorted).

    Side chains are written with their attachment atom first and up to 7 heavy atoms.

    Example:
        >>> scaffolds, substituents = building_blocks()
        >>> "c1ccccc1" in scaffolds, "C(=O)O" in substituents, len(scaffolds) > 100
        (True, True, True)
    """
    from rdkit.Chem.Scaffolds import MurckoScaffold

    scaffolds, substituents = set(), set()
    for smiles, _ in load_molecule_set():
        mol = Chem.MolFromSmiles(smiles)
        if mol is None or not mol.GetRingInfo().NumRings():
            continue
        core = MurckoScaffold.GetScaffoldForMol(mol)
        Chem.RemoveStereochemistry(core)  # stereo of a scaffold is meaningless once substituted
        scaffolds.add(Chem.MolToSmiles(core))
        side = Chem.ReplaceCore(mol, core, labelByIndex=False)
        if side is None:
            continue
        for frag in Chem.GetMolFrags(side, asMols=True, sanitizeFrags=False):
            dummies = [a for a in frag.GetAtoms() if a.GetAtomicNum() == 0]
            if len(dummies) != 1 or frag.GetNumHeavyAtoms() > 7:
                continue
            Chem.RemoveStereochemistry(frag)
            anchor = dummies[0].GetNeighbors()[0].GetIdx()
            editable = Chem.RWMol(frag)
            editable.RemoveAtom(dummies[0].GetIdx())
            anchor -= anchor > dummies[0].GetIdx()
            text = Chem.MolToSmiles(editable, rootedAtAtom=anchor, canonical=True)
            substituents.add(text)
    return tuple(sorted(scaffolds)), tuple(sorted(substituents))


def drug_like_smiles(n: int, *, seed: int = 0) -> list[str]:
    """``n`` distinct drug-like SMILES: shipped scaffolds carrying one or two shipped side chains.

    Args:
        n: how many molecules (at least 1).
        seed: the enumeration order; the same ``(n, seed)`` gives the same list.

    Returns:
        Canonical SMILES, each a different molecule with 12-36 heavy atoms.

    Raises:
        ValueError: when ``n`` is not a positive int, ``seed`` is negative, or more
            molecules are asked for than the building blocks can make.
        TypeError: when ``seed`` is not an int (None would draw a different list on
            every call).

    Example:
        >>> smiles = drug_like_smiles(5)
        >>> len(set(smiles)), smiles == drug_like_smiles(5)
        (5, True)
    """
    # NumPy's integers too, as for seed (stop 58: n=np.int64(5) was refused)
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"n must be a positive int, got {n!r}")
    n = int(n)
    _check_seed(seed)
    out: list[str] = []
    seen: set[str] = set()
    stale = 0
    for smiles in _enumerate(seed):
        if smiles is None or smiles in seen:
            stale += 1
            if stale >= _MAX_STALE_DRAWS:
                break
            continue
        stale = 0
        seen.add(smiles)
        out.append(smiles)
        if len(out) == n:
            return out
    raise ValueError(
        f"only {len(out)} distinct drug-like molecules can be built from the shipped set; "
        f"asked for {n}"
    )


def _check_seed(seed: object) -> None:
    """Refuse a seed that does not name one list: None (fresh entropy), a bool, a float, a Generator."""
    # NumPy took seed=None as fresh entropy (a new list every call: a benchmark that could
    # not be re-run, silently), seed=True as 1, and a Generator as itself (its state moved).
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise TypeError(
            f"seed must be an int (the same (n, seed) gives the same list), got "
            f"{type(seed).__name__}: {seed!r:.80}; pass e.g. seed=0"
        )
    if seed < 0:
        raise ValueError(f"seed must be 0 or above, got {seed}; pass e.g. seed=0")


def _enumerate(seed: int) -> Iterator[str | None]:
    """Drawn molecules, endless; None for a draw that makes no drug-like molecule."""
    scaffolds, substituents = building_blocks()
    cores = [Chem.MolFromSmiles(s) for s in scaffolds]
    groups = [Chem.MolFromSmiles(s) for s in substituents]
    sites = [[a.GetIdx() for a in c.GetAtoms() if a.GetTotalNumHs() > 0] for c in cores]
    if not any(sites):
        return
    rng = np.random.default_rng(seed)
    # Rounds of (scaffold, site, group[, site, group]) draws: deterministic for a seed,
    # spread over all scaffolds so that a short prefix is as varied as a long run.
    while True:
        for c in rng.permutation(len(cores)):
            if not sites[c]:
                continue
            k = 1 + int(rng.integers(2))
            picked = rng.choice(len(sites[c]), size=min(k, len(sites[c])), replace=False)
            chosen = [(sites[c][int(p)], groups[int(rng.integers(len(groups)))]) for p in picked]
            yield _attach(cores[c], chosen)


def _attach(core, chosen) -> str | None:
    mol = Chem.RWMol(core)
    for site, group in chosen:
        offset = mol.GetNumAtoms()
        mol.InsertMol(group)
        mol.AddBond(site, offset, Chem.BondType.SINGLE)  # the group's first atom attaches
        atom = mol.GetAtomWithIdx(site)
        if atom.GetNumExplicitHs():
            atom.SetNumExplicitHs(atom.GetNumExplicitHs() - 1)
    with quiet():
        try:
            Chem.SanitizeMol(mol)
        except Exception:  # a valence the site cannot take: skip this combination
            return None
    if not MIN_HEAVY <= mol.GetNumHeavyAtoms() <= MAX_HEAVY:
        return None
    if any(a.GetNumRadicalElectrons() for a in mol.GetAtoms()):
        return None
    return Chem.MolToSmiles(mol)
