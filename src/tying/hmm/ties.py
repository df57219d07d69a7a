"""State ties: which HMM states share one physical copy of each parameter.

A tie spec names a parameter kind and groups states, e.g.
``{"means": [[0, 1, 2], [3, 4]], "covars": "all"}``: states 0, 1, 2 read one
mean vector, states 3 and 4 another, and every state reads one covariance.
States a spec does not name are singleton groups (untied), so "untied" is just
the special case where every group has one state.

The same ties can be written in the core vocabulary, as ordered
:func:`tying.share` / :func:`tying.free` rules over slots named
``"<kind>.<state>"``; for each slot the last matching rule wins:

    >>> import tying
    >>> rules = [tying.share("means.*", like="means.0"), tying.free("means.4")]
    >>> StateTies.resolve(rules, n_states=5, kinds=("means", "covars")).groups("means")
    [[0, 1, 2, 3], [4]]

:class:`StateTies` is the resolved mapping state -> physical group for every
kind. The M-step pools sufficient statistics with it; :meth:`StateTies.count`
reports logical vs physical parameter counts as a :class:`tying.Count`.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING

import numpy as np

from tying.core.count import Count, Group
from tying.core.errors import TieError
from tying.core.resolver import resolve, roots, rule_error

if TYPE_CHECKING:  # rules come from tying.share, which has imported torch already
    from tying.core.rules import Rule

__all__ = ["StateTies"]

_ITEMSIZE = 8  # parameters are float64


class StateTies:
    """The resolved ties of an HMM: for each parameter kind, each state's group.

    Build it with :meth:`StateTies.resolve`. Groups are numbered in order of
    their smallest state, so group 0 always contains state 0.

    Attributes:
        n_states: number of states.
        group_of: ``{kind: int array (n_states,)}``, the physical group each
            state reads for that kind.

    Raises:
        TieError: labels that are not one non-negative label per state (labels with
            gaps or in another order are renumbered: the same groups).
        TypeError: labels or ``n_states`` that are not integers.

    Example:
        >>> t = StateTies.resolve({"means": [[0, 2]]}, n_states=3, kinds=("means",))
        >>> t.group_of["means"].tolist(), t.n_groups("means")
        ([0, 1, 0], 2)
    """

    def __init__(self, n_states: int, group_of: Mapping[str, np.ndarray]):
        # labels given by hand are checked and numbered by their smallest state, as
        # resolve numbers them: [0, 0, -1] read state 2 from the last group (groups()
        # left it out) and [0, 0, 5] counted four empty groups, both with no error
        if isinstance(n_states, (bool, np.bool_)) or not isinstance(n_states, (int, np.integer)):
            raise TypeError(f"StateTies: n_states must be an integer, got {n_states!r}")
        if n_states < 0:
            raise ValueError(f"StateTies: n_states must be >= 0, got {n_states}")
        self.n_states = int(n_states)
        self.group_of = {k: _checked_labels(k, v, self.n_states) for k, v in group_of.items()}
        # labels renumbered into another group order ([1, 1, 0] -> [0, 0, 1]): rows given
        # one per group in the caller's order (means_init) would go to other states, so
        # the order given is kept for listed_groups, which refuses such rows by name
        given = {}
        for k, v in group_of.items():
            listed = _groups_by_label(np.asarray(v))
            if listed != _groups_by_label(self.group_of[k]):
                given[k] = (self.group_of[k].tobytes(), listed)
        if given:
            self._given_order = given

    @classmethod
    def _trusted(cls, n_states: int, group_of: Mapping[str, np.ndarray]) -> StateTies:
        """A StateTies from labels already numbered as :meth:`resolve` numbers them."""
        ties = cls.__new__(cls)
        ties.n_states = int(n_states)
        ties.group_of = {k: np.asarray(v, dtype=np.intp) for k, v in group_of.items()}
        return ties

    def _canonical(self) -> StateTies:
        """A copy of this StateTies, its labels numbered by each group's smallest state
        (the same groups); labels edited in place since it was built into something that
        is no grouping of the states are refused. A copy, so a model that takes it as
        ``ties`` does not share it: an edit of the caller's object (or of another
        model's ``ties_``) changed a fitted model's groups, and its scores, silently.

        Raises:
            TieError, TypeError: as :class:`StateTies` does for such labels.
        """
        labels = {k: _checked_labels(k, v, self.n_states) for k, v in self.group_of.items()}
        return StateTies._trusted(
            self.n_states,
            {k: v.copy() if v is self.group_of[k] else v for k, v in labels.items()},
        )

    # ------------------------------------------------------------------ build
    @classmethod
    def resolve(
        cls,
        spec: Mapping[str, object] | Sequence[Rule] | StateTies | None,
        *,
        n_states: int,
        kinds: Sequence[str],
    ) -> StateTies:
        """Resolve a tie spec into a :class:`StateTies`.

        Args:
            spec: None (no ties); a mapping ``{kind: groups}`` where ``groups`` is
                ``"all"``, ``None``/``"none"``, or a list of lists of state
                indices; or a sequence of :func:`tying.share` / :func:`tying.free`
                rules over slots ``"<kind>.<state>"`` (last matching rule wins).
            n_states: number of states.
            kinds: the parameter kinds the model has, e.g. ``("means", "covars")``.

        Returns:
            A :class:`StateTies` with an entry for every kind in ``kinds``.

        Raises:
            TieError: on an unknown kind, a state that does not exist, a state
                in two groups, an empty group, a rule that matches nothing, a
                relation other than ``Same``, or a cycle of rules.
            TypeError: when the spec or a group has the wrong type.

        Example:
            >>> t = StateTies.resolve({"covars": "all"}, n_states=3, kinds=("means", "covars"))
            >>> t.groups("covars"), t.groups("means")
            ([[0, 1, 2]], [[0], [1], [2]])
        """
        if isinstance(spec, StateTies):
            if spec.n_states != n_states or set(spec.group_of) != set(kinds):
                named = [s for gs in spec.to_spec().values() for g in gs for s in g]
                foreign = sorted(set(spec.group_of) - set(kinds))
                if not foreign and all(s < n_states for s in named):
                    # its groups as a dict fit any size that has their states, and a dict
                    # leaves the kinds it does not name untied (the advice named
                    # StateTies.resolve(spec, ...), which refused that StateTies again)
                    fix = (
                        f"pass its groups as a dict, ties=<that StateTies>.to_spec() "
                        f"({spec.to_spec()!r}), which a model of any size with those "
                        f"states reads (kinds it does not name are untied)"
                    )
                else:
                    what = (
                        f"kinds {foreign} are not this model's"
                        if foreign
                        else f"groups name states past {n_states - 1}"
                    )
                    kind = next((k for k in reversed(kinds) if k != "covars"), kinds[-1])
                    example = f", e.g. ties={{{kind!r}: [[0, 1]]}}" if n_states > 1 else ""
                    fix = (
                        f"resolve a spec for this model: its {what}; give this model's ties "
                        f"as a dict of groups of states 0..{n_states - 1} over kinds "
                        f"{list(kinds)}{example}"
                    )
                raise TieError(
                    f"ties: a StateTies for {spec.n_states} states and kinds "
                    f"{sorted(spec.group_of)} cannot serve a model with {n_states} states and "
                    f"kinds {sorted(kinds)}; {fix}"
                )
            return spec._canonical()  # checked again (edited in place?), and copied
        group_of = {k: np.arange(n_states) for k in kinds}
        if spec is None:
            return cls._trusted(n_states, group_of)._known_untied(kinds)
        if isinstance(spec, Mapping):
            for kind, groups in spec.items():
                _check_kind(kind, kinds)
                group_of[kind] = _groups_to_labels(kind, groups, n_states)
            return cls._trusted(n_states, group_of)._known_untied(
                [k for k in kinds if k not in spec]
            )
        if isinstance(spec, (list, tuple)) and all(_is_rule(r) for r in spec):
            return cls._trusted(n_states, _resolve_rules(list(spec), n_states, kinds))
        raise TypeError(
            f"ties must be a dict like {{'means': [[0, 1], [2, 3]], 'covars': 'all'}} or a "
            f"list of tying.share/tying.free rules, got {spec!r}"
        )

    # ---------------------------------------------------------------- queries
    def n_groups(self, kind: str) -> int:
        """Number of physical copies of ``kind`` (groups)."""
        return int(self.group_of[kind].max()) + 1 if self.n_states else 0

    def groups(self, kind: str) -> list[list[int]]:
        """The groups of ``kind`` as lists of states, in group order.

        Remembered per kind while the labels stay the same (an EM iteration
        asks several times; the labels are compared, so a changed
        ``group_of`` is never answered from the memo); a fresh list each call.
        """
        groups = self._memo(
            "groups",
            kind,
            lambda labels: [
                np.flatnonzero(labels == g).tolist() for g in range(self.n_groups(kind))
            ],
        )
        return [list(g) for g in groups]

    def firsts(self, kind: str) -> np.ndarray:
        """The first state of each group of ``kind``, in group order (the state whose
        prior and start value a group takes); memoised like :meth:`groups`, a fresh
        array each call.

        Example:
            >>> StateTies(4, {"means": [0, 0, 1, 2]}).firsts("means").tolist()
            [0, 2, 3]
        """

        def make(labels):
            first = np.full(self.n_groups(kind), -1, dtype=np.int64)
            for state in range(len(labels) - 1, -1, -1):  # the lowest state of each group wins
                first[labels[state]] = state
            return first

        return self._memo("firsts", kind, make).copy()

    def is_tied(self, kind: str) -> bool:
        """True when some group of ``kind`` holds more than one state."""
        return self.n_groups(kind) < self.n_states

    def pool(self, kind: str, per_state: np.ndarray) -> np.ndarray:
        """Sum per-state statistics over each group: ``(n_states, ...) -> (n_groups, ...)``.

        This is the whole of what tying changes in the M-step: tied states pool
        their sufficient statistics (soft counts, Σγx, Σγxxᵀ) before the update.

        Example:
            >>> t = StateTies.resolve({"means": [[0, 2]]}, n_states=3, kinds=("means",))
            >>> t.pool("means", np.array([1.0, 10.0, 100.0])).tolist()
            [101.0, 10.0]
        """
        per_state = np.asarray(per_state)
        if self._untied(kind):  # one state per group, in order: 0 + x, as np.add.at gives
            return per_state + np.zeros((), dtype=per_state.dtype)
        out = np.zeros((self.n_groups(kind),) + per_state.shape[1:], dtype=per_state.dtype)
        np.add.at(out, self.group_of[kind], per_state)
        return out

    def _untied(self, kind: str) -> bool:
        """Whether every state of ``kind`` is its own group, in state order (memoised
        like :meth:`groups`: a changed ``group_of`` is seen)."""
        return self._memo(
            "untied",
            kind,
            lambda labels: bool(
                labels.shape == (self.n_states,)
                and np.array_equal(labels, np.arange(self.n_states))
            ),
        )

    def _known_untied(self, kinds) -> StateTies:
        """Record that ``kinds`` are untied (their labels ``0..n_states-1``, as
        :meth:`resolve` made them) in :meth:`_untied`'s memo, under the key it checks: a
        fit asks each kind once on a fresh StateTies, and its comparison with a new
        ``arange`` was a tenth of a fit's checks of its start values (2026-12-02). A label
        array edited or replaced later has another key, so it is compared again."""
        memo = self.__dict__.setdefault("_memos", {})
        for kind in kinds:
            labels = self.group_of[kind]
            memo[("untied", kind)] = ((labels.dtype.str, labels.shape, labels.tobytes()), True)
        return self

    def _memo(self, query: str, kind: str, make):
        """``make(labels)`` for ``kind``'s labels, remembered per query and kind while the
        labels stay the same: they are compared by dtype, shape and bytes on every call,
        so labels edited in place or replaced are never answered from the memo. Callers
        copy what is mutable before handing it out."""
        labels = self.group_of[kind]
        key = (labels.dtype.str, labels.shape, labels.tobytes())
        memo = self.__dict__.setdefault("_memos", {})
        hit = memo.get((query, kind))
        if hit is None or hit[0] != key:
            hit = memo[(query, kind)] = (key, make(labels))
        return hit[1]

    def differing(self, kind: str, per_state: np.ndarray) -> tuple[list[int], int] | None:
        """The first tie group of ``kind`` whose states' values differ (beyond 1e-12
        relative), with the first state that differs from the group's first; None when
        every group agrees. Start values and priors of tied states are checked with it.

        Example:
            >>> t = StateTies.resolve({"means": [[0, 2]]}, n_states=3, kinds=("means",))
            >>> t.differing("means", np.array([1.0, 5.0, 1.0])), t.differing(
            ...     "means", np.array([1.0, 5.0, 2.0]))
            (None, ([0, 2], 2))
        """
        for group in self.groups(kind):
            first = per_state[group[0]]
            for s in group[1:]:
                if not np.allclose(per_state[s], first, rtol=1e-12, atol=0):
                    return group, s
        return None

    def spread(self, kind: str, per_group: np.ndarray) -> np.ndarray:
        """Each state's copy of a per-group array: ``(n_groups, ...) -> (n_states, ...)``."""
        return np.asarray(per_group)[self.group_of[kind]]

    def to_spec(self) -> dict[str, list[list[int]]]:
        """The ties as a plain dict of the groups with more than one state."""
        return {
            k: [g for g in self.groups(k) if len(g) > 1] for k in self.group_of if self.is_tied(k)
        }

    def count(self, sizes: Mapping[str, int]) -> Count:
        """Logical vs physical parameter entries, as a :class:`tying.Count`.

        Args:
            sizes: entries one state reads for each kind, e.g. ``{"means": D}``.
                Kinds not in this StateTies (``startprob``) count as untied.

        Returns:
            A :class:`tying.Count`; ``groups`` lists the tie groups (more than one state).

        Example:
            >>> t = StateTies.resolve({"means": "all"}, n_states=4, kinds=("means",))
            >>> c = t.count({"means": 3, "startprob": 1})
            >>> c.logical, c.physical, c.ratio
            (16, 7, ...)
        """
        logical = physical = 0
        groups: list[Group] = []
        for kind, size in sizes.items():
            labels = self.group_of.get(kind, np.arange(self.n_states))
            n_groups = int(labels.max()) + 1 if labels.size else 0
            logical += self.n_states * size
            physical += n_groups * size
            for g in range(n_groups):
                members = np.flatnonzero(labels == g).tolist()
                if len(members) > 1:
                    groups.append(
                        Group(
                            physical_path=f"{kind}.{members[0]}",
                            physical=size,
                            bytes_physical=size * _ITEMSIZE,
                            slots=[f"{kind}.{s}" for s in members],
                            logical=size * len(members),
                            bytes_logical=size * len(members) * _ITEMSIZE,
                        )
                    )
        return Count(logical, physical, logical * _ITEMSIZE, physical * _ITEMSIZE, groups)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, StateTies):
            return NotImplemented
        return self.n_states == other.n_states and all(
            k in other.group_of and np.array_equal(v, other.group_of[k])
            for k, v in self.group_of.items()
        )

    def __repr__(self) -> str:
        return f"StateTies(n_states={self.n_states}, ties={self.to_spec()})"


# ---------------------------------------------------------------- helpers
def listed_groups(spec: object, kind: str, n_states: int) -> list[list[int]] | None:
    """The groups of ``kind`` in the order a mapping spec lists them, then the states it
    does not name (singletons, in state order); None when the spec lists no groups of
    ``kind`` (``"all"``, ``"none"``, rules, a :class:`StateTies`).

    Values given one per tie group are read in the resolved order
    (:meth:`StateTies.groups`: by each group's smallest state); a caller compares the
    two to refuse rows that would go to other groups than the spec's order suggests.
    The spec must have resolved already (its states are valid).

    Example:
        >>> listed_groups({"means": [[2], [0, 1]]}, "means", 4)
        [[2], [0, 1], [3]]
        >>> listed_groups({"means": "all"}, "means", 4) is None
        True
    """
    if isinstance(spec, StateTies):  # labels numbered by hand in another group order
        given = spec.__dict__.get("_given_order", {}).get(kind)
        labels = spec.group_of.get(kind)
        if given is not None and labels is not None and given[0] == labels.tobytes():
            return given[1]
        return None
    if not isinstance(spec, Mapping) or kind not in spec:
        return None
    groups = spec[kind]
    if groups is None or isinstance(groups, str):
        return None
    listed = [sorted(int(s) for s in group) for group in groups]
    named = {s for group in listed for s in group}
    return listed + [[s] for s in range(n_states) if s not in named]


def _check_kind(kind: object, kinds: Sequence[str]) -> None:
    if kind not in kinds:
        close = difflib.get_close_matches(str(kind), list(kinds), n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise TieError(f"ties: unknown parameter {kind!r}; this model can tie {list(kinds)}{hint}")


def _check_state(kind: str, where: str, state: object, n_states: int) -> int:
    if isinstance(state, (bool, np.bool_)) or not isinstance(state, (int, np.integer)):
        raise TypeError(
            f"ties[{kind!r}] {where}: states are integers, got {state!r} ({type(state).__name__})"
        )
    if not 0 <= int(state) < n_states:
        raise TieError(
            f"ties[{kind!r}] {where}: state {int(state)} does not exist "
            f"(n_components={n_states}, states are 0..{n_states - 1}); "
            f"fix the group or raise n_components"
        )
    return int(state)


def _checked_labels(kind: str, labels: object, n_states: int) -> np.ndarray:
    """``labels`` as one intp group label per state, numbered by each group's smallest
    state (the same object when it already is); labels of another shape, type or sign
    are refused by kind."""
    fix = (
        f"give one integer group label per state (group_of[{kind!r}] = [0, 0, 1] ties "
        f"states 0 and 1), or build it with StateTies.resolve({{{kind!r}: [[0, 1]]}}, "
        f"n_states={n_states}, kinds=model.tie_kinds)"
    )
    arr = np.asarray(labels)
    if arr.dtype == bool or not np.issubdtype(arr.dtype, np.integer):
        raise TypeError(
            f"StateTies group_of[{kind!r}]: group labels are integers, got dtype {arr.dtype} "
            f"({arr.tolist()!r}); {fix}"
        )
    if arr.shape != (n_states,):
        raise TieError(
            f"StateTies group_of[{kind!r}]: expected one label per state, shape ({n_states},), "
            f"got shape {arr.shape}; {fix}"
        )
    if n_states and arr.min() < 0:
        raise TieError(
            f"StateTies group_of[{kind!r}]: state {int(np.argmin(arr))} has the negative label "
            f"{int(arr.min())} (it would read the last group); {fix}"
        )
    canonical = _relabel(arr) if n_states else arr.astype(np.intp)
    if arr.dtype == np.intp and np.array_equal(canonical, arr):
        return arr
    return canonical.astype(np.intp)


def _groups_by_label(labels: np.ndarray) -> list[list[int]]:
    """The groups of ``labels`` in the order of their label values."""
    return [np.flatnonzero(labels == v).tolist() for v in np.unique(labels)]


def _relabel(labels: np.ndarray) -> np.ndarray:
    """Number groups by their smallest state: group 0 holds state 0, and so on."""
    _, first, inverse = np.unique(labels, return_index=True, return_inverse=True)
    order = np.argsort(np.argsort(first))
    return order[inverse.ravel()]


def _groups_to_labels(kind: str, groups: object, n_states: int) -> np.ndarray:
    if groups is None or (isinstance(groups, str) and groups == "none"):
        return np.arange(n_states)
    if isinstance(groups, str):
        if groups == "all":
            return np.zeros(n_states, dtype=np.intp)
        raise TieError(
            f"ties[{kind!r}]: {groups!r} is not a tie; use 'all', 'none', or a list of "
            f"groups of states like [[0, 1], [2, 3]]"
        )
    if not isinstance(groups, Iterable) or isinstance(groups, Mapping):
        raise TypeError(
            f"ties[{kind!r}] must be 'all', 'none' or a list of groups of states like "
            f"[[0, 1], [2, 3]], got {groups!r}"
        )
    _check_rereadable(f"ties[{kind!r}]", groups)
    labels = np.arange(n_states)
    owner: dict[int, tuple[int, list]] = {}
    for gi, group in enumerate(groups):
        if isinstance(group, (str, bytes)) or not isinstance(group, Iterable):
            # {0, 1}: one group written as a set (it said "group 0: got 0"); a pandas Series
            # or Index of states (tolist, as an ndarray) reads as the flat list it holds
            is_set = isinstance(groups, (set, frozenset))
            flat = (
                list(groups)
                if is_set or isinstance(groups, (list, tuple, range)) or hasattr(groups, "tolist")
                else None
            )
            if flat is not None and all(
                isinstance(g, (int, np.integer)) and not isinstance(g, (bool, np.bool_))
                for g in flat
            ):
                flat = sorted(int(g) for g in flat) if is_set else [int(g) for g in flat]
                raise TypeError(_flat_groups_message(kind, flat, n_states, is_set))
            raise TypeError(
                f"ties[{kind!r}] group {gi}: a group is a list of states like [0, 1], got {group!r}"
            )
        _check_rereadable(f"ties[{kind!r}] group {gi}", group)
        members = list(group)
        if not members:
            raise TieError(f"ties[{kind!r}] group {gi} is empty; remove it or name its states")
        where = f"group {gi} {members}"
        for s in members:
            s = _check_state(kind, where, s, n_states)
            if s in owner:
                oi, og = owner[s]
                same = "twice in" if oi == gi else "in"
                detail = (
                    f"group {gi} {members}"
                    if oi == gi
                    else f"group {oi} {og} and group {gi} {members}"
                )
                raise TieError(
                    f"ties[{kind!r}]: state {s} is {same} {detail}; a state belongs to one "
                    f"group only: merge the groups or remove the duplicate"
                )
            owner[s] = (gi, members)
            labels[s] = n_states + gi  # out of the singleton range until relabelled
    return _relabel(labels)


def _flat_groups_message(kind: str, flat: list[int], n_states: int, is_set: bool = False) -> str:
    """The refusal of a flat list (or a set) of states as a kind's groups, with the spec it
    may mean: one group of those states (``[0, 1]``), or one group label per state
    (``[0, 0, 1]``; not for a set, which holds no order)."""
    ways = []
    if len(set(flat)) == len(flat) and all(0 <= s < n_states for s in flat):
        ways.append(f"write [{flat!r}] for one group of those states")
    if not is_set and len(flat) == n_states and min(flat, default=0) >= 0:
        by_label = [[s for s, v in enumerate(flat) if v == g] for g in dict.fromkeys(flat)]
        if any(len(g) > 1 for g in by_label):
            groups = [g for g in by_label if len(g) > 1]
            ways.append(f"write {groups!r} if these are one group label per state")
    ways.append("write [[0, 1], [2, 3]] for groups of states")
    return (
        f"ties[{kind!r}] is a list of groups (a group is a list of states like [0, 1]), "
        f"got {'the set ' + repr(set(flat)) if is_set else 'the flat list ' + repr(flat)}; "
        + ", or ".join(ways)
    )


def _check_rereadable(where: str, value: object) -> None:
    """Refuse a one-shot iterator (a generator, ``iter(...)``, ``map``): a model resolves
    its ``ties`` at every fit and assignment, and the second read of an iterator is empty,
    so the second fit ran untied (or refused a group as empty) with no word on why."""
    if isinstance(value, Iterator):
        raise TypeError(
            f"{where} is a {type(value).__name__}, which can be read only once, but a "
            f"model reads its ties at every fit and set_params (a later read finds it "
            f"empty and runs untied); pass a list, e.g. list(...)"
        )


def _resolve_rules(rules: list[Rule], n_states: int, kinds: Sequence[str]) -> dict:
    """Resolve share/free rules over ``"<kind>.<state>"`` slots with the core resolver.

    Only the HMM's own constraints are added here (a tie keeps values as they are,
    and joins slots of one parameter kind); matching, last-match-wins, sources,
    cycles and the wording of every error are :mod:`tying.core.resolver`'s.
    """
    slots = [f"{k}.{s}" for k in kinds for s in range(n_states)]
    for index, rule in enumerate(rules):
        if rule.kind != "free" and not _is_same(rule.relation):
            raise rule_error(
                index,
                rule,
                f"HMM states share parameters as they are; relation {rule.relation!r} is not "
                f"supported; drop relation= (Same)",
            )

    def same_kind(index: int, rule: Rule, slot: str, source: str) -> None:
        kind, source_kind = slot.split(".")[0], source.split(".")[0]
        if kind != source_kind:
            raise rule_error(
                index,
                rule,
                f"slot {slot!r} cannot read {source!r}: a tie joins slots of one parameter "
                f"kind; pair {kind!r} with {kind!r}",
            )

    hint = f" (slots are '<kind>.<state>' for kinds {list(kinds)}, states 0..{n_states - 1})"
    won = resolve(rules, slots, what="slot", hint=hint, check=same_kind)
    root = roots({slot: source for slot, (_, source) in won.items()}, slots)
    return {
        kind: _relabel(np.array([int(root[f"{kind}.{s}"].split(".")[1]) for s in range(n_states)]))
        for kind in kinds
    }


def _is_rule(obj: object) -> bool:
    # duck-typed so that `import tying.hmm` does not import torch (tying.core.rules does)
    return all(hasattr(obj, a) for a in ("target", "like", "kind", "relation"))


def _is_same(relation: object) -> bool:
    return getattr(type(relation), "kind", None) == "Same"  # tying's Same, without importing it
