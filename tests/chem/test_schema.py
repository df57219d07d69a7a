"""Bad .offxml content is refused naming file, section and id; good content loads exactly (14-A11).

The guard: a valid file is mutated in many ways (every attribute of every
parameter deleted, given garbage, unknown or wrong units, non-finite numbers,
fractional periodicities; ids duplicated; tags renamed; attributes added). Each
mutant is either refused with an :class:`OffxmlError` naming the file, the
section and the parameter, or loaded with exactly the values the OpenFF toolkit
reads from the same file.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET

import pytest

pytest.importorskip("rdkit")
pytest.importorskip("openforcefields")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from tying.chem import OffxmlError, SmirksAssigner, load_force_field  # noqa: E402
from tying.chem.schema import LENGTH, read_value  # noqa: E402
from tying.chem.units import Quantity  # noqa: E402

from .helpers import HEADER, bond, write_offxml  # noqa: E402

BASE = (
    HEADER
    + """    <Bonds version="0.4" potential="harmonic">
        <Bond smirks="[#6:1]-[#6:2]" id="b1" length="1.526 * angstrom" k="620.0 * kilocalorie_per_mole ** 1 * angstrom ** -2"/>
        <Bond smirks="[#6:1]-[#1:2]" id="b2" length="1.09 * angstrom ** 1" k="680.0 * angstrom**-2 * mole**-1 * kilocalorie"/>
    </Bonds>
    <Angles version="0.3" potential="harmonic">
        <Angle smirks="[*:1]~[#6:2]~[*:3]" id="a1" angle="109.5 * degree" k="100.0 * kilocalorie_per_mole / radian ** 2"/>
    </Angles>
    <ProperTorsions version="0.4" potential="k*(1+cos(periodicity*theta-phase))" default_idivf="auto">
        <Proper smirks="[*:1]~[#6:2]-[#6:3]~[*:4]" id="t1" periodicity1="3" phase1="0.0 * degree" k1="0.15 * kilocalorie_per_mole" periodicity2="1" phase2="180.0 * degree" k2="0.2 * kilocalorie_per_mole" idivf1="1.0" idivf2="1.0"/>
    </ProperTorsions>
    <ImproperTorsions version="0.3" potential="k*(1+cos(periodicity*theta-phase))" default_idivf="auto">
        <Improper smirks="[*:1]~[#6X3:2](~[*:3])~[*:4]" id="i1" periodicity1="2" phase1="180.0 * degree" k1="1.1 * kilocalorie_per_mole"/>
    </ImproperTorsions>
    <vdW version="0.4" potential="Lennard-Jones-12-6" combining_rules="Lorentz-Berthelot" scale12="0.0" scale13="0.0" scale14="0.5" scale15="1.0" cutoff="9.0 * angstrom" switch_width="1.0 * angstrom" periodic_method="cutoff" nonperiodic_method="no-cutoff">
        <Atom smirks="[#1:1]" id="n1" epsilon="0.0157 * kilocalorie_per_mole" rmin_half="0.6 * angstrom"/>
        <Atom smirks="[#6:1]" id="n2" epsilon="0.086 * kilocalorie_per_mole" sigma="3.4 * angstrom"/>
    </vdW>
</SMIRNOFF>
"""
)


def _openff_values(path):
    """Every parameter as the OpenFF toolkit reads it: section -> [(id, smirks, {attr: value})]."""
    from openff.toolkit import ForceField

    ff = ForceField(str(path))
    out = {}
    for section in ("Bonds", "Angles", "ProperTorsions", "ImproperTorsions", "vdW"):
        rows = []
        for p in ff.get_parameter_handler(section).parameters:
            d = p.to_dict()
            pid, smirks = d.pop("id", None), d.pop("smirks")
            rows.append((pid, smirks, d))
        out[section] = rows
    return out


def _same(ours, theirs) -> bool:
    if isinstance(ours, Quantity):
        return ours.to(str(theirs.units)).value == pytest.approx(theirs.m, rel=1e-12)
    return ours == theirs and type(ours) is type(theirs)


def _check(tmp_path, text: str, label: str) -> str:
    """Load a mutant: refused naming file and section, or equal to the toolkit's reading."""
    path = tmp_path / "mutant.offxml"
    path.write_text(text)
    try:
        ff = load_force_field(path)
    except OffxmlError as err:
        message = str(err)
        assert "mutant.offxml" in message, (label, message)
        assert "; " in message, (label, message)  # the fix follows the diagnosis
        return message
    theirs = _openff_values(path)  # loading must be right, not just quiet
    for section, rows in theirs.items():
        ours = ff[section].parameters
        assert [p.smirks for p in ours] == [r[1] for r in rows], (label, section)
        for p, (pid, _, values) in zip(ours, rows):
            if pid is not None:
                assert p.id == pid, (label, section)
            assert set(p.values) == set(values), (label, section, p.id)
            for key, value in values.items():
                assert _same(p.values[key], value), (label, section, p.id, key)
    return ""


def _mutants():
    """(label, text, section, id) for every single-attribute mutation of BASE."""
    root = ET.fromstring(BASE.split("\n", 1)[1])
    values = {
        "garbage": "abc * {unit}",
        "unknown unit": "1.5 * furlong",
        "no unit": "1.5",
        "empty": "",
        "nan": "nan * {unit}",
        "inf": "1e400 * {unit}",
        "squared": "1.5 * {unit} ** 2",
        "other unit, same dimension": "{alt}",
        "exponent form": "2.5e0 * {unit}",
        "negative": "-1.25 * {unit}",
        "fraction": "1.5",
        "zero": "0",
        "word": "auto",
        "wrong dimension": "{wrong}",
    }
    alts = {"angstrom": ("0.15 * nanometer", "1.5 * degree"),
            "degree": ("1.0 * radian", "1.5 * angstrom"),
            "kilocalorie": ("4.184 * kilojoule_per_mole", "1.5 * angstrom")}  # fmt: skip
    for s_idx, section in enumerate(root):
        for p_idx, param in enumerate(section):
            pid = param.get("id")
            for attr, original in param.attrib.items():
                unit = original.partition("*")[2].strip() or "angstrom"
                alt, wrong = next(
                    (v for k, v in alts.items() if unit.startswith(k)), ("1.5", "1.5 * degree")
                )
                kinds = [("deleted", None), *values.items()]
                if attr == "smirks":  # bad patterns are SmirksError's job (test_smirks.py)
                    kinds = [("deleted", None), ("empty", "")]
                for kind, template in kinds:
                    text = (
                        None
                        if template is None
                        else template.format(unit=unit, alt=alt, wrong=wrong)
                    )
                    mutant = ET.fromstring(BASE.split("\n", 1)[1])
                    target = mutant[s_idx][p_idx]
                    if text is None:
                        del target.attrib[attr]
                    else:
                        target.set(attr, text)
                    yield f"{section.tag}:{pid}:{attr}:{kind}", mutant, section.tag, pid
            for extra in ("foo", "k3", "phase3", "periodicity3", "k0", "lenght", "sigma"):
                mutant = ET.fromstring(BASE.split("\n", 1)[1])
                mutant[s_idx][p_idx].set(extra, "1.0 * angstrom")
                yield f"{section.tag}:{pid}:+{extra}", mutant, section.tag, pid
            mutant = ET.fromstring(BASE.split("\n", 1)[1])
            mutant[s_idx][p_idx].tag = "Parameter"
            yield f"{section.tag}:{pid}:renamed tag", mutant, section.tag, None


def test_every_mutation_is_refused_by_name_or_loaded_exactly(tmp_path):
    refused = loaded = 0
    for label, mutant, section, pid in _mutants():
        text = HEADER.split("\n", 1)[0] + "\n" + ET.tostring(mutant, encoding="unicode")
        message = _check(tmp_path, text, label)
        if message:
            refused += 1
            assert section in message, (label, message)
            if pid is not None and ":id:" not in label:
                assert repr(pid) in message, (label, message)
        else:
            loaded += 1
    # Both outcomes occur: the test exercises refusals and exact loads alike.
    assert refused > 300 and loaded > 40, (refused, loaded)


@pytest.mark.parametrize("first, second", [("b1", "b2"), ("n1", "n2")])
def test_two_parameters_with_one_id_are_refused(tmp_path, first, second):
    text = BASE.replace(f'id="{second}"', f'id="{first}"')
    section = "Bonds" if first == "b1" else "vdW"
    message = _check(tmp_path, text, "duplicate")
    assert re.search(rf"mutant.offxml {section} id '{first}': duplicate id '{first}'", message)


def test_a_repeated_id_and_smirks_reads_as_the_later_parameter_in_lookup_and_assign(tmp_path):
    # The case stop 22 reported: assign used one b1 while ff["Bonds"]["b1"] returned the
    # other. The earlier copy can never win (the later one matches every term it does), so
    # since stop 59 it is dropped: lookup and assign both give the later one, as the toolkit
    # labels it (a merged ForceField(a, b) file repeats ids so).
    path = write_offxml(
        tmp_path,
        [bond("[#6:1]-[#6:2]", "b1", 1.5), bond("[#6:1]-[#6:2]", "b1", 1.2)],
        name="dup",
    )
    ff = load_force_field(path)
    assert [p.id for p in ff["Bonds"]] == ["b1"]
    assert ff["Bonds"]["b1"]["length"].value == 1.2
    label = SmirksAssigner(ff, sections=["Bonds"], strict=False).assign("CC").bonds[(0, 1)]
    assert label is ff["Bonds"]["b1"]


def test_a_length_that_is_not_a_number_is_refused(tmp_path):
    path = write_offxml(tmp_path, [bond("[#6:1]-[#6:2]", "cc").replace("1.5 *", "abc *")])
    with pytest.raises(
        OffxmlError,
        match=r"tiny-1.0.0.offxml Bonds id 'cc': attribute length='abc \* angstrom \*\* 1': "
        r"expected '<number> \* <unit>'.*such as '1.5 \* angstrom'; fix the value",
    ):
        load_force_field(path)


@pytest.mark.parametrize(
    "change, match",
    [
        (('length="1.5 * angstrom ** 1" ', ""), r"missing attribute length or length_bondorder1"),
        ((' id="cc"', ""), r"Bonds parameter 1: attribute length='1.5 \* degree"),
        (("angstrom ** 1", "degree"), r"wrong unit: expected a length .* got degree"),
        (("1.5 *", "1e999 *"), r"expected a finite number"),
        (('smirks="[#6:1]-[#6:2]" ', ""), r"missing or empty smirks"),
        (("Bond", "Angle"), r"unexpected element <Angle> in <Bonds>; expected <Bond>"),
        (("></Bond>", ' lenght="1"></Bond>'), r"unknown attribute lenght='1'.*length, k"),
    ],
)
def test_malformed_parameters_are_refused_with_the_fix(tmp_path, change, match):
    line = bond("[#6:1]-[#6:2]", "cc")
    if change[0] == ' id="cc"':
        line = line.replace("angstrom ** 1", "degree")
    path = write_offxml(tmp_path, [line.replace(*change)])
    with pytest.raises(OffxmlError, match=match):
        load_force_field(path)


def test_torsion_terms_must_be_complete_and_numbered_from_one(tmp_path):
    gap = BASE.replace('periodicity2="1" phase2=', 'periodicity3="1" phase3=').replace(
        'k2="0.2', 'k3="0.2'
    )
    assert "numbered [1, 3], expected [1, 2]" in _check(tmp_path, gap, "gap")
    no_phase = BASE.replace(' phase2="180.0 * degree"', "")
    assert "ProperTorsions id 't1': 2 periodicity terms but 1 phase terms" in _check(
        tmp_path, no_phase, "phase"
    )
    fraction = BASE.replace('periodicity1="3"', 'periodicity1="1.5"')
    assert "periodicity1='1.5': expected an integer" in _check(tmp_path, fraction, "1.5")


def test_a_section_written_twice_is_refused(tmp_path):
    block = BASE[BASE.index("    <Angles") : BASE.index("    <ProperTorsions")]
    text = BASE.replace(block, block + block.replace('id="a1"', 'id="a2"'))
    assert "section <Angles> appears twice" in _check(tmp_path, text, "twice")


def test_released_candidates_with_duplicate_ids_are_refused():
    # openff-2.0.0-rc.1 ships two vdW parameters "n1" (hydrogen and TIP3P oxygen).
    with pytest.raises(OffxmlError, match=r"vdW id 'n1': duplicate id 'n1'"):
        load_force_field("openff_unconstrained-2.0.0-rc.1")


def test_the_valid_base_file_loads_exactly(tmp_path):
    assert _check(tmp_path, BASE, "base") == ""


UNITS = st.sampled_from(
    ["angstrom", "nanometer", "degree", "furlong", "angstrom ** 2", "angstrom**1", "", "mole"]
)
NUMBERS = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.sampled_from(["abc", "", "1.", ".5", "1e400", "-0", "1,5", "0x10", "1_0"]),
)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(number=NUMBERS, unit=UNITS, star=st.sampled_from([" * ", "*", " ", " x "]))
def test_any_length_text_is_refused_or_read_as_openff_reads_it(tmp_path, number, unit, star):
    text = f"{number}{star}{unit}" if unit else number
    mutant = BASE.replace('length="1.526 * angstrom"', f'length="{text}"')
    message = _check(tmp_path, mutant, text)
    if message:
        assert "Bonds id 'b1': attribute length=" in message


def test_read_value_keeps_the_unit_written():
    q = read_value("f Bonds id 'b1'", "length", "0.15 * nanometer", LENGTH)
    assert str(q.unit) == "nanometer" and q.to("angstrom").value == pytest.approx(1.5)


# Stop 31: torsions interpolated by bond order, and section headers.
T1 = (
    'k1="0.15 * kilocalorie_per_mole" periodicity2="1" phase2="180.0 * degree" '
    'k2="0.2 * kilocalorie_per_mole"'
)
T1_BONDORDER = (
    'k1_bondorder1="0.1 * kilocalorie_per_mole" k1_bondorder2="0.3 * kilocalorie_per_mole" '
    'periodicity2="1" phase2="180.0 * degree" k2_bondorder1="0.2 * kilocalorie_per_mole" '
    'k2_bondorder2="0.4 * kilocalorie_per_mole"'
)


def test_a_torsion_interpolated_by_bond_order_loads_as_the_toolkit_reads_it(tmp_path):
    # k1_bondorder1 is the SMIRNOFF spelling; it used to be refused as unknown.
    assert _check(tmp_path, BASE.replace(T1, T1_BONDORDER), "k1_bondorder") == ""
    t1 = load_force_field(tmp_path / "mutant.offxml")["ProperTorsions"]["t1"]
    assert t1["k2_bondorder2"].value == 0.4
    # It has no single k per term: said, not an empty list of terms.
    with pytest.raises(ValueError, match=r"'t1' \(ProperTorsions\): term 1 has no single k1, "
                       r"its k is interpolated by fractional bond order \(k1_bondorder1, "
                       r"k1_bondorder2\)"):  # fmt: skip
        _ = t1.terms


@pytest.mark.parametrize(
    "change, match",
    [
        # read as a k before, and Parameter.terms then gave (): a torsion without energy
        (('k1="0.15 * kilocalorie_per_mole"', 'k_bondorder1="0.15 * kilocalorie_per_mole"'),
         r"ProperTorsions id 't1': unknown attribute k_bondorder1=.*k1_bondorder1"),
        (('k1="0.15', 'k1_bondorder1="0.1 * kilocalorie_per_mole" k1="0.15'),
         r"ProperTorsions id 't1': both k1, \.\.\. and k1_bondorder1, \.\.\. are given"),
        ((T1, T1_BONDORDER.replace("k1_bondorder1", "k3_bondorder1").replace(
            'k1_bondorder2="0.3 * kilocalorie_per_mole" ', "")),
         r"k1_bondorder1, \.\.\. attributes are given for terms \[2, 3\], expected \[1, 2\]"),
        ((T1, T1_BONDORDER.replace(' k2_bondorder1="0.2 * kilocalorie_per_mole" '
                                   'k2_bondorder2="0.4 * kilocalorie_per_mole"', "")),
         r"2 periodicity terms but 1 with kN_bondorderM"),
        (('k="620.0', 'k_bondorder1="600 * kilocalorie_per_mole / angstrom ** 2" k="620.0'),
         r"Bonds id 'b1': both k and k_bondorder1, \.\.\. are given; .* remove one"),
        (('length="1.526 * angstrom"', 'length="1.526 * angstrom" length_bondorder1="1.5 * '
          'angstrom"'), r"Bonds id 'b1': both length and length_bondorder1, \.\.\. are given"),
    ],
)  # fmt: skip
def test_ambiguous_bond_order_attributes_are_refused(tmp_path, change, match):
    text = BASE.replace(*change)
    assert text != BASE
    assert re.search(match, _check(tmp_path, text, "bond order")), match


@pytest.mark.parametrize(
    "change, match",
    [
        # a typo kept as text: ForceField.idivf gave the default (3) for "1"
        (('default_idivf="auto">\n        <Improper', 'default_idvf="1">\n        <Improper'),
         r"mutant.offxml ImproperTorsions: unknown attribute default_idvf='1' of a "
         r"<ImproperTorsions> section; it takes: version, potential, default_idivf; fix its "
         r"name"),
        (('<Angles version="0.3" potential="harmonic"', '<Angles version="0.3" potential="cosine"'),
         r"Angles: attribute potential='cosine' is not supported: expected 'harmonic'"),
        (('potential="Lennard-Jones-12-6"', 'potential="Buckingham"'),
         r"vdW: attribute potential='Buckingham' is not supported"),
        (('combining_rules="Lorentz-Berthelot"', 'combining_rules="geometric"'),
         r"vdW: attribute combining_rules='geometric' is not supported"),
        (('<Bonds version="0.4" ', "<Bonds "),
         r"Bonds: missing attribute version; .*supported: 0.3 to 0.4"),
        (('<Bonds version="0.4"', '<Bonds version="0.9"'),
         r"Bonds: attribute version='0.9' is not supported: expected 0.3 to 0.4"),
        (('<vdW version="0.4"', '<vdW version="0.4" method="cutoff"'),
         r"vdW: attribute method='cutoff' is only read in version 0.3"),
        (('<ProperTorsions version="0.4"', '<ProperTorsions version="0.4" foo="1"'),
         r"ProperTorsions: unknown attribute foo='1'"),
    ],
)  # fmt: skip
def test_section_headers_the_toolkit_refuses_are_refused(tmp_path, change, match):
    text = BASE.replace(*change)
    assert text != BASE
    assert re.search(match, _check(tmp_path, text, "header")), match


def test_every_header_attribute_mutation_is_refused_or_loaded_exactly(tmp_path):
    # As the parameter guard above, for the sections' own attributes: each deleted,
    # renamed, given garbage; and one added. Loaded ones must read as the toolkit reads.
    root = ET.fromstring(BASE.split("\n", 1)[1])
    refused = loaded = 0
    for s_idx, section in enumerate(root):
        for attr in [*section.attrib, None]:
            kinds = ("deleted", "renamed", "garbage") if attr else ("added",)
            for kind in kinds:
                mutant = ET.fromstring(BASE.split("\n", 1)[1])
                target = mutant[s_idx]
                if kind == "added":
                    target.set("colour", "blue")
                else:
                    value = target.attrib.pop(attr)
                    if kind == "renamed":
                        target.set(attr + "x", value)
                    elif kind == "garbage":
                        target.set(attr, "garbage")
                text = HEADER.split("\n", 1)[0] + "\n" + ET.tostring(mutant, encoding="unicode")
                label = f"{section.tag}:{attr}:{kind}"
                message = _check(tmp_path, text, label)
                if message:
                    refused += 1
                    assert f"mutant.offxml {section.tag}" in message, (label, message)
                else:
                    loaded += 1
    assert refused > 30 and loaded > 5, (refused, loaded)


@pytest.mark.parametrize(
    "change, match",
    [
        (('idivf1="1.0"', 'idivf1="0"'),
         r"ProperTorsions id 't1': attribute idivf1='0': expected a number above 0 \(a divisor"),
        (('idivf2="1.0"', 'idivf2="-1.0"'),
         r"ProperTorsions id 't1': attribute idivf2='-1.0': expected a number above 0"),
        (('default_idivf="auto">\n        <Improper', 'default_idivf="-3">\n        <Improper'),
         r"ImproperTorsions: attribute default_idivf='-3': expected a number above 0 .* or "
         r"'auto'; fix the value"),
        (('default_idivf="auto">\n        <Proper', 'default_idivf="0.0">\n        <Proper'),
         r"ProperTorsions: attribute default_idivf='0.0': expected a number above 0"),
    ],
)  # fmt: skip
def test_a_torsion_divisor_of_zero_or_below_is_refused(tmp_path, change, match):
    # The toolkit reads idivf 0 or -1: k / idivf was then infinite, or the term's energy
    # had its sign turned, and ForceField.idivf handed that on without a word.
    text = BASE.replace(*change)
    assert text != BASE
    assert re.search(match, _check(tmp_path, text, "idivf")), match


def test_a_positive_divisor_is_read_as_written(tmp_path):
    path = tmp_path / "half.offxml"
    path.write_text(
        BASE.replace('idivf1="1.0"', 'idivf1="0.5"').replace(
            'default_idivf="auto">\n        <Improper', 'default_idivf="2">\n        <Improper'
        )
    )
    ff = load_force_field(path)
    assert [ff.idivf("ProperTorsions", t) for t in ff["ProperTorsions"]["t1"].terms] == [0.5, 1.0]
    assert ff.idivf("ImproperTorsions", ff["ImproperTorsions"]["i1"].terms[0]) == 2.0


@pytest.mark.parametrize(
    "change, match",
    [
        # the toolkit reads <idivf1>2.0</idivf1> as idivf1="2.0" (k / 2); it was left out
        # here, so the term's divisor was the default 1, without a word
        (('idivf1="1.0" idivf2="1.0"/>', 'idivf2="1.0"><idivf1>2.0</idivf1></Proper>'),
         r"mutant.offxml ProperTorsions id 't1': <Proper> holds the element <idivf1>; a "
         r"parameter's values are read from its attributes only .* write it as idivf1=\"...\""),
        (('k1="1.1 * kilocalorie_per_mole"/>', '><k1>1.1 * kilocalorie_per_mole</k1></Improper>'),
         r"ImproperTorsions id 'i1': <Improper> holds the element <k1>"),
        # an id written as an element: the toolkit names the parameter by it, we did not
        (('id="n2" epsilon="0.086 * kilocalorie_per_mole" sigma="3.4 * angstrom"/>',
          'epsilon="0.086 * kilocalorie_per_mole" sigma="3.4 * angstrom"><id>n2</id></Atom>'),
         r"mutant.offxml vdW parameter 2: <Atom> holds the element <id>"),
        (('id="a1" angle="109.5 * degree" k="100.0 * kilocalorie_per_mole / radian ** 2"/>',
          'id="a1" angle="109.5 * degree" k="100.0 * kilocalorie_per_mole / radian ** 2">'
          "sp3</Angle>"),
         r"Angles id 'a1': <Angle> holds the text 'sp3'; .* remove the text"),
    ],
)  # fmt: skip
def test_a_value_written_inside_a_parameter_is_refused(tmp_path, change, match):
    text = BASE.replace(*change)
    assert text != BASE
    assert re.search(match, _check(tmp_path, text, "content")), match


def test_a_parameter_with_a_parent_id_loads_as_the_toolkit_reads_it(tmp_path):
    # parent_id is an attribute of every toolkit ParameterType (force-field fitting writes
    # it); it was refused as unknown. Read as text, like id; labels do not change.
    text = BASE.replace('id="b2"', 'id="b2" parent_id="b1"')
    assert _check(tmp_path, text, "parent_id") == ""
    ff = load_force_field(tmp_path / "mutant.offxml")
    assert ff["Bonds"]["b2"]["parent_id"] == "b1"
    assert "parent_id" not in ff["Bonds"]["b1"].values
    assert SmirksAssigner(ff, sections=["Bonds"]).assign("CC").ids("Bonds")[(0, 2)] == "b2"


def test_an_improper_interpolated_by_bond_order_is_refused(tmp_path):
    # The toolkit's ImproperTorsionType has no k_bondorder and refuses the file; read here
    # (stop 36 and before), the improper was labelled and Parameter.terms then had no k.
    text = BASE.replace(
        'k1="1.1 * kilocalorie_per_mole', 'k1_bondorder1="1.1 * kilocalorie_per_mole'
    ).replace('k1_bondorder1="1.1', 'k1_bondorder2="2.2 * kilocalorie_per_mole" k1_bondorder1="1.1')
    assert "k1_bondorder2" in text
    message = _check(tmp_path, text, "i1")
    assert re.search(r"ImproperTorsions id 'i1': unknown attribute k1_bondorder", message), message
