"""SMIRNOFF parameter assignment: SMIRKS matching in file order, the last match wins (claim C9).

For each section (bonds, angles, proper and improper torsions, vdW) every
parameter's SMIRKS is matched against the molecule; each match's *tagged*
atoms name a term, and a term takes the parameter of the **last** pattern that
matched it — the resolution rule of every tie in ``tying``, by
:func:`tying.core.resolver.last_match_wins`, the torch-free resolver that
``tying.Plan`` and HMM state ties use too.

Terms are keyed as the OpenFF toolkit keys them, so that a match and its
reverse are one term (the keys, and the terms a molecule has, are in
:mod:`tying.chem.terms`; this module re-exports them):

- bonds, angles, proper torsions: the tuple, reversed when it would start with
  the larger index (``(2, 1, 0)`` is ``(0, 1, 2)``);
- impropers: the central atom (tag 2) stays second and the three others are
  sorted. The energy applies such an improper in three orderings, the
  *trefoil* (:func:`trefoil`), each with ``k / 3`` (``idivf="auto"``).

Results are cached per unique molecule (canonical SMILES), remapped to the
caller's atom order when the same molecule comes back written differently.
"""

from __future__ import annotations

import bisect
import dataclasses
from collections.abc import Hashable, Iterable, Iterator, Mapping, Sequence
from typing import Any, TypeVar

import numpy as np

from tying.chem._rdkit import Chem
from tying.chem.batch_arrays import assign_arrays
from tying.chem.chain_table import ChainTable
from tying.chem.constraints import constraint_labeller
from tying.chem.gc_pause import gc_paused
from tying.chem.mapped import check_flag, map_order, renumber, warn_if_reordered
from tying.chem.molecules import (
    canonical_order,
    input_hint,
    molecule_name,
    parse_smiles,
    prepare_molecule,
)
from tying.chem.offxml import ForceField, Parameter, load_force_field
from tying.chem.packed import pack
from tying.chem.read_only import TermIds, read_only_terms
from tying.chem.search_order import anchored, has_stereo, reordered
from tying.chem.section_choice import SECTIONS, chosen_sections  # noqa: F401 (SECTIONS re-exported)
from tying.chem.smirks import (
    CompiledSmirks,
    Prefilter,
    check_unlabelled_patterns,
    compile_section,
    scan_heavy,
)
from tying.chem.terms import (  # the names no code here uses are re-exported
    KEYS,  # noqa: F401
    _check_complete,
    _outer_symmetric,
    _reversible,
    _term_counts,
    _term_dict,
    _term_keys,
    improper_key,  # noqa: F401
    scan_counts,
    topology_terms,  # noqa: F401
    trefoil,  # noqa: F401
    valence_key,  # noqa: F401
)
from tying.chem.unassigned import missing_section
from tying.chem.unassigned import not_assigned as _not_assigned
from tying.core.resolver import last_match_wins

# RDKit stops at 1000 matches by default; OpenFF asks for all of them.
_MAX_MATCHES = 2**32 - 1

R = TypeVar("R")
K = TypeVar("K", bound=Hashable)


@dataclasses.dataclass(frozen=True)
class Assignment:
    """The parameters assigned to one molecule.

    Args:
        smiles: canonical SMILES (explicit hydrogens) of the molecule.
        name: the caller's name for it, if any.
        force_field: the force field's name.
        elements: element symbol of each atom, by index.
        terms: section -> {term key: winning :class:`~tying.chem.offxml.Parameter`}.
        not_assigned: the force field's sections this assignment did not label (file
            order): the ones ``tying.chem`` does not assign (``LibraryCharges``,
            ``VirtualSites``, charge models; the OpenFF toolkit applies them) and any
            left out by ``sections=`` (``Constraints`` is opt-in). Empty only when the whole
            force field was assigned (:mod:`tying.chem.unassigned`).

    Example:
        >>> a = SmirksAssigner("openff-2.3.0").assign("CCO")
        >>> a.bonds[(0, 1)].id, a.bonds[(1, 2)].id, a.bonds[(2, 8)].id
        ('b1', 'b14', 'b88')
        >>> a.count_unique()["Bonds"]
        4
        >>> a.not_assigned  # Sage's H-bond constraints and charges are not in it
        ('Constraints', 'Electrostatics', 'LibraryCharges', 'NAGLCharges')
    """

    smiles: str
    name: str | None
    force_field: str
    elements: tuple[str, ...]
    terms: Mapping[str, Mapping[tuple[int, ...], Parameter]]
    not_assigned: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        # assign returns the object its cache keeps: an edit of its terms was an edit of
        # every later cache hit of the molecule (tying.chem.read_only)
        object.__setattr__(self, "terms", read_only_terms(self.terms))

    def __getitem__(self, section: str) -> Mapping[tuple[int, ...], Parameter]:
        """``{term key: parameter}`` of one section, as ``label_molecules(...)[i][section]``.

        A toolkit script that reads ``labels[0]["Bonds"]`` reads ``assignment["Bonds"]``
        here: the same keys and the same winning parameter ids.

        Raises:
            TypeError: for a key that is not a section name.
            KeyError: for a section this molecule was not labelled with (names the ones
                it was, and why).
        """
        if not isinstance(section, str):
            raise TypeError(
                f"an Assignment is read by section name, e.g. assignment['Bonds'] (sections "
                f"{list(self.terms)}), got {section!r}; assign_many returns one Assignment "
                f"per molecule, as label_molecules returns one dict per molecule"
            )
        return self._section(section)

    # Read by section, but one molecule is not a collection: ``count_unique_parameters(a)``
    # and ``assign_many`` results must still tell one Assignment from many.
    __iter__ = None

    def __contains__(self, section: object) -> bool:
        """Whether this molecule was labelled with ``section`` (``"Bonds" in assignment``;
        before stop 60 a TypeError, "argument of type 'Assignment' is not iterable")."""
        return section in self.terms

    def _section(self, section: str) -> Mapping[tuple[int, ...], Parameter]:
        # A section that was not labelled is not a section without terms: an assigner
        # built with sections=["Bonds"] (or a water model, vdW only) gave {} for
        # .angles, so a molecule read as having no angles, silently.
        terms = self.terms.get(section)
        if terms is None:
            raise missing_section(self, section)
        return terms

    @property
    def bonds(self) -> Mapping[tuple[int, ...], Parameter]:
        """``{term key: parameter}`` of the bonds (KeyError if Bonds was not labelled)."""
        return self._section("Bonds")

    @property
    def angles(self) -> Mapping[tuple[int, ...], Parameter]:
        """``{term key: parameter}`` of the angles (KeyError if Angles was not labelled)."""
        return self._section("Angles")

    @property
    def propers(self) -> Mapping[tuple[int, ...], Parameter]:
        """The proper torsions (KeyError if ProperTorsions was not labelled)."""
        return self._section("ProperTorsions")

    @property
    def impropers(self) -> Mapping[tuple[int, ...], Parameter]:
        """The improper torsions (KeyError if ImproperTorsions was not labelled)."""
        return self._section("ImproperTorsions")

    @property
    def vdw(self) -> Mapping[tuple[int, ...], Parameter]:
        """``{(atom,): parameter}`` of the atoms (KeyError if vdW was not labelled)."""
        return self._section("vdW")

    def ids(self, section: str) -> dict[tuple[int, ...], str]:
        """``{term key: parameter id}`` of one section (what ``label_molecules`` compares to).

        A dict read in any atom order, as the section: ``ids("Bonds")[(2, 1)]`` is the id
        of the bond stored as ``(1, 2)``.

        Raises:
            KeyError: for a section this molecule was not labelled with (names the ones it was).
        """
        # read in any atom order, as the section itself (stop 60)
        return TermIds.of(self._section(section), section == "ImproperTorsions")

    def used(self) -> dict[str, frozenset[str]]:
        """The parameter ids used, per section."""
        return {s: frozenset(p.id for p in t.values()) for s, t in self.terms.items()}

    def count_unique(self) -> dict[str, int]:
        """How many distinct parameters each section uses for this molecule."""
        return {s: len(ids) for s, ids in self.used().items()}

    def rows(self) -> Iterator[dict[str, Any]]:
        """One row per term: section, atoms, elements, parameter id and SMIRKS (for tables)."""
        for section, terms in self.terms.items():
            for key, p in sorted(terms.items()):
                yield {
                    "section": section,
                    "atoms": key,
                    "elements": "-".join(self.elements[i] for i in key),
                    "id": p.id,
                    "smirks": p.smirks,
                }


def count_unique_parameters(assignments: Iterable[Assignment]) -> dict[str, int]:
    """Distinct parameters used over a set of molecules, per section and in total.

    Args:
        assignments: :class:`Assignment` objects, all labelled with one force field.

    Returns:
        ``{section: count, ..., "total": sum}``.

    Raises:
        TypeError: for one Assignment or a string instead of a collection, or an item
            that is not an Assignment (names its position).
        ValueError: when the assignments come from different force fields (their ids
            name different parameters), also two of one name (an id naming two
            different parameters), or were labelled with different sections (a section
            would be counted over some of the molecules only).

    Example:
        >>> assigner = SmirksAssigner("openff-2.3.0")
        >>> counts = count_unique_parameters(assigner.assign_many(["CCO", "CCC"]))
        >>> counts["Bonds"], counts["total"] == sum(v for k, v in counts.items() if k != "total")
        (4, True)
    """
    from tying.chem.parallel import check_many
    from tying.chem.used_parameters import add_used, check_same_sections

    check_many(assignments, "count_unique_parameters", "Assignments")
    used: dict[str, dict[str, Parameter]] = {}
    force_field = first = None
    for k, a in enumerate(assignments):
        if not isinstance(a, Assignment):
            # None is what assign_many(errors="skip") gives for a skipped molecule: "pass
            # what assign_many returns" was the advice, and that is what had been passed.
            fix = (
                "a molecule assign_many(errors='skip') skipped; count the labelled ones: "
                "[a for a in results if a is not None]"
                if a is None
                else "pass what SmirksAssigner.assign / assign_many return"
            )
            raise TypeError(
                f"count_unique_parameters: item {k} is a {type(a).__name__}, not an Assignment; "
                f"{fix}"
            )
        # Ids name parameters within one force field only: b1 of openff-1.0.0 and b1 of
        # openff-2.3.0 were counted as one parameter, silently.
        if force_field is None:
            force_field = a.force_field
        elif a.force_field != force_field:
            raise ValueError(
                f"count_unique_parameters: item {k} was labelled with {a.force_field!r}, the "
                f"ones before with {force_field!r}; parameter ids of two force fields name "
                f"different parameters, so count each force field's assignments separately"
            )
        first = check_same_sections(first, a, k)  # no section counted over some items only
        add_used(used, a, k)  # an id that names two parameters is refused
    out = {s: len(ids) for s, ids in used.items()}
    out["total"] = sum(out.values())
    return out


class SmirksAssigner:
    """Assigns a SMIRNOFF force field's parameters to molecules, caching per unique molecule.

    Args:
        force_field: a :class:`~tying.chem.offxml.ForceField` or an installed name.
        sections: which sections to assign; by default every one of :data:`SECTIONS`
            (bonds, angles, propers, impropers, vdW) that the force field has; add
            ``"Constraints"`` to label those too (opt-in: :mod:`tying.chem.constraints`).
        strict: raise :class:`~tying.chem.errors.UnassignedParameterError` when an atom,
            bond, angle or proper torsion gets no parameter (a force field cannot be
            applied to such a molecule).
        cache: reuse the result for a molecule seen before (same canonical SMILES).
            A copy (``pickle``, ``copy.copy``, ``copy.deepcopy``) is rebuilt from the
            force field and these options and starts with an empty cache of its own.

    Raises:
        ValueError: on an unsupported section name (lists the supported ones), an
            empty ``sections`` or one that lists a section twice.
        TypeError: when ``sections`` is a single string instead of a list, or
            ``strict``/``cache`` is not a bool.
        KeyError: on a section the force field does not have (lists the ones it has).
        SmirksError: when a pattern of the force field is malformed (names its id).

    Example:
        >>> assigner = SmirksAssigner("openff-2.3.0")
        >>> a = assigner.assign("c1ccccc1O", name="phenol")
        >>> sorted(a.used()["ImproperTorsions"])
        ['i1']
        >>> assigner.assign("Oc1ccccc1").smiles == a.smiles, assigner.hits
        (True, 1)
    """

    def __init__(
        self,
        force_field: ForceField | str = "openff-2.3.0",
        *more_files: Any,
        sections: Sequence[str] | None = None,
        strict: bool = True,
        cache: bool = True,
    ):
        if more_files:  # the toolkit's ForceField(a, b): the error says how to merge them
            load_force_field([force_field, *more_files])
        self.force_field = (
            force_field if isinstance(force_field, ForceField) else load_force_field(force_field)
        )
        self.sections = sections = chosen_sections(self.force_field, sections, strict, cache)
        for s in self.sections:  # results store each parameter's position as its index
            for i, p in enumerate(self.force_field[s].parameters):
                if p.index != i:
                    raise ValueError(
                        f"force field {self.force_field.name!r}, section {s}: parameter "
                        f"{p.id!r} sits at position {i} but says index {p.index}, so labels "
                        f"would name the wrong parameter; a section changed in memory must "
                        f"renumber its parameters (dataclasses.replace(p, index=i)), or write "
                        f"the force field to an .offxml file and load that"
                    )
        self.strict = strict
        self.cache = cache
        # Named on every result: an assignment without them read as the whole force field.
        self.not_assigned = _not_assigned(self.force_field, self.sections)
        # Constraints (opt-in) are searched per molecule, not tabled (tying.chem.constraints).
        valence = tuple(s for s in sections if s != "Constraints")
        self._constraints = constraint_labeller(self.force_field, sections)
        self._compiled = {s: compile_section(self.force_field, s) for s in valence}
        # the toolkit refuses a malformed pattern in any section, labelled here or not
        check_unlabelled_patterns(self.force_field, sections)
        self._flat = [c for s in valence for c in self._compiled[s]]
        bounds, start = {}, 0
        for s in valence:
            bounds[s] = (start, start + len(self._compiled[s]))
            start += len(self._compiled[s])
        self._bounds = bounds
        self._full_prefilter: Prefilter | None = None  # built on first use: _prefilter
        # Each section's patterns end before this position in self._flat.
        self._stops = [(s, bounds[s][1]) for s in valence]
        self._match_params = _match_parameters(chirality=True, recursion=True)
        # Per pattern, the cheapest search that gives the same matches: RDKit's
        # recursion and chirality bookkeeping cost ~25% of the search, and most
        # patterns have neither a recursive SMARTS nor a stereo query (claim C9 speed).
        kinds = {(c, r): _match_parameters(c, r) for c in (False, True) for r in (False, True)}
        section_of = [s for s in valence for _ in self._compiled[s]]  # per pattern
        self._plan = []
        for compiled, section in zip(self._flat, section_of, strict=True):
            chirality = _needs_chirality(compiled)
            recursion = "$(" in compiled.parameter.smirks
            keys = _term_keys(section, compiled.tagged)
            self._plan.append((compiled.query, kinds[(chirality, recursion)], keys))
        # The fast path's per-pattern step: raw matches straight to {term key: parameter},
        # searched with the query's rarest atom first and each recursive SMARTS started
        # from its carrier's primitives (search_order: the same matches, in the renumbered
        # query's atom order, for about a fifth less search).
        self._fast_plan = []
        for (_, match_params, _), c, s in zip(self._plan, self._flat, section_of, strict=True):
            query, tagged = reordered(anchored(c))
            symmetric = _outer_symmetric(c) if s == "ImproperTorsions" else _reversible(c)
            term_dict = _term_dict(s, tagged, query.GetNumAtoms(), symmetric)
            self._fast_plan.append((query, match_params, term_dict, c.parameter))
        self._parameters = {s: self.force_field[s].parameters for s in self.sections}
        # Chain and star patterns decided from bit masks instead of searched (chain_table).
        self._chain = ChainTable(self._flat, section_of)
        self._flat_parameters = [c.parameter for c in self._flat]
        # Each pattern's parameter position in its section (packed columns store those).
        self._positions = np.array([p.index for p in self._flat_parameters], dtype=np.intp)
        # The pre-filter of the patterns left to RDKit: the decided ones need none.
        self._searched = [i for i, d in enumerate(self._chain.decided.tolist()) if not d]
        self._search_prefilter = Prefilter([self._flat[i] for i in self._searched])
        self._tabled = True  # False: every candidate searched by RDKit (the reference)
        self._by_text: dict[str, Assignment] = {}
        self._by_canonical: dict[str, tuple[tuple[int, ...], Assignment]] = {}
        self.hits = 0
        self.misses = 0

    @property
    def _prefilter(self) -> Prefilter:
        """The pre-filter of every pattern, for the reference path (RDKit molecules, SMILES
        that write hydrogens, ``_tabled = False``). Built when first needed: a worker of
        ``assign_many`` that labels plain SMILES never needs it (a tenth of its start-up)."""
        if self._full_prefilter is None:
            self._full_prefilter = Prefilter(self._flat)
        return self._full_prefilter

    def __reduce__(self) -> tuple:
        # RDKit's compiled queries and match parameters do not pickle (deepcopy and pickle
        # died in Boost.Python): a copy is rebuilt from the force field and the options,
        # with a cache of its own, empty, so clearing one leaves the other alone.
        options = (list(self.sections), self.strict, self.cache)
        return (_rebuilt, (self.force_field, *options))

    def clear_cache(self) -> None:
        """Forget every cached molecule (the compiled SMIRKS stay)."""
        self._by_text.clear()
        self._by_canonical.clear()
        self.hits = self.misses = 0

    def assign_many(
        self,
        molecules: Iterable[Any],
        *,
        n_jobs: int = 1,
        progress: bool = False,
        chunksize: int | None = None,
        mapped: bool = False,
        errors: str = "raise",
    ) -> list[Assignment]:
        """:meth:`assign` each molecule, in this process or over ``n_jobs`` processes.

        Args:
            molecules: SMILES strings, ``(smiles, name)`` pairs or RDKit molecules (named
                by their ``_Name`` when given no name, as in :meth:`assign`).
            n_jobs: processes to use; 1 labels here (with the cache), -1 uses every
                core this process may run on (its affinity mask: a Slurm job's or a
                ``taskset``'s CPUs, not the machine's); more than those (and more than
                2) is capped at them with a ``UserWarning`` (``parallel.capped_n_jobs``:
                labelling is CPU-bound, extra workers only cost). Workers are
                processes (forkserver/spawn), each building the assigner once from
                the bytes of the force field this assigner read (a fraction of a
                second once the fork server has imported RDKit);
                they are kept for the next call with the same set-up for
                ``tying.chem.parallel.KEEP_WORKERS_S`` seconds (see
                ``parallel.release_workers``), so spreading pays from about a
                thousand molecules on.
            progress: show a progress bar (rich) with done/total, elapsed and remaining.
            chunksize: molecules per task sent to a worker (default: about 32 tasks
                per worker, at most 200 molecules each).
            mapped: number each SMILES' atoms by its atom map, as :meth:`assign`
                (every molecule must then be a fully mapped SMILES). Without it, a
                call with SMILES whose complete map is not their written order warns
                once (``UserWarning``), naming the first.
            errors: ``"raise"`` stops at the first molecule that fails; ``"skip"`` gives ``None``
                in its place, its error in ``.skipped`` (:mod:`tying.chem.skipping`).

        Returns:
            One :class:`Assignment` per molecule, in input order, whatever ``n_jobs``;
            equal to what :meth:`assign` gives, and sharing this force field's
            parameter objects. Molecules are labelled 64 at a time, stage by stage
            (parse, canonical SMILES, scan, search): the same results and cache
            state as :meth:`assign` one by one, for about a fifth less CPU. The
            cache and the ``hits``/``misses`` counters end as one process leaves them,
            whatever ``n_jobs`` (a call that fails with ``n_jobs > 1`` caches and counts
            nothing; one process keeps what it labelled before the failure). Results
            are stored packed (:mod:`tying.chem.packed`): equal to dicts, a few KB each.

        Raises:
            ValueError: on a bad ``n_jobs`` or ``chunksize``.
            TypeError: when ``progress`` or ``mapped`` is not a bool.
            RuntimeError: when a worker process dies (e.g. an unguarded script: call
                ``assign_many(n_jobs>1)`` under ``if __name__ == "__main__":``).
            SmilesError, UnassignedParameterError, TypeError: for the first molecule
                (lowest index) that fails, naming its index, SMILES and name.

        Example:
            >>> assigner = SmirksAssigner("openff-2.3.0")
            >>> [a.bonds[(0, 1)].id for a in assigner.assign_many(["CC", ("CO", "methanol")])]
            ['b1', 'b14']
        """
        from tying.chem.parallel import assign_many

        options = {"n_jobs": n_jobs, "progress": progress, "chunksize": chunksize}
        return assign_many(self, molecules, mapped=mapped, errors=errors, **options)

    def assign(self, molecule: Any, *, name: str | None = None, mapped: bool = False) -> Assignment:
        """Assign parameters to one molecule.

        Args:
            molecule: a SMILES string or an ``rdkit.Chem.Mol`` (hydrogens are added
                after the existing atoms, so its atom indices are kept).
            name: a name to carry along (and to show in errors); for an RDKit molecule
                given none, its ``_Name`` (an SD file's title), as ``Molecule.from_rdkit``.
            mapped: number the atoms by the SMILES' atom map (atom ``n - 1`` is map
                number ``n``), as ``Molecule.from_mapped_smiles`` does; every atom,
                hydrogens included, must be mapped, ``1..N`` each once
                (:mod:`tying.chem.mapped`). Without it a SMILES whose complete map
                is not its written order is labelled in written order with a
                ``UserWarning``.

        Returns:
            An :class:`Assignment` whose term keys are atom indices of the molecule
            (for a SMILES: heavy atoms in SMILES order, then the hydrogens; with
            ``mapped=True``, map order).

        Raises:
            TypeError: when ``molecule`` is neither a ``str`` nor an RDKit molecule.
            SmilesError: on an empty SMILES, one with whitespace, an unparsable one,
                a radical (outside the d and f blocks) or a dummy atom (names the SMILES
                and the atom).
            UnassignedParameterError: with ``strict``, for an atom without vdW
                parameter or a bond/angle/torsion without parameter.
        """
        # One copy of the cache logic: a batch of one is exactly assign (the batch's
        # docstring says so), unpacked as assign's results always were.
        mapped = check_flag(mapped, molecule)
        if name is None and type(molecule) is not str:  # an RDKit molecule's _Name
            name = molecule_name(molecule, None)  # as the toolkit's from_rdkit names it
        results, failure = self._assign_batch([(molecule, name)], pack=False)
        if failure is not None:
            raise failure[1]
        if mapped:
            return renumber(results[0], map_order(molecule, len(results[0].elements)))
        if isinstance(molecule, str):
            warn_if_reordered(molecule)
        return results[0]

    def _assign_batch(
        self, items: Sequence[tuple[Any, str | None]], *, pack: bool = True
    ) -> tuple[list[Assignment], tuple[int, Exception] | None]:
        """:meth:`assign` on each ``(molecule, name)`` in order, one stage at a time.

        The results, the cache, the counters and the first error are those of calling
        :meth:`assign` on each item in turn (``tests/chem/test_assign.py`` checks it),
        but every molecule of the batch is parsed first, then all get their canonical
        SMILES, then the new ones are scanned and pre-filtered, and only then searched:
        each stage runs its own RDKit and Python code over and over while it is hot in
        the CPU's caches, instead of going through all of it for every molecule
        (1.20-1.25x less CPU than one by one on batches of 64, measured 2026-12-01;
        ``python -m benchmarks.bench_chem`` prints that row).

        With ``pack`` (the default), the batch's new results are stored packed
        (:func:`~tying.chem.packed.pack`), in the cache as in what is returned: equal
        Assignments whose terms are a few arrays per batch instead of a dict and a
        tuple per term, so that 100,000 results cost as little per molecule as 1,000.
        The molecules the fast path scans are then assembled as arrays from the start
        (:meth:`_assign_arrays`, from :data:`_ARRAYS_FROM` of them in a batch on), with
        no dict per molecule. :meth:`assign` passes ``pack=False``: plain dicts, from
        :meth:`_assign_scanned` (the per-molecule path, the arrays' reference).

        Returns:
            ``(results, failure)``: the results of the items before the first one that
            fails, and ``(its position, the exception assign would raise)`` or None.
        """
        with gc_paused():
            return self._assign_batch_unpaused(items, pack)

    def _assign_batch_unpaused(
        self, items: Sequence[tuple[Any, str | None]], pack: bool
    ) -> tuple[list[Assignment], tuple[int, Exception] | None]:
        cache, model = self.cache, self.force_field.aromaticity_model
        failure: tuple[int, Exception] | None = None
        # Stage 1: checks, text-cache hits (a repeat within the batch is one too), parsing.
        parsed: list[tuple[str | None, Any, int | None]] = []
        texts: set[str] = set()
        for k, (molecule, name) in enumerate(items):
            try:
                _check_input(molecule, name)
                text = molecule if isinstance(molecule, str) else None
                if text is not None and cache and (text in self._by_text or text in texts):
                    parsed.append((text, None, None))
                    continue
                if text is not None:
                    mol, n_written = parse_smiles(text, name=name, aromaticity_model=model)
                    if cache:
                        texts.add(text)
                else:
                    mol, n_written = prepare_molecule(molecule, aromaticity_model=model), None
            except Exception as err:
                failure = (k, err)
                break
            parsed.append((text, mol, n_written))
        # Stage 2: canonical SMILES. Stage 3: scan and pre-filter the molecules that will
        # be searched (not cached, and not a repeat of an earlier one in the batch).
        canonical = [None if mol is None else canonical_order(mol) for _, mol, _ in parsed]
        seen: set[str] = set()
        scans: dict[int, Any] = {}
        for k, (_, mol, n_written) in enumerate(parsed):
            if mol is None or n_written is None:
                continue
            smiles = canonical[k][0]
            if cache:
                if smiles in self._by_canonical or smiles in seen:
                    continue
                seen.add(smiles)
            scans[k] = scan_heavy(mol, n_written)
        candidates_of = self._candidates_of
        prepared = {
            k: (scan, candidates_of(scan, parsed[k][1].GetNumAtoms()))
            for k, scan in scans.items()
            if scan is not None
        }
        # The scanned molecules labelled all at once: their decided patterns' winners
        # from the chain table's arrays, merged with RDKit's search of the others, into
        # packed results (_assign_arrays); or, unpacked, from the table's dicts.
        computed: dict[int, Any] = {}
        if self._tabled and pack and len(prepared) >= _ARRAYS_FROM and not self._constraints:
            computed = self._assign_arrays(
                {
                    k: (*parsed[k][1:], canonical[k][0], items[k][1] or parsed[k][0], p)
                    for k, p in prepared.items()
                }
            )
        # Stage 4: in order, exactly what assign does after parsing.
        results: list[Assignment] = []
        stored_text: list[str] = []  # cache entries made here, packed with the results
        stored_canonical: list[str] = []
        for k, (text, mol, n_written) in enumerate(parsed):
            name = items[k][1]
            try:
                if mol is None:
                    self.hits += 1
                    results.append(self._named(self._by_text[text], name))
                    continue
                smiles, order = canonical[k]
                cached = self._by_canonical.get(smiles) if cache else None
                if cached is not None:
                    self.hits += 1
                    result = _remap(cached[1], cached[0], order)
                else:
                    self.misses += 1
                    if k in computed:
                        result = computed[k]
                        if isinstance(result, Exception):
                            raise result
                    elif k in prepared:
                        result = self._assign_scanned(
                            mol, smiles, name or text, n_written, prepared[k]
                        )
                    else:
                        result = self._assign_reference(mol, smiles, name or text)
                    if cache:
                        self._by_canonical[smiles] = (order, result)
                        stored_canonical.append(smiles)
                if text is not None and cache:
                    self._by_text[text] = result
                    stored_text.append(text)
                results.append(self._named(result, name))
            except Exception as err:
                failure = (k, err)
                break
        if pack:
            results = self._pack_stored(results, stored_text, stored_canonical)
        return results, failure

    def _pack_stored(
        self, results: list[Assignment], texts: list[str], canonical: list[str]
    ) -> list[Assignment]:
        """Pack ``results`` and the cache entries of ``texts`` and ``canonical`` SMILES at once."""
        by_text, by_canonical = self._by_text, self._by_canonical
        entries = [by_text[t] for t in texts] + [by_canonical[c][1] for c in canonical]
        packed = pack(results + entries, self._parameters)
        n = len(results)
        for t, a in zip(texts, packed[n : n + len(texts)], strict=True):
            by_text[t] = a
        for c, a in zip(canonical, packed[n + len(texts) :], strict=True):
            by_canonical[c] = (by_canonical[c][0], a)
        return packed[:n]

    @staticmethod
    def _named(a: Assignment, name: str | None) -> Assignment:
        return a if name is None or name == a.name else dataclasses.replace(a, name=name)

    def _assign_scanned(
        self,
        mol: Any,
        smiles: str,
        name: str | None,
        n_written: int,
        prepared: tuple[Any, ...] | None = None,
    ) -> Assignment:
        """The fast path of :meth:`_assign_reference`, for a SMILES that wrote no hydrogen.

        The same result, computed with fewer calls into RDKit: one pass over the
        written atoms and bonds (:func:`~tying.chem.smirks.scan_heavy`) gives the
        pre-filter's input, the element symbols and the term counts of the
        completeness check; the appended hydrogens are never visited one by one.
        The last match wins as in :func:`~tying.core.resolver.last_match_wins`,
        written out so that a term maps straight to its parameter. Patterns that
        :class:`~tying.chem.chain_table.ChainTable` decides (most of them) are not
        searched: their last match per term comes from its bit masks, and only the
        other candidates are searched by RDKit, the later pattern winning over both
        (``_tabled = False`` searches every candidate instead: the reference).
        ``tests/chem/test_assign.py`` checks both paths agree on shipped and generated
        molecules, ``tests/chem/test_chain_table.py`` the decided and searched ones.
        """
        n_atoms = mol.GetNumAtoms()
        if prepared is None:
            scan = scan_heavy(mol, n_written)
            if scan is None:
                return self._assign_reference(mol, smiles, name)
            candidates = self._candidates_of(scan, n_atoms)
        else:  # (scan, candidates[, labelled]) computed beforehand (_assign_batch)
            scan, candidates = prepared[:2]
        plan = self._fast_plan
        match = mol.GetSubstructMatches
        terms: dict[str, dict[tuple[int, ...], Parameter]] = {}
        if not self._tabled:
            labelled = {}
        elif prepared is not None and len(prepared) == 3:  # label_arrays left it to label
            labelled = prepared[2]
        else:
            labelled = self._chain.label(scan, n_atoms)
        start = 0
        for section, stop in self._stops:
            end = bisect.bisect_left(candidates, stop, start)
            if section in labelled:
                won, undecided = labelled[section]
                searched = candidates[start:end]  # only patterns not decided (_candidates_of)
                if undecided:  # decided ones this molecule leaves open: searched too
                    searched = sorted({*searched, *undecided})
                terms[section] = _merge(won, searched, mol, plan, self._flat_parameters)
            else:
                resolved: dict[tuple[int, ...], Parameter] = {}
                update = resolved.update
                for i in candidates[start:end]:
                    query, match_params, term_dict, parameter = plan[i]
                    matches = match(query, match_params)
                    if matches:  # later patterns overwrite: the last match wins
                        update(term_dict(matches, parameter))
                terms[section] = resolved
            start = end
        if self._constraints is not None:
            terms["Constraints"] = self._constraints(mol)
        elements = (*scan.symbols, *("H",) * (n_atoms - n_written))
        result = Assignment(smiles, name, self.force_field.name, elements, terms, self.not_assigned)
        if self.strict:
            self._check_scanned(mol, result, name or smiles, scan, n_atoms)
        return result

    def _assign_arrays(self, todo: dict[int, tuple]) -> dict[int, Any]:
        """:func:`tying.chem.batch_arrays.assign_arrays` of this assigner's batch."""
        return assign_arrays(self, todo)

    def _assign_arrays_one_by_one(self, todo, out, batch, ks):
        """:meth:`_assign_arrays`'s fallback for molecules too large for its int64 keys."""
        for x in batch:
            mol, n_written, smiles, name, prepared = todo[ks[x]]
            try:
                out[ks[x]] = self._assign_scanned(mol, smiles, name, n_written, prepared)
            except Exception as err:
                out[ks[x]] = err
        return out

    def _check_scanned(self, mol: Any, result: Assignment, label: str, scan: Any, n: int) -> None:
        """:func:`_check_complete` with the term counts a scan gives (:func:`scan_counts`)."""
        _check_complete(mol, result, label, scan_counts(scan, n, mol.GetNumBonds()))

    def _candidates_of(self, scan: Any, n_atoms: int) -> list[int]:
        """The patterns to search for a scanned molecule (ascending indices into the
        flat list): the pre-filter's candidates among those the chain table does not
        decide, or among all patterns when it is switched off (``_tabled``)."""
        if not self._tabled:
            return self._prefilter.candidates_of(scan, n_atoms)
        index = self._searched
        return [index[k] for k in self._search_prefilter.candidates_of(scan, n_atoms)]

    def _assign_reference(self, mol: Any, smiles: str, name: str | None) -> Assignment:
        """Assign a prepared molecule the plain way: every atom and bond visited from Python.

        Used for RDKit molecules and SMILES that write hydrogen atoms, and kept as the
        reference the fast path (:meth:`_assign_scanned`) is tested against.
        """
        candidates = self._prefilter.candidates(mol)
        plan, flat = self._plan, self._flat
        match = mol.GetSubstructMatches

        def keys_of(i: int) -> Any:
            query, params, keys = plan[i]
            matches = match(query, params)
            return keys(matches) if matches else _NONE

        terms: dict[str, dict[tuple[int, ...], Parameter]] = {}
        for section, (lo, hi) in self._bounds.items():
            won = last_match_wins((i for i in candidates if lo <= i < hi), keys_of)
            terms[section] = {k: flat[i].parameter for k, i in won.items()}
        if self._constraints is not None:
            terms["Constraints"] = self._constraints(mol)
        elements = tuple(a.GetSymbol() for a in mol.GetAtoms())
        result = Assignment(smiles, name, self.force_field.name, elements, terms, self.not_assigned)
        if self.strict:
            _check_complete(mol, result, name or smiles, _term_counts(mol))
        return result


def _merge(
    won: dict[tuple[int, ...], int],
    searched: list[int],
    mol: Any,
    plan: list,
    parameters: list,
) -> dict[tuple[int, ...], Any]:
    """``{term key: Parameter}`` of one section from :meth:`ChainTable.label`'s winners and
    RDKit's search of the ``searched`` patterns; the last match wins over both.

    ``won`` (term key -> global pattern index) is updated in place.
    """
    match = mol.GetSubstructMatches
    for i in searched:
        query, match_params, term_dict, _ = plan[i]
        matches = match(query, match_params)
        if matches:
            for key, j in term_dict(matches, i).items():
                if j > won.get(key, -1):  # the later pattern wins
                    won[key] = j
    return dict(zip(won, map(parameters.__getitem__, won.values())))


def _check_input(molecule: Any, name: Any) -> None:
    """Raise :meth:`SmirksAssigner.assign`'s TypeError on a molecule or name of the wrong type."""
    if not isinstance(molecule, (str, Chem.Mol)):
        raise TypeError(
            f"assign: expected a SMILES string or an rdkit.Chem.Mol, got "
            f"{type(molecule).__name__}: {molecule!r:.80}" + input_hint(molecule)
        )
    if name is not None and not isinstance(name, str):
        from tying.chem.tables import is_missing

        # stop 62: a table's empty name cell (NaN) named no fix
        hint = (
            " (a table's empty cell): pass None for no name; for a column of names, "
            "df['name'].fillna(df['smiles']) names those molecules by their SMILES, as "
            "unnamed ones are"
            if is_missing(name)
            else ""
        )
        raise TypeError(f"assign: name must be a string or None, got {type(name).__name__}{hint}")


def _match_parameters(chirality: bool, recursion: bool) -> Any:
    params = Chem.SubstructMatchParameters()
    params.uniquify = False  # every ordering, as the OpenFF toolkit asks
    params.maxMatches = _MAX_MATCHES
    params.useChirality = chirality
    params.recursionPossible = recursion
    return params


def _needs_chirality(compiled: CompiledSmirks) -> bool:
    """Whether a pattern has a stereo query (chiral atom, directional bond) to check.

    Recursive SMARTS are searched with chirality on: their inner atoms are not visited here.
    """
    return "$(" in compiled.parameter.smirks or has_stereo(compiled)


_NONE: frozenset = frozenset()
# Fewer scanned molecules than this in a batch take _assign_scanned one by one: the
# arrays' fixed cost (some 60 NumPy calls a batch) is paid back from a few molecules on.
_ARRAYS_FROM = 4


def _remap(base: Assignment, base_order: tuple[int, ...], order: tuple[int, ...]) -> Assignment:
    if order == base_order:
        return base
    perm = [0] * len(order)
    for b, o in zip(base_order, order):
        perm[b] = o
    return renumber(base, perm)


def _rebuilt(force_field: ForceField, sections: list[str], strict: bool, cache: bool):
    """A :class:`SmirksAssigner` unpickled or copied (its ``__reduce__``)."""
    return SmirksAssigner(force_field, sections=sections, strict=strict, cache=cache)


def assign_parameters(
    molecules: Iterable[Any], force_field: ForceField | str = "openff-2.3.0", **kwargs: Any
) -> list[Assignment]:
    """Assign parameters to several molecules with one :class:`SmirksAssigner`.

    Example:
        >>> [a.vdw[(0,)].id for a in assign_parameters(["C", "O"])]
        ['n16', 'n-tip3p-O']
    """
    return SmirksAssigner(force_field, **kwargs).assign_many(molecules)
