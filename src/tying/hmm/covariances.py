"""Checks on the covariances given to the Gaussian HMMs, and their M-step floor.

:class:`~tying.hmm.GaussianHMM` and :class:`~tying.hmm.GMMHMM` take covariances in
hmmlearn's per-type shapes (spherical ``(K,)``, diag ``(K, D)``, full ``(K, D, D)``,
tied ``(D, D)``); a bad one is refused here, by name: a shape (written readably by
:func:`_covars_shape`), a non-positive variance, a matrix that is not symmetric
positive definite, a ``min_covar`` that is not a positive number. The eigenvalue
floor of the M-step (:func:`_floor_eigenvalues`) and the tie spec the ``'tied'`` type
implies (:func:`tied_type_spec`, one covariance group whatever else is tied) live here
too. Split from :mod:`tying.hmm.gaussian` (stop 52), which re-exports the names.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from tying.core.errors import TieError
from tying.core.patterns import Pattern
from tying.hmm.ties import StateTies, _is_rule
from tying.hmm.validation import _shape_text

__all__: list[str] = []


def tied_type_spec(spec, n_states: int, kinds: Sequence[str]):
    """The tie spec of a ``covariance_type='tied'`` model: ``spec`` with one covariance group.

    A tied covariance is one matrix, so every state's covariance is one group whatever
    else ``spec`` ties: means, transitions (a dict, a StateTies, or ``tying.share`` /
    ``tying.free`` rules) are read as for any other type. A spec that groups the
    covariances otherwise contradicts the type and is refused.

    Args:
        spec: the model's ``ties`` (None, a mapping, a StateTies, or a list of rules).
        n_states: the states it is resolved for.
        kinds: the model's tie kinds.

    Returns:
        A spec :meth:`StateTies.resolve` reads, with ``covars`` in one group.

    Raises:
        ValueError: covariance groups other than one, naming them and the fix
            (``covariance_type='full'`` with those groups).

    Example:
        >>> tied_type_spec({"means": [[0, 1]]}, 3, ("transitions", "means", "covars"))
        {'means': [[0, 1]], 'covars': 'all'}
    """
    why = "covariance_type='tied' shares one covariance among all states, but ties"
    fix = "use covariance_type='full' with those covariance groups instead"
    if spec is None:
        return {"covars": "all"}
    if isinstance(spec, Mapping):  # any mapping StateTies reads, not only a dict
        covars = spec.get("covars", "all")
        if not (isinstance(covars, str) and covars == "all") and not _one_group(covars, n_states):
            raise ValueError(f"{why} gives covars={covars!r}; {fix}")  # groups may be arrays
        return {**spec, "covars": "all"}
    if isinstance(spec, StateTies) and "covars" in spec.group_of:  # a model's ties_
        spec = spec._canonical()  # one group labelled 1 is one group too
        if not spec.group_of["covars"].any():  # one covariance group: what 'tied' is
            if spec.n_states != n_states and set(spec.group_of) == set(kinds):
                # its to_spec() names covars over its own states, which 'tied' refuses here
                rest = {k: g for k, g in spec.to_spec().items() if k != "covars"}
                if all(s < n_states for gs in rest.values() for g in gs for s in g):
                    raise TieError(
                        f"ties: a StateTies for {spec.n_states} states cannot serve a model "
                        f"with {n_states} states; pass its groups as a dict without covars "
                        f"(covariance_type='tied' ties them itself), ties={rest!r}"
                    )
            return spec
        raise ValueError(f"{why} (a StateTies) groups covars as {spec.groups('covars')}; {fix}")
    if isinstance(spec, (list, tuple)) and all(_is_rule(r) for r in spec):
        return _tied_rules(list(spec), n_states, kinds, why)
    return spec  # StateTies.resolve refuses it by type, naming the forms it takes


def _one_group(covars, n_states: int) -> bool:
    """Whether ``covars`` (a dict spec's groups) puts every state in one group, as the
    'tied' type does: ``[[0, 1, 2]]`` says what the type says (the rules form of it was
    accepted, the dict form refused, stop 56)."""
    try:
        ties = StateTies.resolve({"covars": covars}, n_states=n_states, kinds=("covars",))
    except (TypeError, ValueError):  # refused below with the type's own reason
        return False
    return ties.n_groups("covars") == 1


def _tied_rules(rules: list, n_states: int, kinds: Sequence[str], why: str) -> StateTies:
    """Rules resolved for ``n_states``, the covariances then one group; rules that tie the
    covariances into one group are accepted (they say what 'tied' does), any other rule
    on a ``covars.<state>`` slot is refused by index."""
    ties = StateTies.resolve(rules, n_states=n_states, kinds=kinds)
    if ties.n_groups("covars") == 1:
        return ties
    slots = [f"covars.{s}" for s in range(n_states)]
    on_covars = [
        f"rule {index} ({rule.kind} {rule.target!r})"
        for index, rule in enumerate(rules)
        if any(Pattern(rule.target).match(slot) is not None for slot in slots)
    ]
    if on_covars:
        raise ValueError(
            f"{why} {', '.join(on_covars)} leave covars grouped as {ties.groups('covars')}; "
            f"drop the rules on 'covars.*' (the type ties them already), or use "
            f"covariance_type='full' with those covariance groups"
        )
    group_of = dict(ties.group_of)
    group_of["covars"] = np.zeros(n_states, dtype=np.intp)
    return StateTies._trusted(n_states, group_of)


def _covars_shape(ct: str, K: int, D: int | None, G: int | None = None) -> str:
    """The covariance shape of type ``ct`` for K states of D features (None: not known
    yet), written readably; with ``G`` tie groups (other than K), the per-group form too.

    Example:
        >>> _covars_shape("diag", 3, 2)
        '(3, 2) = (n_components, n_features)'
        >>> _covars_shape("full", 3, None, G=2)  # doctest: +NORMALIZE_WHITESPACE
        "(3, n_features, n_features) = (n_components, n_features, n_features) or
        (2, n_features, n_features) = (groups in ties['covars'], n_features, n_features)
        (one per group)"
    """
    f = ("n_features", D)
    per_state = {"spherical": (), "diag": (f,), "full": (f, f), "tied": (f, f)}[ct]
    if ct == "tied":
        return _shape_text(*per_state)
    text = _shape_text(("n_components", K), *per_state)
    if G is not None and G != K:
        per_group = _shape_text(("groups in ties['covars']", G), *per_state)
        text += f" or {per_group} (one per group)"
    return text


def _plain_variances(cv: np.ndarray, K: int, D: int | None) -> bool:
    """Whether ``cv`` is diag variances in hmmlearn's own form, ``(K, D)`` (any D when
    None), every one finite and positive: what :meth:`GaussianHMM._covars_groups`'s
    checks accept, tested in one comparison instead of their dozen NumPy calls (most
    starts take this form; a start's checks run right after an E-step has flushed the
    caches: 36 us of a 150 x 400 fit, 2026-12-02). False sends ``cv`` to those checks,
    which accept it or name what is wrong.

    Example:
        >>> _plain_variances(np.ones((2, 3)), 2, 3), _plain_variances(np.zeros((2, 3)), 2, None)
        (True, False)
    """
    if cv.ndim != 2 or cv.shape[0] != K or not cv.size or (D is not None and cv.shape[1] != D):
        return False
    return bool(((cv > 0) & (cv < np.inf)).all())  # NaN fails both comparisons


def _check_min_covar(min_covar) -> None:
    """Refuse a ``min_covar`` that is not a positive finite number."""
    if isinstance(min_covar, (bool, np.bool_)):  # True read as a floor of 1.0, no error
        raise TypeError(f"min_covar must be a positive number, got {min_covar!r} (bool)")
    if not (
        isinstance(min_covar, (int, float, np.number)) and np.isfinite(min_covar) and min_covar > 0
    ):
        raise ValueError(f"min_covar must be a positive number, got {min_covar!r}")


def _check_covariance(who: str, c: np.ndarray, *, full: bool) -> None:
    """Refuse non-positive variances, or a full matrix that is not symmetric positive definite."""
    if not full:
        if np.any(c <= 0):
            raise ValueError(f"{who}: variances must be positive, got {c}")
        return
    if not np.allclose(c, c.T, rtol=1e-10, atol=1e-12):
        raise ValueError(f"{who} must be symmetric, got {c}")
    low = np.linalg.eigvalsh(c).min()
    if low <= 0:
        raise ValueError(
            f"{who} must be positive definite (smallest eigenvalue {low:.3g}); add a "
            f"multiple of the identity or fix the matrix"
        )


def _covariances_ok(c: np.ndarray) -> np.ndarray:
    """``(n,)``: which matrices of a stack ``(n, D, D)`` :func:`_check_covariance` accepts.

    Its two tests, over the whole stack in one pass each (one LAPACK call per matrix, as
    one ``eigvalsh`` a matrix makes): ``np.allclose(c, c.T, rtol=1e-10, atol=1e-12)`` on
    finite values, and the smallest eigenvalue above 0. A call per matrix cost 0.16 ms
    of a full fit's start, K=8 (2026-12-02).

    Example:
        >>> _covariances_ok(np.array([np.eye(2), -np.eye(2), [[1.0, 0.5], [0.0, 1.0]]])).tolist()
        [True, False, False]
    """
    ct = np.swapaxes(c, -1, -2)
    sym = (np.abs(c - ct) <= 1e-12 + 1e-10 * np.abs(ct)).all(axis=(-2, -1))
    return sym & (np.linalg.eigvalsh(c).min(axis=-1) > 0)


def _floor_eigenvalues(S: np.ndarray, floor: float) -> np.ndarray:
    """The covariance nearest ``S`` with every eigenvalue at least ``floor`` (for each
    matrix of a stack ``(..., D, D)``).

    This is also the constrained maximiser of the M-step objective, so EM stays
    monotone when the floor binds.
    """
    w, V = np.linalg.eigh(S)  # S may be a stack (..., D, D): one LAPACK call per matrix
    low = w.min(-1) < floor
    if not np.any(low):
        return S
    floored = (V * np.maximum(w, floor)[..., None, :]) @ np.swapaxes(V, -1, -2)
    return np.where(low[..., None, None], floored, S)
