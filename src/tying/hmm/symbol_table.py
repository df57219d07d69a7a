"""An alphabet too large for its emission table to exist on this machine.

A ``CategoricalHMM`` has one emission probability per state and symbol, and reads its
alphabet's size from ``X``'s largest symbol (hmmlearn does the same). Raw identifiers
as symbols (``X = [[0], [1], [2**40]]``: user ids, hashes, timestamps) asked for a
``(n_components, 2**40 + 1)`` table: the fit died in NumPy with "Unable to allocate
8.00 TiB", naming neither the symbol nor the recoding that fixes it, and a fitted model
refusing such X advised "fit again with n_symbols=1099511627777", which fails the same
way (stop 60). :func:`table_fits` says whether a table fits in this machine's memory;
:func:`refuse_oversized` refuses one that does not, naming the largest symbol, where
it is, how few distinct symbols X holds, and the ``np.unique`` recoding.
"""

from __future__ import annotations

import os

import numpy as np

from tying.hmm.sequences import _locate

__all__ = ["memory_bytes", "refuse_oversized", "table_fits"]


def memory_bytes() -> int:
    """This machine's physical memory in bytes (``2**48`` where the OS does not say)."""
    try:
        return int(os.sysconf("SC_PAGE_SIZE")) * int(os.sysconf("SC_PHYS_PAGES"))
    except (AttributeError, OSError, ValueError):  # pragma: no cover - non-POSIX systems
        return 2**48


def table_fits(n_states: int, n_symbols: int) -> bool:
    """Whether an ``(n_states, n_symbols)`` float64 emission table fits in memory.

    Example:
        >>> table_fits(3, 1000), table_fits(3, 2**60)
        (True, False)
    """
    return n_states * n_symbols * 8 <= memory_bytes()


def refuse_oversized(X: np.ndarray, lengths, n_states: int, n_symbols: int, why: str) -> None:
    """Refuse an alphabet whose emission table cannot exist here, before it is allocated.

    Args:
        X: the integer symbols, ``(n_samples,)``.
        lengths: the sequence lengths (to name where the largest symbol is).
        n_states: the model's number of states.
        n_symbols: the alphabet size the fit would use.
        why: what fixed that size (``"n_symbols_ is read from X's largest symbol"``).

    Raises:
        ValueError: when ``(n_states, n_symbols)`` float64 entries exceed this machine's
            memory, naming the fix.

    Example:
        >>> refuse_oversized(np.array([0, 5]), [2], 2, 6, "n_symbols_ is read from X")
    """
    if table_fits(n_states, n_symbols):
        return
    row = int(np.argmax(X))
    seq, pos = _locate(row, lengths)
    size = n_states * n_symbols * 8
    distinct = len(np.unique(X))
    raise ValueError(
        f"an alphabet of {n_symbols} symbols ({why}; X's largest symbol is {X[row]} at "
        f"sequence {seq}, position {pos}, row {row} of X) needs an emissionprob_ of shape "
        f"({n_states}, {n_symbols}), {size / 2**30:.3g} GiB, more than this machine's "
        f"{memory_bytes() / 2**30:.3g} GiB of memory; X holds {distinct} distinct symbols: "
        f"code them as 0..{distinct - 1} first, e.g. labels, codes = np.unique(X, "
        f"return_inverse=True), then fit/score codes (and code new data with "
        f"np.searchsorted(labels, X_new))"
    )
