"""The one error type of the tie engine."""

from __future__ import annotations


class TieError(ValueError):
    """A tie cannot be made, kept or restored.

    The message names the rule, the offending path(s), what was expected and
    what was found, and the fix. A failed :meth:`tying.Plan.apply` or
    :func:`tying.load` leaves the model exactly as it was.

    Example:
        >>> import tying, torch
        >>> model = torch.nn.Sequential(torch.nn.Linear(2, 3))
        >>> try:
        ...     tying.Plan([tying.share("9.weight", like="0.weight")]).apply(model)
        ... except tying.TieError as err:
        ...     print(str(err).splitlines()[0])
        rule 0 share('9.weight', like='0.weight'): pattern '9.weight' matches no parameter or module; closest: 0.weight
    """
