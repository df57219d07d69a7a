"""Stop 62: a table's empty cell (NaN, ``pd.NA``) as a molecule, a line or a name.

A CSV with an empty SMILES or name cell gives NaN: ``assign_many(df["smiles"])`` said
"got float: nan", ``label_lines`` advised decoding the file's lines, and a NaN name "name
must be a string or None, got float": none named a fix. Each advice is followed here.
"""

from __future__ import annotations

import pytest

pytest.importorskip("rdkit")
pytest.importorskip("openforcefields")
pd = pytest.importorskip("pandas")

from tying.chem import SmirksAssigner  # noqa: E402
from tying.chem.lines import label_lines  # noqa: E402

MISSING = r"a missing value \(a table's empty cell\) is not a molecule: leave its rows out"


@pytest.fixture(scope="module")
def sage() -> SmirksAssigner:
    return SmirksAssigner("openff-2.3.0")


@pytest.fixture
def df(tmp_path):
    path = tmp_path / "m.csv"
    path.write_text("smiles,name\nCCO,ethanol\n,empty\nCCN,\n")
    return pd.read_csv(path)


def test_empty_smiles_cell_names_the_fix(sage, df) -> None:
    with pytest.raises(TypeError, match=r"molecule 1 .*got float: nan; " + MISSING):
        sage.assign_many(df["smiles"])
    with pytest.raises(TypeError, match=r"got NAType: <NA>; " + MISSING):
        sage.assign(pd.NA)
    with pytest.raises(TypeError, match=r"line 2 is a float \(nan\), expected str; " + MISSING):
        label_lines(df["smiles"])
    # the advice, followed
    kept = df.dropna(subset=["smiles"])
    assert len(sage.assign_many(kept["smiles"])) == 2
    with pytest.warns(UserWarning, match="skipped 1 of 3"):
        assert [a is None for a in sage.assign_many(df["smiles"], errors="skip")] == [
            False,
            True,
            False,
        ]
    with pytest.warns(UserWarning, match="skipped 1 of 3"):
        assert len(label_lines(df["smiles"], errors="skip")) == 3


def test_empty_name_cell_names_the_fix(sage, df) -> None:
    kept = df.dropna(subset=["smiles"])
    with pytest.raises(TypeError, match=r"name must be a string or None, got float \(a table's"):
        sage.assign_many(zip(kept["smiles"], kept["name"], strict=True))
    with pytest.raises(TypeError, match=r"pass None for no name"):
        sage.assign("CCN", name=float("nan"))
    names = kept["name"].fillna(kept["smiles"])
    out = sage.assign_many(zip(kept["smiles"], names, strict=True))
    assert [a.name for a in out] == ["ethanol", "CCN"]
    assert sage.assign("CCN", name=None).name == "CCN"
