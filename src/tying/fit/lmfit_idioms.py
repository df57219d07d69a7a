"""lmfit's calling idioms brought to :class:`~tying.fit.GlobalFit`, and the message naming ours.

lmfit hands its start values and data to the call (``model.fit(y, params, x=x)``,
``minimize(residual, params)``, ``Minimizer(...).minimize()``); GlobalFit takes them
once, when it is built, and ``fit()`` / ``run()`` take nothing. Python's own error for
these idioms ("takes 1 positional argument but 2 were given", "has no attribute
'minimize'") says what failed but not where the values go; these messages say it
(stop 59). Each piece of advice is one a user can follow as written.

Example:
    >>> import numpy as np
    >>> from tying.fit import GlobalFit
    >>> x = np.linspace(0, 1, 5)
    >>> fit = GlobalFit(lambda x, a: a * x, [(x, 2 * x)], shared=["a"])
    >>> try:
    ...     fit.run({"a": 1.0})
    ... except TypeError as e:
    ...     print(str(e)[:52])
    GlobalFit.run() takes no arguments: start values are
    >>> fit.init = {"a": 1.0}
    >>> round(fit.run().values["a"], 6)
    2.0
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

# lmfit's Model.fit / minimize keywords that users bring to GlobalFit, and ours
LMFIT_KEYWORDS = {
    "weights": "lmfit's weights multiply the residual (weights = 1/sigma); GlobalFit "
    "takes sigma per data set as the third item of each (x, y, sigma) tuple: pass "
    "sigma = 1 / weights there",
    "max_nfev": "the budget is max_iter= (iterations of the batched 'lm'; model "
    "evaluations under MINPACK and solver='trf', as lmfit's max_nfev)",
    "method": "the solver is solver='lm' (default) or solver='trf'",
    "params": "starting values are init={name: value}, bounds bounds={name: (lo, hi)}, "
    "fixed values fixed={name: value}",
    "nan_policy": "there is no switch: NaN/inf in the data is refused (lmfit's 'raise'); "
    "for 'omit' drop those points from the data set: keep = np.isfinite(x) & "
    "np.isfinite(y), then pass (x[keep], y[keep])",
    # stop 60: these got Python's bare "unexpected keyword argument"
    "calc_covar": "there is no switch: the covariance is always computed "
    "(result.covariance, result.stderr)",
    "iter_cb": "there is no per-iteration callback; result.nfev and result.niter count the "
    "work, and a fit stopped by max_iter= is reported with success=False",
    "reduce_fcn": "there is none: GlobalFit minimises the sum of squared (y - model)/sigma, "
    "lmfit's least-squares default; a robust loss is not offered",
    "fit_kws": "the solver's options are GlobalFit's own keywords: ftol=, xtol=, gtol= and "
    "max_iter= (lmfit's maxfev / max_nfev)",
    # lmfit's minimize(residual, params, args=(x, y)) passes the DATA there (stop 60)
    "args": "the data go in the data sets, one (x, y) or (x, y, sigma) tuple each "
    "(lmfit's minimize(residual, params, args=(x, y)) passes them there); a constant "
    "of model_fn goes into fixed={name: value}",
    "kws": "model_fn takes its parameters by name: a constant goes into fixed={name: value}",
}

# lmfit's fit_kws entries (leastsq and least_squares) that GlobalFit has a keyword for
_FIT_KWS = {"ftol": "ftol", "xtol": "xtol", "gtol": "gtol", "maxfev": "max_iter"}
_FIT_KWS["max_nfev"] = "max_iter"


def _fit_kws(value: Mapping[str, Any]) -> dict[str, Any]:
    """GlobalFit's keywords for lmfit's ``fit_kws``, each once: ``maxfev`` and ``max_nfev``
    both read ``max_iter``, and the advice wrote ``max_iter=500, max_iter=100`` (a
    SyntaxError when followed; review 60); the first given is kept."""
    ours: dict[str, Any] = {}
    for k, v in value.items():
        if k in _FIT_KWS:
            ours.setdefault(_FIT_KWS[k], v)
    return ours


def literal(value: Any) -> str:
    """``value`` written as Python source that runs without numpy's names.

    Review 60: ``kws={"b": np.array([1.])}`` advised ``fixed={'b': array([1.])}``, a
    NameError when followed. numpy scalars and arrays become ``1.0`` and ``[1.0, 2.0]``.

    Example:
        >>> import numpy as np
        >>> literal(np.array([1.0, 2.0])), literal(np.float64(1.0)), literal({"a": np.int64(2)})
        ('[1.0, 2.0]', '1.0', "{'a': 2}")
    """
    return repr(_plain(value))


def _plain(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {_plain(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_plain(v) for v in value)
    tolist = getattr(value, "tolist", None)  # numpy scalars and arrays, torch tensors
    if callable(tolist) and type(value).__module__.split(".")[0] in ("numpy", "torch"):
        try:
            return tolist()
        except (TypeError, ValueError, RuntimeError):
            return value
    return value


def _kws_fix(fix: str, value: Mapping[str, Any]) -> str:
    """``fixed=`` for lmfit's ``kws``: a number each; an array constant (not one value per
    data set) is bound to model_fn instead, as fixed= would read it per data set."""
    import numpy as np

    scalars, arrays = {}, []
    for k, v in value.items():
        try:
            size = np.size(v)
        except Exception:  # noqa: BLE001 (anything numpy cannot size is passed on as is)
            size = 1
        if isinstance(v, (str, bytes)) or size == 1:
            scalars[k] = np.ravel(np.asarray(v))[0] if np.ndim(v) and size == 1 else v
        else:
            arrays.append(k)
    out = f"{fix}: pass fixed={literal(scalars)}" if scalars else fix
    if arrays:
        out += (
            f"; {_quoted(arrays)} hold(s) more than one value, which fixed= would read as one "
            f"per data set: bind it to model_fn instead, GlobalFit(functools.partial(model_fn, "
            f"{arrays[0]}=<the array>), ...)"
        )
    return out


def _quoted(names: list[str]) -> str:
    return ", ".join(repr(n) for n in names)


def keyword_fix(key: str, value: Any) -> str:
    """The fix for lmfit's keyword ``key=value`` given to GlobalFit ("" for no lmfit name).

    ``fit_kws`` gets its entries written as GlobalFit's keywords, ready to pass.

    Example:
        >>> keyword_fix("fit_kws", {"xtol": 1e-12, "maxfev": 500})[-45:]
        'pass GlobalFit(..., xtol=1e-12, max_iter=500)'
    """
    fix = LMFIT_KEYWORDS.get(key, "")
    if key == "kws" and isinstance(value, Mapping) and value:
        return _kws_fix(fix, value)
    if key != "fit_kws" or not isinstance(value, Mapping) or not value:
        return fix
    ours = [f"{k}={literal(v)}" for k, v in _fit_kws(value).items()]
    other = [repr(k) for k in value if k not in _FIT_KWS]
    if ours:
        fix += f"; for these fit_kws pass GlobalFit(..., {', '.join(ours)})"
    if other:
        fix += f"; {', '.join(other)} ha{'s' if len(other) == 1 else 've'} no counterpart"
    return fix


# where each keyword of LMFIT_KEYWORDS goes on a built GlobalFit (none: no switch)
_BUILT_FIT = {
    "weights": "fit.datasets = [(x, y, 1 / weights), ...]",
    "max_nfev": "fit.max_iter = <budget>",
    "method": "fit.solver = 'trf'",
    "params": "fit.init = {name: value} (fit.bounds, fit.fixed likewise)",
    "fit_kws": "fit.ftol, fit.xtol, fit.gtol, fit.max_iter = <value>",
}


def _options() -> list[str]:
    import inspect

    from tying.fit.global_fit import GlobalFit

    sig = inspect.signature(GlobalFit.__init__).parameters.values()
    return [p.name for p in sig if p.name != "self" and p.kind is not p.VAR_KEYWORD]


# lmfit's names for running a fit, asked of a GlobalFit or of tying.fit
_RUN_NAMES = {
    "minimize": "GlobalFit runs with fit.run() (returns the FitResult) or fit.fit() "
    "(returns the GlobalFit, result in fit.result_); the model, data sets and start "
    "values go to GlobalFit(model_fn, datasets, shared=..., local=..., init=...)",
    "Minimizer": "build GlobalFit(model_fn, datasets, shared=..., local=..., init=...) "
    "and call .run(); model_fn(x, name=value, ...) returns the model, not the residual",
    "Model": "GlobalFit(model_fn, datasets, shared=..., local=..., init=...).run() fits "
    "model_fn(x, name=value, ...) to every data set",
}
_RUN_NAMES["leastsq"] = _RUN_NAMES["least_squares"] = _RUN_NAMES["minimize"]


def run_name_advice(owner: str, name: str) -> str | None:
    """The message for lmfit's way to run a fit asked of ``owner``, or None for other names.

    Args:
        owner: what was asked, e.g. ``"'GlobalFit' object"`` or ``"module 'tying.fit'"``.
        name: the attribute asked for.

    Returns:
        The AttributeError message naming ours, or None when ``name`` is not lmfit's.

    Example:
        >>> run_name_advice("module 'tying.fit'", "minimize")[:46]
        "module 'tying.fit' has no attribute 'minimize'"
        >>> run_name_advice("module 'tying.fit'", "other") is None
        True
    """
    fix = _RUN_NAMES.get(name)
    return None if fix is None else f"{owner} has no attribute {name!r}: {fix}"


def _described(arg: Any) -> str:
    kind = type(arg)
    return f"{kind.__module__.split('.')[0]}.{kind.__name__}".removeprefix("builtins.")


def call_argument_advice(method: str, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> str:
    """The TypeError message for ``GlobalFit.<method>(*args, **kwargs)``, which take nothing.

    Args:
        method: ``"fit"`` or ``"run"``.
        args, kwargs: what the call was given (at least one of them non-empty).

    Returns:
        A message naming where each kind of argument goes, with an assignment that works
        on the built fit (``fit.init = ...``, ``fit.datasets = ...``) before ``run()``.

    Example:
        >>> call_argument_advice("fit", (), {"max_nfev": 10})[:61]
        "GlobalFit.fit() got an unexpected keyword argument 'max_nfev'"
    """
    if kwargs:
        key = next(iter(kwargs))
        fix = keyword_fix(key, kwargs[key])
        head = f"GlobalFit.{method}() got an unexpected keyword argument {key!r}"
        if fix:
            # the attribute that holds it on the built fit: an attribute named after
            # lmfit's keyword (fit.max_nfev = 10) is stored and never read (review 59)
            where = _BUILT_FIT.get(key)
            value = kwargs[key]
            if key == "fit_kws" and isinstance(value, Mapping):
                set_ = [f"fit.{k} = {literal(v)}" for k, v in _fit_kws(value).items()]
                where = "; ".join(set_) or None
            tail = f"; on the built fit: {where}, then fit.{method}()" if where else ""
            return f"{head}: {fix}{tail}"
        return (
            f"{head}: GlobalFit.{method}() takes no arguments; the fit's options are "
            f"GlobalFit(...)'s keywords ({', '.join(_options())}), also settable on the built "
            f"fit under the same name (fit.max_iter = 500), then fit.{method}(); any other "
            f"name set on the fit is not read"
        )
    arg = args[0]
    got = f"got {len(args)} positional argument{'s' if len(args) > 1 else ''} ({_described(arg)}"
    got += ", ...)" if len(args) > 1 else ")"
    head = (
        f"GlobalFit.{method}() takes no arguments: start values are init=, fixed values "
        f"fixed=, bounds bounds= and the data sets the second argument of GlobalFit(...); "
        f"{got}"
    )
    if hasattr(arg, "valuesdict") and isinstance(arg, Mapping):  # lmfit Parameters
        # held ones (vary=False) go to fixed= only: a name in init/bounds and fixed, or in a
        # role and fixed, is refused (review 59: the advice followed as written failed)
        return (
            f"{head}; for lmfit Parameters set fit.init = "
            f"{{n: p.value for n, p in params.items() if p.vary}}, fit.bounds = "
            f"{{n: (p.min, p.max) for n, p in params.items() if p.vary}} and fit.fixed = "
            f"{{n: p.value for n, p in params.items() if not p.vary}} (a held name leaves "
            f"shared/per_group/local), then fit.{method}()"
        )
    if isinstance(arg, Mapping):
        return f"{head}; to start from these values set fit.init = <that dict>, then fit.{method}()"
    return (
        f"{head}; to fit other data set fit.datasets = [(x, y), ...] (or [(x, y, sigma), ...]), "
        f"then fit.{method}()"
    )


def _lmfit_steps(maxiter: object) -> str:
    """``max_steps`` that reaches as far as lmfit's ``maxiter`` steps of one stderr."""
    import numpy as np

    if isinstance(maxiter, (bool, np.bool_)) or not isinstance(maxiter, (int, np.integer)):
        return ""
    reach = int(maxiter) + 1  # lmfit stops after step maxiter + 1 (at i > maxiter)
    if reach < 1:
        return ""
    # ours: steps of one stderr, doubling after the fourth (step k at 4·2^(k-4) stderr)
    k = reach if reach <= 4 else 4 + int(np.ceil(np.log2(reach / 4)))
    return f"max_steps={k}"


def refuse_conf_interval_keywords(lmfit: dict[str, object]) -> None:
    """Name ours for lmfit's ``conf_interval`` keywords (Python's bare error named none).

    Beside GlobalFit's table (:data:`LMFIT_KEYWORDS`) since stop 61 (it lived in profile.py).
    """
    from tying.fit.uncertainty import probabilities_advice  # roles -> here: no cycle

    if not lmfit:
        return
    key, value = next(iter(lmfit.items()))
    fixes = {
        "maxiter": lambda v: (
            f"the budget is max_steps= (default 30), profile steps per side before an end "
            f"is given up (NaN with a FitWarning; lmfit's maxiter gives ±inf there). lmfit "
            f"takes maxiter + 1 steps of one stderr, ours steps by one stderr doubling "
            f"after the fourth, so "
            f"{_lmfit_steps(v) or 'max_steps=k'} reaches as far as maxiter={literal(v)}"
            + (f": pass {_lmfit_steps(v)}" if _lmfit_steps(v) else "")
        ),
        # literal(): p_names=np.array(["a"]) advised names=array(['a'], dtype='<U1') (review 60)
        "p_names": lambda v: (
            f"the parameters are names= (the first argument): pass names={literal(v)}"
        ),
        "probs": lambda v: (
            "levels are sigmas= in σ (1 to 10); for a probability p pass "
            "sigma = sqrt(2)·erfinv(p)"
            # the levels of the probabilities given (stop 60: always p = 0.95's 1.9600)
            + (f": {probabilities_advice(v)}" if probabilities_advice(v) else "")
        ),
        "trace": lambda v: (
            "there is no switch: every ProfileInterval keeps its trace in .profile, the "
            "(value, chi2) points tried, always"
        ),
        "verbose": lambda v: "the switch is progress=True (a progress bar over the profiles)",
        "prob_func": lambda v: (
            "there is none: the probability is always lmfit's default F-test (f_compare)"
        ),
        "min_rel_change": lambda v: (
            "there is none: a profile that levels off below a level gives ±inf with a "
            "FitWarning naming it"
        ),
    }
    fixes["prob"] = fixes["probs"]
    fix = (
        fixes[key](value)
        if key in fixes
        else ("its keywords are names, sigmas, max_steps and progress")
    )
    raise TypeError(f"conf_interval() got an unexpected keyword argument {key!r}: {fix}")
