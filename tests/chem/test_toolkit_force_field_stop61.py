"""An OpenFF toolkit ForceField given to SmirksAssigner (stop 61).

A toolkit user edits a force field in memory (``add_parameter``) or merges files, and
passes the object; the TypeError said "expected an installed name or a path" and named no
way to pass it. It now says to write it with ``to_file`` and pass the path, and that
advice, followed, labels as the toolkit labels the edited force field.
"""

from __future__ import annotations

import pytest

from tying.chem import SmirksAssigner

toolkit = pytest.importorskip("openff.toolkit")
validate = pytest.importorskip("tying.chem.validate")


def test_toolkit_force_field_is_refused_with_advice_that_works(tmp_path):
    ff = toolkit.ForceField("openff-2.3.0.offxml")
    ff["Bonds"].add_parameter(
        {
            "smirks": "[#6X4:1]-[#8X2H1:2]",
            "id": "b-mine",
            "length": "1.43 * angstrom",
            "k": "600.0 * kilocalorie_per_mole / angstrom ** 2",
        }
    )
    with pytest.raises(TypeError, match=r"got ForceField: .*to_file\('my.offxml'\), then pass"):
        SmirksAssigner(ff)
    path = tmp_path / "my.offxml"
    ff.to_file(str(path))  # the advice, followed
    ours = SmirksAssigner(path).assign("CCO")
    assert ours.bonds[(1, 2)].id == "b-mine"
    assert validate.compare(ours, validate.openff_labels("CCO", ff)) == []


def test_other_objects_keep_the_plain_message():
    with pytest.raises(TypeError, match=r"or a path, got int: 3$"):
        SmirksAssigner(3)
