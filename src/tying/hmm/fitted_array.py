"""Fitted parameters as arrays whose writes go to the model (hmmlearn's in-place edits).

An HMM stores a tied parameter once per tie group, so ``m.means_`` is computed, not
stored: a plain copy would lose ``m.means_[0] = 5.0`` without an error, where
hmmlearn's model changes. :class:`FittedArray` is what every fitted parameter
attribute returns instead: an ``ndarray`` that remembers the model and attribute it
was read from, so that an item write (``m.transmat_[1, :] = row``) or an in-place
operator (``m.covars_ *= 2``, ``np.multiply(x, 2, out=x)``) is assigned to the model
through the attribute's validating setter, all or nothing:

- a write that the setter refuses (a row no longer summing to 1, a NaN, a covariance
  that is not positive definite) raises its error and leaves both the model and the
  array as they were;
- a write to some states of a tie group holds for the whole group (their rows are
  the same physical value); states of one group given different values are refused,
  naming the tie;
- an array read before the model changed (a ``fit``, another assignment) is refused
  rather than writing its old values back over the new ones;
- other in-place mutations (``fill`` aside, which writes through: ``sort``,
  ``np.copyto``, ``put``) meet NumPy's read-only error, never a silent loss.

Copies (``x.copy()``, ``np.array(x)``, fancy indexing, arithmetic results, pickles) are
plain, independent arrays, as in NumPy.

Example:
    >>> import numpy as np
    >>> from tying.hmm import GaussianHMM
    >>> m = GaussianHMM.from_params([0.5, 0.5], [[0.9, 0.1], [0.2, 0.8]],
    ...                             [[0.0], [3.0]], [[1.0], [2.0]])
    >>> m.means_[0] = 5.0
    >>> m.means_.tolist()
    [[5.0], [3.0]]
"""

from __future__ import annotations

import numpy as np

__all__ = ["FittedArray", "assign_written", "fitted", "linked"]


def fitted(getter) -> property:
    """A property returning ``getter``'s value as a :class:`FittedArray` of the model.

    ``getter(self)`` computes the attribute's current value as a fresh plain array (also
    reachable as ``prop.fget.plain``, which the model's own code reads); add a setter with
    ``@name.setter`` as usual: writes into the returned array are assigned through it.

    Args:
        getter: the method computing the value; its ``__name__`` is the attribute's.

    Returns:
        The property.
    """
    name = getter.__name__

    def get(self):
        return linked(self, name, getter(self))

    get.plain = getter
    get.__name__, get.__doc__ = name, getter.__doc__
    return property(get, doc=getter.__doc__)


def linked(owner, name: str, value: np.ndarray) -> FittedArray:
    """``value`` (a fresh array the caller gives up) as ``owner.<name>``'s write-through view.

    Args:
        owner: the model; it provides ``_write_back(name, before, after)`` (assign
            ``after``, validated) and ``_plain(name)`` (the current value, plain).
        name: the public attribute, e.g. ``"means_"``.
        value: the attribute's current value; not used by the caller afterwards.

    Returns:
        A read-only (at NumPy level) :class:`FittedArray` whose item writes and
        in-place operators go to ``owner``.
    """
    base = np.asarray(value)
    arr = base.view(FittedArray)
    arr._owner, arr._name, arr._root, arr._data = owner, name, arr, base
    arr.flags.writeable = False  # the ways around __setitem__ meet NumPy's read-only error
    return arr


def assign_written(owner, name: str, before: np.ndarray, after: np.ndarray) -> None:
    """``setattr(owner, name, after)`` for a write into ``m.<name>`` that held ``before``.

    The setter checks the whole value, so a write of some entries that leaves it invalid
    on its own (``m.transmat_[0, 0] = 0.7``: row 0 then sums to 1.2) is refused; its
    error then says so and how to change entries that must move together. The setter's
    own advice ("normalise it") did not work there: the write was refused, so there was
    nothing to normalise (stop 58).

    Args:
        owner: the model. name: the public attribute, e.g. ``"transmat_"``.
        before, after: the attribute's value before and after the write.

    Raises:
        ValueError: the setter's, with the note added where the write changed only some
            entries.

    Example:
        >>> from tying.hmm import GaussianHMM
        >>> m = GaussianHMM.from_params([0.5, 0.5], [[0.5, 0.5], [0.5, 0.5]],
        ...                             [[0.0], [1.0]], [[1.0], [1.0]])
        >>> try:
        ...     m.transmat_[0, 0] = 0.7
        ... except ValueError as err:
        ...     print(str(err).split("so nothing changed: ")[1])
        write entries that must move together at once, a whole row m.transmat_[0] = row, or assign a corrected copy: v = m.transmat_.copy(); v[...] = ...; m.transmat_ = v)
        >>> m.transmat_[0] = [0.7, 0.3]
        >>> m.transmat_[0].tolist()
        [0.7, 0.3]
    """
    try:
        setattr(owner, name, after)
    except ValueError as err:
        same = (before == after) | (np.isnan(before) & np.isnan(after))
        changed = int(np.count_nonzero(~same)) if before.shape == after.shape else 0
        partial = 0 < changed < before.size and err.args and isinstance(err.args[0], str)
        one = _coupled_write(owner, name, after, err.args[0]) if partial else None
        if one is not None:
            err.args = (
                f"{err.args[0]} (this write changed {changed} of the {before.size} entries "
                f"of {name} and is checked as an assignment of the whole {name}, so nothing "
                f"changed: write entries that must move together at once, {one}assign a "
                f"corrected copy: v = m.{name}.copy(); v[...] = ...; m.{name} = v)",
                *err.args[1:],
            )
        raise


_DISTRIBUTIONS = ("startprob_", "transmat_", "emissionprob_", "weights_", "insert_probs_")


def _coupled_write(owner, name: str, after: np.ndarray, message: str) -> str | None:
    """The write that sets the entries of ``after`` that must move together at once
    (``"a whole row m.transmat_[1] = row, or "``; ``""`` where only a copy does), where the
    setter refused ``after`` for a rule that ties entries together (a distribution's sum,
    a covariance's symmetry, a spherical variance), which a write of one entry breaks
    however valid its value; else None. A NaN, a negative probability or a shape the
    model no longer has (``set_params(n_components=3)`` since the read) is refused for
    itself: a whole-row write meets the same refusal, so no note. The row or matrix
    named is the first one refused, by the setter's tolerances: a GMMHMM's ``covars_[0]``
    is all of state 0's components, and a 1-d ``startprob_[0]`` is one entry (stop 58)."""
    if after.dtype.kind not in "fiu" or not np.all(np.isfinite(after)):
        return None
    if name == "match_probs_" and ("must sum to 1" in message or "symmetric" in message):
        return ""  # one distribution over all pairs of symbols: no row of its own
    if name in _DISTRIBUTIONS and "must sum to 1" in message and np.all(after >= 0):
        bad = ~np.isclose(after.sum(-1), 1.0, rtol=0, atol=1e-8)
        if after.ndim == 1:
            return f"all of them m.{name}[:] = values, or " if bad else None
        return f"a whole row m.{name}[{_first(bad)}] = row, or " if bad.any() else None
    kind = getattr(owner, "covariance_type", None)
    if name == "covars_" and after.ndim >= 3:
        if kind in ("full", "tied") and "must be symmetric" in message:
            swapped = np.swapaxes(after, -1, -2)
            bad = ~np.isclose(after, swapped, rtol=1e-10, atol=1e-12).all(axis=(-1, -2))
        elif kind == "spherical" and "one variance per state" in message:
            diag = np.diagonal(after, axis1=-2, axis2=-1)
            bad = ~np.isclose(diag, diag[..., :1], rtol=1e-12, atol=0).all(axis=-1)
        else:
            return None
        return f"a whole matrix m.covars_[{_first(bad)}] = matrix, or " if bad.any() else None
    return None


def _first(bad: np.ndarray) -> str:
    """The index of the first True of ``bad``, as written in a subscript (``1`` or ``0, 1``)."""
    index = np.unravel_index(int(np.flatnonzero(bad)[0]), bad.shape)
    return ", ".join(str(int(i)) for i in index)


class FittedArray(np.ndarray):
    """A fitted parameter read from an HMM; item writes and in-place operators go to it.

    See the module docstring for the rules; create with :func:`linked`.

    Raises:
        ValueError: on a write the attribute's setter refuses, a write giving tied
            states different values, or a write through an array read before the model
            changed.
    """

    def __array_finalize__(self, obj) -> None:
        root = getattr(obj, "_root", None)
        if root is not None and np.may_share_memory(self, root):  # a view: still the model's
            self._owner, self._name, self._root = root._owner, root._name, root
        else:  # a copy: independent, as in NumPy
            self._root = None

    # ------------------------------------------------------------ plain behaviour
    def __repr__(self) -> str:
        return repr(np.asarray(self))

    def __reduce__(self):
        return np.array(self).__reduce__()  # a pickle holds the values, not the model

    def __copy__(self) -> np.ndarray:
        return np.array(self)

    def __deepcopy__(self, memo) -> np.ndarray:
        return np.array(self)

    def copy(self, order="C") -> np.ndarray:  # noqa: D102 - ndarray.copy, plain
        return np.array(self, order=order, copy=True)

    def __getitem__(self, key):
        item = super().__getitem__(key)
        if isinstance(item, FittedArray) and item._root is None:  # fancy indexing: a copy
            return item.view(np.ndarray)
        return item

    # ----------------------------------------------------------------- writing
    def __setitem__(self, key, value) -> None:
        if getattr(self, "_root", None) is None:
            return super().__setitem__(key, value)
        self._write_through(lambda target: np.ndarray.__setitem__(target, key, value))

    def fill(self, value) -> None:  # noqa: D102 - ndarray.fill, through the model
        self[...] = value

    def __array_ufunc__(self, ufunc, method, *inputs, out=None, **kwargs):
        plain = tuple(np.asarray(x) if isinstance(x, FittedArray) else x for x in inputs)
        outs = out if out is not None else ()
        linked_outs = [o for o in outs if _is_linked(o)]
        if method == "at" and _is_linked(inputs[0]):  # np.add.at(x, idx, v): in place
            target = np.array(inputs[0])
            getattr(ufunc, method)(target, *plain[1:], **kwargs)
            inputs[0][...] = target
            return None
        if not linked_outs:
            if outs:
                kwargs["out"] = tuple(
                    np.asarray(o) if isinstance(o, FittedArray) else o for o in outs
                )
            return getattr(ufunc, method)(*plain, **kwargs)
        # x += 1, np.multiply(x, 2, out=x): computed apart, then written through
        if len(outs) != 1:
            raise ValueError(
                f"{ufunc.__name__} with several outputs cannot write into a fitted "
                f"parameter ({outs[0]._name if _is_linked(outs[0]) else 'an output'}); "
                f"compute into a new array and assign it whole"
            )
        target = outs[0]
        # computed into a copy of the output, as NumPy computes into the output itself:
        # entries a ``where=`` mask skips keep their values (a fresh result left them
        # uninitialised, and that memory went into the model: stop 39), and NumPy's
        # casting rule refuses what does not fit (``x += 1j`` lost its imaginary part)
        buf = np.array(target)
        getattr(ufunc, method)(*plain, out=(buf,), **kwargs)
        target[...] = buf
        return target

    def _write_through(self, write) -> None:
        root = self._root
        owner, name = root._owner, root._name
        before = np.array(root)
        current = owner._plain(name)
        if np.shape(current) != before.shape or not np.array_equal(current, before, equal_nan=True):
            raise ValueError(
                f"{name}: this array was read before the model changed (a fit or an "
                f"assignment since), so writing into it would put its old values back; "
                f"read m.{name} again and write into that"
            )
        try:
            _writeable(root, self, True)
            write(self)
        finally:
            _writeable(root, self, False)
        after = np.array(root)
        try:
            owner._write_back(name, before, after)
            now = owner._plain(name)
        except BaseException:
            _restore(root, before)
            raise
        _restore(root, now)  # tied states' rows follow the one written


def _is_linked(x) -> bool:
    return isinstance(x, FittedArray) and getattr(x, "_root", None) is not None


def _writeable(root: FittedArray, view: FittedArray, flag: bool) -> None:
    arrays = (root, view) if flag else (view, root)  # a view may be writeable only under its root
    for a in arrays:
        a.flags.writeable = flag


def _restore(root: FittedArray, values) -> None:
    """Put ``values`` into ``root``'s memory (``root._data`` owns it and stays writeable)."""
    root._data[...] = values
