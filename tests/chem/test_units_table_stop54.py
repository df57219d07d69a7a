"""Every unit string of every shipped force field reads as the OpenFF toolkit reads it (stop 54).

``<GBSA surface_area_penalty="5.4*calories/mole/angstroms**2">`` was kept as text:
``calorie`` was not a unit here, so the header of every GBSA file loaded with a string
where the toolkit has a quantity, and ``"5.4 * kilocalorie"`` (an energy, not an energy
per mole and area) loaded too. The calorie, joule and picometer families of
openff-units are now read, ``surface_area_penalty`` is a quantity in
``calorie / mole / angstrom ** 2``, and two tables guard the kind of defect:

- every unit name tying.chem reads means what openff-units (pint) says it means;
- every attribute of every shipped ``.offxml`` (and the toolkit's GBSA files) that the
  toolkit reads as a quantity is a :class:`~tying.chem.Quantity` in the loaded force
  field, equal to the toolkit's in SI units.
"""

from __future__ import annotations

import math
import pathlib
import warnings
import xml.etree.ElementTree as ET

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

pytest.importorskip("rdkit")
openforcefields = pytest.importorskip("openforcefields")

from tying.chem import OffxmlError, Quantity, SmirksAssigner, load_force_field  # noqa: E402
from tying.chem import units as units_module  # noqa: E402
from tying.chem.units import Unit, parse_quantity, parse_unit  # noqa: E402

from .helpers import GENERIC_VDW, HEADER, bond, write_offxml  # noqa: E402

try:
    from openff.toolkit import ForceField as OpenFFForceField
    from openff.toolkit import Molecule as OpenFFMolecule
    from openff.toolkit.utils import get_data_file_path
    from openff.toolkit.utils.utils import string_to_quantity
    from openff.units import Quantity as PintQuantity
except ImportError as err:
    pytest.skip(f"OpenFF toolkit not importable: {err}", allow_module_level=True)

from tests.chem.test_every_force_field_stop42 import REFUSED, _shipped  # noqa: E402

#: a unit of each dimension tying.chem reads, to compare a name's size in
REFERENCE = {
    (("length", 1),): "angstrom",
    (("energy", 1),): "kilocalorie",
    (("amount", 1),): "mole",
    (("angle", 1),): "degree",
    (("charge", 1),): "elementary_charge",
    (("amount", -1), ("energy", 1)): "kilocalorie / mole",
    (): "dimensionless",
}
GBSA_FILES = ["GBSA_HCT-1.0.offxml", "GBSA_OBC1-1.0.offxml", "GBSA_OBC2-1.0.offxml"]


def _si(value: Quantity) -> PintQuantity:
    return PintQuantity(value.value, str(value.unit)).to_base_units()


@pytest.mark.parametrize("name", sorted({*units_module._BASE, *units_module._ALIASES}))
def test_every_unit_name_means_what_openff_units_says(name):
    ours = parse_quantity(f"1 * {name}")
    reference = REFERENCE[ours.unit.dimension]
    theirs = PintQuantity(1.0, name).to(reference).m
    assert math.isclose(ours.to(reference).value, theirs, rel_tol=1e-14), (name, reference)


NAMES = sorted({*units_module._BASE, *units_module._ALIASES} - {"dimensionless"})
POWERS = ["", " ** 2", "**-1", " ** -2", "** 3", " ** 1", "**+2"]


@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    terms=st.lists(
        st.tuples(st.sampled_from(NAMES), st.sampled_from(POWERS)), min_size=1, max_size=4
    ),
    ops=st.lists(st.sampled_from([" * ", "/", " / ", "*"]), min_size=3, max_size=3),
    value=st.floats(1e-3, 1e3),
)
def test_property_a_unit_expression_reads_as_openff_units_reads_it(terms, ops, value):
    # names joined left to right by * and /, with powers: the product pint computes
    text = "".join(n + p + (ops[i] if i < len(terms) - 1 else "") for i, (n, p) in enumerate(terms))
    written = f"{value!r} * {text}"
    mine, theirs = _si(parse_quantity(written)), PintQuantity(written).to_base_units()
    assert mine.units == theirs.units, (written, mine, theirs)
    assert math.isclose(mine.m, theirs.m, rel_tol=1e-12), (written, mine, theirs)


@settings(max_examples=40, deadline=None)
@given(
    powers=st.dictionaries(
        st.sampled_from(sorted(units_module._BASE)), st.integers(-3, 3), max_size=4
    )
)
def test_property_a_unit_reads_back_from_its_own_text(powers):
    # str(Unit) writes "1 / mole" for a unit with no positive power: it did not read back
    # (parse_unit: "unknown unit '1'"), so q.to(str(q.unit)) failed; pint reads it
    unit = Unit.of(powers)
    assert parse_unit(str(unit)) == unit
    value = Quantity(2.5, unit)
    assert value.to(str(unit)) == value
    assert _si(value).units == PintQuantity(2.5, str(unit)).to_base_units().units


def test_the_unit_one_reads_as_pint_reads_it():
    assert parse_quantity("2 * 1 / mole").to("1 / mol").value == 2.0
    assert parse_quantity("1.53 * 1 * angstrom") == parse_quantity("1.53 * angstrom")
    with pytest.raises(ValueError, match=r"unknown unit '2' in '2 \* angstrom'"):
        parse_quantity("0.765 * 2 * angstrom")  # a factor other than 1 is not a unit


def _files() -> list[pathlib.Path]:
    # the files other tests load first (load_force_field keeps one reading per file)
    first = ("openff-2.3.0", "openff-1.0.0", "tip3p")
    shipped = sorted(
        (path for name, path in _shipped().items() if name not in REFUSED),
        key=lambda path: first.index(path.stem) if path.stem in first else len(first),
    )
    gbsa = [pathlib.Path(get_data_file_path(f"test_forcefields/{f}")) for f in GBSA_FILES]
    return shipped + gbsa


def _quantities_the_toolkit_reads() -> dict[tuple[str, str, str], tuple[pathlib.Path, str, int]]:
    """(section, attribute, unit as written) -> (file, attribute, parameter index; -1: header).

    Each distinct spelling is compared once, in the first file that writes it (the number
    does not change how its unit is read): 78 rows over 11 files.
    """
    out: dict[tuple[str, str, str], tuple[pathlib.Path, str, int]] = {}
    for path in _files():
        for section in ET.parse(path).getroot():
            items = [(section, -1), *((p, i) for i, p in enumerate(section))]
            for element, index in items:
                for attribute, text in element.attrib.items():
                    if "*" not in text or attribute in ("smirks", "id"):
                        continue
                    try:  # a number times a unit: the potential's formula is not
                        float(text.partition("*")[0])
                    except ValueError:
                        continue
                    key = (section.tag, attribute, text.partition("*")[2].strip())
                    out.setdefault(key, (path, attribute, index))
    return out


TABLE = _quantities_the_toolkit_reads()


def test_the_table_holds_every_spelling_of_the_shipped_files():
    units = {unit for _section, _attribute, unit in TABLE}
    assert "calories/mole/angstroms**2" in units  # GBSA's surface_area_penalty
    assert {"angstrom ** 1", "mole ** -1 * kilocalorie ** 1", "degree"} <= units


@pytest.mark.parametrize("key", sorted(TABLE), ids="-".join)
def test_every_quantity_of_every_shipped_file_equals_the_toolkits(key):
    path, attribute, index = TABLE[key]
    section = ET.parse(path).getroot().find(key[0])
    element = section if index < 0 else list(section)[index]
    theirs = string_to_quantity(element.get(attribute))
    assert hasattr(theirs, "units"), f"the toolkit reads {element.get(attribute)!r} as a number"
    read = load_force_field(path)[key[0]]
    ours = read.attributes[attribute] if index < 0 else read.parameters[index].values[attribute]
    assert isinstance(ours, Quantity), f"{path.name} {key}: kept as {ours!r}"
    mine, theirs = _si(ours), theirs.to_base_units()
    assert mine.units == theirs.units and math.isclose(mine.m, theirs.m, rel_tol=1e-13)


def test_surface_area_penalty_is_a_quantity_in_calories():
    gbsa = load_force_field(get_data_file_path("test_forcefields/GBSA_OBC1-1.0.offxml"))
    penalty = gbsa["GBSA"].attributes["surface_area_penalty"]
    assert isinstance(penalty, Quantity)
    assert math.isclose(penalty.to("kilojoule / mole / nanometer ** 2").value, 5.4 * 4.184 / 10)


@pytest.mark.parametrize(
    "penalty",
    [
        "5.4 * kilocalorie",
        "5.4 * calories/mole/nanometer",
        "5.4",
        "five * calorie/mole/angstrom**2",
    ],
)
def test_a_surface_area_penalty_the_toolkit_refuses_is_refused(tmp_path, penalty):
    path = tmp_path / "gbsa.offxml"
    path.write_text(
        HEADER + f'<GBSA version="0.3" gb_model="OBC1" surface_area_penalty="{penalty}">\n'
        '<Atom smirks="[*:1]" radius="0.15 * nanometer" scale="0.8"/>\n</GBSA>\n'
        + GENERIC_VDW
        + "</SMIRNOFF>\n"
    )
    with pytest.raises(Exception):  # noqa: B017 - the toolkit's error types vary
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            OpenFFForceField(str(path))
    with pytest.raises(OffxmlError, match=r"gbsa.offxml GBSA: attribute surface_area_penalty="):
        load_force_field(path)


# 600 kcal/mol/Å² and 1.53 Å in the spellings of openff-units this library did not read
SPELLINGS = {
    "calorie": ("1.53 * angstrom", "600000 * calorie/mole/angstrom**2"),
    "cal_per_mole": ("1.53 * angstrom", "600000 * calories_per_mole * angstrom ** -2"),
    "joule": ("1.53 * angstrom", "2510400 * joule/mole/angstrom**2"),
    "J": ("1.53 * angstrom", "2510400 * J / mol / angstrom ** 2"),
    "picometer": ("153 * picometer", "600 * kilocalorie_per_mole / angstrom ** 2"),
    "pm": ("153 * pm", "2510.4 * kJ / mol / angstrom ** 2"),
}


@pytest.mark.parametrize("spelling", sorted(SPELLINGS))
def test_energies_and_lengths_in_other_units_label_as_the_toolkits(tmp_path, spelling):
    length, k = SPELLINGS[spelling]
    text = bond("[#6:1]-[#6:2]", "b1").replace("1.5 * angstrom ** 1", length)
    text = text.replace("500.0 * kilocalorie_per_mole ** 1 * angstrom ** -2", k)
    path = write_offxml(tmp_path, [text])
    ours = SmirksAssigner(load_force_field(path), strict=False).assign("CC").bonds[(0, 1)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs = OpenFFForceField(str(path)).label_molecules(
            OpenFFMolecule.from_smiles("CC").to_topology()
        )[0]["Bonds"][(0, 1)]
    assert math.isclose(ours["length"].to("angstrom").value, 1.53, rel_tol=1e-14)
    assert math.isclose(ours["k"].to("kilocalorie / mole / angstrom ** 2").value, 600.0)
    for name in ("length", "k"):
        mine, their = _si(ours[name]), getattr(theirs, name).to_base_units()
        assert mine.units == their.units and math.isclose(mine.m, their.m, rel_tol=1e-13)
