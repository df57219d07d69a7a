"""Drawing an index from rows of probabilities, never one of probability 0 (stop 34).

``sample`` draws a state, a symbol or a mixture component as the first index whose
cumulative probability exceeds a uniform ``u`` in [0, 1). A row's cumulative sum can
end below 1: rounding (about 1e-16), or probabilities given to 8 or 9 digits, which
validation accepts within 1e-8 (``[0.333333333] * 3 + [0.0]`` sums to 1 - 1e-9).
A ``u`` in that gap found no index, and the draw fell back to the last index, whatever
its probability: a left-right model jumped to its final state, a state emitted a
symbol it cannot emit. :func:`last_possible` gives each row's last index of positive
probability, the fallback that keeps every draw possible; a draw outside the gap is
unchanged, bit for bit.

Example:
    >>> import numpy as np
    >>> P = np.array([[0.333333333, 0.333333333, 0.333333333, 0.0], [0.0, 0.0, 0.0, 1.0]])
    >>> last_possible(P).tolist()
    [2, 3]
    >>> cdf = np.cumsum(P, axis=1)
    >>> u = 1 - 5e-10                                   # in row 0's gap
    >>> int(min(np.searchsorted(cdf[0], u, side="right"), last_possible(P)[0]))
    2
"""

from __future__ import annotations

import numpy as np

__all__ = ["last_possible"]


def last_possible(probs) -> np.ndarray:
    """Each row's last index of positive probability (the last index of a row of zeros).

    Args:
        probs: ``(..., n)`` probabilities; each row a distribution over ``n`` items.

    Returns:
        ``(...)`` int64 indices, the cap for a draw from that row.

    Example:
        >>> last_possible([0.5, 0.5, 0.0]).tolist(), last_possible([[1.0, 0.0], [0.2, 0.8]]).tolist()
        (1, [0, 1])
    """
    positive = np.asarray(probs) > 0
    n = positive.shape[-1]
    last = n - 1 - np.argmax(positive[..., ::-1], axis=-1)
    # a row with no positive entry (not a distribution; validation refuses it): n - 1
    return np.where(positive.any(axis=-1), last, n - 1).astype(np.int64)
