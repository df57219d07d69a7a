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

from tying.hmm.base import BaseHMM, NotFittedError
from tying.hmm.categorical import CategoricalHMM
from tying.hmm.forward_backward import Posteriors, forward_backward, forward_log_likelihood
from tying.hmm.gaussian import GaussianHMM
from tying.hmm.gmm import GMMHMM
from tying.hmm.monitor import ConvergenceMonitor, ConvergenceWarning
from tying.hmm.pair import PairHMM, mirror
from tying.hmm.pair_dp import PairChunk, PairParams
from tying.hmm.sequences import SequenceBatch, check_lengths, check_observations
from tying.hmm.ties import StateTies
from tying.hmm.viterbi import viterbi

__all__ = [
    "BaseHMM",
    "CategoricalHMM",
    "ConvergenceMonitor",
    "ConvergenceWarning",
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
