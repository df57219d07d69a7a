"""tying.hmm: hidden Markov models with tied states, and the pair HMM for alignment.

- :class:`GaussianHMM`, :class:`CategoricalHMM`: Baum-Welch batched over many
  sequences of different lengths, with states grouped by a tie spec
  (``ties={"means": [[0, 1, 2], [3, 4]], "covars": "all"}``); tied groups pool
  their sufficient statistics (claim C3).
- :class:`GMMHMM`: Gaussian-mixture emissions; ``ties={"means": "all",
  "covars": "all"}`` is the tied-mixture (semi-continuous) HMM, one codebook
  shared by every state.
- hmmlearn scripts run with only the import changed (``docs/hmm.md``).
- :class:`PairHMM`: the three-state alignment HMM (match, insert-X, insert-Y)
  with X and Y tied by default, so it scores (x, y) and (y, x) alike (claim C4).

Example:
    >>> import numpy as np
    >>> from tying.hmm import GaussianHMM
    >>> X = np.random.default_rng(0).normal(size=(200, 2))
    >>> model = GaussianHMM(4, ties={"covars": "all"}, tol=1e-2, random_state=0).fit(X, [120, 80])
    >>> model.ties_.groups("covars")
    [[0, 1, 2, 3]]
"""

import dis
import sys

from tying.hmm.base import BaseHMM, NotFittedError
from tying.hmm.categorical import CategoricalHMM
from tying.hmm.covariance_floor import CovarianceFloorWarning
from tying.hmm.forward_backward import Posteriors, forward_backward, forward_log_likelihood
from tying.hmm.gaussian import GaussianHMM
from tying.hmm.gmm import GMMHMM
from tying.hmm.monitor import ConvergenceMonitor, ConvergenceWarning
from tying.hmm.pair import PairHMM, mirror
from tying.hmm.pair_dp import PairChunk, PairParams
from tying.hmm.sequences import SequenceBatch, check_lengths, check_observations
from tying.hmm.ties import StateTies
from tying.hmm.viterbi import viterbi

# hmmlearn classes this package does not have, and what to use instead. A bare "cannot
# import name" left a porting user to guess (stop 56).
_HMMLEARN_ONLY = {
    "MultinomialHMM": (
        "hmmlearn >= 0.2.8's MultinomialHMM models counts over n_trials draws, which "
        "tying.hmm does not; for one symbol per step (hmmlearn < 0.2.8's MultinomialHMM) "
        "use CategoricalHMM(n_components, n_symbols=M)"
    ),
    "PoissonHMM": "tying.hmm has no Poisson emissions; use hmmlearn.hmm.PoissonHMM",
    "VariationalGaussianHMM": (
        "tying.hmm has no variational HMMs; GaussianHMM with priors (means_prior, "
        "covars_prior, ...) fits the MAP estimate"
    ),
    "VariationalCategoricalHMM": (
        "tying.hmm has no variational HMMs; CategoricalHMM with emissionprob_prior fits "
        "the MAP estimate"
    ),
}


class _MissingHMMClassError(AttributeError):
    """A hmmlearn class tying.hmm does not have, with what to use instead.

    An AttributeError, so ``hasattr(tying.hmm, "PoissonHMM")`` is False and
    ``getattr(tying.hmm, name, default)`` gives the default, as the data model requires of
    a module ``__getattr__``; ``from tying.hmm import PoissonHMM`` raises ImportError with
    the same message (see :func:`__getattr__`).
    """


def _importing_from() -> bool:
    # True when the caller two frames up is executing ``from tying.hmm import name``.
    # CPython's IMPORT_FROM swallows an AttributeError's message and says only "cannot
    # import name", so that one statement gets the ImportError with our message; every
    # other reader (hasattr, getattr with a default, attribute access) an AttributeError.
    try:
        frame = sys._getframe(2)
        return frame.f_code.co_code[frame.f_lasti] == _IMPORT_FROM
    except (AttributeError, IndexError, ValueError):  # pragma: no cover - other interpreters
        return False


_IMPORT_FROM = dis.opmap["IMPORT_FROM"]


def __getattr__(name: str):
    if name in _HMMLEARN_ONLY:
        message = (
            f"tying.hmm has no {name}: {_HMMLEARN_ONLY[name]} (docs/hmm.md, Coming from hmmlearn)"
        )
        if _importing_from():
            raise ImportError(message, name=name)
        raise _MissingHMMClassError(message)
    raise AttributeError(f"module 'tying.hmm' has no attribute {name!r}")


__all__ = [
    "BaseHMM",
    "CategoricalHMM",
    "ConvergenceMonitor",
    "ConvergenceWarning",
    "CovarianceFloorWarning",
    "GMMHMM",
    "GaussianHMM",
    "NotFittedError",
    "PairChunk",
    "PairHMM",
    "PairParams",
    "Posteriors",
    "SequenceBatch",
    "StateTies",
    "check_lengths",
    "check_observations",
    "forward_backward",
    "forward_log_likelihood",
    "mirror",
    "viterbi",
]
