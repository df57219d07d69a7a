"""A force field with no section to label says so (stop 38).

Its message told the user to pass ``sections=None``, which is what they had done.
"""

import re

import pytest

pytest.importorskip("rdkit")

from tying.chem import SmirksAssigner, load_force_field  # noqa: E402

HEAD = '<?xml version="1.0"?>\n<SMIRNOFF version="0.3" aromaticity_model="OEAroModel_MDL">'


@pytest.mark.parametrize(
    "inner, held",
    [
        ("", "no section at all"),
        (
            '<Electrostatics version="0.4" scale14="0.8333333333"></Electrostatics>',
            "['Electrostatics']",
        ),
    ],
)
def test_an_empty_force_field_names_what_it_holds(tmp_path, inner, held):
    path = tmp_path / "empty-1.0.0.offxml"
    path.write_text(HEAD + inner + "</SMIRNOFF>\n")
    try:
        ff = load_force_field(path)
    except ValueError as err:  # a section this library does not read at all is refused at load
        pytest.skip(f"refused at load: {err}")
    pattern = r"force field empty-1.0.0 \(.*\) holds " + re.escape(held) + ": none of the sections"
    with pytest.raises(ValueError, match=pattern):
        SmirksAssigner(ff)


def test_an_empty_list_of_sections_keeps_its_own_message():
    with pytest.raises(ValueError, match="sections is empty, so no term would be assigned"):
        SmirksAssigner("openff-2.3.0", sections=[])
