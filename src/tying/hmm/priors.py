"""The MAP priors an HMM's ``fit`` is given: checked against the data and the ties.

hmmlearn's priors (``startprob_prior``, ``transmat_prior``, ``means_prior``,
``means_weight``, ``covars_prior``, ``covars_weight``, ``emissionprob_prior``) may be
numbers or arrays that broadcast to their parameter's per-state shape, which is known
only once ``fit`` has seen ``X`` (its number of features or symbols). Two things are
checked there, before the first E-step (stop 33):

- **Shape.** A prior that does not broadcast to its shape is refused by name, with the
  shape it needs. Before, NumPy refused it at the first M-step ("could not broadcast
  input array from shape (4, 2) into shape (3, 2)"), naming nothing.
- **Tied states take one prior.** A tie group has one physical parameter, and its
  M-step reads the prior of the group's first state. A per-state prior that differs
  within a tie group was ignored for the other states, silently (a transition prior of
  50 on a tied row changed nothing; a means prior was used in the covariance update but
  not in the mean's), so it is refused by name, as start values that differ are.

Example:
    >>> import numpy as np
    >>> from tying.hmm import GaussianHMM
    >>> X = np.random.default_rng(0).normal(size=(40, 2))
    >>> m = GaussianHMM(3, ties={"means": [[0, 1]]}, means_weight=2.0,
    ...                 means_prior=[[0, 0], [5, 5], [1, 1]], random_state=0)
    >>> try:
    ...     m.fit(X)
    ... except ValueError as err:
    ...     print(str(err)[:72])
    means_prior: states 0 and 1 are tied (ties['means'] group [0, 1]) but th
"""

from __future__ import annotations

import numpy as np

__all__ = ["check_priors"]


def check_priors(model, shapes: dict) -> None:
    """Refuse a prior that does not fit its parameter, or that differs within a tie group.

    Args:
        model: an HMM inside ``fit``, its ``ties_`` resolved for this fit.
        shapes: ``{prior name: (tie kind or None, per-state shape, what the axes are)}``;
            a prior that is None (its default) is not checked.

    Returns:
        None.

    Raises:
        ValueError: naming the prior, the shape it needs and the one it has, or the
            tied states whose priors differ.

    Example:
        >>> import numpy as np
        >>> from tying.hmm import CategoricalHMM
        >>> m = CategoricalHMM(2, emissionprob_prior=np.ones(5), random_state=0)
        >>> try:
        ...     m.fit(np.array([[0], [1], [2]]))
        ... except ValueError as err:
        ...     print(str(err)[:61])
        emissionprob_prior has shape (5,), which does not broadcast t
    """
    for name, (kind, shape, axes) in shapes.items():
        value = getattr(model, name, None)
        if value is None:
            continue
        arr = np.asarray(value, dtype=np.float64)
        try:
            fits = np.broadcast_shapes(arr.shape, shape) == shape
        except ValueError:
            fits = False
        if not fits:
            raise ValueError(
                f"{name} has shape {arr.shape}, which does not broadcast to {shape} "
                f"({axes}); give one number, or an array of that shape (or one that "
                f"broadcasts to it)"
            )
        if kind is None or not model.ties_.is_tied(kind):
            continue
        full = np.broadcast_to(arr, shape)
        found = model.ties_.differing(kind, full)
        if found is not None:
            group, s = found
            raise ValueError(
                f"{name}: states {group[0]} and {s} are tied (ties[{kind!r}] group "
                f"{group}) but their priors differ ({full[group[0]].tolist()} vs "
                f"{full[s].tolist()}); a tie group has one parameter and takes one "
                f"prior: give tied states the same prior, or untie them"
            )
