"""The result argument of the bands and profiles: a :class:`~tying.fit.FitResult`, or the fix.

lmfit's ``conf_interval(minimizer, result)`` takes the fit and its result; ours reads the fit
from the result, ``tying.fit.conf_interval(result, names=...)``. Before stop 62 the lmfit
pair ``conf_interval(fit, result)`` was read as ``names=result`` and the GlobalFit as the
result, and the error said the result was "unpickled from a model that cannot be pickled ...
run the fit again", which cannot be followed (the fit was fine). The same for
``eval_uncertainty(fit, i, x)`` and an lmfit result handed to ours. Every function that
takes a result checks it here first, and the message says what to pass.

Example:
    >>> import numpy as np
    >>> import tying.fit
    >>> x = np.linspace(0, 1, 8)
    >>> fit = tying.fit.GlobalFit(lambda x, a, b: a * x + b,
    ...                           [(x, 2 * x + 1 + 0.01 * np.sin(9 * x))],
    ...                           shared=["a", "b"], init={"a": 1.0, "b": 0.0})
    >>> result = fit.run()
    >>> try:
    ...     tying.fit.conf_interval(fit, result)      # lmfit's (minimizer, result)
    ... except TypeError as e:
    ...     print(str(e).split("; ")[-1])
    pass tying.fit.conf_interval(result), or result.conf_interval()
    >>> list(tying.fit.conf_interval(result, sigmas=(1,)))
    ['a', 'b']
"""

from __future__ import annotations

from typing import Any

import numpy as np

from tying.fit.lmfit_idioms import literal

# the call each function is, written as its advice shows it: (module call, method call)
_CALLS = {
    "conf_interval": ("tying.fit.conf_interval(result{names})", "result.conf_interval({names2})"),
    "eval_uncertainty": (
        "tying.fit.eval_uncertainty(result, i, x)",
        "result.eval_uncertainty(i, x)",
    ),
    "predict": ("tying.fit.uncertainty.predict(result, i, x)", "result.predict(i, x)"),
}


def _calls(what: str, names: Any, sigmas: Any = None) -> tuple[str, str]:
    func = what.rsplit(".", 1)[-1]
    module_call, method_call = _CALLS.get(func, (f"{what}(result, ...)", f"result.{func}(...)"))
    given = "" if names is None else literal(names)
    # the levels asked for travel with the advice (review 62: followed, the advice dropped
    # sigmas=(1,) and profiled at the default (1, 2, 3))
    levels = "" if sigmas is None else f"sigmas={literal(sigmas)}"
    module_extra = "".join(
        f", {a}" for a in ([f"names={given}"] if given else []) + ([levels] if levels else [])
    )
    method_extra = ", ".join(([given] if given else []) + ([levels] if levels else []))
    return (
        module_call.format(names=module_extra, names2=method_extra),
        method_call.format(names=method_extra, names2=method_extra),
    )


def _is_names(value: Any) -> bool:
    if isinstance(value, np.ndarray):  # p_names=np.array(['k']) was dropped from the advice
        return value.ndim == 1 and value.dtype.kind == "U"
    return isinstance(value, (list, tuple)) and all(isinstance(n, str) for n in value)


def _is_levels(value: Any) -> bool:
    if isinstance(value, np.ndarray):
        return value.ndim == 1 and value.dtype.kind in "iuf"
    return isinstance(value, (list, tuple)) and all(
        isinstance(s, (int, float, np.integer, np.floating)) and not isinstance(s, (bool, np.bool_))
        for s in value
    )


def require_result(
    result: Any, what: str, names: Any = None, lmfit_names: Any = None, sigmas: Any = None
) -> None:
    """Refuse anything but a FitResult as ``result``, with the call that works.

    Args:
        result: what was passed as the result.
        what: the function, as its messages name it (``"result.conf_interval"``).
        names: the argument after the result (lmfit's pair puts the result there).
        lmfit_names: lmfit's ``p_names=``, if given, for the advice.
        sigmas: the argument after ``names``: lmfit's pair puts ``p_names`` there
            (``conf_interval(mini, out, ['k'])``); levels other than the default are
            written into the advice.

    Raises:
        TypeError: ``result`` is a GlobalFit (lmfit's ``(minimizer, result)`` pair or a
            fit not yet run), an lmfit result, or anything else that is not a FitResult.
    """
    from tying.fit.global_fit import GlobalFit  # global_fit -> result -> here: no cycle
    from tying.fit.result import FitResult

    if isinstance(result, FitResult):
        return
    func = what.rsplit(".", 1)[-1]
    pair = isinstance(names, FitResult) or type(names).__module__.split(".")[0] == "lmfit"
    # the names to write into the advice: a list of str given as names= or lmfit's p_names=
    # (lmfit's pair puts its result, or a Minimizer's, where names go: never written out)
    # lmfit's positional p_names, conf_interval(mini, out, ['k']), lands in sigmas
    asked = next((n for n in (names, lmfit_names, sigmas if pair else None) if _is_names(n)), None)
    levels = sigmas if _is_levels(sigmas) and list(sigmas) != [1, 2, 3] else None
    module_call, method_call = _calls(what, asked, levels)
    fix = f"pass {module_call}, or {method_call}"
    if isinstance(result, GlobalFit):
        if pair:
            raise TypeError(
                f"{func} takes the FitResult alone, not lmfit's (minimizer, result) pair: "
                f"the result carries its fit, so the GlobalFit is not passed; {fix}"
            )
        raise TypeError(
            f"{func} takes the FitResult that GlobalFit.run() returns, got the GlobalFit "
            f"itself: run it first, result = fit.run(), then {fix}"
        )
    kind = type(result)
    if kind.__module__.split(".")[0] == "lmfit":
        raise TypeError(
            f"{func} reads a tying.fit FitResult (from GlobalFit(...).run()), got lmfit's "
            f"{kind.__name__}: for an lmfit fit call lmfit's own (lmfit.conf_interval("
            f"minimizer, result), result.eval_uncertainty()); for ours, fit with "
            f"tying.fit.GlobalFit and {fix}"
        )
    raise TypeError(
        f"{func} reads a tying.fit FitResult (from GlobalFit(...).run()), got "
        f"{kind.__name__}: {fix}"
    )
