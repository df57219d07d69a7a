"""Holding a parameter in some data sets only: no role does it; the advice for the switch that does.

A parameter has one role, so ``local=['b'], fixed={'b': [1.0, None]}`` (hold ``b`` in the
first data set, fit it in the others) was refused with "remove it from one" or "must be
real numbers", advice that drops what the user meant (stop 59). A fixed switch per data
set does it: the model reads ``b`` only where the switch is off, and a local slot the
model does not read is held and named, as lmfit's ``vary=False``.

Example:
    >>> import warnings
    >>> import numpy as np
    >>> from tying.fit import GlobalFit
    >>> x = np.linspace(0, 1, 6)
    >>> def line(x, a=1.0, b=0.0, held=0, b_held=0.0):
    ...     b = np.where(held, b_held, b)
    ...     return a * x + b
    >>> fit = GlobalFit(line, [(x, 2 * x + 1), (x, 2 * x + 3)], shared=["a"], local=["b"],
    ...                 fixed={"held": [1, 0], "b_held": [1.0, 0.0]})
    >>> with warnings.catch_warnings():
    ...     warnings.simplefilter("ignore")  # the FitWarning naming b[dataset 0] as held
    ...     result = fit.run()
    >>> round(result.values["a"], 6), result.values["b"].round(6).tolist()
    (2.0, [0.0, 3.0])
"""

from __future__ import annotations

from collections.abc import Sequence


def hold_some(name: str, held: Sequence[bool] | None = None) -> str:
    """The advice for holding ``name`` in some data sets and fitting it in the others.

    Args:
        name: the parameter.
        held: per data set, whether it is held (from the values given), or None.

    Returns:
        A message tail (starting with ``"; "``) with a switch that does it.

    Example:
        >>> hold_some("b", [True, False])[:60]
        "; to hold 'b' in some data sets only and fit it in the other"
    """
    flags = "[1, 0, ...]" if held is None else str([int(h) for h in held])
    return (
        f"; to hold {name!r} in some data sets only and fit it in the others, keep its "
        f"role (shared, per_group or local) and switch in model_fn: add parameters held and "
        f"{name}_held to model_fn, pass fixed={{'held': {flags}, '{name}_held': "
        f"[<held value or 0.0>, ...]}}, and begin model_fn with {name} = np.where(held, "
        f"{name}_held, {name}); a local slot the model then never reads is reported as not "
        f"fitted (a FitWarning, standard error NaN)"
    )
