"""scikit-learn's estimator protocol for the HMMs: ``get_params``, ``set_params``, ``repr``.

hmmlearn's models are scikit-learn estimators, so hmmlearn users clone them
(``sklearn.base.clone``) and search over their settings (``GridSearchCV``,
``cross_val_score`` with ``score`` as the criterion). :class:`EstimatorParams`
gives :class:`~tying.hmm.BaseHMM` and :class:`~tying.hmm.PairHMM` the same
protocol without importing scikit-learn (it is not a dependency):

- the parameters are the constructor's arguments, read back unchanged from the
  attributes of the same names (``__init__`` stores them as given), so ``clone``
  rebuilds a model with the same settings, its declared ``ties`` and ``*_init``
  start values included, and without anything fitted or assigned since
  (``means_``, ``ties_``, ``history_``);
- ``set_params`` is all or nothing: an unknown name, or a value ``fit`` would
  refuse before looking at the data (``n_components=0``, a tie spec naming a
  state the model does not have), is refused by name and changes nothing;
- ``repr`` lists the arguments that differ from their defaults, as
  scikit-learn's does.

Example:
    >>> from tying.hmm import GaussianHMM
    >>> m = GaussianHMM(3, ties={"covars": "all"}, n_iter=20)
    >>> m
    GaussianHMM(n_components=3, n_iter=20, ties={'covars': 'all'})
    >>> m.set_params(n_components=4).get_params()["n_components"]
    4
"""

from __future__ import annotations

import inspect

import numpy as np

__all__ = ["EstimatorParams"]


def _init_signature(cls) -> list[inspect.Parameter]:
    """The named arguments of ``cls``'s constructor, following ``**kwargs`` up the MRO.

    A subclass that forwards ``**kwargs`` to its base (``GaussianHMM`` passes
    ``startprob_init``, ``n_init``, ... to ``BaseHMM``) takes the base's named
    arguments too; they are parameters like the others.
    """
    out: dict[str, inspect.Parameter] = {}
    for klass in cls.__mro__:
        init = klass.__dict__.get("__init__")
        if init is None:
            continue
        more = False
        for p in inspect.signature(init).parameters.values():
            if p.name == "self":
                continue
            if p.kind == p.VAR_POSITIONAL:  # scikit-learn refuses these too
                raise TypeError(
                    f"{cls.__name__}.__init__ takes *{p.name}: estimator parameters must be "
                    f"named arguments"
                )
            if p.kind == p.VAR_KEYWORD:
                more = True
            else:
                out.setdefault(p.name, p)
        if not more:
            break
    return list(out.values())


def _same(value, default) -> bool:
    """Whether an argument still holds its default (for ``repr``); arrays never do."""
    if value is default:
        return True
    if isinstance(value, np.ndarray) or isinstance(default, np.ndarray):
        return False
    try:
        return type(value) is type(default) and bool(value == default)
    except (TypeError, ValueError):  # values whose == is not a truth value
        return False


def _short(value) -> str:
    """``repr(value)`` on one line, arrays abbreviated (a repr is read, not eval'd)."""
    if isinstance(value, np.ndarray):
        with np.printoptions(threshold=8, edgeitems=2):
            return " ".join(repr(value).split())
    return repr(value)


class EstimatorParams:
    """``get_params`` / ``set_params`` / ``repr`` after scikit-learn's ``BaseEstimator``.

    Subclasses store every constructor argument unchanged under its own name and
    implement :meth:`_check_params` (what ``fit`` checks of the settings before it
    looks at the data).
    """

    @classmethod
    def _get_param_names(cls) -> list[str]:
        """The constructor's argument names, sorted (scikit-learn's order)."""
        return sorted(p.name for p in _init_signature(cls))

    def get_params(self, deep: bool = True) -> dict:
        """The constructor's arguments, as stored (scikit-learn's ``get_params``).

        Args:
            deep: scikit-learn's switch for arguments that are estimators themselves
                (listed as ``name__param``); none of the HMMs' arguments are, so
                both give the same.

        Returns:
            ``{name: value}`` for every constructor argument; the very objects
            given (``ties``, ``means_init``), not copies.

        Example:
            >>> from tying.hmm import GaussianHMM
            >>> GaussianHMM(3, "full").get_params()["covariance_type"]
            'full'
        """
        return {name: getattr(self, name) for name in self._get_param_names()}

    def set_params(self, **params):
        """Set constructor arguments, all or nothing (scikit-learn's ``set_params``).

        The new values are checked together as ``fit`` checks its settings, so a
        bad value is refused here, by name, and the model keeps all its old
        values. Setting an argument is the same as assigning its attribute: on a
        fitted model the new setting takes effect at the next ``fit`` (see
        ``docs/hmm.md``, "Changing a setting after fit").

        Args:
            **params: argument names and their new values.

        Returns:
            self.

        Raises:
            ValueError: for a name that is not a constructor argument (scikit-learn's
                nested ``name__param`` included: no argument is an estimator), or a value
                ``fit`` would refuse (the message names it).
            TypeError: for a value of the wrong type, as ``fit`` would.

        Example:
            >>> from tying.hmm import GaussianHMM
            >>> m = GaussianHMM(3)
            >>> try:
            ...     m.set_params(n_components=2, covariance_type="ful")
            ... except ValueError as err:
            ...     print(str(err)[:43])
            covariance_type must be one of ('spherical'
            >>> m.n_components                       # nothing changed
            3
        """
        if not params:
            return self
        valid = self._get_param_names()
        for key in params:
            if key not in valid:
                name, delim, _ = key.partition("__")
                what = (
                    f"{name} is not an estimator with parameters of its own; set {name}=... "
                    f"as a whole"
                    if delim and name in valid
                    else f"valid parameters are {valid}"
                )
                raise ValueError(
                    f"Invalid parameter {key!r} for estimator {type(self).__name__}; {what}; "
                    f"nothing was set"
                )
        old = {name: self.__dict__[name] for name in params if name in self.__dict__}
        style = self._style_defaults()
        for name, value in params.items():
            setattr(self, name, value)
        try:
            self._check_params()
            self._check_style(style, params)
        except BaseException:
            for name in params:
                if name in old:
                    setattr(self, name, old[name])
                else:
                    self.__dict__.pop(name, None)
            raise
        return self

    def _style_defaults(self) -> dict:
        """The unset settings whose defaults depend on the style (hmmlearn's or ours) of a
        model that has parameters; none for a model without its own defaults."""
        return {}

    def _check_style(self, before: dict, params: dict) -> None:
        """Refuse a ``set_params`` that silently changes the defaults the next fit runs under.

        ``init_params`` (or a prior, or letter ``params``) makes a model hmmlearn-style;
        on a model that has parameters, the usual reason is to go on fitting from them,
        and the unset ``n_iter``, ``tol`` and ``covars_prior`` would change under it.
        """
        after = self._style_defaults()
        changed = {k: (v, after[k]) for k, v in before.items() if k in after and after[k] != v}
        if changed:
            what = ", ".join(f"{k} {a!r} -> {b!r}" for k, (a, b) in changed.items())
            keep = ", ".join(f"{k}={a!r}" for k, (a, _) in changed.items())
            # every fitted attribute: one assigned alone (m.means_ = m.means_, the advice
            # before stop 60) left the others to be drawn afresh by the next fit
            kinds = ("startprob", "transmat") + tuple(getattr(self, "_emission_params", ()))
            attrs = [{"emissions": "emissionprob"}.get(k, k) + "_" for k in kinds]
            assign = "; ".join(f"m.{a} = m.{a}" for a in attrs)
            raise ValueError(
                f"set_params({', '.join(sorted(params))}=...) switches this "
                f"{type(self).__name__} between our defaults and hmmlearn's, so its next fit "
                f"would run under other settings it was not given ({what}); pass them in the "
                f"same call (set_params(..., {keep}) keeps them, or give hmmlearn's), or, to "
                f"go on fitting from the current values, assign every one of them ({assign}) "
                f"instead of setting init_params; nothing was set"
            )

    def _check_params(self) -> None:  # pragma: no cover - every estimator overrides it
        """Refuse settings ``fit`` would refuse before it looks at the data."""
        raise NotImplementedError

    def __sklearn_tags__(self):
        """scikit-learn's default tags (>= 1.6 asks every estimator for them); only
        scikit-learn calls this, so it is importable here."""
        from sklearn.utils import Tags, TargetTags

        return Tags(
            estimator_type=None,
            target_tags=TargetTags(required=False),
            transformer_tags=None,
            regressor_tags=None,
            classifier_tags=None,
        )

    def __repr__(self) -> str:
        """The class and the arguments that differ from their defaults."""
        changed = [
            f"{p.name}={_short(getattr(self, p.name))}"
            for p in _init_signature(type(self))
            if not _same(getattr(self, p.name), p.default)
        ]
        return f"{type(self).__name__}({', '.join(changed)})"
