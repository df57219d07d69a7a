"""The result of a global fit: values by role, standard errors, covariance, χ² statistics.

Statistics follow lmfit's conventions, so numbers can be compared one to one:

- ``chi2 = Σ ((model - y) / σ)²`` over all points of all data sets;
- ``nfree = ndata - nvarys``, ``redchi = chi2 / nfree`` (NaN for ``nfree = 0``, where
  lmfit's ``chi2 / max(1, nfree)`` reads χ² itself as a reduced χ²);
- ``aic = ndata·ln(chi2/ndata) + 2·nvarys``, ``bic = ndata·ln(chi2/ndata) + ln(ndata)·nvarys``;
- the covariance is ``(JᵀJ)⁻¹`` at the solution, **multiplied by redchi**
  when ``scale_covar=True`` (lmfit's default), and the standard errors are the
  square roots of its diagonal. Bounds do not enter the covariance (as in
  lmfit's ``least_squares`` method and in ``scipy.optimize.curve_fit``).

Example:
    >>> import numpy as np
    >>> from tying.fit import GlobalFit
    >>> rng = np.random.default_rng(0)
    >>> x = np.linspace(-1, 1, 50)
    >>> data = [(x, a * x**2 + 0.5 + rng.normal(0, 0.01, 50), 0.01, {"lab": lab})
    ...         for a, lab in [(1.0, "A"), (2.0, "A"), (3.0, "B")]]
    >>> res = GlobalFit(lambda x, a, c: a * x**2 + c, data, per_group={"c": "lab"},
    ...                 local=["a"], init={"a": 1.0, "c": 0.0}).run()
    >>> res.values["a"].round(1).tolist(), sorted(res.values["c"])
    ([1.0, 2.0, 3.0], ['A', 'B'])
    >>> res.params(2)["a"].round(2), bool(0.5 < res.redchi < 2)
    (np.float64(3.0), True)
"""

from __future__ import annotations

import copy
import dataclasses
import pickle
from collections.abc import Sequence
from typing import Any

import numpy as np

from tying.fit.dataset_argument import per_dataset
from tying.fit.datasets import StackedData
from tying.fit.equality import ValueEquality
from tying.fit.roles import ParameterMap

# lmfit's MinimizerResult / ModelResult names that FitResult spells otherwise
_LMFIT_NAMES = {
    "chisqr": "result.chi2",
    "covar": "result.covariance (labelled by result.covariance_names)",
    "best_values": "result.values (or result.params(i) for data set i)",
    "init_values": "the init= you passed",
    "var_names": "result.free_names",
    "fit_report": "result.table()",
    # lmfit's R² is unweighted (model.py: 1 - Σ(y - best_fit)² / Σ(y - ȳ)²): the χ² form
    # advised before stop 58 read 0.8965 where lmfit reads 0.7584 (σ varying tenfold)
    "rsquared": (
        "1 - np.sum((y - result.best_fit(i)) ** 2) / np.sum((y - y.mean()) ** 2) with data "
        "set i's y, computed by you (lmfit's R², unweighted)"
    ),
    "eval": "result.predict(i, x) (data set i's model at new x)",
    "dely": "result.eval_uncertainty(i, x, sigma=1)",
    # model_fn(x, **init) was advised: a local init (one value per data set) or a group's
    # {label: value} went in whole, and a start from the model's defaults was left out
    "init_fit": (
        "model_fn(x, **{n: v[i] for n, v in fit.parameter_map.logical(fit.parameter_map.x0)"
        ".items()}) with data set i's x and your GlobalFit fit, computed by you"
    ),
    "plot_fit": "result.plot(i)",
    "method": "result.solver",
    "ier": "result.success and result.message",
    "lmdif_message": "result.message",
    "weights": "1 / sigma of the data set (sigma as you gave it)",
    "ci_report": "result.conf_interval(names)",
    "nan_policy": "nothing: NaN/inf data is refused, as lmfit's 'raise'",
}


# == by value (equality.py): the dataclass's tuple == raised NumPy's "truth value of an
# array ... is ambiguous" on result == copy.deepcopy(result) until stop 59
class _PerDataset:
    """A method that lmfit spells as an attribute: called, it is the method; read as
    lmfit's value (indexed, as an array, in arithmetic), a ``TypeError`` names ours.

    ``out.params["a"].value`` and ``out.best_fit - y`` in a ported script raised Python's
    bare "'method' object is not subscriptable" / "unsupported operand type(s) for -:
    'method' and 'float'", naming neither the data set argument nor our value (stop 59).
    """

    def __init__(self, fn: Any, advice: str):
        self.fn, self.advice = fn, advice
        self.__doc__, self.__name__, self.__wrapped__ = fn.__doc__, fn.__name__, fn

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    def __get__(self, obj: Any, objtype: type | None = None) -> Any:
        if obj is None:  # the class attribute: the function, for help() and doctests
            return self.fn
        return _BoundPerDataset(self.fn.__get__(obj, objtype), self.name, self.advice)


class _BoundPerDataset:
    __slots__ = ("_method", "_name", "_advice")

    def __init__(self, method: Any, name: str, advice: str):
        self._method, self._name, self._advice = method, name, advice

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self._method(*args, **kwargs)

    def __repr__(self) -> str:
        return repr(self._method)

    # what a bound method answers to introspection: inspect.signature(result.best_fit) read
    # (*args, **kwargs), help() and .__doc__ had no text, .__name__ raised (stop 59 review)
    @property
    def __wrapped__(self) -> Any:
        return self._method

    @property
    def __doc__(self) -> str | None:  # type: ignore[override]
        return self._method.__doc__

    @property
    def __name__(self) -> str:
        return self._method.__name__

    @property
    def __self__(self) -> Any:
        return self._method.__self__

    @property
    def __func__(self) -> Any:
        return self._method.__func__

    def __bool__(self) -> bool:  # a method is true; __len__ below would raise
        return True

    def __eq__(self, other: object) -> bool:  # as bound methods compare
        return isinstance(other, _BoundPerDataset) and self._method == other._method

    def __hash__(self) -> int:
        return hash(self._method)

    def _refuse(self, *args: Any, **kwargs: Any) -> Any:
        raise TypeError(
            f"result.{self._name} is a method, one data set at a time, not lmfit's "
            f"attribute: {self._advice}"
        )

    __getitem__ = __array__ = __iter__ = __len__ = __float__ = _refuse
    __add__ = __radd__ = __sub__ = __rsub__ = __mul__ = __rmul__ = _refuse
    __truediv__ = __rtruediv__ = __pow__ = __neg__ = __abs__ = _refuse


def _weights_advice(data: StackedData | None) -> str:
    """What lmfit's ``weights`` are for these data sets, as an expression that runs.

    ``1 / sigma`` was advised for every fit: a data set given without sigma has none to
    invert (lmfit's ``weights=None``, a weight of 1 at every point), so the advice,
    followed, raised NameError or inverted some other sigma (stop 59).
    """
    given = None if data is None else getattr(data, "sigma_given", None)
    with_sigma = "1 / sigma of the data set (sigma as you gave it)"
    without = "np.ones_like(y) with the data set's y (lmfit's weights=None)"
    if given is None:  # stacked before stop 58: which data sets had sigma is unknown
        return f"{with_sigma}, or {without} for a data set given without sigma"
    names = list(data.names)
    if np.all(given):
        return with_sigma
    if not np.any(given):
        return f"{without}: no data set was given a sigma, so every weight is 1,"
    bare = [names[i] for i in np.flatnonzero(~np.asarray(given, dtype=bool))]
    shown = ", ".join(map(repr, bare[:5])) + (", ..." if len(bare) > 5 else "")
    return (
        f"{with_sigma} for data sets given a sigma, and {without} for those given without ({shown})"
    )


@dataclasses.dataclass(eq=False)
class FitResult(ValueEquality):
    """Everything a global fit found.

    Attributes:
        values: ``{name: value}`` by role: a float (shared), ``{group: float}``
            (per group), a ``(K,)`` array (local); for fixed, a float when given as
            one number and a ``(K,)`` array when given one per data set (even when the
            values are equal).
        stderr: the same structure with standard errors (0 for fixed; NaN when
            the covariance could not be estimated).
        x: the physical parameter vector; ``physical_names`` labels it.
        covariance: covariance of the global (shared and per-group) physical
            parameters, labelled by ``covariance_names``; None when singular.
        chi2, redchi, ndata, nvarys, nfree, aic, bic: statistics (lmfit conventions).
        nfev, njev, niter: model evaluations over all data sets, Jacobian
            evaluations, solver iterations.
        success, message: whether the convergence tests were met, and which.
        solver, backend, vectorized: how the fit was computed.
        why_not_vectorized: when ``vectorized`` is False, the reason the
            all-data-sets call was not used ("" otherwise).
        why_not_complex_step: when the complex-step Jacobian (verified on the
            first Jacobian) disagreed at the solution, which parameter's
            derivative differed; the fit was then redone without it ("" otherwise).
        dataset_names: one name per data set.
    """

    values: dict[str, Any]
    stderr: dict[str, Any]
    x: np.ndarray
    physical_names: list[str]
    covariance: np.ndarray | None
    covariance_names: list[str]
    chi2: float
    redchi: float
    ndata: int
    nvarys: int
    nfree: int
    aic: float
    bic: float
    nfev: int
    njev: int
    niter: int
    success: bool
    message: str
    solver: str
    backend: str
    vectorized: bool
    why_not_vectorized: str
    why_not_complex_step: str
    dataset_names: list[str]
    # the map's content is in values, names and statistics; a copied map is another object
    _pmap: ParameterMap = dataclasses.field(repr=False, compare=False)
    _data: StackedData = dataclasses.field(repr=False)
    _model: np.ndarray = dataclasses.field(repr=False)
    _cov_logical: np.ndarray | None = dataclasses.field(repr=False)
    _stderr_x: np.ndarray = dataclasses.field(repr=False)
    # wall time of the solver, seconds: a measurement, not part of the result (==)
    time: float = dataclasses.field(default=0.0, compare=False)
    # the model and solver settings, for predictions at new x and profile refits
    _context: Any = dataclasses.field(default=None, repr=False, compare=False)
    # n - rank J: nfree plus the null directions of J, the degrees of freedom of the fit
    # holding the redundant parameters, for t quantiles and F-tests (review 61); None: nfree
    _dof: int | None = dataclasses.field(default=None, repr=False, compare=False)

    @property
    def _rank_dof(self) -> int:
        """``n - rank J`` (``nfree`` without a null direction; results pickled before: nfree)."""
        dof = self.__dict__.get("_dof")
        return self.nfree if dof is None else int(dof)

    def __getattr__(self, name: str) -> Any:
        # only reached when normal lookup fails: an lmfit name gets ours, not a bare
        # "no attribute" (a ported ``out.chisqr`` / ``out.covar`` script)
        ours = _LMFIT_NAMES.get(name)
        if ours is None:
            raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")
        if name == "weights":
            ours = _weights_advice(self.__dict__.get("_data"))
        raise AttributeError(
            f"FitResult has no lmfit attribute {name!r}: read {ours} instead "
            f"(docs/fit.md, Coming from lmfit)"
        )

    def __getstate__(self) -> dict[str, Any]:
        # a result pickled as before when its model is a lambda: the context (which holds
        # model_fn) is left out then, and predict / conf_interval say so when called
        state = dict(self.__dict__)
        if state.get("_context") is not None:
            try:
                pickle.dumps(state["_context"].ev.model_fn)
            except Exception:
                state["_context"] = None
        return state

    def __deepcopy__(self, memo: dict) -> FitResult:
        new = object.__new__(type(self))
        memo[id(self)] = new
        for key, value in self.__dict__.items():  # functions copy as themselves
            setattr(new, key, copy.deepcopy(value, memo))
        return new

    @property
    def errorbars(self) -> bool:
        """True when standard errors could be estimated (lmfit's ``errorbars``)."""
        return self.covariance is not None or self._cov_logical is not None

    @property
    def correlation(self) -> np.ndarray | None:
        """Correlation matrix of the global parameters (None without covariance)."""
        if self.covariance is None:
            return None
        s = np.sqrt(np.diag(self.covariance))
        with np.errstate(invalid="ignore", divide="ignore"):
            corr = np.clip(self.covariance / np.outer(s, s), -1.0, 1.0)
        # rounding left 1.0000000000000002 on the diagonal (and can push a near-degenerate
        # pair past 1): a correlation lies in [-1, 1] by definition (stop 32 review)
        np.fill_diagonal(corr, np.where(s > 0, 1.0, np.nan))
        return corr

    def _index(self, i: int | str) -> int:
        if isinstance(i, str):
            if i not in self.dataset_names:
                raise KeyError(f"no data set named {i!r}; names: {self.dataset_names[:10]}")
            return self.dataset_names.index(i)
        if isinstance(i, (bool, np.bool_)) or not isinstance(i, (int, np.integer)):
            # True read data set 1 and False data set 0, no error; 1.0 raised NumPy's
            # "only integers, slices ..." naming nothing (stop 32 review)
            raise TypeError(
                f"a data set is chosen by its index (int) or name (str), got {i!r} "
                f"({type(i).__name__}); names: {self.dataset_names[:10]}"
            )
        k = len(self.dataset_names)
        if not -k <= i < k:
            raise IndexError(f"data set index {i} out of range for {k} data sets")
        return i % k

    @per_dataset
    def params(self, i: int | str) -> dict[str, float]:
        """Data set ``i``'s logical parameters (by index or name), fixed ones included."""
        i = self._index(i)
        values = self._pmap.logical(self.x)
        return {n: values[n][i] for n in self._pmap.names}

    @per_dataset
    def stderrs(self, i: int | str) -> dict[str, float]:
        """Standard errors of data set ``i``'s logical parameters (0 for fixed ones)."""
        i = self._index(i)
        out = dict.fromkeys(self._pmap.names, 0.0)
        for j, n in enumerate(self._pmap.free_names):
            out[n] = float(self._stderr_x[self._pmap.index[i, j]])
        return out

    @per_dataset
    def dataset_covariance(self, i: int | str) -> np.ndarray | None:
        """Covariance ``(P, P)`` of data set ``i``'s fitted parameters, in ``free_names`` order.

        It is read from the full covariance of the global fit, so a data set's
        local parameters carry the uncertainty of the shared ones.
        """
        if self._cov_logical is None:
            return None
        return self._cov_logical[self._index(i)]

    @property
    def free_names(self) -> list[str]:
        """Names of the fitted logical parameters (global roles first, then local)."""
        return list(self._pmap.free_names)

    @per_dataset
    def best_fit(self, i: int | str) -> np.ndarray:
        """The fitted model on data set ``i``'s points."""
        i = self._index(i)
        return self._model[i, : self._data.lengths[i]].copy()

    @per_dataset
    def residual(self, i: int | str) -> np.ndarray:
        """Weighted residuals ``(y - model)/σ`` of data set ``i``.

        The sign is lmfit's (``ModelResult.residual`` is ``(data - model) * weights``),
        so a ported ``out.residual`` reads the same numbers; until stop 56 it was
        ``(model - y)/σ``, the opposite sign under the same name.
        """
        i = self._index(i)
        n = self._data.lengths[i]
        return (self._data.y[i, :n] - self._model[i, :n]) * self._data.weight[i, :n]

    params = _PerDataset(
        params,
        "result.params(i)['a'] is data set i's value (i an index or name); lmfit's "
        "out.params['a'].value is result.values['a'], its .stderr result.stderr['a']",
    )
    best_fit = _PerDataset(
        best_fit,
        "result.best_fit(i) is the fitted model on data set i's points (an index "
        "or name), lmfit's out.best_fit for that data set",
    )
    residual = _PerDataset(
        residual,
        "result.residual(i) is data set i's (y - model)/sigma (an index or name), "
        "lmfit's out.residual for that data set",
    )

    @per_dataset
    def chi2_of(self, i: int | str) -> float:
        """χ² of data set ``i`` alone."""
        return float(np.sum(self.residual(i) ** 2))

    @per_dataset
    def predict(self, i: int | str, x: Any, stderr: bool = False):
        """Data set ``i``'s model at new ``x`` (and its standard error with ``stderr=True``).

        See :func:`tying.fit.uncertainty.predict`.
        """
        from tying.fit.uncertainty import predict

        return predict(self, i, x, stderr=stderr)

    @per_dataset
    def eval_uncertainty(self, i: int | str, x: Any, sigma: float = 1.0) -> np.ndarray:
        """The ``sigma`` confidence band of data set ``i``'s model at new ``x`` (lmfit's).

        See :func:`tying.fit.uncertainty.eval_uncertainty`.
        """
        from tying.fit.uncertainty import eval_uncertainty

        return eval_uncertainty(self, i, x, sigma=sigma)

    def conf_interval(
        self,
        names: Sequence[str] | None = None,
        sigmas: Sequence[float] = (1, 2, 3),
        *,
        max_steps: int = 30,
        progress: bool | None = None,
        **lmfit: object,
    ) -> dict[str, Any]:
        """Profile-likelihood confidence intervals by lmfit's F-test.

        See :func:`tying.fit.profile.conf_interval` (lmfit's keywords name ours).
        """
        from tying.fit.profile import conf_interval

        return conf_interval(self, names, sigmas, max_steps=max_steps, progress=progress, **lmfit)

    def table(self, max_local: int = 5) -> str:
        """A plain-text table: statistics, then every parameter with its role and error.

        Args:
            max_local: how many data sets' local parameters to list (the rest
                are summarised by their range).

        Returns:
            The table as one string (``str(result)`` gives the same).

        Raises:
            TypeError: ``max_local`` not an int (``True`` read as 1, ``2.5`` failed deep
                inside ``range``).
            ValueError: ``max_local`` negative (read as 0 before stop 53).

        Example:
            >>> import numpy as np
            >>> from tying.fit import GlobalFit
            >>> x = np.linspace(0, 1, 5)
            >>> res = GlobalFit(lambda x, a, b: a * x + b, [(x, x), (x, x + 1), (x, x + 2)],
            ...                 shared=["a"], local=["b"], init={"a": 0.0, "b": 0.0}).run()
            >>> [row.split()[0] for row in res.table(max_local=1).splitlines()[4:]]
            ['a', 'b[dataset', 'b[...]']
        """
        if isinstance(max_local, bool) or not isinstance(max_local, (int, np.integer)):
            raise TypeError(
                f"max_local must be an int (how many data sets' local values to list), got "
                f"{max_local!r} ({type(max_local).__name__})"
            )
        if max_local < 0:
            raise ValueError(
                f"max_local must be 0 or more (how many data sets' local values to list), "
                f"got {max_local}; 0 lists none and summarises all by their range"
            )
        pm = self._pmap
        head = [
            f"global fit: {len(self.dataset_names)} data sets, {self.ndata} points, "
            f"{self.nvarys} varied parameters ({pm.n_parameters().logical} logical)",
            f"chi2 = {self.chi2:.6g}   reduced chi2 = {self.redchi:.6g}   "
            f"nfev = {self.nfev}   solver = {self.solver}",
            f"{'converged' if self.success else 'NOT CONVERGED'}: {self.message}",
        ]
        rows: list[tuple[str, str, str, str]] = []
        for name in pm.names:
            role = pm.describe(name)
            v, e = self.values[name], self.stderr[name]
            if role == "shared":
                rows.append((name, role, f"{v:.8g}", f"{e:.3g}"))
            elif role.startswith("per group"):
                rows += [(f"{name}[{g}]", role, f"{v[g]:.8g}", f"{e[g]:.3g}") for g in v]
            elif role == "local":
                for i in range(min(max_local, len(v))):
                    rows.append(
                        (f"{name}[{self.dataset_names[i]}]", role, f"{v[i]:.8g}", f"{e[i]:.3g}")
                    )
                if len(v) > max_local:
                    rows.append(
                        (
                            f"{name}[...]",
                            role,
                            f"{v.min():.4g} .. {v.max():.4g}",
                            f"({len(v)} values)",
                        )
                    )
            else:
                shown = (
                    f"{float(np.ravel(v)[0]):.8g}"
                    if np.ndim(v) == 0 or np.ptp(v) == 0
                    else "(per data set)"
                )
                rows.append((name, "fixed", shown, "-"))
        widths = [
            max(len(r[c]) for r in rows + [("parameter", "role", "value", "stderr")])
            for c in range(4)
        ]
        lines = head + [
            "  ".join(h.ljust(w) for h, w in zip(("parameter", "role", "value", "stderr"), widths))
        ]
        lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths)) for r in rows]
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.table()

    @per_dataset
    def plot(self, i: int | str, ax=None, sigma: float | None = None):
        """Data set ``i`` with its fit (top) and weighted residuals (bottom).

        The data are drawn with their σ as error bars (none for a data set given
        without sigma, as lmfit's ``plot_fit``), the model as a line along x (sorted),
        the residuals ``(y - model)/σ`` (lmfit's sign; ``y - model`` without sigma) at
        each x; the axes are labelled (by point index where x is not 1-D).

        Args:
            i: data set index or name.
            ax: optional pair of matplotlib Axes (fit, residuals) to draw into.
            sigma: also shade the ``sigma`` confidence band of the model
                (:meth:`eval_uncertainty` on 200 points across x; 1-D x only).

        Returns:
            The matplotlib ``Figure``.

        Raises:
            TypeError: ``ax`` that is not a pair of Axes.
            ValueError: ``sigma`` for a data set whose x is not 1-D, or a band that
                :meth:`eval_uncertainty` refuses.

        Example:
            >>> import numpy as np
            >>> from tying.fit import GlobalFit
            >>> x = np.linspace(0, 1, 10)
            >>> res = GlobalFit(lambda x, a: a * x, [(x, 2 * x + 0.01 * np.cos(9 * x))],
            ...                 shared=["a"], init={"a": 1.0}).run()
            >>> [(a.get_xlabel(), a.get_ylabel()) for a in res.plot(0).axes]
            [('', 'y'), ('x', 'y - model')]
        """
        from matplotlib.figure import Figure

        i = self._index(i)
        n = self._data.lengths[i]
        x = self._data.xs[i]
        band = None
        if sigma is not None:  # computed (and checked) before anything is drawn
            if x.ndim != 1:
                raise ValueError(
                    f"plot(sigma=...) draws the band along a 1-D x; dataset "
                    f"{self.dataset_names[i]!r} has x of shape {x.shape}"
                )
            grid = np.linspace(x.min(), x.max(), 200)
            band = (grid, self.predict(i, grid), self.eval_uncertainty(i, grid, sigma=sigma))
        along = "x" if x.ndim == 1 else "point index (x is not 1-D)"
        x = x if x.ndim == 1 else np.arange(n)
        if ax is None:
            fig = Figure(figsize=(6, 4.5), layout="constrained")
            top, bottom = fig.subplots(2, 1, sharex=True, height_ratios=[3, 1])
        else:
            pair = list(ax) if isinstance(ax, (list, tuple, np.ndarray)) else None
            if pair is None or len(pair) != 2:
                # one Axes raised "cannot unpack non-iterable Axes object" (stop 52)
                raise TypeError(
                    f"plot(ax=...) takes a pair of matplotlib Axes (fit, residuals), got "
                    f"{type(ax).__name__}{f' of {len(pair)}' if pair is not None else ''}; "
                    f"e.g. fig, ax = plt.subplots(2, 1, sharex=True); result.plot({i}, ax=ax)"
                )
            top, bottom = pair
            fig = top.figure
        y = self._data.y[i, :n]
        given = getattr(self._data, "sigma_given", None)  # None: stacked before stop 58
        if given is None or given[i]:
            yerr = 1.0 / self._data.weight[i, :n]
            top.errorbar(x, y, yerr=yerr, fmt=".", ms=3, lw=0.5, color="0.45", label="data")
        else:
            # no sigma given: its weight of 1 was drawn as error bars of ±1 in y's units
            # (stop 58), which dwarfed data near 1e-3; lmfit's plot_fit draws none then
            top.plot(x, y, ".", ms=3, color="0.45", label="data")
        # the line in x order: data sets stored in another order (a scan back and forth,
        # random x) drew a zigzag through the points, not the model (stop 52)
        order = np.argsort(x, kind="stable")
        top.plot(x[order], self.best_fit(i)[order], color="C3", lw=1.5, label="global fit")
        if band is not None:
            grid, mid, half = band
            top.fill_between(
                grid, mid - half, mid + half, color="C3", alpha=0.25, lw=0, label=f"{sigma:g}σ band"
            )
        top.set_title(f"{self.dataset_names[i]}  (chi2 = {self.chi2_of(i):.4g}, {n} points)")
        top.legend(loc="best", fontsize=8)
        bottom.plot(x, self.residual(i), ".", ms=3, color="C0")
        bottom.axhline(0.0, color="0.3", lw=0.8)
        top.set_ylabel("y")
        bottom.set_ylabel("(y - model)/σ" if given is None or given[i] else "y - model")
        bottom.set_xlabel(along)
        return fig


def build_values(pmap: ParameterMap, vec: np.ndarray, fixed_value: Any) -> dict[str, Any]:
    """Arrange a physical vector (values or errors) by role, as ``FitResult.values``."""
    out: dict[str, Any] = {}
    for name in pmap.names:
        role = pmap.roles[name]
        if role == "fixed":
            col = pmap.fixed_values[:, pmap.fixed_names.index(name)]
            per_dataset = getattr(pmap, "fixed_per_dataset", None)
            if per_dataset is None:  # a map pickled before stop 40: the old rule
                per_dataset = {name} if np.ptp(col) != 0 else set()
            if fixed_value is not None:  # a held value has no error: 0.0, as before
                out[name] = fixed_value
            elif name in per_dataset:  # one value per data set, as given: an array always
                out[name] = col.copy()
            else:
                out[name] = float(col[0])
            continue
        j = pmap.free_names.index(name)
        if role == "shared":
            out[name] = float(vec[pmap.index[0, j]])
        elif role == "per_group":
            first = {}
            for i, g in enumerate(pmap.group_index[name]):
                first.setdefault(int(g), i)
            out[name] = {
                grp: float(vec[pmap.index[first[gi], j]])
                for gi, grp in enumerate(pmap.groups[name])
            }
        else:
            out[name] = vec[pmap.index[:, j]].copy()
    return out
