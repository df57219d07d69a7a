"""Stop 62: a data frame's rows, and a column titled by a lost first molecule.

``assign_many(df.iterrows())`` failed on pandas' "The truth value of a Series is
ambiguous", ``df.itertuples()`` as "a tuple of 3 items", ``df.to_records()`` and
``df.to_dict("records")`` as rows that are not molecules, and ``label_lines`` told them
to decode the file's lines: none named a fix. ``df.iloc[:, 0]`` of a SMILES file read
with its first line as the header lost that molecule, with no error. Each is refused
naming the columns to pass, and the advice is followed here.
"""

from __future__ import annotations

import pytest

pytest.importorskip("rdkit")
pytest.importorskip("openforcefields")
pd = pytest.importorskip("pandas")

from tying.chem import SmirksAssigner, count_type_tuples, topology_terms  # noqa: E402
from tying.chem.lines import label_lines  # noqa: E402

FIX = r"a table row is not a molecule: pass the columns, assign_many\(zip\(df\['smiles'\], df\['name'\]\)\)"


@pytest.fixture(scope="module")
def sage() -> SmirksAssigner:
    return SmirksAssigner("openff-2.3.0")


@pytest.fixture
def df():
    return pd.DataFrame({"id": [1, 2], "smiles": ["CCO", "c1ccccc1"], "name": ["eth", "benz"]})


@pytest.mark.parametrize(
    "rows",
    [
        lambda df: df.iterrows(),
        lambda df: df.itertuples(),
        lambda df: df.to_records(),
        lambda df: df.to_records(index=False),
        lambda df: df.to_dict("records"),
        lambda df: [df.iloc[0]],
        lambda df: df[["name", "smiles"]].itertuples(index=False),  # name first: not a pair
    ],
    ids=[
        "iterrows",
        "itertuples",
        "to_records",
        "records_no_index",
        "dicts",
        "series",
        "name_first",
    ],
)
def test_rows_to_assign_many_name_the_columns(sage, df, rows) -> None:
    with pytest.raises(TypeError, match=r"molecule 0: expected a SMILES.*" + FIX):
        sage.assign_many(rows(df))
    # the advice, followed
    assert [a.name for a in sage.assign_many(zip(df["smiles"], df["name"]))] == ["eth", "benz"]


def test_a_smiles_first_named_pair_is_still_a_pair(sage, df) -> None:
    out = sage.assign_many(df[["smiles", "name"]].itertuples(index=False))
    assert [a.name for a in out] == ["eth", "benz"]


def test_one_row_to_assign_names_its_fields(sage, df) -> None:
    row = df.iloc[0]
    fix = r"pass its SMILES, row\['smiles'\] \(its name too: assign\(row\['smiles'\], name=row\['name'\]\)\)"
    with pytest.raises(TypeError, match=fix):
        sage.assign(row)
    with pytest.raises(TypeError, match=fix):
        topology_terms(df.to_dict("records")[0])
    tup = next(df.itertuples())
    with pytest.raises(TypeError, match=r"assign\(row\.smiles, name=row\.name\)"):
        sage.assign(tup)
    assert sage.assign(row["smiles"], name=row["name"]).name == "eth"
    assert sage.assign(tup.smiles, name=tup.name).name == "eth"


@pytest.mark.parametrize("rows", [lambda df: df.iterrows(), lambda df: df.to_dict("records")])
def test_rows_to_label_lines_name_the_columns(df, rows) -> None:
    fix = r"label_lines\(\(f'\{s\} \{n\}' for s, n in zip\(df\['smiles'\], df\['name'\]\)\)\)"
    with pytest.raises(TypeError, match=r"(?s)line 1 is a .*a table's rows are not lines.*" + fix):
        label_lines(rows(df))
    lines = (f"{s} {n}" for s, n in zip(df["smiles"], df["name"], strict=True))
    assert [r["name"] for r in label_lines(lines)] == ["eth", "benz"]


def test_header_molecule_column_refused(sage, tmp_path) -> None:
    path = tmp_path / "lib.smi"
    path.write_text("CCO ethanol\nc1ccccc1 benzene\nCC(=O)O acid\n")
    column = pd.read_csv(path, sep=" ").iloc[:, 0]  # 2 of the 3 molecules; 'CCO' its name
    for function in (sage.assign_many, label_lines, count_type_tuples):
        with pytest.raises(TypeError, match=r"got a column named 'CCO', which reads as a SMILES"):
            function(column)
    # the advice, followed: header=None keeps all three; tolist() takes the column as is
    assert len(sage.assign_many(pd.read_csv(path, sep=" ", header=None).iloc[:, 0])) == 3
    assert len(sage.assign_many(column.tolist())) == 2
    # a column titled 'smiles' is read as before
    assert len(label_lines(pd.DataFrame({"smiles": ["CCO"]})["smiles"])) == 1
