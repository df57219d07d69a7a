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
        column = smiles or (columns[0] if columns else "smiles")
        fix = f"pass a column, {function}(df[{column!r}])"
        others = [c for c in columns if c != column]
        if what == "molecules" and others:
            name = min(others, key=lambda c: _NAME_COLUMNS.get(c.lower(), len(_NAME_COLUMNS)))
            fix += f", or (SMILES, name) pairs, {function}(zip(df[{column!r}], df[{name!r}]))"
    raise TypeError(
        f"{function}: expected an iterable of {what}, got a {type(values).__name__} with "
        f"columns {columns[:5]!r:.120}, whose iteration gives its column names, not its "
        f"rows; {fix}"
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
