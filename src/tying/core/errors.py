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
        >>> import warnings, numpy as np
        >>> import tying
        >>> from tying.hmm import GaussianHMM
        >>> X = np.random.default_rng(0).normal(size=(200, 1))
        >>> with warnings.catch_warnings(record=True) as caught:
        ...     warnings.simplefilter("always")
        ...     _ = GaussianHMM(2, n_iter=2, random_state=0).fit(X)
        >>> any(issubclass(w.category, tying.ConvergenceWarning) for w in caught)
        True
    """
