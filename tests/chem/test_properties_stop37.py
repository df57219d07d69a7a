"""Stop 37 property tests: every label and every parameter value equal to the OpenFF toolkit's.

Random small drug-like molecules under a random subset of Sage's sections, and random
force-field files written from Sage's own parameters in other unit spellings, with
duplicate SMIRKS, ``sigma`` or ``rmin_half``, torsion divisors written, left to a number
or left to ``"auto"``. Each draw ends one of two ways: equal to the toolkit (labels from
``label_molecules``, values from the handler's parameter objects, the torsion divisor as
OpenFF Interchange applies it), or refused with an error naming the item; never a third.
"""

from __future__ import annotations

import math
import re
import warnings

import pytest

pytest.importorskip("rdkit")
pytest.importorskip("openforcefields")

from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from tying.chem import (  # noqa: E402
    SECTIONS,
    OffxmlError,
    Quantity,
    SmirksAssigner,
    load_force_field,
    load_molecule_set,
)
from tying.chem.generate import drug_like_smiles  # noqa: E402
from tying.chem.terms import KEYS  # noqa: E402

try:
    from openff.toolkit import ForceField as OpenFFForceField
    from openff.toolkit import Molecule as OpenFFMolecule
    from openff.units import unit as openff_unit
except ImportError as err:  # the toolkit or one of its dependencies is missing
    pytest.skip(f"OpenFF toolkit not importable: {err}", allow_module_level=True)

from rdkit import Chem  # noqa: E402

from .helpers import HEADER  # noqa: E402

SETTINGS = settings(
    max_examples=25,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)

# Small molecules (at most 12 heavy atoms: fast in both tools) from the shipped set and
# the generated drug-like set.
_CANDIDATES = [s for s, _ in load_molecule_set()[::3]] + drug_like_smiles(60, seed=37)
SMALL = sorted({s for s in _CANDIDATES if Chem.MolFromSmiles(s).GetNumHeavyAtoms() <= 12})
# A few molecules for the hand-made files: every section has terms in them.
PROBES = ["CC(=O)Nc1ccccc1", "OCC(=O)OC", "C=CC#N"]


@pytest.fixture(scope="module")
def sage():
    try:
        ff = OpenFFForceField("openff-2.3.0.offxml", load_plugins=False)
        ff.label_molecules(OpenFFMolecule.from_smiles("C").to_topology())
    except Exception as err:  # e.g. a toolkit dependency missing at run time
        pytest.skip(f"OpenFF toolkit cannot label molecules here: {type(err).__name__}: {err}")
    return ff


_LABELS: dict[tuple[int, str], dict] = {}


def _their_labels(force_field, smiles: str, *, cache: bool = True) -> dict[str, dict]:
    """``label_molecules`` of one molecule: section -> {our canonical key: parameter object}.

    Cached for the module's Sage only: ``id()`` of a hand-made force field is reused
    once it is freed.
    """
    key = (id(force_field), smiles)
    if not cache or key not in _LABELS:
        mol = OpenFFMolecule.from_smiles(smiles, allow_undefined_stereo=True)
        labels = force_field.label_molecules(mol.to_topology())[0]
        found = {s: {KEYS[s](k): p for k, p in labels[s].items()} for s in SECTIONS if s in labels}
        if not cache:
            return found
        _LABELS[key] = found
    return _LABELS[key]


def _in_si(q: Quantity) -> tuple[float, str]:
    """``q`` in kJ, mol, nm and rad (converted by tying.chem), and that unit's text."""
    swap = {"kilocalorie": "kilojoule", "angstrom": "nanometer", "degree": "radian"}
    powers: dict[str, int] = {}
    for name, power in q.unit.powers:
        powers[swap.get(name, name)] = powers.get(swap.get(name, name), 0) + power
    text = " * ".join(f"{n} ** {p}" for n, p in powers.items() if p) or "dimensionless"
    return q.to(text).value, text


def _theirs(their, name: str, section: str):
    """The toolkit's value of our attribute ``name`` (``k2``, ``k1_bondorder2``, ``length``)."""
    m = re.fullmatch(r"k(\d+)_bondorder(\d+)", name)
    if m:
        return their.k_bondorder[int(m.group(1)) - 1][int(m.group(2))]
    m = re.fullmatch(r"(length|k)_bondorder(\d+)", name)
    if m:
        return getattr(their, f"{m.group(1)}_bondorder")[int(m.group(2))]
    m = re.fullmatch(r"([a-z_]+?)(\d+)", name)
    if m and section in ("ProperTorsions", "ImproperTorsions", "LibraryCharges"):
        return getattr(their, m.group(1))[int(m.group(2)) - 1]
    return getattr(their, name)


def _assert_same_values(ours_ff, their_ff, section: str, ours, their) -> None:
    """Every value of our parameter equals the toolkit's, in its unit and in SI units."""
    assert ours.smirks == their.smirks
    assert ours.id == their.id or (their.id is None and ours.id.startswith(f"{section}["))
    for name, value in ours.values.items():
        if name == "parent_id":
            continue
        theirs = _theirs(their, name, section)
        where = f"{section} {ours.id} {name}"
        if isinstance(value, Quantity):
            si, unit_text = _in_si(value)
            expected = theirs.m_as(openff_unit.Unit(unit_text.replace(" ** ", "**")))
            assert math.isclose(si, expected, rel_tol=1e-12), (where, si, expected)
        elif isinstance(value, (int, float)):
            assert float(value) == float(theirs), (where, value, theirs)
        else:
            assert str(value) == str(theirs), (where, value, theirs)
    if section in ("ProperTorsions", "ImproperTorsions"):
        assert len(ours.terms) == len(their.k)
        default = their_ff.get_parameter_handler(section).default_idivf
        for n, term in enumerate(ours.terms):
            written = their.idivf[n] if their.idivf is not None else None
            if written is not None:
                expected = float(written)
            elif default != "auto":
                expected = float(default)
            elif section == "ImproperTorsions":
                expected = 3.0  # OpenFF Interchange: an 'auto' improper is a trefoil, k / 3
            else:
                # A proper's 'auto' divisor depends on the molecule (SMIRNOFF spec) and the
                # toolkit does not compute it: refused by name, never a number (stop 37).
                with pytest.raises(ValueError, match=r"has no idivfN and .*default_idivf='auto'"):
                    ours_ff.idivf(section, term)
                continue
            assert ours_ff.idivf(section, term) == expected, (section, ours.id, n)


_ASSIGNERS: dict[tuple[str, ...], SmirksAssigner] = {}


def _assigner(sections: tuple[str, ...]) -> SmirksAssigner:
    if sections not in _ASSIGNERS:
        _ASSIGNERS[sections] = SmirksAssigner("openff-2.3.0", sections=sections, strict=False)
    return _ASSIGNERS[sections]


@SETTINGS
@given(
    smiles=st.sampled_from(SMALL),
    sections=st.lists(st.sampled_from(SECTIONS), min_size=1, max_size=5, unique=True),
)
def test_labels_and_values_of_sage_sections_equal_the_toolkit(sage, smiles, sections):
    sections = tuple(sections)
    assigner = _assigner(sections)
    ours = assigner.assign(smiles)
    theirs = _their_labels(sage, smiles)
    for section in sections:
        mine = ours.terms[section]
        assert mine.keys() == theirs[section].keys(), (smiles, section)
        for key, parameter in mine.items():
            _assert_same_values(
                assigner.force_field, sage, section, parameter, theirs[section][key]
            )
    left_out = [s for s in SECTIONS if s not in sections]
    for section in left_out:  # a section not labelled is never read as one without terms
        with pytest.raises(KeyError, match=rf"has no {section} section"):
            ours.ids(section)
    assert set(left_out) <= set(ours.not_assigned)


# --- hand-made files from Sage's parameters, in other spellings -----------------------

SAGE = load_force_field("openff-2.3.0")
# Spellings of each unit Sage uses (keyed by its dimension): the value is converted into
# the drawn spelling by pint, the toolkit's unit library, not by tying.chem.
SPELLINGS = [
    ["angstrom", "angstroms", "nanometer", "nanometers"],
    ["degree", "degrees", "radian", "radians"],
    [
        "kilocalorie_per_mole",
        "kilocalories_per_mole",
        "kilojoule_per_mole",
        "kilojoule / mole",
        "mole ** -1 * kilocalorie",
    ],
    [
        "kilocalorie_per_mole / angstrom ** 2",
        "kilojoule_per_mole / nanometer ** 2",
        "kilocalories_per_mole / angstrom / angstrom",
        "angstrom**-2 * mole**-1 * kilocalorie",
        "kilojoule / mole / angstrom ** 2",
    ],
    [
        "kilocalorie_per_mole / radian ** 2",
        "kilojoule_per_mole / radian ** 2",
        "kilocalorie_per_mole / degree ** 2",
        "mole**-1 * radian**-2 * kilocalorie",
    ],
]
HEADERS = {
    "Bonds": 'version="0.4" potential="harmonic" fractional_bondorder_method="AM1-Wiberg" '
    'fractional_bondorder_interpolation="linear"',
    "Angles": 'version="0.3" potential="harmonic"',
    "ProperTorsions": 'version="0.4" potential="k*(1+cos(periodicity*theta-phase))"{idivf} '
    'fractional_bondorder_method="AM1-Wiberg" fractional_bondorder_interpolation="linear"',
    "ImproperTorsions": 'version="0.3" potential="k*(1+cos(periodicity*theta-phase))"{idivf}',
    "vdW": 'version="0.4" potential="Lennard-Jones-12-6" combining_rules="Lorentz-Berthelot" '
    'scale12="0.0" scale13="0.0" scale14="0.5" scale15="1.0" cutoff="9.0 * angstrom" '
    'switch_width="1.0 * angstrom" periodic_method="cutoff" nonperiodic_method="no-cutoff"',
}
TAGS = {"Bonds": "Bond", "Angles": "Angle", "ProperTorsions": "Proper",
        "ImproperTorsions": "Improper", "vdW": "Atom"}  # fmt: skip


def _spelled(value: Quantity, data) -> str:
    """``value`` written in a drawn spelling of a unit of its dimension, converted by pint."""
    from tying.chem import parse_unit

    spellings = next(s for s in SPELLINGS if parse_unit(s[0]).dimension == value.unit.dimension)
    spelling = data.draw(st.sampled_from(spellings))
    source = openff_unit.Unit(str(value.unit).replace(" ** ", "**"))
    converted = (value.value * source).m_as(openff_unit.Unit(spelling.replace(" ** ", "**")))
    return f"{converted!r} * {spelling}"


def _parameter(section: str, p, position: int, data) -> str:
    attributes = {"smirks": p.smirks, "id": f"{p.id}-{position}"}  # duplicate SMIRKS allowed
    drop_idivf = section.endswith("Torsions") and data.draw(st.booleans())
    for name, value in p.values.items():
        if name == "parent_id" or (drop_idivf and name.startswith("idivf")):
            continue
        if section == "vdW" and name == "rmin_half" and data.draw(st.booleans()):
            name, value = "sigma", Quantity(value.value * 2 / 2 ** (1 / 6), value.unit)
        attributes[name] = _spelled(value, data) if isinstance(value, Quantity) else repr(value)
    names = data.draw(st.permutations(list(attributes)))  # attribute order is not meaning
    text = " ".join(f'{n}="{attributes[n]}"' for n in names)
    return f"        <{TAGS[section]} {text}/>\n"


def _hand_made(data) -> str:
    sections = data.draw(
        st.lists(st.sampled_from(SECTIONS), min_size=1, max_size=5, unique=True), label="sections"
    )
    body = HEADER
    for section in sections:
        default = data.draw(st.sampled_from(["", ' default_idivf="auto"', ' default_idivf="2"']))
        body += f"    <{section} {HEADERS[section].format(idivf=default)}>\n"
        params = SAGE[section].parameters
        picked = data.draw(st.lists(st.sampled_from(params), min_size=1, max_size=6))
        for position, p in enumerate(picked):
            if data.draw(st.booleans()):
                body += "        <!-- a comment between parameters -->\n"
            body += _parameter(section, p, position, data)
        body += f"    </{section}>\n"
    return body + "</SMIRNOFF>\n"


@SETTINGS
@given(data=st.data())
def test_a_hand_made_file_reads_and_labels_as_the_toolkit(tmp_path, data):
    path = tmp_path / f"hand-{data.draw(st.integers(0, 10**9), label='name')}.offxml"
    path.write_text(_hand_made(data))
    ours = load_force_field(path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs = OpenFFForceField(str(path), load_plugins=False)
    for section in ours.sections:
        their_params = list(theirs.get_parameter_handler(section).parameters)
        assert len(ours[section]) == len(their_params)
        for mine, their in zip(ours[section], their_params, strict=True):
            _assert_same_values(ours, theirs, section, mine, their)
    assigner = SmirksAssigner(ours, strict=False)
    for smiles in PROBES:
        labelled = assigner.assign(smiles)
        their_labels = _their_labels(theirs, smiles, cache=False)
        for section in ours.sections:  # the last of two equal SMIRKS wins in both
            assert labelled.ids(section) == {k: p.id for k, p in their_labels[section].items()}


# --- text between elements: refused by both tools, or a comment read by both ----------

GAPS = ("<Bonds", "        <Bond", "    </Bonds>", "</SMIRNOFF>")


@SETTINGS
@given(
    gap=st.sampled_from(GAPS),
    text=st.text(st.characters(codec="ascii", categories=["L", "N", "P"], exclude_characters="<>&-"),
                 min_size=1, max_size=12),
    as_comment=st.booleans(),
)  # fmt: skip
def test_text_between_elements_is_refused_or_a_comment(tmp_path, gap, text, as_comment):
    base = HEADER + (
        f"    <Bonds {HEADERS['Bonds']}>\n"
        '        <Bond smirks="[#6:1]-[#6:2]" id="b1" length="1.5 * angstrom" '
        'k="500.0 * kilocalorie_per_mole / angstrom ** 2"/>\n'
        "    </Bonds>\n</SMIRNOFF>\n"
    )
    inserted = f"<!--{text}-->" if as_comment else text.replace('"', "'")
    index = base.index(gap)
    path = tmp_path / "text.offxml"
    path.write_text(base[:index] + inserted + base[index:])
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            OpenFFForceField(str(path), load_plugins=False)
        toolkit_reads = True
    except Exception:
        toolkit_reads = False
    if as_comment:
        assert toolkit_reads
        assert [p.id for p in load_force_field(path)["Bonds"]] == ["b1"]
    else:
        assert not toolkit_reads
        tag = "<SMIRNOFF>" if gap in ("<Bonds", "</SMIRNOFF>") else "<Bonds>"
        with pytest.raises(OffxmlError, match=rf"{re.escape(tag)} holds the text"):
            load_force_field(path)
