"""The fix for a per-group start given with the wrong number of values, or a value by group.

``init={"c": [...]}`` for a per-group ``c`` takes one value per group, in the order the
groups first appear in the data sets (the order of ``result.values["c"]``). A list of
another length was told "must be a number or {group: value}", which did not say that a
list in group order works, nor which order; a list of one value per data set (the local
parameter's form) was not told how to write it per group (stop 61; left alone at stop 60).

Example:
    >>> import numpy as np
    >>> expected, fix = per_group_fix("c", ["B", "A"], np.array([0, 1, 0]), np.array([0.5, 1, 0.5]))
    >>> print(expected)
    a number, {group: value} or 2 values (one per group, in the order the groups first appear in the data sets: ['B', 'A'])
    >>> print(fix)
    ; the 3 values are one per data set, and those of each group agree: pass init={'c': {'B': 0.5, 'A': 1.0}}
"""

from __future__ import annotations

from typing import Any

import numpy as np

from tying.fit.lmfit_idioms import literal


def per_group_fix(
    name: str, groups: list[Any], index: np.ndarray, arr: np.ndarray
) -> tuple[str, str]:
    """What a per-group ``init[name]`` must be, and the fix for ``arr`` as given.

    Args:
        name: the parameter.
        groups: its group labels in first-appearance order.
        index: ``(K,)`` each data set's group (an index into ``groups``).
        arr: the values given (any shape).

    Returns:
        ``(expected, fix)``: the forms taken, and for one value per data set (``fix``,
        else "") the dict that holds them by group where each group's data sets agree,
        or ``local=`` where they differ.
    """
    out = (
        f"a number, {{group: value}} or {len(groups)} values (one per group, in the order "
        f"the groups first appear in the data sets: {literal(list(groups))})"
    )
    if arr.ndim != 1 or len(arr) != len(index) or len(arr) == len(groups):
        return out, ""
    by_group: dict[Any, Any] = {}
    for g, v in zip(index.tolist(), arr.tolist(), strict=True):
        if by_group.setdefault(groups[g], v) != v:
            return out, (
                f"; the {len(arr)} values are one per data set and differ within group "
                f"{literal(groups[g])}: a value per data set is local=[{name!r}], not per_group"
            )
    return out, (
        f"; the {len(arr)} values are one per data set, and those of each group agree: "
        f"pass init={{{name!r}: {literal(by_group)}}}"
    )


def by_group_fix(label: str, value: Any, metadata: list[Any]) -> str:
    """``"; ... fixed={'c': [...]}"`` where the keys of the dict ``value`` are the labels of a
    metadata key that every data set has, else "".

    Example:
        >>> by_group_fix("fixed['c']", {"A": 1.0, "B": 0.0}, [{"g": "B"}, {"g": "A"}])
        "; its keys are the labels of metadata key 'g': one value per data set by its group is fixed={'c': [0.0, 1.0]}"
    """
    if "[" not in label or not metadata:
        return ""
    role, name = label.split("[", 1)[0], label.split("[", 1)[1].rstrip("]")
    for key in metadata[0]:
        try:
            labels = [meta[key] for meta in metadata]
            if all(g in value for g in labels) and all(k in labels for k in value):
                per_dataset = [value[g] for g in labels]
                return (
                    f"; its keys are the labels of metadata key {key!r}: one value per data "
                    f"set by its group is {role}={{{name}: {literal(per_dataset)}}}"
                )
        except (KeyError, TypeError):  # a data set without the key, an unhashable label
            continue
    return ""
