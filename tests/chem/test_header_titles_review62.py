"""Review of stop 62: a column whose title reads as a SMILES, and empty cells as None.

``assign_many(df['C'])`` (a column titled 'C', 'N', 'CO', ...) is refused as a SMILES
file read with its first line as the header could be (its first molecule in no row); the
advice, ``column.tolist()``, works. ``label_lines`` names a None cell as missing.
"""

from __future__ import annotations

import pytest

pytest.importorskip("rdkit")
pytest.importorskip("openforcefields")
pd = pytest.importorskip("pandas")

from tying.chem import SmirksAssigner  # noqa: E402
from tying.chem.lines import label_lines  # noqa: E402

MOLECULES = ["CCO", "O", "c1ccccc1"]


@pytest.fixture(scope="module")
def sage() -> SmirksAssigner:
    return SmirksAssigner("openff-2.3.0", sections=["Bonds"])


@pytest.mark.parametrize("title", ["C", "N", "S", "O", "CO", "NO", "CN", "Cl"])
def test_short_titles_that_read_as_smiles_are_refused_and_the_advice_works(sage, title) -> None:
    # A column titled 'C' or 'O' may be a title or a headerless file's first molecule
    # (methane, water) read as the header: refused loudly rather than risk losing a
    # molecule silently (the lead's call on the review's proposal to let short titles pass)
    df = pd.DataFrame({title: MOLECULES, "name": ["a", "b", "c"]})
    with pytest.raises(TypeError, match=rf"got a column named '{title}'.*column\.tolist\(\)"):
        sage.assign_many(df[title])
    got = sage.assign_many(df[title].tolist())  # the advice, followed
    assert [a.smiles for a in got] == [sage.assign(s).smiles for s in MOLECULES]


def test_a_molecule_title_is_still_refused(sage) -> None:
    column = pd.Series(MOLECULES[1:], name="CCO")
    with pytest.raises(TypeError, match=r"got a column named 'CCO', which reads as a SMILES"):
        sage.assign_many(column)


def test_an_empty_cell_as_none_is_named_in_label_lines() -> None:
    # polars' empty cells and an object column's are None: the advice was to decode
    column = pd.Series(["CCO a", None, "O b"], dtype=object)
    with pytest.raises(TypeError, match=r"line 2 is a NoneType.*a missing value"):
        list(label_lines(column, "openff-2.3.0", sections=["Bonds"]))
    with pytest.warns(UserWarning, match=r"skipped 1 of 3"):  # the advice, followed
        got = list(label_lines(column, "openff-2.3.0", sections=["Bonds"], errors="skip"))
    assert [r["name"] for r in got if "ids" in r] == ["a", "b"]
