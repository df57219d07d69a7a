"""A data frame where a collection of molecules, lines or assignments is expected (stop 61).

Iterating a pandas (or polars) DataFrame gives its column names, not its rows. A SMILES
file read with ``pandas.read_csv("library.smi")`` has its first SMILES as the one column
name, so ``assign_many(df)`` labelled that one molecule and returned a list of one, the
other molecules lost, with no error; a frame with ``smiles`` and ``name`` columns was
refused as the SMILES ``'smiles'``, naming no fix. Such a frame is refused here, naming
its columns and what to pass.
"""

from __future__ import annotations

from typing import Any


def is_table(values: Any) -> bool:
    """Whether ``values`` is a data frame (pandas or polars), whose iteration gives columns.

    Example:
        >>> is_table(["CCO"]), is_table(("CCO", "ethanol"))
        (False, False)
    """
    return hasattr(values, "columns") and (
        hasattr(values, "iterrows") or hasattr(values, "iter_rows")
    )


def refuse_table(values: Any, function: str, what: str) -> None:
    """Raise a TypeError for a data frame given where ``what`` (a collection) is expected.

    Args:
        values: what the caller passed.
        function: the function's name, for the message.
        what: what the collection holds (``"molecules"``, ``"lines"``, ...).

    Raises:
        TypeError: when ``values`` is a data frame: names its columns, says that iterating
            it gives them (a SMILES file read without ``header=None`` loses its first line
            to them) and what to pass.

    Example:
        >>> refuse_table(["CCO"], "assign_many", "molecules")  # not a frame: nothing
    """
    if not is_table(values):
        _refuse_header_series(values, function, what)
        return
    columns = [str(c) for c in values.columns]
    polars = type(values).__module__.startswith("polars")
    # The column the SMILES are in, by name (a frame may be ['id', 'smiles', 'name'] or
    # ['name', 'smiles']); the first column was advised whatever it held (review of stop 61)
    smiles = next((c for c in columns if "smiles" in c.lower() or c.lower() == "smi"), None)
    if what in ("molecules", "lines") and smiles is None and columns and _is_molecule(columns[0]):
        # A SMILES file read without header=None: its first line is the column names, so
        # the column the message advised, df['CCO'], silently lacked that molecule (review
        # of stop 61: assign_many(df['CCO']) labelled 3 molecules of 4, no error)
        # Columns by number (header=None), whatever their count: names=['smiles'] on a
        # file of two columns made the SMILES the index and the names df['smiles']
        spaced = len(columns) == 1 and len(columns[0].split()) > 1  # 'CCO ethanol', sep=','
        pairs = what == "molecules" and (len(columns) >= 2 or spaced)
        if polars:
            sep = ", separator=' '" if spaced else ""
            read = f"polars.read_csv(path, has_header=False{sep})"
            first, second = "df['column_1']", "df['column_2']"
        else:
            sep = r", sep=r'\s+'" if spaced else ""
            read = f"pandas.read_csv(path, header=None{sep})"
            first, second = "df[0]", "df[1]"
        then = f"zip({first}, {second})" if pairs else first
        fix = (
            f"its column names are the first line of a SMILES file read as a header, a "
            f"molecule that is in no row (a column such as df[{columns[0]!r}] lacks it); read "
            f"the file with {read}{'' if spaced else ' (and the separator you used)'}, then "
            f"pass {function}({then})"
        )
    else:
        column, name = smiles_and_name(columns)
        fix = f"pass a column, {function}(df[{column!r}])"
        if what == "molecules" and name is not None:
            fix += f", or (SMILES, name) pairs, {function}(zip(df[{column!r}], df[{name!r}]))"
    raise TypeError(
        f"{function}: expected an iterable of {what}, got a {type(values).__name__} with "
        f"columns {columns[:5]!r:.120}, whose iteration gives its column names, not its "
        f"rows; {fix}"
    )


def _refuse_header_series(values: Any, function: str, what: str) -> None:
    """Refuse a column (a pandas or polars Series) whose name reads as a SMILES (stop 62).

    ``pandas.read_csv("library.smi")`` makes a SMILES file's first line the column
    names, so ``df.iloc[:, 0]`` (or ``df[df.columns[0]]``) holds every molecule but that
    first one, which is the column's name: ``assign_many(df.iloc[:, 0])`` labelled the
    others, one molecule lost, no error. A column whose title merely reads as a SMILES
    is passed as a list (``series.tolist()``).
    """
    if type(values).__name__ != "Series" or not hasattr(values, "dtype"):
        return
    title = getattr(values, "name", None)
    if not isinstance(title, str) or what not in ("molecules", "lines"):
        return
    if not _is_molecule(title):
        return
    polars = type(values).__module__.startswith("polars")
    read = (
        "polars.read_csv(path, has_header=False)"
        if polars
        else "pandas.read_csv(path, header=None)"
    )
    raise TypeError(
        f"{function}: got a column named {title!r:.80}, which reads as a SMILES: a SMILES "
        f"file read with its first line as the header has that molecule in no row (the "
        f"column lacks it); read the file with {read} (and the separator you used), or, "
        f"if {title!r:.40} is only the column's title, pass {function}(column.tolist())"
    )


def is_missing(value: Any) -> bool:
    """Whether ``value`` is a table's empty cell: NaN (pandas, NumPy), ``pd.NA`` or ``NaT``.

    Example:
        >>> is_missing(float("nan")), is_missing(None), is_missing("CCO")
        (True, False, False)
    """
    if isinstance(value, float):
        return value != value
    return type(value).__name__ in ("NAType", "NaTType") or (
        type(value).__name__.startswith("float") and value != value
    )


# What to do with a table's empty cell given as a molecule or a line (stop 62: "got float:
# nan" named no fix; label_lines advised decoding the file's lines)
MISSING_FIX = (
    "a missing value (a table's empty cell) is not a molecule: leave its rows out, "
    "df.dropna(subset=['smiles']), or pass errors='skip' to assign_many / label_lines"
)


def smiles_and_name(columns: list[str]) -> tuple[str, str | None]:
    """The SMILES column (by name, else the first) and the likeliest name column, if any."""
    smiles = next((c for c in columns if "smiles" in c.lower() or c.lower() == "smi"), None)
    column = smiles or (columns[0] if columns else "smiles")
    others = [c for c in columns if c != column]
    if not others:
        return column, None
    return column, min(others, key=lambda c: _NAME_COLUMNS.get(c.lower(), len(_NAME_COLUMNS)))


def row_fields(row: Any) -> list[str] | None:
    """The field names of one row of a table, or None when ``row`` is not one.

    A row is what a data frame's row idioms give: a dict (``df.to_dict("records")``,
    polars' ``iter_rows(named=True)``), a pandas Series (``df.iloc[0]``,
    ``df.iterrows()``), a named tuple (``df.itertuples()``) or a NumPy record
    (``df.to_records()``).

    Example:
        >>> row_fields({"smiles": "CCO", "name": "ethanol"}), row_fields(("CCO", "x"))
        (['smiles', 'name'], None)
    """
    if isinstance(row, dict):
        return [str(k) for k in row]
    if isinstance(row, tuple) and hasattr(row, "_fields"):
        return [str(f) for f in row._fields]
    if type(row).__name__ == "Series" and hasattr(row, "index"):
        return [str(k) for k in row.index]
    names = getattr(getattr(row, "dtype", None), "names", None)
    if names:  # a NumPy record (np.record, np.void)
        return [str(n) for n in names]
    return None


def row_hint(row: Any, function: str) -> str:
    """How to pass the molecule(s) of a table row instead (``""`` when ``row`` is not one).

    Stop 62: ``assign_many(df.iterrows())`` failed on "The truth value of a Series is
    ambiguous", ``df.itertuples()`` as "a tuple of 3 items", ``df.to_records()`` and
    ``df.to_dict("records")`` as rows that are not molecules: none named a fix.

    Example:
        >>> row_hint({"id": 1, "smiles": "CCO", "name": "e"}, "assign")
        "; a table row is not a molecule: pass its SMILES, row['smiles'] (its name too: assign(row['smiles'], name=row['name']))"
    """
    fields = row_fields(row)
    if fields is None:
        return ""
    fields = [f for f in fields if f != "Index"]  # itertuples()'s index field
    column, name = smiles_and_name(fields)
    if function == "assign":
        if isinstance(row, tuple):  # a named tuple: fields by attribute
            first, named = f"row.{column}", "" if name is None else f", name=row.{name}"
        else:
            first, named = f"row[{column!r}]", "" if name is None else f", name=row[{name!r}]"
        named = f" (its name too: assign({first}{named}))" if named else ""
        return f"; a table row is not a molecule: pass its SMILES, {first}{named}"
    pairs = f"zip(df[{column!r}], df[{name!r}])" if name else f"df[{column!r}]"
    return (
        f"; a table row is not a molecule: pass the columns, {function}({pairs}) (for a "
        f"data frame df; its rows, from iterrows(), itertuples(), to_records() or "
        f"to_dict('records'), are not molecules)"
    )


# Columns that name a molecule, most likely first ('id' after 'name': ['id', 'smiles', 'name'])
_NAME_COLUMNS = {c: i for i, c in enumerate(("name", "names", "title", "molecule_name", "id"))}


def _is_molecule(name: str) -> bool:
    """Whether a column name reads as a SMILES (its first word: 'CCO ethanol' is a line)."""
    from tying.chem._rdkit import Chem, quiet

    words = name.split()
    if not words:
        return False
    with quiet():
        return Chem.MolFromSmiles(words[0]) is not None
