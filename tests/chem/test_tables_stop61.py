"""Data frames and table rows where molecules are expected (stop 61).

``pandas.read_csv("library.smi")`` of a SMILES file with no header line makes its first
SMILES the one column name; iterating the frame gives that name, so ``assign_many(df)``
labelled one molecule of four and returned a list of one, with no error (``label_lines``
and ``count_type_tuples`` too). A frame with ``smiles``/``name`` columns was refused as
the SMILES ``'smiles'``, and a row given as a list or NumPy array as "expected a SMILES
string", naming no fix. Each is now refused with the fix, and the fix works.
"""

from __future__ import annotations

import re

import numpy as np
import pytest

from tying.chem import SmirksAssigner, count_type_tuples, count_unique_parameters
from tying.chem.lines import label_lines

pd = pytest.importorskip("pandas")

LIBRARY = "CCO\nc1ccccc1\nO\nCC(=O)O\n"


@pytest.fixture(scope="module")
def sage():
    return SmirksAssigner("openff-2.3.0")


@pytest.fixture
def library(tmp_path):
    path = tmp_path / "library.smi"
    path.write_text(LIBRARY)
    return path


def test_a_smiles_file_read_with_its_first_molecule_as_header_is_refused(sage, library):
    df = pd.read_csv(library)
    assert list(df.columns) == ["CCO"]  # what the user has, unknowingly
    match = r"assign_many: .*got a DataFrame with columns \['CCO'\], whose iteration gives"
    with pytest.raises(TypeError, match=match + r".*header=None"):
        sage.assign_many(df)
    with pytest.raises(TypeError, match=r"label_lines: .*DataFrame with columns \['CCO'\]"):
        label_lines(df)
    with pytest.raises(TypeError, match=r"count_type_tuples: .*DataFrame with columns"):
        count_type_tuples(df)


def test_the_advice_reads_every_molecule(sage, library):
    df = pd.read_csv(library, header=None, names=["smiles"])
    out = sage.assign_many(df["smiles"])
    assert [a.name for a in out] == LIBRARY.split()


def test_a_frame_of_smiles_and_names_is_refused_with_the_pairs_fix(sage):
    df = pd.DataFrame({"smiles": ["CCO", "O"], "name": ["ethanol", "water"]})
    with pytest.raises(TypeError, match=r"assign_many\(zip\(df\['smiles'\], df\['name'\]\)\)"):
        sage.assign_many(df)
    with pytest.raises(TypeError, match=r"assign_many: .*DataFrame"):
        sage.assign_many(df, n_jobs=2)  # refused before any worker starts
    with pytest.raises(TypeError, match=r"count_unique_parameters: .*DataFrame"):
        count_unique_parameters(df)
    out = sage.assign_many(zip(df["smiles"], df["name"]))
    assert [a.name for a in out] == ["ethanol", "water"]


@pytest.mark.parametrize(
    "rows",
    [
        [["CCO", "ethanol"], ["O", "water"]],
        np.array([["CCO", "ethanol"], ["O", "water"]], dtype=object),
    ],
)
def test_a_row_that_is_not_a_tuple_names_the_fix(sage, rows):
    with pytest.raises(TypeError, match=r"a \(SMILES, name\) pair is a tuple: pass assign_many"):
        sage.assign_many(rows)
    assert [a.name for a in sage.assign_many([tuple(row) for row in rows])] == ["ethanol", "water"]
    with pytest.raises(TypeError, match=r"or assign\(smiles, name=name\) for one molecule"):
        sage.assign(list(rows[0]))


def test_series_and_plain_lists_are_unchanged(sage):
    series = pd.Series(["CCO", "O"])
    assert [a.name for a in sage.assign_many(series)] == ["CCO", "O"]
    assert count_type_tuples(series) == count_type_tuples(["CCO", "O"])


# Review of stop 61: the first fix the message named for a headerless SMILES file,
# assign_many(df['CCO']), labelled 3 molecules of 4 with no error (the first is the
# column name); names=['smiles'] on a file of two columns made the SMILES the index and
# the names df['smiles']; and the first column was advised whatever it held.
@pytest.mark.parametrize(
    ("text", "sep"),
    [
        (LIBRARY, ","),
        ("CCO\tethanol\nc1ccccc1\tbenzene\nO\twater\n", "\t"),
        ("CCO ethanol\nc1ccccc1 benzene\nO water\n", ","),  # a .smi read with the default sep
        ("CCO,ethanol,46.07\nO,water,18.02\nCC,ethane,30.07\n", ","),
    ],
)
def test_following_the_advice_for_a_headerless_file_reads_every_molecule(sage, tmp_path, text, sep):
    path = tmp_path / "library.smi"
    path.write_text(text)
    df = pd.read_csv(path, sep=sep)
    with pytest.raises(TypeError, match=r"first line of a SMILES file read as a header") as err:
        sage.assign_many(df)
    message = str(err.value)
    assert f"assign_many(df[{df.columns[0]!r}])" not in message  # the column lacks a molecule
    read = re.search(r"read the file with pandas\.read_csv\(path, header=None(.*?)\)", message)
    kwargs = {"sep": r"\s+"} if read.group(1) else {"sep": sep}  # "the separator you used"
    rows = pd.read_csv(path, header=None, **kwargs)
    then = re.search(r"then pass assign_many\((.*)\)$", message).group(1)
    out = sage.assign_many(eval(then, {"df": rows}))
    lines = text.splitlines()
    expected = [line.split()[0] for line in lines] if len(rows.columns) == 1 else None
    names = [a.name for a in out]
    assert len(out) == len(lines)
    assert names == (expected or [re.split(r"[\s,]", line)[1] for line in lines])


@pytest.mark.parametrize(
    ("columns", "pairs"),
    [
        (["name", "smiles"], "zip(df['smiles'], df['name'])"),
        (["id", "smiles", "name"], "zip(df['smiles'], df['name'])"),
        (["Unnamed: 0", "SMILES", "title"], "zip(df['SMILES'], df['title'])"),
    ],
)
def test_the_smiles_column_is_advised_by_its_name(sage, columns, pairs):
    data = {"smiles": ["CCO", "O"], "name": ["ethanol", "water"], "id": ["CHEMBL545", "X2"]}
    data.update(SMILES=data["smiles"], title=data["name"], **{"Unnamed: 0": [0, 1]})
    df = pd.DataFrame({c: data[c] for c in columns})
    with pytest.raises(TypeError, match=re.escape(f"assign_many({pairs})")):
        sage.assign_many(df)
    out = sage.assign_many(eval(pairs, {"df": df}))
    assert [a.name for a in out] == ["ethanol", "water"]


def test_a_list_of_molecules_given_to_assign_names_assign_many(sage):
    # review of stop 61: the hint was only "[tuple(row) for row in rows]", which, followed
    # on ['CCO', 'O'], splits each SMILES into letters
    with pytest.raises(TypeError, match=r"several molecules go to assign_many\(molecules\)"):
        sage.assign(["CCO", "O"])
    assert [a.name for a in sage.assign_many(["CCO", "O"])] == ["CCO", "O"]
