"""What ``from_params`` refuses, named as its caller typed it.

``GaussianHMM.from_params(startprob, transmat, means, covars)`` (and the categorical
and mixture forms) builds a model whose ``startprob_init``, ``transmat_init``, ...
are the given arrays, and the start-value checks name those constructor arguments.
A caller who typed ``means=`` was told that ``means_init`` was wrong, an argument they
never gave (stop 54's open item). :func:`typed_names` renames them in any error
raised inside it; :func:`n_states` reads the number of states from ``startprob``
(the only place ``from_params`` has it), refusing what is no vector of states
(a scalar gave a bare ``len() of unsized object``; a nested list gave one state);
:func:`array_of_ndim` refuses an array of the wrong number of axes before its sizes
are read (a scalar ``emissionprob`` raised a bare ``IndexError``); :func:`refuse_filled`
refuses a keyword that ``from_params`` fills itself (``n_components=``, ``means_init=``:
Python's "got multiple values" named neither the clash nor the fix).
"""

from __future__ import annotations

import re
from contextlib import contextmanager

import numpy as np

from tying.hmm.validation import _real_array

#: what CategoricalHMM.from_params fills itself, and from where (a clash is refused by name)
CATEGORICAL_FILLED = {
    "n_components": "len(startprob)",
    "n_symbols": "the columns of emissionprob",
    "n_features": "the columns of emissionprob",
    "startprob_init": "the argument startprob",
    "transmat_init": "the argument transmat",
    "emissionprob_init": "the argument emissionprob",
}

#: what GaussianHMM.from_params fills itself, and from where (a clash is refused by name)
GAUSSIAN_FILLED = {
    "n_components": "len(startprob)",
    "startprob_init": "the argument startprob",
    "transmat_init": "the argument transmat",
    "means_init": "the argument means",
    "covars_init": "the argument covars",
}

#: what GMMHMM.from_params fills itself, and from where (a clash is refused by name)
GMM_FILLED = {
    "n_components": "len(startprob)",
    "n_mix": "means.shape[1]",
    "startprob_init": "the argument startprob",
    "transmat_init": "the argument transmat",
    "weights_init": "the argument weights",
    "means_init": "the argument means",
    "covars_init": "the argument covars",
}
_SIZE_NOTE = " (from_params reads n_components from len(startprob) = {k})"


@contextmanager
def typed_names(n_components: int | None, *names: str):
    """Errors raised inside name ``<name>`` where they said ``<name>_init``.

    Args:
        n_components: the number of states read from ``startprob``, for a note on
            where ``n_components`` came from (the caller did not type it); None: no note.
        *names: the ``from_params`` arguments (``"startprob"``, ``"means"``, ...).

    Yields:
        Nothing; a ValueError or TypeError raised in the block is raised again, the
        same exception, with its message renamed.

    Raises:
        ValueError, TypeError: those raised inside, renamed.

    Example:
        >>> with typed_names(2, "means"):
        ...     raise ValueError("means_init must be finite")
        Traceback (most recent call last):
        ...
        ValueError: means must be finite
    """
    try:
        yield
    except (ValueError, TypeError) as e:
        if not e.args or not isinstance(e.args[0], str):
            raise
        text = e.args[0]
        for name in names:
            text = re.sub(rf"\b{name}_init\b", name, text)
        if n_components is not None and "= (n_components" in text:  # a size it read
            text += _SIZE_NOTE.format(k=n_components)
        e.args = (text, *e.args[1:])
        raise


def refuse_filled(kwargs: dict, filled: dict[str, str]) -> None:
    """Refuse a keyword that ``from_params`` sets itself from its arguments.

    Args:
        kwargs: the extra keywords given to ``from_params``.
        filled: each keyword it fills, with where it reads it from (for the message).

    Raises:
        TypeError: naming the first such keyword, its source, and the fix.

    Example:
        >>> refuse_filled({"n_iter": 5}, {"n_components": "len(startprob)"})
        >>> refuse_filled({"n_components": 3}, {"n_components": "len(startprob)"})
        Traceback (most recent call last):
        ...
        TypeError: from_params reads n_components from len(startprob); drop n_components=3
    """
    for key, source in filled.items():
        if key in kwargs:
            raise TypeError(f"from_params reads {key} from {source}; drop {key}={kwargs[key]!r}")


def n_states(startprob) -> int:
    """The number of states ``from_params`` reads from ``startprob``: its length.

    Args:
        startprob: the start probabilities as given, one per state.

    Returns:
        ``len(startprob)``.

    Raises:
        TypeError: for text or complex entries (as :func:`_real_array`).
        ValueError: when ``startprob`` is not a vector of at least one entry.

    Example:
        >>> n_states([0.25, 0.75])
        2
        >>> n_states([[0.25, 0.75]])
        Traceback (most recent call last):
        ...
        ValueError: startprob must be a vector of one probability per state, shape (n_components,), got shape (1, 2); ...
    """
    arr = _real_array("startprob", startprob)
    if arr.ndim != 1 or arr.shape[0] == 0:
        raise ValueError(
            f"startprob must be a vector of one probability per state, shape "
            f"(n_components,), got shape {arr.shape}; from_params reads the number of "
            f"states from it, so give one flat list such as [0.5, 0.5]"
        )
    return int(arr.shape[0])


def array_of_ndim(name: str, value, ndims: tuple[int, ...], axes: str) -> np.ndarray:
    """``value`` as a float64 array, refused unless it has one of ``ndims`` axes.

    Args:
        name: the argument, for the message.
        value: the array-like given.
        ndims: the numbers of axes allowed.
        axes: what the axes are, for the message (``"(n_components, n_symbols)"``).

    Returns:
        The array.

    Raises:
        TypeError: for text or complex entries.
        ValueError: for another number of axes, naming ``name`` and both shapes.

    Example:
        >>> array_of_ndim("emissionprob", [[0.5, 0.5]], (2,), "(n_components, n_symbols)").shape
        (1, 2)
        >>> array_of_ndim("emissionprob", 0.5, (2,), "(n_components, n_symbols)")
        Traceback (most recent call last):
        ...
        ValueError: emissionprob must have 2 axes, (n_components, n_symbols), got shape (); ...
    """
    arr = _real_array(name, value)
    if arr.ndim not in ndims:
        want = " or ".join(str(n) for n in ndims)
        raise ValueError(
            f"{name} must have {want} axes, {axes}, got shape {arr.shape}; give one row "
            f"per state (or per tie group)"
        )
    return arr
