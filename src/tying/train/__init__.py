"""tying.train: training with ties — multi-task sharing, fast/slow weights, DP-SGD, drift.

- :mod:`~tying.train.multitask`: hard sharing (a Plan) and soft sharing (a task-graph
  Laplacian) as the two ends of one dial λ (claim C6).
- :mod:`~tying.train.meta`: slow weights shared across tasks, fast weights adapted per
  task in an inner loop (claim C7).
- :mod:`~tying.train.dp`, :mod:`~tying.train.ghost`, :mod:`~tying.train.accounting`:
  DP-SGD whose per-example gradients are those of the physical (tied) tensors, ghost
  clipping with the cross terms between uses, Opacus' accountants (claim D10);
  :mod:`~tying.train.per_example` computes the per-example gradients, and
  :mod:`~tying.train.known_losses` applies standard torch losses to the batch.
- :mod:`~tying.train.opacus_hooks`: Opacus' own ``GradSampleModule`` made to count every
  use of a tied tensor (plain Opacus on a Plan-tied model is refused with a ``TieError``).
- :mod:`~tying.train.drift`: Page-Hinkley and CUSUM detectors on a loss stream, with a
  callback that resets the optimizer (claim D9).
"""

from tying.train.accounting import ACCOUNTANTS, epsilon, naive_epsilon, noise_for_epsilon
from tying.train.dp import (
    DPSGD,
    PrivateGrad,
    clip_factors,
    per_example_grads,
    per_example_norms,
    poisson_batches,
    private_grad,
)
from tying.train.drift import CUSUM, DriftMonitor, PageHinkley, reset_optimizer
from tying.train.ghost import GhostClipping, GhostResult, ghost_norms
from tying.train.meta import FastSlow
from tying.train.multitask import MultiTaskNet, components, fit_multitask
from tying.train.opacus_hooks import grad_sample_module

__all__ = [
    "ACCOUNTANTS",
    "CUSUM",
    "DPSGD",
    "DriftMonitor",
    "FastSlow",
    "GhostClipping",
    "GhostResult",
    "MultiTaskNet",
    "PageHinkley",
    "PrivateGrad",
    "clip_factors",
    "components",
    "epsilon",
    "fit_multitask",
    "ghost_norms",
    "grad_sample_module",
    "naive_epsilon",
    "noise_for_epsilon",
    "per_example_grads",
    "per_example_norms",
    "poisson_batches",
    "private_grad",
    "reset_optimizer",
]
