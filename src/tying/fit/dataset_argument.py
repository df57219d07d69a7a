"""The data set argument of FitResult's per-data-set methods, and lmfit's calls without it.

lmfit's ``ModelResult`` holds one data set, so its calls name none:
``out.eval_uncertainty(x=xn, sigma=2)``, ``out.eval_uncertainty()`` (at the data's x),
``out.eval_uncertainty(dscale=0.01)``. A ported call reached FitResult's methods, which
take the data set ``i`` first, and got Python's bare "missing 1 required positional
argument: 'i'" (or, for ``result.eval_uncertainty(xn)``, "missing ... 'x'", x having been
read as i). Since stop 62 the message says what ``i`` is and writes the call with it.

Example:
    >>> import numpy as np
    >>> import tying.fit
    >>> x = np.linspace(0, 1, 8)
    >>> result = tying.fit.GlobalFit(lambda x, a, b: a * x + b,
    ...                              [(x, 2 * x + 1 + 0.01 * np.sin(9 * x))],
    ...                              shared=["a", "b"], init={"a": 1.0, "b": 0.0}).run()
    >>> try:
    ...     result.eval_uncertainty(x=x, sigma=2)          # lmfit's call: no data set
    ... except TypeError as e:
    ...     print(str(e).rsplit(": ", 1)[-1])
    pass result.eval_uncertainty(0, x=x, sigma=2)
    >>> result.eval_uncertainty(0, x, sigma=2).shape
    (8,)
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import Any

import numpy as np

from tying.fit.lmfit_idioms import literal
from tying.fit.result_argument import require_result

# lmfit's keywords of these calls that ours spell otherwise, or do not have
_LMFIT_KEYWORDS = {
    "dscale": "lmfit's step of its finite-difference derivatives; there is none here: the "
    "band's derivatives are taken as the fit takes its Jacobian",
    "params": "the values are the result's own; for other values call model_fn(x, ...) yourself",
}


def _argument(name: str, value: Any) -> str:
    """How the advice writes an argument: the keyword's own name for arrays and objects."""
    if isinstance(value, (bool, int, float, str)) or value is None:
        return literal(value)
    return name


def _advice(
    method: str, sig: inspect.Signature, result: Any, args: tuple, kwargs: dict
) -> str | None:
    """The message for a call Python refused, or None where Python's own says it all."""
    names = list(sig.parameters)[1:]  # without self
    shown = f"result.{method}({', '.join(names)})"
    unknown = [k for k in kwargs if k not in names]
    if unknown:
        key = unknown[0]
        why = _LMFIT_KEYWORDS.get(key, f"its keywords are {', '.join(names)}")
        return f"{shown} got an unexpected keyword argument {key!r}: {why}"
    datasets = getattr(result, "dataset_names", None)  # a GlobalFit: require_result names it
    if "i" in kwargs or not names or names[0] != "i" or datasets is None:
        return None
    k = len(datasets)
    chosen = bool(args) and (
        isinstance(args[0], (int, np.integer, str)) and not isinstance(args[0], bool)
    )
    i = literal(args[0]) if chosen else "0" if k == 1 else "i"
    rest = [n for n in names[1:] if n not in kwargs]
    args = args[1:] if chosen else args
    if len(args) > len(rest):
        return None
    positional = dict(zip(rest, args))
    call = {**positional, **kwargs}
    missing = [
        n
        for n in names[1:]
        if n not in call and sig.parameters[n].default is inspect.Parameter.empty
    ]
    keywords = "".join(f", {n}={_argument(n, v)}" for n, v in kwargs.items())
    which = (
        "0, the fit's one data set"
        if k == 1
        else f"an index 0..{k - 1} or a name, e.g. {datasets[0]!r}"
    )
    head = (
        f"{shown} takes the data set i first ({which}); lmfit's result holds one data set "
        f"and its calls name none"
    )
    if missing == ["x"]:  # lmfit's default: the data's own x
        return (
            f"{shown if chosen else head}: x has no default (lmfit's is the data's own x): "
            f"pass that data set's x, result.{method}({i}, x_i{keywords})"
        )
    if missing or chosen:
        return None
    # the call with i put first: the arguments given keep their order after it
    parts = [
        _argument(n, v) if n in positional else f"{n}={_argument(n, v)}" for n, v in call.items()
    ]
    return f"{head}: pass result.{method}({', '.join([i, *parts])})"


def per_dataset(fn: Callable[..., Any]) -> Callable[..., Any]:
    """``fn`` (a FitResult method taking data set ``i`` first), whose unbindable call is named.

    A call that binds runs ``fn`` as before (no cost: the signature is only read when
    Python refused the call).

    Args:
        fn: the method, ``fn(self, i, ...)``.

    Returns:
        The wrapped method, with ``fn``'s signature and docs.

    Raises:
        TypeError: from the call, where its arguments do not fit ``fn``'s signature: says what
            i is and, where it can, writes the call with it.
    """
    sig = inspect.signature(fn)

    @functools.wraps(fn)
    def call(self: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return fn(self, *args, **kwargs)
        except TypeError:
            try:
                sig.bind(self, *args, **kwargs)
            except TypeError:  # Python refused the call itself, before fn ran
                # the module function given a GlobalFit or lmfit's result: that first
                # (review 62: eval_uncertainty(fit, x=x) read Python's bare "missing ... 'i'")
                try:
                    require_result(self, fn.__name__)
                except TypeError as wrong:
                    raise wrong from None
                advice = _advice(fn.__name__, sig, self, args, kwargs)
                if advice is not None:
                    raise TypeError(advice) from None
            raise

    return call
