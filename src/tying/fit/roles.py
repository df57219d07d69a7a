"""Parameter roles: from ``shared`` / ``per_group`` / ``local`` / ``fixed`` to one physical vector.

Every data set's model reads the same *logical* parameters (``center``,
``width``, ``amplitude``): K data sets read K × P logical slots. A role says
how many *physical* parameters (what the solver varies) serve them:

- ``shared``: one physical value read by every data set;
- ``per_group={"zero": "instrument"}``: one physical value per distinct
  ``metadata["instrument"]``, read by the data sets of that group;
- ``local``: one physical value per data set;
- ``fixed``: a constant (scalar, or one per data set), not a parameter of the fit.

This is the ``tying`` vocabulary of logical slots and physical parameters
(``dataset 17.center`` is a slot tied to the physical ``center``), and
:meth:`ParameterMap.n_parameters` reports it as a :class:`tying.Count`.

The physical vector is laid out ``[shared | groups | locals]``: the *global*
part (shared and group parameters, ``n_global`` entries) first, then
``n_local`` entries per data set, data set by data set. ``index[k, j]`` is the
physical index of data set ``k``'s ``j``-th free logical parameter, in the
order :attr:`ParameterMap.free_names` (global-role names first, then local).

Example:
    >>> from tying.fit.roles import ParameterMap
    >>> pmap = ParameterMap(
    ...     ["center", "zero", "amplitude"], [{"inst": "a"}, {"inst": "b"}, {"inst": "a"}],
    ...     shared=["center"], per_group={"zero": "inst"}, local=["amplitude"],
    ...     init={"center": 0.0, "zero": 0.0, "amplitude": 1.0})
    >>> pmap.physical_names
    ['center', 'zero[a]', 'zero[b]', 'amplitude[0]', 'amplitude[1]', 'amplitude[2]']
    >>> pmap.index.tolist()
    [[0, 1, 3], [0, 2, 4], [0, 1, 5]]
    >>> c = pmap.n_parameters()      # a tying.Count
    >>> c.logical, c.physical
    (9, 6)
"""

from __future__ import annotations

import difflib
import fractions
import math
import numbers
import unicodedata
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from tying.core import Count, Group, TieError
from tying.fit.bounds_advice import envelope as _envelope
from tying.fit.datasets import _from_torch, _is_torch, _pandas_index
from tying.fit.group_starts import by_group_fix, per_group_fix
from tying.fit.hold_some import hold_some
from tying.fit.lmfit_idioms import literal

ROLES = ("shared", "per_group", "local", "fixed")


def _lmfit_parameter(label: str, value: Any) -> None:
    """Refuse an lmfit ``Parameter`` whose bounds, ``vary=False`` or ``expr`` a cast would drop.

    A ``Parameter`` casts to its value, so ``init=params`` (an lmfit ``Parameters``, ported
    as it was) fitted ``a`` past its ``max``, varied a ``vary=False`` parameter and fitted
    an ``expr`` parameter freely, with no error (stop 33 review). Here roles, bounds and
    start values are declared apart, so what the Parameter holds beyond its value is
    refused by name instead of lost. A plain one (no bounds, varied, no expr) loses
    nothing and is read as its value, as before.
    """
    items = value if isinstance(value, (list, tuple)) else [value]
    key = label[label.index("[") + 1 : label.index("]")] if "[" in label else "'name'"
    role = label.split("[")[0]
    if role not in ("init", "fixed"):  # a bound is a number; what it came from is moot
        return
    for item in items:
        if not all(hasattr(item, a) for a in ("value", "min", "max", "vary", "expr")):
            continue
        lost, fixes = [], []
        if item.expr:  # lmfit sets vary=False on an expr parameter: the expr is the point
            lost.append(f"expr={item.expr!r}")
            fixes.append(
                "a tie is a role (shared= or per_group=), any other constraint is written "
                "into model_fn"
            )
        elif role != "fixed" and not item.vary:  # a fixed value is held anyway
            lost.append("vary=False")
            fixes.append(f"hold it with fixed={{{key}: {item.value}}} instead of {role}")
        lo, hi = item.min, item.max
        if role != "fixed" and (lo is not None and lo > -np.inf or hi is not None and hi < np.inf):
            lost.append(f"min={lo}, max={hi}")
            # an open side as None: '(0, inf)' was a NameError when followed (stop 61)
            side = [None if v is None or not np.isfinite(v) else v for v in (lo, hi)]
            pair = literal((side[0], side[1]))
            fixes.append(
                f"give bounds={{{key}: {pair}}} and {role}={{{key}: {literal(item.value)}}}"
            )
        if lost:
            raise TypeError(
                f"{label} is an lmfit Parameter ({getattr(item, 'name', '?')!r}) and {role} "
                f"reads only its value: its {', '.join(lost)} would be dropped without a "
                f"word; {'; '.join(fixes)}"
            )


def _label_eps(kind: type) -> float | None:
    """The relative rounding unit of a number label's type; 0 for exact ones, None for others.

    A float32 label (a float32 CSV column) rounds at float32's eps: 0.64 + 0.27 is
    0.90999997 beside a typed 0.91, 1 float32 ulp apart but 5e7 float64 ones, so a float64
    tolerance let it through as a second group (stop 58 review).
    """
    if issubclass(kind, (bool, np.bool_)) or not issubclass(kind, numbers.Real):
        return None
    if issubclass(kind, numbers.Rational):
        return 0.0  # ints and Fractions are exact labels (2**60 and 2**60 + 1 are two)
    if issubclass(kind, np.floating):
        return float(max(np.finfo(kind).eps, np.finfo(float).eps))
    return float(np.finfo(float).eps)


def _exact(value: Any) -> fractions.Fraction:
    """A number label's exact value (a float's binary value, an int as itself)."""
    if isinstance(value, numbers.Integral):
        return fractions.Fraction(int(value))
    if isinstance(value, fractions.Fraction):
        return value
    return fractions.Fraction(float(value))


def _merging_fix(a: Any, b: Any) -> str:
    """A rounding of the labels that makes ``a`` and ``b`` one label, as code to apply."""
    if isinstance(a, float) and isinstance(b, float) and round(a, 9) == round(b, 9):
        return "round(label, 9)"
    # round(label, 9) leaves labels past ~1e7 (times near 1.7e9: 1700000000.1999998 and
    # 1700000000.2), float32 ones and an int beside a float apart (stop 58 review)
    for digits in range(15, 0, -1):
        if float(f"%.{digits}g" % a) == float(f"%.{digits}g" % b):
            return f"float('%.{digits}g' % label), {digits} significant digits"
    return "float(label)"  # not reached for labels a rounding apart


def _refuse_rounded_labels(
    name: str, key: str, values: list[Any], idx: np.ndarray, dataset_names: Sequence[str]
) -> None:
    """Refuse two number labels that differ by rounding only (0.1 + 0.2 and 0.3).

    They are two groups, each with its own value of ``name``: a label computed as
    ``0.1 + 0.2`` beside a typed ``0.3`` split one group in two with no error (stop 58).
    Labels a rounding apart (4 ulps of the coarser label's type, float64 or float32) are
    never two conditions meant apart; two exact labels (ints, Fractions) never are.
    """
    eps_of: dict[type, float | None] = {}
    pos, num, eps = [], [], []
    for j, v in enumerate(values):
        kind = type(v)
        if kind not in eps_of:
            eps_of[kind] = _label_eps(kind)
        e = eps_of[kind]
        if e is None:
            continue  # strings, datetimes, bools: not numbers a rounding can split
        try:
            f = float(v)
        except OverflowError:  # an int past float64: exact, never a rounded float
            continue
        if math.isfinite(f):  # inf beside 1e308 is no rounding
            pos.append(j)
            num.append(f)
            eps.append(e)
    if len(num) < 2:
        return
    f, e = np.asarray(num), np.asarray(eps)
    order = np.argsort(f, kind="stable")
    f, e, pos = f[order], e[order], np.asarray(pos)[order]
    tol = 4 * np.maximum(e[:-1], e[1:]) * np.maximum(np.abs(f[:-1]), np.abs(f[1:]))
    near = np.flatnonzero((f[1:] - f[:-1] <= tol) & ((e[:-1] > 0) | (e[1:] > 0)))
    for k in near:
        ja, jb = int(pos[k]), int(pos[k + 1])
        first = [dataset_names[int(np.flatnonzero(idx == j)[0])] for j in (ja, jb)]
        gap = float(abs(_exact(values[jb]) - _exact(values[ja])))
        raise ValueError(
            f"per_group[{name!r}]: the labels {values[ja]!r} (dataset {first[0]!r}) and "
            f"{values[jb]!r} (dataset {first[1]!r}) of metadata key {key!r} differ only "
            f"by rounding ({gap:.2g}), so they would be two groups, each with its own "
            f"{name!r}; round the labels (e.g. {_merging_fix(values[ja], values[jb])}) if "
            f"they are one group"
        )


def _real(label: str, value: Any) -> np.ndarray:
    """``value`` as a float array, refusing what a cast would silently change or misread.

    ``np.asarray(v, dtype=float)`` parsed a string (``init={"a": "1"}``), took ``True`` for
    1, and failed on a complex value or a dict with a message that named nothing (stop 31
    review); an lmfit ``Parameter`` lost its bounds, ``vary`` and ``expr`` (stop 33).
    """
    _lmfit_parameter(label, value)
    index = _pandas_index(value)
    if index is not None and list(index) != list(range(len(index))):
        # np.asarray drops a Series' labels: a Series by group or data-set name in another
        # order than the fit's was read by position, a fixed value held for the wrong data
        # set with no error (stop 53)
        labels = list(index[:4])
        # data set names are str: dict(series) of a Series labelled 2, 0, 1 (data sets
        # named '2', '0', '1') was refused as "must be real numbers" (stop 59 review)
        as_names = (
            "dict(series) too"
            if all(isinstance(v, str) for v in index)
            else "its labels as str: {str(k): v for k, v in series.items()}"
        )
        raise ValueError(
            f"{label} is a pandas object labelled {labels}{' ...' if len(index) > 4 else ''}, "
            f"but it would be read by position, not by label; pass a dict for a per_group "
            f"parameter ({{group: value}}, e.g. dict(series)) or for a local or fixed one "
            f"({{data set name: value}}, {as_names}), or put the values in data-set "
            f"order and pass series.to_numpy()"
        )
    if isinstance(value, (list, tuple)):  # init for a per_group parameter, by group, say
        value = [_tensor_values(label, v) for v in value]
    arr = np.asarray(_tensor_values(label, value))
    kind = arr.dtype.kind
    if kind == "O":
        flat = arr.ravel().tolist()
        if all(isinstance(v, numbers.Real) and not isinstance(v, bool) for v in flat):
            kind = "f"
    if kind not in "iuf":
        raise TypeError(
            f"{label} must be real numbers, got {value!r} ({type(value).__name__}); "
            f"give a float (or one per data set / group where that role allows it)"
            + _option_fix(label, value)
        )
    return np.asarray(arr, dtype=float)


def _option_fix(label: str, value: Any) -> str:
    """For ``fixed={"kind": "quad"}`` (a model option, which lmfit's Model passes through
    as a keyword): bind it to model_fn. "give a float" alone did not work (stop 61)."""
    if not label.startswith("fixed[") or not isinstance(value, (str, bool, type(None))):
        return ""
    name = label[len("fixed[") : label.index("]")]
    if not name.startswith(("'", '"')):
        return ""
    return (
        f"; an option of model_fn that is not a number is bound to it, not fixed: "
        f"GlobalFit(functools.partial(model_fn, {name[1:-1]}={value!r}), ...)"
    )


def _by_name(value: Any) -> bool:
    """A dict keyed by data set names (str): one value per data set, read by name.

    Other keys (``{0: 1.0}``) stay refused as not real numbers: data sets are named by str.
    """
    return isinstance(value, Mapping) and bool(value) and all(isinstance(k, str) for k in value)


def _tensor_values(label: str, value: Any) -> Any:
    """A torch tensor's values as a NumPy array (widened to float64), else ``value``.

    ``np.asarray`` raised torch's own errors, naming no argument, for a start value taken
    from a trained torch parameter (``requires_grad``: "Can't call numpy() on Tensor that
    requires grad"), a bfloat16 one ("Got unsupported ScalarType BFloat16") or one on the
    meta device (stop 39); the data read such tensors as their values since stop 38.
    """
    if not _is_torch(value):
        return value
    fix = "pass a number, or the tensor before .to('meta')"
    return np.asarray(_from_torch("", label, value, meta_fix=fix))


def _hint(name: str, valid: Sequence[str]) -> str:
    nfkc = unicodedata.normalize("NFKC", name)
    if nfkc != name and nfkc in valid:
        # Python NFKC-normalises identifiers: ``def f(x, µ)`` (micro sign) takes a Greek mu
        return (
            f"; did you mean {nfkc!r} ({ascii(nfkc)})? Python stores a parameter named "
            f"{name!r} ({ascii(name)}) as {nfkc!r}: the two print alike"
        )
    # a case slip in a one-letter name ('K' for 'k') scores 0 in difflib: compared folded
    folded = [v for v in valid if v.casefold() == name.casefold()]
    close = folded or difflib.get_close_matches(name, list(valid), n=1)
    return f"; did you mean {close[0]!r}?" if close else ""


class ParameterMap:
    """Roles → physical parameter vector, and the map to each data set's logical parameters.

    Args:
        model_params: the model's parameter names (after x), or None when the
            model takes ``**kwargs`` (then the roles define the names).
        metadata: one metadata dict per data set.
        shared, per_group, local, fixed: the roles (see the module docstring).
        init: starting values: a scalar for every role; for a group parameter
            also ``{group_value: value}``; for a local one also a sequence of
            one value per data set.
        bounds: ``{name: (lower, upper)}``, None for an open side; applies to
            every physical parameter of that name.
        defaults: model signature defaults, used when ``init`` has no entry.
        dataset_names: names for messages (default ``"dataset <i>"``).

    Raises:
        tying.TieError: a parameter declared in two roles, or twice in one.
        ValueError: an unknown name (with the closest valid one), a model
            parameter with no role, a group key missing from a data set's
            metadata (naming the data set), a missing or mis-sized start value,
            reversed, equal or NaN bounds, or a start value outside its bounds.
        TypeError: a role of the wrong type, or an unhashable group value.
    """

    def __init__(
        self,
        model_params: Sequence[str] | None,
        metadata: Sequence[Mapping[str, Any]],
        *,
        shared: Sequence[str] = (),
        per_group: Mapping[str, str] | None = None,
        local: Sequence[str] = (),
        fixed: Mapping[str, Any] | None = None,
        init: Mapping[str, Any] | None = None,
        bounds: Mapping[str, Any] | None = None,
        defaults: Mapping[str, Any] | None = None,
        dataset_names: Sequence[str] | None = None,
    ):
        self.n_datasets = k = len(metadata)
        self._metadata = list(metadata)  # for the advice on a dict by group (stop 61)
        self.dataset_names = (
            list(dataset_names) if dataset_names is not None else [f"dataset {i}" for i in range(k)]
        )
        per_group = _as_mapping("per_group", per_group, "{'offset': 'instrument'}")
        fixed = _as_mapping("fixed", fixed, "{'c': 0.1}")
        init = _as_mapping("init", init, "{'a': 1.0}")
        bounds = _as_mapping("bounds", bounds, "{'a': (0.0, None)}")
        defaults = dict(defaults or {})
        self._assign_roles(model_params, shared, per_group, local, fixed, defaults)
        self._order_names()
        self._group_datasets(metadata)
        self._lay_out()
        self._check_names("bounds", bounds, self.free_names)
        self._check_names(
            "init", init, [n for n in self.names if self.roles[n] != "fixed"], self.fixed_names
        )
        self.lower, self.upper = self._bounds(bounds)
        self.x0 = self._init(init, defaults)
        self.fixed_values = self._fixed(fixed)
        self._check_fixed_init(init)

    # -- the four phases of construction --------------------------------------

    def _assign_roles(
        self,
        model_params: Sequence[str] | None,
        shared: Sequence[str],
        per_group: dict[str, str],
        local: Sequence[str],
        fixed: dict[str, Any],
        defaults: dict[str, Any],
    ) -> None:
        """Phase 1: one role per name, checked against the model's parameters."""
        for label, value in (("shared", shared), ("local", local)):
            if isinstance(value, str) or not isinstance(value, Sequence):
                raise TypeError(f"{label} must be a list of parameter names, got {value!r}")
            for name in value:
                if not isinstance(name, str):
                    # [["k"]] raised "unhashable type: 'list'", naming nothing (stop 52)
                    raise TypeError(
                        f"{label} must be a list of parameter names (str), got {name!r} "
                        f"({type(name).__name__}) in it; e.g. {label}=['k']"
                    )
        roles: dict[str, str] = {}
        for role, names in (
            ("shared", list(shared)),
            ("per_group", list(per_group)),
            ("local", list(local)),
            ("fixed", list(fixed)),
        ):
            for name in names:
                if name in roles:
                    other = roles[name]
                    if other == role:  # "declared in two roles: shared and shared" misled
                        raise TieError(
                            f"{role} lists {name!r} twice; a parameter is named once, in "
                            f"one role: remove the repeat"
                        )
                    raise TieError(
                        f"parameter {name!r} is declared in two roles: {other} and {role}; "
                        f"a parameter has exactly one role ({', '.join(ROLES)}); remove it from one"
                        + (hold_some(name) if role == "fixed" else "")
                    )
                roles[name] = role
        if model_params is not None:
            for name in roles:
                if name not in model_params:
                    hint = ""
                    if roles[name] == "fixed":  # 'b[run2]', a value the table labels
                        self.roles = roles
                        hint = self._slot_hint("fixed", name)
                    raise ValueError(
                        f"{roles[name]} names {name!r}, which model_fn does not take; its "
                        f"parameters are {list(model_params)}"
                        f"{hint or _hint(name, model_params)}"
                    )
            missing = [p for p in model_params if p not in roles and p not in defaults]
            if missing:
                raise ValueError(
                    f"model_fn parameter(s) {missing} have no role; add each to shared=, "
                    f"per_group=, local= or fixed="
                )
            idle = {
                p: defaults[p]
                for p in model_params
                if p not in roles and _is_number(defaults.get(p))
            }
            if idle:
                from tying.fit.solvers import FitWarning  # solvers imports this module

                # lmfit varies a keyword argument with a numeric default; here it is not
                # passed at all, so a user coming from lmfit would read a fit with that
                # parameter silently frozen: say so (the table does not list it)
                warnings.warn(
                    f"model_fn parameter(s) {idle} have a numeric default and no role: the "
                    f"fit keeps them at these values and does not fit them (lmfit would). "
                    f"Add them to fixed={idle!r} to keep them, or to shared=, per_group= or "
                    f"local= to fit them",
                    FitWarning,
                    stacklevel=4,
                )
            self.names = [p for p in model_params if p in roles]
        else:
            self.names = list(roles)
        if not any(roles[n] != "fixed" for n in self.names):
            # the bare rule named neither the names nor the fix (stop 55)
            held = [n for n in self.names if roles[n] == "fixed"]
            raise ValueError(
                f"no parameter to fit: every parameter is fixed ({held}); move at least one "
                f"name to shared=, per_group= or local= (to evaluate the model at fixed "
                f"values, call model_fn(x, ...) directly)"
                if held
                else "no parameter to fit: none was declared; name the model's parameters "
                "in shared=, per_group= or local="
            )
        self.roles = {n: roles[n] for n in self.names}
        self.group_key = {n: per_group[n] for n in self.names if roles[n] == "per_group"}
        for name, key in self.group_key.items():
            if not isinstance(key, str):
                raise TypeError(
                    f"per_group[{name!r}] must be a metadata key (str), got {key!r}; "
                    f"e.g. per_group={{{name!r}: 'instrument'}}"
                )

    def _order_names(self) -> None:
        """Phase 2: free logical order, global-role names (shared, then per-group) first."""
        roles = self.roles
        self._shared_names = [n for n in self.names if roles[n] == "shared"]
        self._group_names = [n for n in self.names if roles[n] == "per_group"]
        self.local_names = [n for n in self.names if roles[n] == "local"]
        self.global_names = self._shared_names + self._group_names
        self.free_names = self.global_names + self.local_names
        self.fixed_names = [n for n in self.names if roles[n] == "fixed"]

    def _group_datasets(self, metadata: Sequence[Mapping[str, Any]]) -> None:
        """Phase 3: each group parameter's values (first-appearance order) and data sets' groups."""
        k = self.n_datasets
        self.groups: dict[str, list[Any]] = {}
        self.group_index: dict[str, np.ndarray] = {}
        for name in self._group_names:
            key = self.group_key[name]
            values: list[Any] = []
            where: dict[Any, int] = {}
            idx = np.empty(k, dtype=np.int64)
            for i, meta in enumerate(metadata):
                if key not in meta:
                    raise ValueError(
                        f"per_group[{name!r}] groups by metadata key {key!r}, but dataset "
                        f"{self.dataset_names[i]!r} (index {i}) has no {key!r} in its metadata "
                        f"(its keys: {sorted(meta)}); add metadata={{{key!r}: ...}} to it"
                    )
                value = meta[key]
                if isinstance(value, (float, np.floating)) and np.isnan(value):
                    # NaN != NaN: two data sets labelled NaN got two groups, or one when
                    # both held the very same NaN object, with no error
                    raise ValueError(
                        f"dataset {self.dataset_names[i]!r}: metadata[{key!r}] is NaN, which "
                        f"cannot be a group label (NaN equals nothing, not even NaN); give "
                        f"the data sets that belong together one label, e.g. 'unknown'"
                    )
                try:
                    j = where.setdefault(value, len(values))
                except TypeError:
                    raise TypeError(
                        f"dataset {self.dataset_names[i]!r}: metadata[{key!r}] = {value!r} "
                        f"cannot be a group label (unhashable); use a str or a number"
                    ) from None
                if j == len(values):
                    values.append(value)
                elif isinstance(value, (bool, np.bool_)) != isinstance(values[j], (bool, np.bool_)):
                    # True == 1 and False == 0 in Python: two labels meant apart became one
                    # group, with no error (stop 30 review)
                    raise ValueError(
                        f"dataset {self.dataset_names[i]!r}: metadata[{key!r}] = {value!r} "
                        f"equals the label {values[j]!r} of an earlier data set in Python "
                        f"(a bool is 0 or 1), so they would be one group of {name!r}; use "
                        f"labels of one kind (all bool, or all numbers or strings)"
                    )
                idx[i] = j
            printed: dict[str, Any] = {}
            for v in values:  # the physical names are name[label]: they must differ
                other = printed.setdefault(str(v), v)
                if other is not v:
                    raise ValueError(
                        f"per_group[{name!r}]: the labels {other!r} and {v!r} are different "
                        f"groups that print alike, so their parameters would both be named "
                        f"{name}[{v}]; use labels that print differently"
                    )
            _refuse_rounded_labels(name, key, values, idx, self.dataset_names)
            self.groups[name] = values
            self.group_index[name] = idx

    def _lay_out(self) -> None:
        """Phase 4: the physical layout ``[shared | groups | locals]`` and ``index``."""
        k = self.n_datasets
        shared_n = self._shared_names
        names: list[str] = list(shared_n)
        owner: list[int] = list(range(len(shared_n)))  # free logical index behind each entry
        offsets: dict[str, int] = {n: i for i, n in enumerate(shared_n)}
        for name in self._group_names:
            offsets[name] = len(names)
            names += [f"{name}[{v}]" for v in self.groups[name]]
            owner += [self.free_names.index(name)] * len(self.groups[name])
        self.n_global = len(names)
        self.n_local = len(self.local_names)
        for i in range(k):
            names += [f"{n}[{i}]" for n in self.local_names]
        seen: dict[str, int] = {}
        for p, label in enumerate(names):
            if label in seen:
                # only a model taking **kwargs can name a parameter "w[A]": it then shared its
                # physical name with group A's "w", and result.x, physical_names and
                # covariance_names read two values under one name (stop 32 review)
                raise ValueError(
                    f"two fitted parameters would both be named {label!r} (physical "
                    f"parameters {seen[label]} and {p}): a parameter name with brackets "
                    f"collides with the name of a per-group or local parameter's value; "
                    f"rename it, e.g. {label.replace('[', '_').replace(']', '')!r}"
                )
            seen[label] = p
        owner += list(range(len(self.global_names), len(self.free_names))) * k
        self.physical_names = names
        # which free logical parameter each physical entry serves
        self.physical_param = np.array(owner, dtype=np.int64)
        index = np.empty((k, len(self.free_names)), dtype=np.int64)
        for j, name in enumerate(self.global_names):
            index[:, j] = offsets[name] + (
                self.group_index[name] if name in self.group_index else 0
            )
        for j in range(self.n_local):
            index[:, len(self.global_names) + j] = self.n_global + np.arange(k) * self.n_local + j
        self.index = index

    # -- construction helpers -------------------------------------------------

    def _check_names(
        self,
        label: str,
        given: Mapping[str, Any],
        valid: list[str],
        also: Sequence[str] = (),
    ) -> None:
        for name in given:
            if name not in valid and name not in also:
                why = " (it is fixed)" if self.roles.get(name) == "fixed" else ""
                raise ValueError(
                    f"{label} names {name!r}{why}, which is not a fitted parameter; "
                    f"the fitted parameters are {valid}"
                    f"{self._slot_hint(label, name) or _hint(name, valid)}"
                )

    def _bounds(self, bounds: Mapping[str, Any]) -> tuple[np.ndarray, np.ndarray]:
        lo = np.full(len(self.free_names), -np.inf)
        hi = np.full(len(self.free_names), np.inf)
        for name, pair in bounds.items():
            try:
                if not isinstance(pair, (tuple, list, np.ndarray)):
                    # a dict unpacks to its keys ({1: (0, 1), 2: (0, 5)} per group became
                    # the bounds (1, 2), no error) and a set to an arbitrary order
                    raise TypeError
                low, high = pair
            except (TypeError, ValueError):
                raise ValueError(
                    f"bounds[{name!r}] must be a pair (lower, upper) as a tuple or list, "
                    f"got {pair!r}; one pair holds for every physical {name!r} (per-group or "
                    f"per-data-set bounds are not supported){_envelope(name, pair)}"
                ) from None
            low = -np.inf if low is None else _real(f"bounds[{name!r}] lower", low)
            high = np.inf if high is None else _real(f"bounds[{name!r}] upper", high)
            for side, b in (("lower", low), ("upper", high)):
                if np.ndim(b):
                    raise ValueError(
                        f"bounds[{name!r}]: the {side} bound must be one number for every "
                        f"physical {name!r}, got shape {np.shape(b)}"
                        + (
                            f"; {pair!r} is read as (lower, upper), not as a pair per "
                            f"data set or group: per-group or per-data-set bounds are not "
                            f"supported{_envelope(name, pair)}"
                            if len(pair) == 2 and all(np.shape(v) == (2,) for v in pair)
                            else ""
                        )
                    )
            low, high = float(low), float(high)
            if np.isnan(low) or np.isnan(high):
                raise ValueError(
                    f"bounds[{name!r}] = ({low}, {high}): a bound must be a number, not NaN; "
                    f"use None for an open side, e.g. bounds={{{name!r}: (None, 3.0)}}"
                )
            if low == np.inf or high == -np.inf:
                # (inf, None) read "lower must be < upper; ... use fixed={'k': inf}" (stop 36)
                side = "lower bound is +inf" if low == np.inf else "upper bound is -inf"
                raise ValueError(
                    f"bounds[{name!r}] = ({low}, {high}): the {side}, which no value can "
                    f"meet; an open side is None (or -inf below, inf above), e.g. "
                    f"bounds={{{name!r}: (None, None)}}"
                )
            if not low < high:
                fix = (
                    f"write ({high}, {low})"
                    if low > high
                    else f"to hold it constant use fixed={{{name!r}: {low}}}"
                )
                raise ValueError(
                    f"bounds[{name!r}] = ({low}, {high}): lower must be < upper; {fix}"
                )
            j = self.free_names.index(name)
            lo[j], hi[j] = low, high
        return lo[self.physical_param], hi[self.physical_param]

    def _init(self, init: Mapping[str, Any], defaults: Mapping[str, Any]) -> np.ndarray:
        x0 = np.empty(len(self.physical_names))
        for j, name in enumerate(self.free_names):
            if name in init:
                value = init[name]
            elif name in defaults:
                value = defaults[name]
            else:
                raise ValueError(
                    f"init has no starting value for {name!r} and model_fn gives no default; "
                    f"add init={{{name!r}: ...}}"
                )
            sel = self.physical_param == j
            role = self.roles[name]
            if role == "per_group" and isinstance(value, Mapping):
                missing = [g for g in self.groups[name] if g not in value]
                if missing:
                    raise ValueError(
                        f"init[{name!r}] has no value for group(s) {missing} of metadata key "
                        f"{self.group_key[name]!r}; give one per group or a single number"
                    )
                unknown = [g for g in value if g not in self.groups[name]]
                if unknown:  # a typo in a group label was ignored, its start value lost
                    raise ValueError(
                        f"init[{name!r}] names group(s) {unknown} that no data set has under "
                        f"metadata key {self.group_key[name]!r}; the groups are "
                        f"{self.groups[name]}"
                    )
                value = [value[g] for g in self.groups[name]]
            elif role == "local" and _by_name(value):
                value = self._by_dataset(f"init[{name!r}]", value)
            label = (
                f"init[{name!r}]" if name in init else f"model_fn's default for {name!r} (no init)"
            )
            arr = _real(label, value)
            if arr.ndim == 0:
                x0[sel] = float(arr)
            elif arr.ndim == 1 and len(arr) == int(sel.sum()) and role != "shared":
                x0[sel] = arr
            else:
                expected = {"shared": "a number"}.get(
                    role, f"a number or {self.n_datasets} values (one per data set)"
                )
                fix = ""
                if role == "per_group":  # the list in group order, and which order (stop 61)
                    idx = self.group_index[name]
                    expected, fix = per_group_fix(name, self.groups[name], idx, arr)
                raise ValueError(
                    f"init[{name!r}] ({role}) must be {expected}, got shape {arr.shape}{fix}"
                )
        bad = ~np.isfinite(x0) | (x0 < self.lower) | (x0 > self.upper)
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise ValueError(
                f"start value of {self.labels[i]} is {x0[i]}, outside its bounds "
                f"[{self.lower[i]}, {self.upper[i]}] (or not finite); move init inside the bounds"
            )
        return x0

    def _fixed(self, fixed: Mapping[str, Any]) -> np.ndarray:
        out = np.empty((self.n_datasets, len(self.fixed_names)))
        # names held at one value per data set: their result is an array even when the
        # values happen to be equal (the type of values[name] followed the data before
        # stop 40: a float for [1.0, 1.0], an array for [1.0, 1.2])
        self.fixed_per_dataset = set()
        for j, name in enumerate(self.fixed_names):
            value = fixed[name]
            if _by_name(value):
                value = self._by_dataset(f"fixed[{name!r}]", value)
            # not `None in value`: it compares array items with None (ambiguous truth value)
            held = isinstance(value, (list, tuple)) and any(v is None for v in value)
            if held and len(value) > 1:
                # [1.0, None]: held in some data sets, fitted in the others (stop 59)
                known = [v for v in value if v is not None]
                if all(isinstance(v, numbers.Real) for v in known):
                    raise ValueError(
                        f"fixed[{name!r}] must be a value for every data set, got "
                        f"{list(value)!r}" + hold_some(name, [v is not None for v in value])
                    )
            arr = _real(f"fixed[{name!r}]", value)
            if arr.ndim == 1:
                self.fixed_per_dataset.add(name)
            if arr.ndim == 0 or arr.shape == (self.n_datasets,):
                if not np.all(np.isfinite(arr)):  # named here, not as a model returning NaN
                    some = arr.ndim == 1 and np.isfinite(arr).any() and np.isnan(arr).any()
                    raise ValueError(
                        f"fixed[{name!r}] must be finite, got {arr.tolist()}; give the value "
                        f"the parameter is held at"
                        + (hold_some(name, np.isfinite(arr).tolist()) if some else "")
                    )
                out[:, j] = arr
            else:
                raise ValueError(
                    f"fixed[{name!r}] must be a number or {self.n_datasets} values (one per "
                    f"data set), got shape {arr.shape}; a second independent variable (one "
                    f"value per point, lmfit's independent_vars) goes into x as a column: "
                    f"x = np.column_stack([x, {name}]), read in model_fn as x[:, 0], x[:, 1]"
                )
        return out

    def _by_dataset(self, label: str, value: Mapping[Any, Any]) -> list[Any]:
        """``{data set name: value}`` as one value per data set, in data-set order.

        The table labels a local value by its data set's name (``a[run2]``), and a dict by
        those names was refused as "must be real numbers, got {...} (dict)" (stop 59).
        """
        names = self.dataset_names
        missing = [n for n in names if n not in value]
        unknown = [k for k in value if k not in names]
        if missing or unknown:
            close = [difflib.get_close_matches(str(k), names, n=1) for k in unknown[:1]]
            hint = (
                f"; did you mean {close[0][0]!r} for {unknown[0]!r}?" if close and close[0] else ""
            )
            raise ValueError(
                f"{label} is a dict by data set name, but "
                + (f"has no value for data set(s) {missing[:5]}" if missing else "")
                + (" and " if missing and unknown else "")
                + (f"names data set(s) {unknown[:5]} the fit does not have" if unknown else "")
                + f"; the data sets are {names[:10]}{' ...' if len(names) > 10 else ''}{hint}"
                + by_group_fix(label, value, self._metadata)
            )
        return [value[n] for n in names]

    def _check_fixed_init(self, init: Mapping[str, Any]) -> None:
        """A fixed name in ``init`` must repeat its fixed value (``init=result.values``)."""
        # a continuation passes a result's values, fixed ones included: refusing them made
        # the natural restart an error (stop 36); a start that differs from the held value
        # cannot be honoured, so it is still refused, by name
        for name in self.fixed_names:
            if name not in init:
                continue
            held = self.fixed_values[:, self.fixed_names.index(name)]
            given = init[name]
            if _by_name(given):
                given = self._by_dataset(f"init[{name!r}]", given)
            arr = _real(f"init[{name!r}]", given)
            same = (arr.ndim == 0 or arr.shape == held.shape) and bool(np.all(arr == held))
            if not same:
                shown = float(held[0]) if np.ptp(held) == 0 else held.tolist()
                raise ValueError(
                    f"init[{name!r}] = {arr.tolist()}, but {name!r} is fixed at {shown}: a "
                    f"fixed parameter is not fitted, so init may only repeat its fixed value "
                    f"(as result.values does); drop {name!r} from init, change fixed= to the "
                    f"value you mean, or give {name!r} a role to fit it"
                )

    # -- the map --------------------------------------------------------------

    @property
    def labels(self) -> list[str]:
        """``physical_names`` as ``result.table()`` shows them: a local value by its data set's name.

        ``physical_names`` labels data set ``i``'s local ``b`` by its index (``b[1]``); the
        table by the data set's name (``b[run2]``). Messages name values by these labels:
        until stop 59 they said ``b[1]`` ended at a bound where the table listed ``b[run2]``.
        """
        cached = self.__dict__.get("_labels")
        if cached is not None and len(cached) == len(self.physical_names):
            return cached
        self._labels = self.labels_for(self.dataset_names)
        return self._labels

    def labels_for(self, dataset_names: Sequence[str]) -> list[str]:
        """:attr:`labels` with the data sets named ``dataset_names`` (``result.dataset_names``).

        A result renamed without a refit (``dataclasses.replace(result, dataset_names=...)``,
        the advice of ``conf_interval`` for names that read as indices) keeps this map: its
        later messages (``predict``'s held slots, profile refits) named ``b[0]`` beside
        ``dataset 'run 0'`` where the table listed ``b[run 0]`` (stop 59 review).
        """
        names = list(self.physical_names)
        for i, dataset in enumerate(dataset_names):
            for j, n in enumerate(self.local_names):
                names[self.n_global + i * self.n_local + j] = f"{n}[{dataset}]"
        return names

    def _slot_hint(self, label: str, name: str) -> str:
        """The fix for ``{label}={'b[run2]': ...}``: a value named as the table labels it.

        Messages and ``result.table()`` name data set ``run2``'s local ``b`` as ``b[run2]``;
        given to ``init=``/``fixed=``/``bounds=`` that name was refused as "not a fitted
        parameter" with no word of ``{'b': {data set name: value}}`` (stop 59 review).
        """
        head, sep, _ = name.partition("[")
        if not sep or not name.endswith("]") or head not in self.roles:
            return ""
        shown = ", ".join(f"{n!r}: ..." for n in self.dataset_names[:3])
        more = ", ..." if self.n_datasets > 3 else ""
        if label == "bounds":
            return (
                f"; {name!r} is one data set's {head!r} as result.table() labels it, and one "
                f"pair of bounds holds for every physical {head!r}: bounds={{{head!r}: (lower, "
                f"upper)}}"
            )
        if label == "fixed":
            return (
                f"; {name!r} is one data set's {head!r} as result.table() labels it: a "
                f"parameter has one role, so hold {head!r} in every data set, one value each, "
                f"with fixed={{{head!r}: {{{shown}{more}}}}} (every data set named) and drop it "
                f"from {self.roles[head]}="
            )
        if self.roles[head] != "local":
            return ""
        return (
            f"; {name!r} is one data set's {head!r} as result.table() labels it: give a local "
            f"start by data set name, {label}={{{head!r}: {{{shown}{more}}}}} (every data set "
            f"named), or one value per data set in data-set order"
        )

    @property
    def n_physical(self) -> int:
        """Length of the physical (fitted) vector."""
        return len(self.physical_names)

    def logical(self, theta: np.ndarray) -> dict[str, np.ndarray]:
        """Each data set's logical parameters: ``{name: (K,) array}``, fixed ones included.

        Example:
            >>> pmap = ParameterMap(None, [{}, {}], shared=["c"], local=["a"],
            ...                     init={"c": 1.0, "a": [2.0, 3.0]})
            >>> {k: v.tolist() for k, v in pmap.logical(pmap.x0).items()}
            {'c': [1.0, 1.0], 'a': [2.0, 3.0]}
        """
        values = theta[self.index]  # (K, P_free)
        out = {n: values[:, j] for j, n in enumerate(self.free_names)}
        out.update({n: self.fixed_values[:, j] for j, n in enumerate(self.fixed_names)})
        return {n: out[n] for n in self.names}

    def n_parameters(self) -> Count:
        """Logical vs physical parameters as a :class:`tying.Count` (float64 bytes).

        ``logical``: the slots the data sets read (K × fitted names);
        ``physical``: the values the fit varies. Fixed parameters are constants
        and count in neither. One group per physical value read by two or more
        data sets (shared and per-group parameters).

        Example:
            >>> pmap = ParameterMap(None, [{}, {}, {}], shared=["c"], local=["a"],
            ...                     init={"c": 0.0, "a": 1.0})
            >>> c = pmap.n_parameters()
            >>> c.logical, c.physical, c.ratio, c.groups[0].slots
            (6, 4, 1.5, ['dataset 0.c', 'dataset 1.c', 'dataset 2.c'])
        """
        logical, physical = self.n_datasets * len(self.free_names), self.n_physical
        groups = []
        for p in range(self.n_global):
            users = np.flatnonzero((self.index == p).any(axis=1))
            if len(users) < 2:
                continue
            name = self.free_names[self.physical_param[p]]
            slots = [f"{self.dataset_names[i]}.{name}" for i in users]
            groups.append(Group(self.physical_names[p], 1, 8, slots, len(slots), 8 * len(slots)))
        return Count(logical, physical, 8 * logical, 8 * physical, groups)

    def tie_rules(self) -> list:
        """The roles as the core vocabulary: ``share`` rules over ``"<name>.<dataset>"`` slots.

        ``shared`` is every data set's slot read like data set 0's; ``per_group``
        is each data set's slot read like the first data set of its group; local
        and fixed parameters have no rule. Resolving these rules with
        :func:`tying.core.resolver.resolve` gives exactly this map's physical
        layout (tested), so roles are one more way to write the ties every
        package shares.

        Returns:
            A list of :func:`tying.share` rules.

        Example:
            >>> pmap = ParameterMap(["c", "w", "a"], [{"i": "A"}, {"i": "A"}, {"i": "B"}],
            ...                     shared=["c"], per_group={"w": "i"}, local=["a"],
            ...                     init={"c": 0.0, "w": 1.0, "a": 1.0})
            >>> pmap.tie_rules()
            [share('c.*', like='c.0'), share('w.*', like=<dict>)]
        """
        from tying.core.rules import share

        rules = [share(f"{name}.*", like=f"{name}.0") for name in self._shared_names]
        for name in self._group_names:
            index = self.group_index[name]
            first = {g: int(np.flatnonzero(index == g)[0]) for g in np.unique(index)}
            like = {f"{name}.{i}": f"{name}.{first[g]}" for i, g in enumerate(index.tolist())}
            rules.append(share(f"{name}.*", like=like))
        return rules

    def describe(self, name: str) -> str:
        """The role of ``name`` in words, e.g. ``"per group (instrument)"``."""
        role = self.roles[name]
        return f"per group ({self.group_key[name]})" if role == "per_group" else role


def _as_mapping(label: str, value: Any, example: str) -> dict[str, Any]:
    """``value`` as a dict, refusing what is not a mapping (None is an empty one).

    ``dict(value or {})`` raised NumPy's "truth value of an array is ambiguous" for an
    array (``init=result.x``), "'FitResult' object is not iterable" for a result, and
    "dictionary update sequence element #0" for a list of names (stop 52).

    Example:
        >>> _as_mapping("init", None, "{'a': 1.0}")
        {}
        >>> _as_mapping("init", [1.0, 2.0], "{'a': 1.0}")
        Traceback (most recent call last):
        ...
        TypeError: init must be a dict {name: value}, got list [1.0, 2.0]; e.g. init={'a': 1.0}; ...
    """
    if value is None:
        return {}
    if isinstance(value, Mapping):
        return dict(value)
    hint = ""
    if hasattr(value, "values") and hasattr(value, "physical_names"):  # a FitResult
        hint = f"; to start from a fit's result pass {label}=result.values"
    elif isinstance(value, np.ndarray) or (
        isinstance(value, (list, tuple)) and all(_is_number(v) for v in value)
    ):
        hint = (
            f"; a vector of values (result.x) has no names: pass {label}=result.values"
            if label == "init"
            else ""
        )
    shown = ""
    if isinstance(value, (list, tuple, np.ndarray, str)):
        text = repr(value)
        shown = " " + (text if len(text) <= 60 else text[:57] + "...")
    raise TypeError(
        f"{label} must be a dict {{name: value}}, got {type(value).__name__}{shown}; e.g. "
        f"{label}={example}{hint}"
    )


def _is_number(value: Any) -> bool:
    """A real or complex scalar (not a bool): what lmfit would make a parameter of."""
    return isinstance(value, numbers.Number) and not isinstance(value, bool)
