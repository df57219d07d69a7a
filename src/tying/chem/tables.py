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
    first = repr(columns[0]) if columns else "'smiles'"
    fix = f"a column, {function}(df[{first}])"
    if what == "molecules" and len(columns) >= 2:
        fix += f", or (SMILES, name) pairs, {function}(zip(df[{first}], df[{columns[1]!r}]))"
    if what in ("molecules", "lines"):
        fix += (
            "; a SMILES file with no header line is read with read_csv(path, header=None, "
            "names=['smiles']) (without header=None its first molecule is the column name "
            "and is lost)"
        )
    raise TypeError(
        f"{function}: expected an iterable of {what}, got a {type(values).__name__} with "
        f"columns {columns[:5]!r:.120}, whose iteration gives its column names, not its "
        f"rows; pass {fix}"
    )
