"""A force-field name the file system cannot look up gets a clear error (stop 39).

The OpenFF toolkit's ``ForceField(text)`` reads a SMIRNOFF document passed as a
string. ``load_force_field(text)`` took it for a file name and crashed inside
``pathlib`` with ``OSError: [Errno 36] File name too long``, naming neither the
argument nor the fix; so did any name longer than the file system allows.
"""

import pathlib

import pytest

pytest.importorskip("rdkit")
pytest.importorskip("openforcefields")

from tying.chem import (  # noqa: E402
    ForceFieldNotFoundError,
    SmirksAssigner,
    find_force_field,
    load_force_field,
)


@pytest.fixture(scope="module")
def sage_text() -> str:
    return pathlib.Path(find_force_field("openff-2.3.0")).read_text()


def test_the_text_of_a_document_is_refused_with_the_fix(sage_text):
    for call in (load_force_field, find_force_field, SmirksAssigner):
        with pytest.raises(
            ForceFieldNotFoundError,
            match=r"got the text of an XML document \(\d+ characters, starting '<\?xml.*"
            r"write the text to a file .* and pass that path",
        ):
            call(sage_text)
    with pytest.raises(ForceFieldNotFoundError, match="text of an XML document"):
        load_force_field("  " + sage_text[sage_text.index("<SMIRNOFF") :])


def test_the_same_text_written_to_a_file_labels_as_the_installed_one(tmp_path, sage_text):
    path = tmp_path / "mine.offxml"
    path.write_text(sage_text)
    ours = SmirksAssigner(load_force_field(path)).assign("CCO")
    sage = SmirksAssigner("openff-2.3.0").assign("CCO")
    assert {s: ours.ids(s) for s in ours.terms} == {s: sage.ids(s) for s in sage.terms}


@pytest.mark.parametrize("name", ["x" * 300, "/tmp/" + "y" * 300 + ".offxml"])
def test_a_name_too_long_for_the_file_system_is_not_found_with_a_reason(name):
    with pytest.raises(
        ForceFieldNotFoundError,
        match=r"\.\.\. \(\d+ characters\)' cannot be looked up as a file \(File name too long\)",
    ):
        load_force_field(name)
