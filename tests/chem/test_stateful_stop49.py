"""A state machine over SmirksAssigner: assign / assign_many / clear_cache chained on two
force fields and on a force-field file rewritten under one name, against the OpenFF toolkit.

After every rule each label (bonds, angles, propers, impropers, vdW) of every molecule
returned equals ``ForceField.label_molecules``'s; a refusal names the molecule (its
index in a batch) and, where the contract says so, leaves the caches as they were.
"""

from __future__ import annotations

import copy
import pickle
import random
import warnings

import pytest

pytest.importorskip("rdkit")
pytest.importorskip("openforcefields")

try:
    from tying.chem import validate
except Exception as err:  # the toolkit is the anchor: without it there is nothing to compare
    pytest.skip(f"OpenFF toolkit not importable: {err}", allow_module_level=True)

from hypothesis import settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from hypothesis.stateful import (  # noqa: E402
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)
from openff.toolkit.utils.exceptions import MultipleComponentsInMoleculeWarning  # noqa: E402
from rdkit import Chem  # noqa: E402

from tying.chem import SECTIONS, SmilesError, SmirksAssigner  # noqa: E402
from tying.chem.assign import KEYS  # noqa: E402

from .helpers import GENERIC_VDW, HEADER, bond  # noqa: E402

FORCE_FIELDS = ("openff-2.3.0", "openff-1.0.0")
# Charged groups, a salt, isotopes, stereo, aromatic heterocycles, an N-oxide, a
# macrocycle, disconnected fragments, hypervalent S and P.
POOL = (
    "C[NH3+]",
    "CC(=O)[O-].[Na+]",
    "[2H]C([2H])([2H])O",
    "C[C@H](N)C(=O)O",
    "c1cnc[nH]1",
    "[O-][n+]1ccccc1",
    "C1CCCCCCCCCCC1",
    "CC.O",
    "CS(C)(=O)=O",
    "CP(=O)(O)O",
    "C/C=C/Cl",
    "Brc1ccc(I)cc1",
)
# Each refused with a SmilesError naming it: unparsable, radical, dummy atom, empty.
BAD = ("C1CC", "[CH3]", "*C", "")

_REFERENCE: dict[tuple[str, str], dict[str, dict[tuple[int, ...], str]]] = {}
_TOOLKIT: dict[str, object] = {}


def reference(ff_name: str, smiles: str) -> dict[str, dict[tuple[int, ...], str]]:
    """The toolkit's labels of ``smiles`` (atoms: SMILES order, then hydrogens)."""
    key = (ff_name, smiles)
    if key not in _REFERENCE:
        if ff_name not in _TOOLKIT:
            _TOOLKIT[ff_name] = validate.openff_force_field(ff_name)
        with warnings.catch_warnings():  # the toolkit's own note on salts: not ours
            warnings.simplefilter("ignore", MultipleComponentsInMoleculeWarning)
            _REFERENCE[key] = validate.openff_labels(smiles, _TOOLKIT[ff_name])
    return _REFERENCE[key]


def permuted(labels, order):
    """Labels of the molecule renumbered by ``Chem.RenumberAtoms(mol, order)``."""
    new = {old: i for i, old in enumerate(order)}
    return {
        s: {KEYS[s](tuple(new[a] for a in k)): v for k, v in t.items()} for s, t in labels.items()
    }


def made(smiles: str, form: str, seed: int):
    """``smiles`` as the user may hand it over, and the permutation its atoms took."""
    if form == "smiles":
        return smiles, None
    mol = Chem.MolFromSmiles(smiles)
    if form == "mol":  # hydrogens implicit: added after the written atoms
        return mol, None
    mol = Chem.AddHs(mol)
    order = list(range(mol.GetNumAtoms()))
    random.Random(seed).shuffle(order)
    return Chem.RenumberAtoms(mol, order), order


def expected(ff_name: str, smiles: str, order):
    labels = reference(ff_name, smiles)
    return labels if order is None else permuted(labels, order)


def assert_labels(a, want, what: str) -> None:
    got = {s: a.ids(s) for s in SECTIONS}
    for s in SECTIONS:
        assert got[s] == want[s], f"{what}: {s} differs from the OpenFF toolkit"


# A file rewritten under one name: each version orders (and so ranks) its bond patterns
# differently, and gives them other ids, so a stale reading shows as wrong ids.
BOND_PATTERNS = (
    "[#6:1]-[#6:2]",
    "[#6:1]-[#8:2]",
    "[#6X4:1]-[#1:2]",
    "[#8:1]-[#1:2]",
    "[*:1]~[*:2]",
)
FILE_SMILES = ("CCO", "OCCO", "CC")


def write_rotating_force_field(folder: str, version: int) -> str:
    patterns = BOND_PATTERNS[version % 5 :] + BOND_PATTERNS[: version % 5]
    bonds = [bond(p, f"v{version}-{i}", 1.0 + version) for i, p in enumerate(patterns)]
    body = HEADER + '    <Bonds version="0.4" potential="harmonic">\n' + "".join(bonds)
    body += "    </Bonds>\n" + GENERIC_VDW + "</SMIRNOFF>\n"
    path = f"{folder}/rotating-1.0.0.offxml"
    with open(path, "w") as f:
        f.write(body)
    return path


def file_labels(path: str, smiles: str):
    """The toolkit's labels of ``smiles`` with the file as it is now (Bonds and vdW)."""
    from openff.toolkit import ForceField, Molecule

    ff = ForceField(path)
    labels = ff.label_molecules(Molecule.from_smiles(smiles).to_topology())[0]
    return {s: {KEYS[s](k): p.id for k, p in labels[s].items()} for s in ("Bonds", "vdW")}


molecule = st.tuples(
    st.sampled_from(POOL), st.sampled_from(["smiles", "mol", "shuffled"]), st.integers(0, 99)
)
names = st.none() | st.sampled_from(["a", "b"])


class AssignerMachine(RuleBasedStateMachine):
    """Two force fields in one process, plus a file rewritten under one name."""

    @initialize()
    def start(self):
        self.assigners = {ff: SmirksAssigner(ff, strict=False) for ff in FORCE_FIELDS}
        self.file_version = 0
        self.file_assigner = None
        self.tmp = None

    def snapshot(self, a):
        return (a.hits, a.misses, dict(a._by_text), dict(a._by_canonical))

    @rule(ff=st.sampled_from(FORCE_FIELDS), mol=molecule, name=names)
    def assign(self, ff, mol, name):
        smiles, form, seed = mol
        given, order = made(smiles, form, seed)
        a = self.assigners[ff]
        before = a.hits + a.misses
        out = a.assign(given, name=name)
        assert_labels(out, expected(ff, smiles, order), f"{ff} assign({smiles!r}, {form})")
        assert a.hits + a.misses == before + 1
        if name is not None:
            assert out.name == name

    @rule(ff=st.sampled_from(FORCE_FIELDS), bad=st.sampled_from(BAD))
    def assign_refused(self, ff, bad):
        a = self.assigners[ff]
        before = self.snapshot(a)
        with pytest.raises(SmilesError, match=r"molecule|SMILES"):
            a.assign(bad, name="bad one")
        assert self.snapshot(a) == before  # a parse failure neither counts nor caches

    @rule(
        ff=st.sampled_from(FORCE_FIELDS),
        mols=st.lists(st.tuples(molecule, names), min_size=1, max_size=5),
        n_jobs=st.sampled_from([1, 1, 1, 2]),
        progress=st.booleans(),
        bad=st.none() | st.tuples(st.sampled_from(BAD), st.integers(0, 5)),
        errors=st.sampled_from(["raise", "skip"]),
    )
    def assign_many(self, ff, mols, n_jobs, progress, bad, errors):
        a = self.assigners[ff]
        items, wants = [], []
        for (smiles, form, seed), name in mols:
            given, order = made(smiles, form, seed)
            items.append(given if name is None else (given, name))
            wants.append((smiles, form, expected(ff, smiles, order), name))
        bad_at = None
        if bad is not None:
            bad_at = min(bad[1], len(items))
            items.insert(bad_at, bad[0])
            wants.insert(bad_at, None)
        before = self.snapshot(a)
        options = {"n_jobs": n_jobs, "progress": progress, "errors": errors, "chunksize": 1}
        if bad_at is not None and errors == "raise":
            with pytest.raises(SmilesError, match=rf"molecule {bad_at} \("):
                a.assign_many(items, **options)
            if n_jobs > 1:  # over processes a failing call caches and counts nothing
                assert self.snapshot(a) == before
            return
        if bad_at is None:
            out = a.assign_many(items, **options)
        else:  # errors="skip" says what it skipped
            with pytest.warns(
                UserWarning, match=rf"skipped 1 of {len(items)} .*molecule {bad_at} "
            ):
                out = a.assign_many(items, **options)
        assert len(out) == len(items)
        for k, (result, want) in enumerate(zip(out, wants, strict=True)):
            if want is None:
                assert (
                    result is None and k in out.skipped and f"molecule {k} (" in str(out.skipped[k])
                )
                continue
            smiles, form, labels, name = want
            assert_labels(result, labels, f"{ff} assign_many item {k} ({smiles!r}, {form})")
            if name is not None:
                assert result.name == name

    @rule(ff=st.sampled_from(FORCE_FIELDS), how=st.sampled_from(["pickle", "deepcopy", "copy"]))
    def copy_assigner(self, ff, how):
        """Go on with a copy (a pool, a Dask task, a deepcopied config would hold one)."""
        a = self.assigners[ff]
        before = self.snapshot(a)
        twin = {
            "pickle": lambda x: pickle.loads(pickle.dumps(x)),
            "deepcopy": copy.deepcopy,
            "copy": copy.copy,
        }[how](a)
        assert (twin.sections, twin.strict, twin.force_field.digest) == (
            a.sections,
            a.strict,
            a.force_field.digest,
        )
        twin.clear_cache()
        assert self.snapshot(a) == before  # the copy's cache is its own
        self.assigners[ff] = twin

    @rule(ff=st.sampled_from(FORCE_FIELDS))
    def clear_cache(self, ff):
        a = self.assigners[ff]
        a.clear_cache()
        assert (a.hits, a.misses, a._by_text, a._by_canonical) == (0, 0, {}, {})

    @rule(tmp_seed=st.integers(0, 3))
    def rewrite_file(self, tmp_seed):
        """The same file name, other bytes: a new assigner must label with the new ones."""
        import tempfile

        if self.tmp is None:
            self.tmp = tempfile.TemporaryDirectory()
        self.file_version += 1
        self.path = write_rotating_force_field(self.tmp.name, tmp_seed + self.file_version)
        self.file_assigner = SmirksAssigner(self.path, strict=False)

    @precondition(lambda self: self.file_assigner is not None)
    @rule(n_jobs=st.sampled_from([1, 2]), repeat=st.booleans())
    def assign_with_file(self, n_jobs, repeat):
        molecules = list(FILE_SMILES) * (2 if repeat else 1)
        out = self.file_assigner.assign_many(molecules, n_jobs=n_jobs, chunksize=1)
        for smiles, a in zip(molecules, out, strict=True):
            want = file_labels(self.path, smiles)
            for s in ("Bonds", "vdW"):
                assert a.ids(s) == want[s], f"file v{self.file_version}, {smiles}: stale {s}"

    @invariant()
    def counters_never_negative(self):
        if hasattr(self, "assigners"):
            for a in self.assigners.values():
                assert a.hits >= 0 and a.misses >= 0

    def teardown(self):
        if getattr(self, "tmp", None) is not None:
            self.tmp.cleanup()


AssignerMachine.TestCase.settings = settings(
    max_examples=10, stateful_step_count=10, deadline=None, derandomize=True
)
TestAssignerMachine = AssignerMachine.TestCase
