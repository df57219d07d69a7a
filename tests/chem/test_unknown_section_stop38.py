"""An unknown section is refused when empty too, as the OpenFF toolkit refuses it (stop 38).

Only an unknown section holding parameters was refused; an empty one (``<Foo/>``, or a
misspelled header-only section such as ``<Electrostatic scale14=...>``) loaded and was
listed among the force field's sections, where the toolkit has no handler for the tag and
refuses the file.
"""

from __future__ import annotations

import warnings

import pytest

pytest.importorskip("rdkit")

from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from tying.chem import OffxmlError, available_force_fields, load_force_field  # noqa: E402
from tying.chem.offxml import HEADER_ONLY, PARAMETER_TAGS  # noqa: E402

from .helpers import bond, write_offxml  # noqa: E402

try:
    from openff.toolkit import ForceField as OpenFFForceField
except ImportError as err:
    pytest.skip(f"OpenFF toolkit not importable: {err}", allow_module_level=True)


def _with_section(tmp_path, section: str):
    path = write_offxml(tmp_path, [bond("[#6:1]-[#6:2]", "b1")])
    path.write_text(path.read_text().replace("</SMIRNOFF>", section + "\n</SMIRNOFF>"))
    return path


def _toolkit_reads(path) -> bool:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            OpenFFForceField(str(path))
    except Exception:
        return False
    return True


@pytest.mark.parametrize(
    "section, hint",
    [
        ('<Foo version="0.3"></Foo>', ";"),
        ("<Foo/>", ";"),
        ('<Electrostatic version="0.4" scale14="0.5"/>', "; did you mean <Electrostatics>?"),
        ('<ProperTorsion version="0.4"></ProperTorsion>', "; did you mean <ProperTorsions>?"),
    ],
)
def test_an_empty_unknown_section_is_refused_as_the_toolkit_refuses_it(tmp_path, section, hint):
    path = _with_section(tmp_path, section)
    tag = section[1:].split()[0].rstrip("/>")
    with pytest.raises(
        OffxmlError,
        match=rf"unknown section <{tag}> \(empty\): not a SMIRNOFF section .*"
        + hint.replace("?", r"\?")
        + " fix the tag or remove the section",
    ):
        load_force_field(path)
    assert not _toolkit_reads(path)


def test_no_shipped_force_field_holds_an_unknown_section():
    names = available_force_fields()
    assert len(names) > 10
    for name in names:
        try:
            load_force_field(name)
        except OffxmlError as err:  # e.g. openff-2.0.0-rc.1 repeats Constraints id 'c1'
            assert "unknown section" not in str(err), name


SETTINGS = settings(
    max_examples=15,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
TAGS = st.one_of(
    st.sampled_from([*PARAMETER_TAGS, *HEADER_ONLY]),
    st.from_regex(r"[A-Z][A-Za-z]{2,12}", fullmatch=True),
)


@SETTINGS
@given(tag=TAGS)
def test_property_an_empty_section_loads_exactly_when_the_toolkit_reads_it(tmp_path_factory, tag):
    if tag == "Bonds":  # the file's own section; a second one is refused as a duplicate
        return
    path = _with_section(tmp_path_factory.mktemp("ff"), f'<{tag} version="0.3"></{tag}>')
    try:
        load_force_field(path)
    except OffxmlError:
        ours = False
    else:
        ours = True
    assert ours == _toolkit_reads(path), tag
