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


class ConvergenceWarning(UserWarning):
    """An iterative fit stopped at its budget (iterations, evaluations) before its own
    convergence test held: its result may still be moving.

    The base of every domain's budget warning (``tying.hmm.ConvergenceWarning``,
    ``tying.fit.ConvergenceWarning``), so that one filter or one ``except`` clause
    catches them all; each names the fit, the budget and the fix.

    Example:
        >>> import warnings
        >>> class StoppedEarly(ConvergenceWarning):  # what a domain package derives
        ...     pass
        >>> with warnings.catch_warnings(record=True) as caught:
        ...     warnings.simplefilter("always")
        ...     warnings.warn("a fit stopped at its budget of 5 iterations", StoppedEarly)
        >>> issubclass(caught[0].category, ConvergenceWarning)
        True
    """
