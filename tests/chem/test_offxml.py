"""Reading real OpenFF force fields: sections, order, units, torsion terms, errors."""

from __future__ import annotations

import pytest

pytest.importorskip("rdkit")
pytest.importorskip("openforcefields")

from tying.chem import (  # noqa: E402
    ForceFieldNotFoundError,
    OffxmlError,
    available_force_fields,
    find_force_field,
    load_force_field,
)
from tying.chem.units import parse_unit  # noqa: E402

from .helpers import bond, write_offxml  # noqa: E402

ENERGY = parse_unit("kilocalorie_per_mole").dimension


def test_installed_force_fields_are_found_through_the_entry_point():
    names = available_force_fields()
    for expected in ("openff-1.0.0", "openff-2.0.0", "openff-2.3.0", "openff_unconstrained-2.3.0"):
        assert expected in names
    assert find_force_field("openff-2.3.0.offxml") == find_force_field("openff-2.3.0")


def test_unknown_name_suggests_only_close_names():
    with pytest.raises(ForceFieldNotFoundError, match=r"'openff-2.3.1' not found") as err:
        find_force_field("openff-2.3.1")
    message = str(err.value)
    assert "Did you mean 'openff-2.3.0'" in message
    assert "openff-1.0.0" not in message  # not the whole list of 70-odd names
    assert "available_force_fields() lists the" in message


def test_missing_offxml_path_says_the_file_does_not_exist(tmp_path):
    missing = tmp_path / "sub" / "my-ff.offxml"
    with pytest.raises(
        ForceFieldNotFoundError, match=r"force field file '.*my-ff.offxml' does not exist; check"
    ) as err:
        load_force_field(missing)
    assert "Did you mean" not in str(err.value) and "openff-1.0.0" not in str(err.value)
    with pytest.raises(ForceFieldNotFoundError, match="is a directory, not a file"):
        load_force_field(tmp_path)
    with pytest.raises(ForceFieldNotFoundError, match="'zzz-ff' not found: no file of that name"):
        load_force_field("zzz-ff")


@pytest.mark.parametrize("bad", [None, 2.3, ["openff-2.3.0"]])
def test_force_field_of_the_wrong_type_is_a_type_error(bad):
    with pytest.raises(TypeError, match="expected an installed name .* or a path, got"):
        find_force_field(bad)


@pytest.mark.parametrize("name", ["openff-1.0.0", "openff-2.3.0"])
def test_sections_units_and_order(name):
    ff = load_force_field(name)
    assert ff.aromaticity_model == "OEAroModel_MDL"
    for section in ("Bonds", "Angles", "ProperTorsions", "ImproperTorsions", "vdW"):
        params = ff[section].parameters
        assert len(params) > 0
        assert [p.index for p in params] == list(range(len(params)))
    b1 = ff["Bonds"]["b1"]
    assert b1.smirks == "[#6X4:1]-[#6X4:2]"
    assert str(b1["length"].unit) == "angstrom"
    assert str(b1["k"].unit) == "kilocalorie / mole / angstrom ** 2"
    assert str(ff["Angles"].parameters[0]["angle"].unit) == "degree"
    assert (
        ff["Angles"].parameters[0]["k"].unit.dimension
        == parse_unit("kilocalorie_per_mole / radian ** 2").dimension
    )
    n1 = ff["vdW"].parameters[0]
    assert n1["epsilon"].unit.dimension == ENERGY


def test_torsion_terms_with_several_periodicities():
    ff = load_force_field("openff-2.3.0")
    t2 = ff["ProperTorsions"]["t2"]
    terms = t2.terms
    assert [t.periodicity for t in terms] == [3, 2, 1]
    assert [t.phase.value for t in terms] == [0.0, 180.0, 180.0]
    assert all(t.k.unit.dimension == ENERGY for t in terms)
    assert [ff.idivf("ProperTorsions", t) for t in terms] == [1.0, 1.0, 1.0]
    improper = ff["ImproperTorsions"]["i1"].terms[0]
    assert improper.idivf is None and ff.idivf("ImproperTorsions", improper) == 3.0


def test_missing_section_and_id_are_named():
    ff = load_force_field("openff-2.3.0")
    with pytest.raises(KeyError, match="has no section 'Bends'"):
        ff["Bends"]
    with pytest.raises(KeyError, match=r"section Bonds has no parameter 'b1000'"):
        ff["Bonds"]["b1000"]
    with pytest.raises(KeyError, match=r"parameter 'b1' \(Bonds\) has no attribute 'kk'"):
        ff["Bonds"]["b1"]["kk"]


def test_load_by_path(tmp_path):
    path = write_offxml(tmp_path, [bond("[#6:1]-[#6:2]", "cc", 1.53)])
    ff = load_force_field(path)
    assert ff.name == "tiny-1.0.0"
    assert ff["Bonds"]["cc"]["length"].value == 1.53


def test_a_file_that_is_not_smirnoff(tmp_path):
    bad = tmp_path / "bad.offxml"
    bad.write_text("<Other></Other>")
    with pytest.raises(ValueError, match="expected a <SMIRNOFF> document, got <Other>"):
        load_force_field(bad)


@pytest.mark.parametrize(
    "root, match",
    [
        # read as SMIRNOFF 0.3 before: a later version may give its values another meaning
        ('<SMIRNOFF version="1.0" aromaticity_model="OEAroModel_MDL">',
         r"tiny-1.0.0.offxml: <SMIRNOFF version='1.0'> is not supported: expected 0.1 to 0.3 "
         r"\(as the OpenFF toolkit\); .* write the file in SMIRNOFF 0.3"),
        ('<SMIRNOFF version="0.4" aromaticity_model="OEAroModel_MDL">',
         r"<SMIRNOFF version='0.4'> is not supported"),
        ('<SMIRNOFF version="draft" aromaticity_model="OEAroModel_MDL">',
         r"<SMIRNOFF version='draft'> is not supported"),
        ('<SMIRNOFF aromaticity_model="OEAroModel_MDL">',
         r"tiny-1.0.0.offxml: the <SMIRNOFF> tag has no version attribute; .* add "
         r'version="0.3"'),
    ],
)  # fmt: skip
def test_a_document_version_the_toolkit_refuses_is_refused(tmp_path, root, match):
    path = write_offxml(tmp_path, [bond("[#6:1]-[#6:2]", "cc")])
    text = path.read_text()
    path.write_text(
        text.replace('<SMIRNOFF version="0.3" aromaticity_model="OEAroModel_MDL">', root)
    )
    assert path.read_text() != text
    with pytest.raises(OffxmlError, match=match):
        load_force_field(path)


@pytest.mark.parametrize("version", ["0.3", "0.3.0", "0.2"])
def test_a_document_version_the_toolkit_reads_is_read(tmp_path, version):
    path = write_offxml(tmp_path, [bond("[#6:1]-[#6:2]", "cc", 1.53)])
    path.write_text(
        path.read_text().replace('SMIRNOFF version="0.3"', f'SMIRNOFF version="{version}"')
    )
    assert load_force_field(path)["Bonds"]["cc"]["length"].value == 1.53


def test_an_unreadable_value_names_the_parameter(tmp_path):
    path = write_offxml(
        tmp_path, [bond("[#6:1]-[#6:2]", "cc").replace("angstrom ** 1", "furlong")], name="badunit"
    )
    with pytest.raises(
        ValueError, match=r"badunit.offxml Bonds id 'cc': attribute length=.*unknown unit 'furlong'"
    ):
        load_force_field(path)


def test_an_edited_force_field_file_is_read_anew(tmp_path):
    """Keyed on its path alone, a file edited in a session gave the old parameters."""
    path = tmp_path / "mine.offxml"
    path.write_bytes(load_force_field("openff-2.3.0").path.read_bytes())
    first = load_force_field(path)
    assert load_force_field(path) is first  # read once while it does not change
    assert first.digest and first.source == path.read_bytes()
    length = str(first["Bonds"]["b1"]["length"])
    path.write_text(
        path.read_text().replace(
            'id="b1" length="1.525970013793', 'id="b1" length="1.625970013793', 1
        )
    )
    again = load_force_field(path)
    assert again is not first and again.digest != first.digest
    assert str(again["Bonds"]["b1"]["length"]) != length
    assert str(first["Bonds"]["b1"]["length"]) == length  # the object read before is unchanged


# --- stop 37: a proper's 'auto' divisor, text between elements, <SMIRNOFF> attributes ---

_TORSIONS = (
    '    <ProperTorsions version="0.4" potential="k*(1+cos(periodicity*theta-phase))"{default}>\n'
    '        <Proper smirks="[*:1]~[#6:2]-[#6:3]~[*:4]" id="t1" periodicity1="3" '
    'phase1="0.0 * degree" k1="0.15 * kilocalorie_per_mole"{idivf}/>\n'
    "    </ProperTorsions>\n"
    '    <ImproperTorsions version="0.3" potential="k*(1+cos(periodicity*theta-phase))"{default}>\n'
    '        <Improper smirks="[*:1]~[#6X3:2](~[*:3])~[*:4]" id="i1" periodicity1="2" '
    'phase1="180.0 * degree" k1="1.1 * kilocalorie_per_mole"/>\n'
    "    </ImproperTorsions>\n"
)


def _torsions(tmp_path, default: str, idivf: str):
    from .helpers import HEADER

    path = tmp_path / "torsions.offxml"
    path.write_text(HEADER + _TORSIONS.format(default=default, idivf=idivf) + "</SMIRNOFF>\n")
    ff = load_force_field(path)
    return ff, ff["ProperTorsions"]["t1"].terms[0], ff["ImproperTorsions"]["i1"].terms[0]


@pytest.mark.parametrize("default", ['default_idivf="auto"', ""])  # "auto" is the default
def test_a_proper_term_divided_automatically_is_refused_by_name(tmp_path, default):
    # ForceField.idivf gave 1.0: for a proper torsion 'auto' means k divided by the number
    # of torsions about the central bond (SMIRNOFF spec), a number that depends on the
    # molecule and that the OpenFF toolkit does not compute either.
    ff, proper, improper = _torsions(tmp_path, f" {default}" if default else "", "")
    with pytest.raises(
        ValueError,
        match=r"ProperTorsions term \(periodicity 3, k 0.15 kilocalorie / mole\) has no idivfN "
        r"and <ProperTorsions default_idivf='auto'>.*\(n_j - 1\) \* \(n_k - 1\).*write idivfN",
    ):
        ff.idivf("ProperTorsions", proper)
    assert ff.idivf("ImproperTorsions", improper) == 3.0  # the trefoil, as Interchange


def test_a_proper_divisor_written_or_given_as_a_number_is_read(tmp_path):
    ff, proper, _ = _torsions(tmp_path, ' default_idivf="auto"', ' idivf1="2.0"')
    assert ff.idivf("ProperTorsions", proper) == 2.0
    ff, proper, improper = _torsions(tmp_path, ' default_idivf="1.5"', "")
    assert ff.idivf("ProperTorsions", proper) == 1.5
    assert ff.idivf("ImproperTorsions", improper) == 1.5


@pytest.mark.parametrize("name", ["openff-1.0.0", "openff-2.0.0", "openff-2.3.0"])
def test_every_installed_proper_has_its_divisor_written(name):
    ff = load_force_field(name)
    divisors = {ff.idivf("ProperTorsions", t) for p in ff["ProperTorsions"] for t in p.terms}
    assert divisors <= {1.0, 3.0}  # each written as idivfN: none refused


_BONDS = (
    '    <Bonds version="0.4" potential="harmonic">\n'
    '        <Bond smirks="[#6:1]-[#6:2]" id="b1" length="1.5 * angstrom" '
    'k="500.0 * kilocalorie_per_mole / angstrom ** 2"/>\n'
    "    </Bonds>\n"
)


@pytest.mark.parametrize(
    "change, match",
    [
        (("<Bonds", "junk\n    <Bonds"), r"mine.offxml: <SMIRNOFF> holds the text 'junk' between"),
        (("</Bonds>", "</Bonds> tail"), r"mine.offxml: <SMIRNOFF> holds the text 'tail'"),
        (('harmonic">', 'harmonic">lost'), r"mine.offxml Bonds: <Bonds> holds the text 'lost'"),
        (("/>\n", "/>&lt;Bond smirks=\"[#6:1]=[#6:2]\"/&gt;\n"),
         r"mine.offxml Bonds: <Bonds> holds the text '<Bond smirks=\"\[#6:1\]=\[#6:2\]\"/>'"),
        (('version="0.3" ', 'version="0.3" aromaticty_model="OEAroModel_MDL" '),
         r"unknown attribute aromaticty_model='OEAroModel_MDL' of the <SMIRNOFF> tag; it takes: "
         r"version, aromaticity_model, Author, Date"),
    ],
)  # fmt: skip
def test_text_between_elements_and_unknown_document_attributes_are_refused(tmp_path, change, match):
    # Both were dropped without a word (a parameter written as text was lost; a misspelled
    # aromaticity_model fell back to the default); the OpenFF toolkit refuses both.
    from .helpers import HEADER

    text = (HEADER + _BONDS + "</SMIRNOFF>\n").replace(*change)
    assert change[1] in text
    path = tmp_path / "mine.offxml"
    path.write_text(text)
    with pytest.raises(OffxmlError, match=match):
        load_force_field(path)


def test_comments_author_and_date_are_still_read(tmp_path):
    from .helpers import HEADER

    head = HEADER.replace('version="0.3"', 'version="0.3" Author="me" Date="2026-12-05"')
    text = head + "  <Author>me</Author>\n  <!-- a note -->\n  <Date>today</Date>\n" + _BONDS
    path = tmp_path / "mine.offxml"
    path.write_text(
        text.replace("    </Bonds>", "    <!-- old bond -->\n    </Bonds>") + "</SMIRNOFF>"
    )
    assert [p.id for p in load_force_field(path)["Bonds"]] == ["b1"]


def test_several_files_say_how_the_toolkit_merges_them():
    with pytest.raises(
        TypeError,
        match=r"got list of 2 \['openff-2.3.0', 'tip3p'\]; tying.chem reads one file at a time.*"
        r"ForceField\(\*files\).to_file\('merged.offxml'\)",
    ):
        load_force_field(["openff-2.3.0", "tip3p"])


@pytest.mark.parametrize(
    "tag, hint",
    [("ProperTorsion", "; did you mean <ProperTorsions>?"), ("vdw", "; did you mean <vdW>?"),
     ("Foo", "; fix the tag")],
)  # fmt: skip
def test_an_unknown_section_is_named_with_the_closest_one(tmp_path, tag, hint):
    # It was blamed on its first parameter ("unexpected element <Proper> in <ProperTorsion>;
    # expected no parameters"); the OpenFF toolkit refuses an unknown section too.
    from .helpers import HEADER

    path = tmp_path / "mine.offxml"
    path.write_text(
        HEADER + f'<{tag} version="0.3"><Proper smirks="[*:1]~[#6:2]-[#6:3]~[*:4]"/></{tag}>'
        "</SMIRNOFF>"
    )
    with pytest.raises(OffxmlError, match=rf"mine.offxml: unknown section <{tag}> holding "):
        load_force_field(path)
    with pytest.raises(OffxmlError) as err:
        load_force_field(path)
    assert hint in str(err.value)
