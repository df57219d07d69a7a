"""GlobalFit: fit many data sets at once, parameters declared by role.

One model function, many data sets; each parameter is declared once as
``shared`` (one value for all), ``per_group`` (one per value of a metadata
key, e.g. per instrument), ``local`` (one per data set) or ``fixed``. The
library builds the physical vector (:mod:`tying.fit.roles`), evaluates the
model on all data sets at once when it can (:mod:`tying.fit.model`), keeps
the Jacobian sparse (:mod:`tying.fit.jacobian`) and solves the normal
equations by the Schur complement (:mod:`tying.fit.schur`), so one fit
costs O(K) in the number of data sets K.

Example:
    >>> import numpy as np
    >>> import tying.fit
    >>> rng = np.random.default_rng(1)
    >>> x = np.linspace(-3, 3, 100)
    >>> def gauss(x, center, width, amplitude):
    ...     return amplitude * np.exp(-0.5 * ((x - center) / width) ** 2)
    >>> datasets = [(x, gauss(x, 0.3, 0.8, a) + rng.normal(0, 0.05, x.size), 0.05)
    ...             for a in rng.uniform(1, 3, size=20)]
    >>> fit = tying.fit.GlobalFit(gauss, datasets, shared=["center", "width"],
    ...                           local=["amplitude"],
    ...                           init={"center": 0.0, "width": 1.0, "amplitude": 1.0},
    ...                           bounds={"width": (0, None)})
    >>> c = fit.n_parameters()
    >>> c.logical, c.physical
    (60, 22)
    >>> result = fit.run()
    >>> result.success, round(result.values["center"], 2), round(result.values["width"], 2)
    (True, 0.3, 0.8)
    >>> bool(result.stderr["center"] < 0.01), result.covariance.shape
    (True, (2, 2))
"""

from __future__ import annotations

import dataclasses
import inspect
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import scipy.sparse as sp

from tying.core import Count
from tying.fit import jacobian as jac_mod
from tying.fit import schur
from tying.fit.datasets import (
    StackedData,
    _from_torch,
    sigma_misread,
    sigma_reading,
    stack,
)
from tying.fit.diagnostics import (  # noqa: F401  (re-exported: global_fit.<name> as before)
    DEGENERATE_CORRELATION,
    ILL_CONDITIONED_INFLATION,
    PLATEAU_SENSITIVITY,
    SIGMA_CHI2_FACTOR,
    SIGMA_CHI2_TAIL,
    _at_bounds,
    _check_determined,
    _check_scale,
    _covariance_range,
    _degenerate_pair,
    _gauss_newton_gain,
    _ill_conditioned,
    _inflation,
    _inverse_ok,
    _names,
    _nonfinite_note,
    _nonlinear_errors,
    _not_stationary,
    _on_bounds,
    _pair_found,
    _pair_text,
    _plateau,
    _secant_covariance,
    _second_order,
    _sensitivity,
    _sigma_contradicted,
    _unread_locals,
    _weakest,
    scaled_normal,
)
from tying.fit.lmfit_idioms import call_argument_advice, keyword_fix, run_name_advice
from tying.fit.model import ModelEvaluator
from tying.fit.rank_deficient import (
    estimable,
    null_names,
    pair_message,
    rank_scale,
    singular_route,
)
from tying.fit.result import FitResult, build_values
from tying.fit.roles import ParameterMap, _hint
from tying.fit.solvers import (
    SOLVERS,
    ConvergenceWarning,
    FitWarning,
    Tolerances,
    run_solver,
    unknown_solver,
)
from tying.fit.uncertainty import FitContext

#: the largest budget every solver can count (MINPACK's maxfev is a C int)
_MAX_ITER = 2**31 - 1


def _signature(model_fn: Callable[..., Any]) -> tuple[list[str] | None, dict[str, Any]]:
    """The model's parameter names after x (None if it takes **kwargs) and their defaults."""
    try:
        sig = inspect.signature(model_fn)
    except (TypeError, ValueError):
        return None, {}
    params = list(sig.parameters.values())
    if not params or params[0].kind not in (
        inspect.Parameter.POSITIONAL_ONLY,
        inspect.Parameter.POSITIONAL_OR_KEYWORD,
    ):
        raise TypeError(
            f"model_fn must take x as its first positional argument, then the parameters by "
            f"name: model_fn(x, center, width, ...); got {sig}"
        )
    rest = params[1:]
    by_position = [p.name for p in rest if p.kind is inspect.Parameter.POSITIONAL_ONLY]
    if by_position:  # stop 38: they failed at the first call, inside the start's check
        listed = ", ".join(by_position)
        raise TypeError(
            f"model_fn takes {listed} by position only (declared before '/' in {sig}), "
            f"but GlobalFit passes every parameter by name: model_fn(x, {by_position[0]}=...). "
            f"Drop the '/' or wrap it: lambda x, {listed}: model_fn(x, {listed})"
        )
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in rest):
        return None, {}
    names = [p.name for p in rest if p.kind is not inspect.Parameter.VAR_POSITIONAL]
    if not names and any(p.kind is inspect.Parameter.VAR_POSITIONAL for p in rest):
        # scipy's curve_fit style f(x, *p): every role was refused as a name "which model_fn
        # does not take; its parameters are []", with no fix (stop 58)
        raise TypeError(
            f"model_fn takes its parameters as *{rest[0].name} (model_fn{sig}), but "
            f"GlobalFit passes each by name; name them: lambda x, a, b: model_fn(x, a, b) "
            f"(with your parameters, in model_fn's order)"
        )
    defaults = {p.name: p.default for p in rest if p.default is not inspect.Parameter.empty}
    return names, defaults


def _refuse_x_in_roles(model_fn, shared, per_group, local, fixed) -> None:
    """Name the rule when a role names the model's first argument, the data's x (stop 38:
    it was refused as a name "which model_fn does not take")."""
    try:
        x_name = next(iter(inspect.signature(model_fn).parameters))
    except (TypeError, ValueError, StopIteration):
        return
    for role, names in (("shared", shared), ("per_group", per_group), ("local", local),
                        ("fixed", fixed)):  # fmt: skip
        if isinstance(names, str) or names is None:
            continue  # the role checks refuse a bare string by name
        if x_name in list(names):
            raise ValueError(
                f"{role} names {x_name!r}, model_fn's first argument: that is the data's "
                f"independent variable, which every data set gives as its own x, not a "
                f"parameter to fit; remove {x_name!r} from {role}= (to fit a shift of x, add "
                f"a parameter: model_fn(x, x0, ...) using x - x0)"
            )


def _refuse_roles_in_star_args(model_fn, names, shared, per_group, local, fixed) -> None:
    """Name the rule when a role names a parameter that only ``*rest`` could take.

    ``f(x, a, *rest)`` with ``shared=["a", "b"]`` (``b`` meant for ``rest[0]``, scipy's
    ``curve_fit`` style) was refused as a name "which model_fn does not take; its
    parameters are ['a']", with no fix; ``f(x, *p)`` alone named the wrapper (stop 58
    review).
    """
    if names is None:
        return
    try:
        params = list(inspect.signature(model_fn).parameters.values())
    except (TypeError, ValueError):
        return
    star = next((p.name for p in params if p.kind is inspect.Parameter.VAR_POSITIONAL), None)
    if star is None:
        return
    extra: dict[str, str] = {}  # name -> the first role naming it
    for role, given in (("shared", shared), ("per_group", per_group), ("local", local),
                        ("fixed", fixed)):  # fmt: skip
        if isinstance(given, str) or given is None:
            continue  # the role checks refuse a bare string by name
        try:
            listed = list(given)
        except TypeError:
            continue  # the role checks name a role that is not a list
        for n in listed:
            if isinstance(n, str) and n not in names:
                extra.setdefault(n, role)
    if extra:
        before = [p.name for p in params[1:] if p.kind is inspect.Parameter.POSITIONAL_OR_KEYWORD]
        after = [p.name for p in params if p.kind is inspect.Parameter.KEYWORD_ONLY]
        args = ", ".join(before + list(extra) + after)
        call = ", ".join(before + list(extra) + [f"{n}={n}" for n in after])
        first = next(iter(extra))
        raise ValueError(
            f"{extra[first]} names {first!r}, which model_fn does not take by name; its "
            f"parameters are {names} and *{star}{_hint(first, names)}; GlobalFit passes each "
            f"parameter by name, so to fit {first!r} as an item of *{star} name them: "
            f"lambda x, {args}: model_fn(x, {call}) (with your parameters, in model_fn's order)"
        )


def _lmfit_model(model_fn: Any) -> str:
    """How to pass an lmfit ``Model`` (or its ``eval``) as ``model_fn``, or "".

    Stop 51: a ``Model`` or ``CompositeModel`` was "model_fn must be callable", and its
    bound ``eval(params=None, **kwargs)`` received x as ``params`` and failed with
    lmfit's "'numpy.ndarray' object has no attribute 'items'".
    """
    model = getattr(model_fn, "__self__", model_fn)
    names = getattr(model, "param_names", None)
    xs = getattr(model, "independent_vars", None)
    if not (callable(getattr(model, "eval", None)) and isinstance(names, (list, tuple))
            and isinstance(xs, (list, tuple)) and xs):  # fmt: skip
        return ""
    x = str(xs[0])
    names = [str(n) for n in names]
    args = ", ".join(names)
    kwargs = ", ".join(f"{n}={n}" for n in names)
    more = (
        f"; its other independent variables {[str(v) for v in xs[1:]]} go into x as columns"
        if len(xs) > 1
        else ""
    )
    what = f"lmfit {type(model).__name__}" + (".eval" if model is not model_fn else "")
    return (
        f"model_fn is an {what}, which reads its parameters from an lmfit Parameters "
        f"object, while GlobalFit calls model_fn(x, name=value, ...); pass "
        f"model_fn=lambda x, {args}: model.eval({x}=x, {kwargs}){more}"
    )


class GlobalFit:
    """A global least-squares fit of one model to many data sets.

    ``__init__`` only stores its arguments; everything is checked when the fit
    is prepared (:meth:`fit`, :meth:`run`, :meth:`n_parameters`, ...), afresh on
    each call: change an attribute (``fit.datasets``, ``fit.init``, ...) and run
    again, and the new values are fitted.

    Args:
        model_fn: ``model_fn(x, **params) -> y`` for one data set, with NumPy
            or torch. The Jacobian is exact by the complex step where that is
            verified (small problems), else central finite differences (NumPy)
            or autograd (torch); see :mod:`tying.fit.model`. Written with
            broadcasting operations it is called once for all data sets
            (x ``(K, n)``, parameters ``(K, 1)``).
        datasets: a list of data sets: :class:`~tying.fit.Dataset`, dicts with
            ``x``, ``y`` (``sigma``, ``metadata``, ``name``), or tuples
            ``(x, y[, sigma][, metadata])``.
        shared: names of parameters with one value for all data sets.
        per_group: ``{name: metadata_key}``: one value per distinct ``metadata[key]``.
        local: names of parameters with one value per data set.
        fixed: ``{name: value}``: constants (a number, or one per data set).
        init: starting values ``{name: value}`` (see :class:`~tying.fit.roles.ParameterMap`);
            model signature defaults are used for names it lacks.
        bounds: ``{name: (lower, upper)}``; None for an open side.
        backend: ``"auto"`` (NumPy if the model computes with NumPy arrays, else
            torch), ``"numpy"`` or ``"torch"``.
        vectorized: ``"auto"``, True or False: evaluate all data sets in one call.
        solver: ``"lm"`` (default: MINPACK ``lmder`` for a small unbounded
            problem, else Schur-complement Levenberg-Marquardt; see
            :mod:`tying.fit.solvers`) or ``"trf"``
            (``scipy.optimize.least_squares``: the exact trust-region solver on the
            dense Jacobian where ``"lm"`` takes MINPACK, lsmr on the sparse one of a
            global fit with local parameters).
        scale_covar: multiply the covariance by the reduced χ² (lmfit's default).
        ftol, xtol, gtol, max_iter: stopping tests (see :class:`~tying.fit.solvers.Tolerances`).
            The default budget of 2,000 iterations lets the hard NIST problems
            (Bennett5, MGH17) converge without raising it; a fit stopped by its
            budget is reported with ``success=False``, never as converged.
        **lmfit: refused: lmfit's keywords (``weights``, ``max_nfev``, ``method``,
            ``params``, ``nan_policy``) are a ``TypeError`` naming ours.

    Attributes:
        result_: the :class:`~tying.fit.FitResult` after :meth:`fit`.
    """

    def __init__(
        self,
        model_fn: Callable[..., Any],
        datasets: Sequence[Any],
        *,
        shared: Sequence[str] = (),
        per_group: Mapping[str, str] | None = None,
        local: Sequence[str] = (),
        fixed: Mapping[str, Any] | None = None,
        init: Mapping[str, Any] | None = None,
        bounds: Mapping[str, Any] | None = None,
        backend: str = "auto",
        vectorized: bool | str = "auto",
        solver: str = "lm",
        scale_covar: bool = True,
        ftol: float = 1e-10,
        xtol: float = 1e-10,
        gtol: float = 1e-10,
        max_iter: int = 2000,
        **lmfit: object,
    ):
        if lmfit:  # lmfit's keywords: name ours, not Python's bare "unexpected keyword"
            key = next(iter(lmfit))
            fix = keyword_fix(key, lmfit[key])
            raise TypeError(
                f"GlobalFit() got an unexpected keyword argument {key!r}"
                + (f": {fix}" if fix else "")
            )
        self.model_fn = model_fn
        self.datasets = datasets
        self.shared = shared
        self.per_group = per_group
        self.local = local
        self.fixed = fixed
        self.init = init
        self.bounds = bounds
        self.backend = backend
        self.vectorized = vectorized
        self.solver = solver
        self.scale_covar = scale_covar
        self.ftol = ftol
        self.xtol = xtol
        self.gtol = gtol
        self.max_iter = max_iter

    # -- preparation ----------------------------------------------------------

    def _prepare(self) -> tuple[StackedData, ParameterMap, ModelEvaluator]:
        """Check the declaration and the data *as they are now*, and build the fit's parts.

        Built afresh on every call, as scikit-learn's ``fit`` reads its parameters: a
        cached build read the first call's data sets, roles, init and bounds on every
        later ``run()``, so changing ``fit.datasets`` (or a data array in place), then
        running again, returned the old fit with no error (stop 31 review).
        """
        lmfit_model = _lmfit_model(self.model_fn)
        if lmfit_model:
            raise TypeError(lmfit_model)
        if not callable(self.model_fn):
            several = isinstance(self.model_fn, (list, tuple, dict)) and any(
                callable(f)
                for f in (
                    self.model_fn.values() if isinstance(self.model_fn, dict) else self.model_fn
                )
            )
            hint = (
                "; for a different functional form per data set write one model_fn that "
                "switches on a fixed value per data set, e.g. fixed={'kind': [0, 1, ...]} and "
                "np.where(kind == 0, form0, form1)"
                if several
                else ""
            )
            raise TypeError(f"model_fn must be callable, got {type(self.model_fn).__name__}{hint}")
        if self.solver not in SOLVERS:
            raise ValueError(unknown_solver(self.solver))
        if isinstance(self.max_iter, bool) or not (
            isinstance(self.max_iter, (int, np.integer)) and self.max_iter > 0
        ):
            raise ValueError(f"max_iter must be a positive int, got {self.max_iter!r}")
        if self.max_iter > _MAX_ITER:
            # MINPACK's maxfev is a C int: 2**31 raised a bare OverflowError (stop 52)
            raise ValueError(
                f"max_iter must be at most {_MAX_ITER:,} (MINPACK counts its evaluations in "
                f"a C int), got {self.max_iter:,}; e.g. max_iter=100_000"
            )
        if not isinstance(self.scale_covar, (bool, np.bool_)):
            # a truthy string ("no") scaled the errors, None did not: both without a word
            raise TypeError(
                f"scale_covar must be True or False, got {self.scale_covar!r}; True scales "
                f"the covariance by the reduced chi2 (lmfit's default), False trusts sigma"
            )
        for label in ("ftol", "xtol", "gtol"):
            tol = getattr(self, label)
            if isinstance(tol, (bool, np.bool_)) or not isinstance(
                tol, (int, float, np.integer, np.floating)
            ):
                raise TypeError(f"{label} must be a number, got {tol!r}")
            if not (np.isfinite(tol) and tol >= 0):
                # MINPACK reads a negative tolerance as bad input and stops at the start
                # (reported as max_iter reached); NaN disables the test unnoticed
                raise ValueError(
                    f"{label} must be a finite number >= 0, got {tol!r}; e.g. {label}=1e-10"
                )
        data = stack(self.datasets)
        names, defaults = _signature(self.model_fn)
        _refuse_x_in_roles(self.model_fn, self.shared, self.per_group, self.local, self.fixed)
        _refuse_roles_in_star_args(
            self.model_fn, names, self.shared, self.per_group, self.local, self.fixed
        )
        pmap = ParameterMap(
            names,
            data.metadata,
            shared=self.shared,
            per_group=self.per_group,
            local=self.local,
            fixed=self.fixed,
            init=self.init,
            bounds=self.bounds,
            defaults=defaults,
            dataset_names=data.names,
        )
        ev = ModelEvaluator(self.model_fn, data, pmap, self.backend, self.vectorized)
        return data, pmap, ev

    @property
    def parameter_map(self) -> ParameterMap:
        """The roles → physical map (checks the declaration as it is now)."""
        return self._prepare()[1]

    def n_parameters(self) -> Count:
        """Logical vs physical parameters as a :class:`tying.Count` (``tying.count(fit)`` too).

        ``logical`` counts the parameter slots the data sets read, ``physical``
        the values the fit varies; fixed parameters count in neither.

        Example:
            >>> import numpy as np, tying
            >>> x = np.arange(5.0)
            >>> fit = GlobalFit(lambda x, a, b: a * x + b, [(x, x)] * 4, shared=["a"],
            ...                 local=["b"], init={"a": 1.0, "b": 0.0})
            >>> c = fit.n_parameters()
            >>> c.logical, c.physical, tying.count(fit).ratio
            (8, 5, 1.6)
        """
        return self.parameter_map.n_parameters()

    def jacobian_sparsity(self) -> sp.csr_matrix:
        """The non-zero pattern ``(N points, n_physical)`` of the global Jacobian."""
        data, pmap, _ = self._prepare()
        return jac_mod.sparsity(data, pmap)

    def jacobian(self, theta: np.ndarray | None = None) -> sp.csr_matrix:
        """The Jacobian of the weighted model, ``∂(model/σ)/∂θ`` (sparse CSR), at ``theta``.

        ``theta`` is a physical vector (``result.x``), one entry per ``physical_names``
        (default: the start). The rows are every data set's points in order. It is the
        Jacobian of the solver's residual ``(model - y)/σ`` and *minus* that of
        ``result.residual(i)``, ``(y - model)/σ`` (lmfit's sign since stop 56), so a
        Gauss-Newton step from residuals ``r`` of that sign is ``+lstsq(J, r)``.

        Example:
            >>> import numpy as np
            >>> from tying.fit import GlobalFit
            >>> x = np.linspace(0, 1, 5)
            >>> fit = GlobalFit(lambda x, a, b: a * x + b, [(x, 2 * x + 1, 0.5)],
            ...                 shared=["a", "b"], init={"a": 1.0, "b": 0.0})
            >>> fit.jacobian().toarray()[:2].round(6).tolist()  # ∂model/∂(a, b) / σ
            [[0.0, 2.0], [0.5, 2.0]]
            >>> r = (2 * x + 1 - (1.0 * x + 0.0)) / 0.5        # (y - model)/σ at the start
            >>> step = np.linalg.lstsq(fit.jacobian().toarray(), r, rcond=None)[0]
            >>> (np.array([1.0, 0.0]) + step).round(6).tolist()    # one step: the line
            [2.0, 1.0]

        Raises:
            ValueError: ``theta`` of another length (extra entries were ignored), or
                not finite.
        """
        data, pmap, ev = self._prepare()
        if theta is not None:
            # a tensor (result.x moved to torch) raised torch's own error; a complex theta
            # lost its imaginary part with only NumPy's ComplexWarning (stop 39)
            theta = np.asarray(_from_torch("theta", "theta", theta))
            if theta.dtype.kind not in "iuf":
                raise TypeError(
                    f"theta must be real numbers, got {theta.dtype}; pass result.x of a fit "
                    f"with the same roles"
                )
        theta = pmap.x0 if theta is None else np.asarray(theta, dtype=float)
        if theta.shape != (pmap.n_physical,) or not np.all(np.isfinite(theta)):
            raise ValueError(
                f"theta must be {pmap.n_physical} finite values, one per physical parameter "
                f"({', '.join(pmap.physical_names[:6])}{', ...' if pmap.n_physical > 6 else ''}"
                f"), got shape {theta.shape}; pass result.x of a fit with the same roles"
            )
        return jac_mod.assemble(jac_mod.weighted(ev.jacobian(theta), data), data, pmap)

    # -- fitting --------------------------------------------------------------

    def fit(self, *lmfit_args: object, **lmfit_kwargs: object) -> GlobalFit:
        """Run the fit; the result is in ``self.result_``.

        Args:
            *lmfit_args, **lmfit_kwargs: refused: lmfit's ``fit(params)`` /
                ``minimize(params)`` idioms are a ``TypeError`` saying where start
                values (``init``), bounds and data sets go (:mod:`~tying.fit.lmfit_idioms`).

        Returns:
            self.

        Raises:
            ValueError / TypeError / tying.TieError: any problem with the
                declaration or the data (see :class:`~tying.fit.roles.ParameterMap`,
                :func:`~tying.fit.datasets.stack`, :class:`~tying.fit.model.ModelEvaluator`);
                an underdetermined fit (fewer points than fitted parameters, or a
                data set with fewer points than its local parameters); data or a
                start whose chi2 float64 cannot hold (overflow, underflow); a NaN or
                inf derivative at the starting values (naming the parameter); with
                ``vectorized=True``, a batched model that disagrees with the
                per-data-set model at the solution; a model_fn that changed its x
                argument in place (a torch model; NumPy's x is read-only); a torch
                model whose autograd derivative the complex step or central
                differences refute (a wrong custom backward; naming the parameter,
                data set and point).
            tying.fit.ModelError: ``model_fn`` raised during the fit, or its
                derivative was NaN or inf there (the message names the data set and
                the parameter values).

        Warns:
            ConvergenceWarning: when the solver stopped before converging
                (``result_.success`` is then False).
            FitWarning: when two fitted parameters are fully correlated (the
                data cannot tell them apart; ``result_.message`` names them), a
                singular Jacobian (standard errors NaN; the message names the parameters
                of the undetermined combination, and the data set for local ones), a
                fitted parameter ended on a bound (its standard error assumes it free),
                or weighted residuals that grow as sigma shrinks (lmfit's weights, 1/σ,
                given as sigma; :func:`~tying.fit.datasets.sigma_misread`).
        """
        if lmfit_args or lmfit_kwargs:  # not Python's bare "takes 1 positional argument"
            raise TypeError(call_argument_advice("fit", lmfit_args, lmfit_kwargs))
        data, pmap, ev = self._prepare()
        _check_determined(data, pmap)
        _check_scale(data, pmap, ev.start_model)
        ev.nfev = ev.njev = ev.n_nonfinite = 0
        ev.nonfinite_theta = None
        tol = Tolerances(self.ftol, self.xtol, self.gtol, int(self.max_iter))
        t0 = time.perf_counter()
        out = run_solver(self.solver, ev, data, pmap, tol)
        if ev.vectorized and data.n_datasets > 1:
            # the check before the fit saw only the start; the solution is what is reported
            mismatch = ev.loop_mismatch(out.theta, out.model)
            if mismatch and self.vectorized is True:
                raise ValueError(
                    f"vectorized=True, but the all-data-sets call of model_fn disagrees with "
                    f"per-data-set calls: {mismatch}; pass vectorized='auto' or False"
                )
            if mismatch:
                ev.vectorized = False
                ev.why_not_vectorized = f"{mismatch} (refitted with a loop over data sets)"
                ev.nfev = ev.njev = ev.n_nonfinite = 0
                ev.nonfinite_theta = None
                out = run_solver(self.solver, ev, data, pmap, tol)
        changed = ev.x_changed()
        if changed:
            raise ValueError(changed)
        # the complex step was checked on the first Jacobian only; the standard errors
        # come from the one at the solution, so it is checked there too
        mismatch = ev.complex_step_mismatch(out.theta)
        if mismatch:
            ev._complex_ok = False
            ev.why_not_complex_step = f"{mismatch} (refitted without the complex step)"
            ev.nfev = ev.njev = ev.n_nonfinite = 0
            ev.nonfinite_theta = None
            out = run_solver(self.solver, ev, data, pmap, tol)
        self.result_ = self._result(out, data, pmap, ev)
        self.result_.time = time.perf_counter() - t0
        self.result_._context = FitContext(ev, tol, bool(self.scale_covar), self.vectorized)
        if not self.result_.success:
            warnings.warn(
                f"global fit did not converge: {self.result_.message}",
                ConvergenceWarning,
                stacklevel=2,
            )
        return self

    def run(self, *lmfit_args: object, **lmfit_kwargs: object) -> FitResult:
        """Run the fit and return its :class:`~tying.fit.FitResult` (``fit().result_``).

        Arguments are refused as :meth:`fit` refuses them, naming where they go.
        """
        if lmfit_args or lmfit_kwargs:
            raise TypeError(call_argument_advice("run", lmfit_args, lmfit_kwargs))
        return self.fit().result_

    def __getattr__(self, name: str) -> Any:
        # only names missing from the instance reach here; lmfit's run names get ours
        advice = run_name_advice("'GlobalFit' object", name)
        if advice is None:
            raise AttributeError(f"'GlobalFit' object has no attribute {name!r}")
        raise AttributeError(advice)

    def _read_as_weights(
        self, data: StackedData, pmap: ParameterMap, ev: ModelEvaluator
    ) -> float | None:
        """Refit with each σ read as lmfit's weight (σ = 1/w); the slope still read, or None.

        Run only when :func:`~tying.fit.datasets.sigma_misread` fires: on the fit as given,
        weights in σ's place and a model that misses the small-σ points both read a
        negative slope; refitted as weights, the first reads about 0 and the second stays
        negative (stop 38). None when the weights reading explains the residuals, or the
        refit cannot be read (it raised, or its χ² is not finite): the advice is then kept.
        """
        # the refit must leave the evaluator as the reported fit left it (counts, ways)
        state = (ev.nfev, ev.njev, ev.n_nonfinite, ev.nonfinite_theta, ev._complex_ok)
        with np.errstate(divide="ignore"):
            weight = np.where(data.mask, 1.0 / np.where(data.mask, data.weight, 1.0), 0.0)
        alt = dataclasses.replace(data, weight=weight)
        tol = Tolerances(self.ftol, self.xtol, self.gtol, int(self.max_iter))
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                out = run_solver(self.solver, ev, alt, pmap, tol)
                r = jac_mod.residuals(out.model, alt)
        except Exception:  # a refit for advice only: the reported fit stands as it is
            return None
        finally:
            ev.nfev, ev.njev, ev.n_nonfinite, ev.nonfinite_theta, ev._complex_ok = state
        if not np.isfinite(r).all():
            return None
        read = sigma_reading(alt, r, pmap.n_local)
        return None if read is None else read[0]

    def _result(self, out, data: StackedData, pmap: ParameterMap, ev: ModelEvaluator) -> FitResult:
        r = jac_mod.residuals(out.model, data)
        chi2 = float(np.sum(r * r))
        jw = jac_mod.weighted(ev.jacobian(out.theta), data)
        # JᵀJ of columns brought to a largest entry in [1, 2) (exact powers of 2), its
        # inverse scaled back per parameter below. Stop 47: a column near 1e-299 (sigma or
        # a parameter near 1e±299) squared to 0, JᵀJ read singular, and a fit with the
        # right values gave NaN errors and "'a' does not change the model"
        h, jws, cs = scaled_normal(jw, r, pmap)
        unread = _unread_locals(h, pmap, out.theta)  # (K, P): local slots model_fn does not read
        ndata, nvarys = data.n_points, pmap.n_physical - int(unread.sum())
        nfree = ndata - nvarys
        # chi2 / 0 is undefined: lmfit's chi2 / max(1, nfree) read chi2 itself (0.0 for an
        # exactly determined fit) as a reduced chi2, with no word (stop 36)
        redchi = chi2 / nfree if nfree > 0 else float("nan")
        neg2ll = ndata * np.log(max(chi2, 1e-250 * ndata) / ndata)
        scale = redchi if self.scale_covar and nfree > 0 else 1.0
        message, success = out.message, out.success
        plateau = _plateau(ev, data, pmap, out, h, cs)
        if plateau and success:
            message, success = f"{message}; but {plateau}", False
        walls = _nonfinite_note(ev, pmap)
        stalled = _not_stationary(data, pmap, out.theta, r, jw)
        if stalled and success:
            message, success = f"{message}; but {stalled}", False
            if walls:
                message += (
                    f"; {walls}: bound the parameter (bounds=) so that the fit stays where "
                    f"model_fn is defined, or make model_fn finite there"
                )
            else:
                other = "lm" if self.solver == "trf" else "trf"
                message += (
                    f"; the solver stalled: try other starting values, solver={other!r}, or "
                    f"a smaller ftol"
                )
        elif walls:
            # "a minimum all the same" only when nothing else failed: a fit stopped by its
            # budget after meeting the wall was reported a minimum too (stop 32 review)
            message += f"; {walls}" + (" (the result is a minimum all the same)" if success else "")
            if not success and "this is not a minimum" in message:
                # the Schur LM's own verdict (stop 50), where _not_stationary's came after
                # a success before: the same advice
                message += (
                    ": bound the parameter (bounds=) so that the fit stays where model_fn "
                    "is defined, or make model_fn finite there"
                )
        misread = sigma_misread(data, r, pmap.n_local)
        if misread:
            as_weights = self._read_as_weights(data, pmap, ev)
            if as_weights is not None:
                misread = sigma_misread(data, r, pmap.n_local, as_weights=as_weights)
            # a tuple (x, y, w) reads w as sigma (scipy's curve_fit convention), while
            # lmfit's weights are 1/sigma: values and errors then come out wrong, no error
            message += f"; {misread}"
            warnings.warn(f"global fit: {misread}", FitWarning, stacklevel=3)
        if not self.scale_covar:
            claim = _sigma_contradicted(data, r, chi2, nfree)
            if claim:
                message += f"; {claim}"
                warnings.warn(f"global fit: {claim}", FitWarning, stacklevel=3)
        if ev.low_precision:
            digits = 2 if ev.low_precision == "bfloat16" else np.finfo(ev.low_precision).precision
            low = (
                f"model_fn returns {ev.low_precision} values: the model, its derivatives and "
                f"chi2 carry about {digits} digits, not float64's 16, so the values and "
                f"standard errors of parameters the data determine weakly can be off by far "
                f"more than their standard errors"
            )
            message += (
                f"; {low}; compute in float64 (cast the arrays and constants model_fn uses "
                f"with np.float64 or torch.float64)"
            )
            warnings.warn(f"global fit: {low}", FitWarning, stacklevel=3)
        h_cov = h
        if unread.any():
            # one model_fn of different forms per data set (a switch on a fixed value): a
            # local parameter one form does not read has a zero column there, JᵀJ was
            # singular and every standard error NaN (stop 36). Such a slot is held at its
            # start, as lmfit's vary=False: decoupled (a unit diagonal on its zero row) for
            # the inverse, out of nvarys, its standard error NaN
            h_cov = h.copy()
            ks, js = np.nonzero(unread)
            h_cov[ks, js, js] = 1.0
            slots = [pmap.labels[p] for p in pmap.index[ks, js]]
            held = (
                f"{_names(slots[:8])}{', ...' if len(slots) > 8 else ''} do(es) not change "
                f"the model in its data set (a derivative of 0 at every point there: "
                f"model_fn does not read it, or that data set's x cancel it), though the same "
                f"parameter does in others: held at its start value, not fitted (standard "
                f"error NaN, not counted in nvarys), as lmfit's vary=False"
            )
            message += f"; {held}"
            warnings.warn(f"global fit: {held}", FitWarning, stacklevel=3)
        rounding_pair = ""  # two parameters an inverse singular to rounding still names
        # ‖J column‖² past float64 (b → 1e-156 in a·log(b·x), sigma near 1e-299): the
        # scaled inverse copes, but the user is told (lmfit's errors are inf there)
        with np.errstate(over="ignore"):
            norm = np.sqrt(schur.diagonal(h, pmap.index, pmap.n_physical)) * cs
        huge = [pmap.labels[i] for i in np.flatnonzero(~(norm <= 1.3e154))]
        overflow = (
            f"JᵀJ overflows float64 in the column(s) of {_names(huge[:8])}: their squared "
            f"norm exceeds 1.8e308"
            if huge
            else ""
        )
        flat = redo = None  # parameters at second order in a singular Jacobian (stop 57)
        singular = False
        n_null, scale_r = 0, scale  # null directions of J, and the scale beside them
        try:
            cov_s_global, cov_s_logical = schur.covariance(h_cov, pmap.index, pmap.n_global)
            inflation = _inflation(cov_s_logical, h_cov, pmap)
            in_null, rank_route, n_null = None, False, 0  # along a null direction of J (SVD)
            if not _inverse_ok(inflation):
                rounding_pair = _degenerate_pair(cov_s_logical, pmap)
                # estimable parameters keep their errors from the SVD of J; only those
                # along a null direction are NaN (review 60: which route a degenerate fit
                # took depended on rounding). A dead column, an overflow or a fit that
                # never moved keeps the singular route's verdict
                found = None if overflow else singular_route(jws, unread, pmap, h_cov)
                if found is not None and found[3].any():
                    sens = _sensitivity(h, out.model * data.weight, out.theta, pmap, cs)
                    if not np.all(sens >= PLATEAU_SENSITIVITY) or np.array_equal(
                        out.theta, pmap.x0
                    ):
                        found = None
                if found is None:
                    raise np.linalg.LinAlgError("the normal matrix is singular to rounding")
                cov_s_global, cov_s_logical, var_s_logical, in_null, inflation, n_null = found
                kept = np.where(in_null[pmap.index], 0.0, 1.0)  # a pair of estimable ones
                found_pair = _pair_found(kept[:, :, None] * kept[:, None, :] * cov_s_logical)
                pair, by_svd, rank_route = _pair_text(found_pair, pmap), True, True
                ill = _ill_conditioned(inflation, pmap, by_svd)
            else:
                ill = _ill_conditioned(inflation, pmap)
                found_pair = _pair_found(cov_s_logical)
                pair = _pair_text(found_pair, pmap)
                var_s_logical = np.diagonal(cov_s_logical, axis1=1, axis2=2)
                by_svd = False
                if pair or ill:  # errors from the SVD of J, not (JᵀJ)⁻¹'s noise (stop 60)
                    cov_s_global, cov_s_logical, var_s_logical, in_null, n_null = estimable(
                        jws, unread, pmap, cov_s_global, cov_s_logical
                    )
                    by_svd = in_null is not None
                    ill = ill and _ill_conditioned(inflation, pmap, by_svd)
            # cov_ij = cov_s_ij·f_i·f_j with f = √scale / cs: each factor is about a
            # standard error over the scaled one, so it is finite where the errors are
            # beside null directions, chi2 / (n - rank J), as a fit holding them (stop 61)
            scale_r, scaled = (
                rank_scale(chi2, nfree, n_null, scale) if self.scale_covar else (scale, "")
            )
            f = np.sqrt(scale_r) / cs  # (n_physical,)
            fl = f[pmap.index]  # (K, P)
            with np.errstate(over="ignore", invalid="ignore"):
                cov_global = cov_s_global * f[: pmap.n_global, None] * f[None, : pmap.n_global]
                cov_logical = cov_s_logical * fl[:, :, None] * fl[:, None, :]
            if unread.any():  # a held value carries no uncertainty into a band
                cov_logical[ks, js, :] = 0.0
                cov_logical[ks, :, js] = 0.0
            var = np.zeros(pmap.n_physical)
            var[pmap.index.ravel()] = var_s_logical.ravel()
            stderr_x = np.sqrt(np.maximum(var, 0.0)) * f
            if unread.any():
                stderr_x[pmap.index[ks, js]] = np.nan
            if overflow:
                message += (
                    f"; {overflow} (the covariance is computed on columns scaled to 1; "
                    f"rescale those parameters or sigma nearer 1 to be safe from rounding)"
                )
            out_of_range = _covariance_range(stderr_x, pmap)
            if out_of_range:
                cov_global = cov_logical = None
                message += f"; {out_of_range}"
                warnings.warn(f"global fit: {out_of_range}", FitWarning, stacklevel=3)
            if rank_route and in_null.any():  # the SVD route of a singular inverse above
                # NaN errors: no covariance, errorbars False (lmfit's), as on the singular route
                cov_global = cov_logical = None
                which = _weakest(h, data, pmap, rounding_pair)
                message += (
                    f"; the standard errors of {null_names(in_null, pmap)} could not be "
                    f"estimated: the Jacobian is singular ({which}), so the values of those "
                    f"parameters are arbitrary, not fitted; fix them, remove them, or change "
                    f"their roles; the other standard errors are read from the SVD of the "
                    f"Jacobian without that direction (the same whichever of them is fixed"
                    f"{', ' + scaled if scaled else ''})"
                )
                warnings.warn(
                    f"global fit: singular Jacobian, standard errors of "
                    f"{null_names(in_null, pmap)} are NaN ({which})",
                    FitWarning,
                    stacklevel=3,
                )
            if pair:
                said, warned = pair_message(
                    pair, found_pair, cov_s_logical, in_null, inflation, pmap
                )
                message += f"; {said}"
                if not by_svd:  # past null_space.MAX_DENSE: every error is the inverse's
                    message += (
                        " (the other standard errors are read from the same inverse, too "
                        "large a problem for the SVD of J, and can be off by percents too)"
                    )
                warnings.warn(f"global fit: {warned}", FitWarning, stacklevel=3)
            elif ill:
                message += (
                    f"; {ill}: the data determine these parameters mostly in a "
                    f"combination; rescale or reparametrise the model (center x, use "
                    f"orthogonal terms), or fix some of them"
                )
                warnings.warn(f"global fit: {ill}", FitWarning, stacklevel=3)
            if scaled and not (rank_route and in_null.any()):
                # the estimable route of an inverse that rounding left invertible: the
                # same scale, said there too (review 61: said on the singular route alone)
                message += (
                    f"; the standard errors of the parameters off the null direction(s) of "
                    f"the Jacobian are {scaled}"
                )
        except np.linalg.LinAlgError:
            singular = True
            cov_global = cov_logical = None
            stderr_x = np.full(pmap.n_physical, np.nan)
            # b**2 on its bound at 0: an exact derivative of 0, the model still curved
            zero = np.flatnonzero(norm == 0)
            flat, note, secant = (
                _second_order(ev, data, pmap, out.theta, r, jw, zero)
                if zero.size and not overflow
                else (None, "", jw)
            )
            redo = _secant_covariance(secant, r, pmap, unread, scale_r) if note else None
        if redo is not None and flat is not None:
            stderr_x, cov_global, cov_logical = redo
            stderr_x[flat] = np.nan
            cov_global[np.flatnonzero(flat[: pmap.n_global])] = np.nan
            cov_global[:, np.flatnonzero(flat[: pmap.n_global])] = np.nan
            ks, js = np.nonzero(flat[pmap.index])
            cov_logical[ks, js, :] = np.nan
            cov_logical[ks, :, js] = np.nan
            if unread.any():
                ks, js = np.nonzero(unread)
                cov_logical[ks, js, :] = 0.0
                cov_logical[ks, :, js] = 0.0
                stderr_x[pmap.index[ks, js]] = np.nan
            message += f"; {note}"
            warnings.warn(f"global fit: {note}", FitWarning, stacklevel=3)
        elif singular:
            sens = _sensitivity(h, out.model * data.weight, out.theta, pmap, cs)
            dead = [pmap.labels[i] for i in np.flatnonzero(~(sens >= PLATEAU_SENSITIVITY))]
            if overflow:
                # such a column changes the model hugely: "does not change the model" misled
                which = overflow
            else:
                which = (
                    f"{', '.join(map(repr, dead[:8]))}{', ...' if len(dead) > 8 else ''} "
                    f"do(es) not change the model at the solution"
                    if dead
                    else _weakest(h, data, pmap, rounding_pair)
                )
            message += (
                f"; standard errors could not be estimated: the Jacobian is singular ({which}), "
                f"so the values of those parameters are arbitrary, not fitted; fix them, "
                f"remove them, or change their roles"
            )
            if np.array_equal(out.theta, pmap.x0) and chi2 > 0:
                # stop 25 review: a*b*x started at a = b = 0 has a zero gradient, so every
                # solver stops at once with success=True and chi2 far above its minimum
                success = False
                message += (
                    "; the fit never moved from its start, where the gradient is zero and the "
                    "Jacobian singular: the start is a stationary point, not a minimum the "
                    "data locate; try other starting values"
                )
            warnings.warn(
                f"global fit: singular Jacobian, standard errors are NaN ({which})",
                FitWarning,
                stacklevel=3,
            )
        pinned = _at_bounds(pmap, out.theta, jw, r)
        if pinned:
            # the fit's optimum lies past the bound: the value is the bound, and the
            # standard error (computed as for a free parameter, as lmfit does) is not an
            # uncertainty of it; both came back unflagged before stop 18
            message += (
                f"; {pinned} ended at a bound: the data pull past it, so the value is the "
                f"bound and the standard error assumes a free parameter; widen the bound "
                f"or fix the parameter"
            )
            warnings.warn(f"global fit: {pinned} ended at a bound", FitWarning, stacklevel=3)
        dof = nfree + n_null  # n - rank J: the held fit's nfree (review 61)
        if self.scale_covar and dof <= 0 and np.isfinite(stderr_x).any():
            # redchi = chi2 / 0 is undefined: scaled errors would read 0, not "unknown".
            # Beside a null direction the covariance is None while the estimable errors are
            # finite: those read unscaled (σ = 1) before (review 61), so test the errors
            cov_global = cov_logical = None
            stderr_x = np.full(pmap.n_physical, np.nan)
            message += (
                "; standard errors are NaN: as many points as fitted parameters leaves no "
                "degree of freedom to scale them by; add data, or pass scale_covar=False "
                "with known sigma"
            )
            # NaN errors from a singular Jacobian warn; these came with a message alone
            warnings.warn(
                "global fit: standard errors are NaN: no degree of freedom (nfree = 0) to "
                "scale them by",
                FitWarning,
                stacklevel=3,
            )
        if np.isfinite(stderr_x).any():
            # b**2 at b = 0: a vanishing derivative gave a finite error set by where the
            # solver stopped (2.9e7 at b = 1.7e-9, 5.3e7 at 9e-10); lmfit gives none (stop 56)
            bad, note, secant = _nonlinear_errors(ev, data, pmap, out.theta, r, jw, stderr_x, norm)
            redo = _secant_covariance(secant, r, pmap, unread, scale_r) if note else None
            if redo is not None and cov_global is not None:
                # the others' errors beside the flagged one's secant, not beside the tiny
                # derivative where it stopped (0.0648 batched, 0.0418 looped: stop 57)
                stderr_x, cov_global, cov_logical = redo
                if unread.any():
                    ks, js = np.nonzero(unread)
                    cov_logical[ks, js, :] = 0.0
                    cov_logical[ks, :, js] = 0.0
                    stderr_x[pmap.index[ks, js]] = np.nan
            if note:
                stderr_x = np.where(bad, np.nan, stderr_x)
                gl = np.flatnonzero(bad[: pmap.n_global])
                if cov_global is not None:
                    cov_global[gl, :] = cov_global[:, gl] = np.nan
                if cov_logical is not None:
                    ks, js = np.nonzero(bad[pmap.index])
                    cov_logical[ks, js, :] = np.nan
                    cov_logical[ks, :, js] = np.nan
                if "this is not a minimum" in message:
                    # the Gauss-Newton step reads the vanishing derivative as a free
                    # direction, so "raise max_iter" alone would not help
                    note += (
                        "; the Gauss-Newton step reads such a derivative as a direction free "
                        "to move, so the 'not a minimum' verdict above may come from it: "
                        "refit the reparametrised model to tell"
                    )
                message += f"; {note}"
                warnings.warn(f"global fit: {note}", FitWarning, stacklevel=3)
        if nfree <= 0:
            message += "; the reduced chi2 is NaN: chi2 / nfree with nfree = 0 is undefined"
        return FitResult(
            values=build_values(pmap, out.theta, None),
            stderr=build_values(pmap, stderr_x, 0.0),
            x=out.theta.copy(),
            physical_names=list(pmap.physical_names),
            covariance=cov_global,
            covariance_names=pmap.physical_names[: pmap.n_global],
            chi2=chi2,
            redchi=redchi,
            ndata=ndata,
            nvarys=nvarys,
            nfree=nfree,
            aic=float(neg2ll + 2 * nvarys),
            bic=float(neg2ll + np.log(ndata) * nvarys),
            nfev=ev.nfev,
            njev=ev.njev,
            niter=out.niter,
            success=success,
            message=message,
            solver=self.solver,
            backend=ev.backend,
            vectorized=ev.vectorized,
            why_not_vectorized=ev.why_not_vectorized,
            why_not_complex_step=ev.why_not_complex_step,
            dataset_names=list(data.names),
            _pmap=pmap,
            _data=data,
            _model=out.model,
            _cov_logical=cov_logical,
            _stderr_x=stderr_x,
            _dof=dof,
        )
