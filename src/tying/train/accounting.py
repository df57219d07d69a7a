"""Privacy accounting for DP-SGD: Opacus' accountants, and the naive figure beside them (D10).

We do not write an accountant. ``epsilon`` asks Opacus' RDP (Mironov 2017) or
PRV (Gopi et al. 2021, numerically tight) accountant what ``steps`` Poisson-subsampled Gaussian steps with rate ``q`` and
noise multiplier ``σ`` cost at a given ``δ``.

``naive_epsilon`` shows what a wrong composition rule claims. DP-SGD's steps
all read the *same* data set, so their costs compose sequentially. The naive
rule applies *parallel* composition (valid only for mechanisms on disjoint
data: "each batch is different data, so the whole run costs one step"), and
claims the ε of a single step however long training runs: it overstates the
privacy by a factor that grows like √steps, orders of magnitude in practice.
``rule="sequential"`` is the opposite, valid but loose, textbook bound
``steps · ε₁`` (at ``δ/steps`` per step): the correct figure lies in between.

Opacus is an optional extra: ``pip install 'tying[privacy]'``.
"""

from __future__ import annotations

import functools
import math
import warnings

# GDP is left out: Opacus marks it experimental and able to underestimate ε.
ACCOUNTANTS = ("rdp", "prv")
NAIVE_RULES = ("parallel", "sequential")


def _opacus_accountant(name: str):
    try:
        from opacus.accountants import PRVAccountant, RDPAccountant
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError(
            "tying.train.accounting uses Opacus' privacy accountants, which are not "
            "installed; install them with: pip install 'tying[privacy]'"
        ) from err
    return {"rdp": RDPAccountant, "prv": PRVAccountant}[name]()


def _check(sample_rate: float, noise_multiplier: float, steps: int, delta: float) -> None:
    if not 0 < sample_rate <= 1:
        raise ValueError(f"sample_rate must be in (0, 1], got {sample_rate}")
    if not noise_multiplier > 0:
        raise ValueError(
            f"noise_multiplier must be > 0 for a finite epsilon, got {noise_multiplier}"
        )
    if not isinstance(steps, int) or steps < 0:
        raise ValueError(f"steps must be an int >= 0, got {steps!r}")
    if not 0 < delta < 1:
        raise ValueError(f"delta must be in (0, 1), got {delta}")


def epsilon(
    sample_rate: float,
    noise_multiplier: float,
    steps: int,
    delta: float,
    *,
    accountant: str = "rdp",
) -> float:
    """ε of ``steps`` DP-SGD steps (Poisson rate ``q``, noise ``σ``) at ``δ``, by Opacus.

    For RDP the orders are Opacus' defaults, widened when the best one is the
    largest (Opacus would only warn), so the figure equals Opacus' own whenever
    Opacus' orders suffice and is tighter, still valid, when they do not.

    Args:
        sample_rate: ``q``, the probability that an example joins a batch.
        noise_multiplier: ``σ`` (noise std over the clipping bound).
        steps: number of steps.
        delta: the target ``δ``.
        accountant: ``"rdp"`` or ``"prv"`` (tighter).

    Returns:
        ε as a float (0.0 for zero steps).

    Raises:
        ValueError: parameters out of range or an unknown accountant.
        ImportError: Opacus is not installed (names the extra to install).

    Example:
        >>> from tying.train import epsilon
        >>> round(epsilon(0.01, 1.0, 1000, 1e-5), 2)
        2.1
    """
    if accountant not in ACCOUNTANTS:
        raise ValueError(f"accountant must be one of {ACCOUNTANTS}, got {accountant!r}")
    _check(sample_rate, noise_multiplier, steps, delta)
    if steps == 0:
        return 0.0
    acc = _opacus_accountant(accountant)
    acc.history = [(float(noise_multiplier), float(sample_rate), int(steps))]
    with warnings.catch_warnings():
        # Opacus warns when the best RDP order is at the end of its default list (the
        # PRV accountant sizes its domain with RDP, so it warns too). Any set of orders
        # gives a valid bound: for RDP we widen the list and take the best.
        warnings.filterwarnings("ignore", message="Optimal order is the (largest|smallest) alpha")
        if accountant != "rdp":
            return float(acc.get_epsilon(delta=delta))
        alphas = list(acc.DEFAULT_ALPHAS)
        while True:
            eps, best = acc.get_privacy_spent(delta=delta, alphas=alphas)
            if best < alphas[-1] or alphas[-1] >= 2**14:
                return float(eps)
            alphas += [alphas[-1] * 2 ** (k / 4) for k in range(1, 9)]


def naive_epsilon(
    sample_rate: float,
    noise_multiplier: float,
    steps: int,
    delta: float,
    *,
    rule: str = "parallel",
) -> float:
    """What a composition rule that ignores (or over-counts) composition claims.

    The per-step ε₁ is the tight (PRV) ε of one subsampled Gaussian step.

    Args:
        sample_rate, noise_multiplier, steps, delta: as in :func:`epsilon`.
        rule: ``"parallel"``: ε₁ at ``δ`` (wrong for DP-SGD: every step reads the
            same data); ``"sequential"``: ``steps · ε₁`` at ``δ/steps`` per step
            (basic composition: valid, loose).

    Returns:
        The claimed ε.

    Raises:
        ValueError: parameters out of range or an unknown rule.
        ImportError: Opacus is not installed.

    Example:
        >>> from tying.train import epsilon, naive_epsilon
        >>> right = epsilon(0.01, 1.0, 10_000, 1e-5)
        >>> wrong = naive_epsilon(0.01, 1.0, 10_000, 1e-5)
        >>> right / wrong > 10      # the naive rule claims far more privacy
        True
    """
    if rule not in NAIVE_RULES:
        raise ValueError(f"rule must be one of {NAIVE_RULES}, got {rule!r}")
    _check(sample_rate, noise_multiplier, steps, delta)
    if steps == 0:
        return 0.0
    if rule == "parallel":
        return _one_step(float(sample_rate), float(noise_multiplier), float(delta))
    return steps * _one_step(float(sample_rate), float(noise_multiplier), delta / steps)


@functools.lru_cache(maxsize=256)
def _one_step(sample_rate: float, noise_multiplier: float, delta: float) -> float:
    return epsilon(sample_rate, noise_multiplier, 1, delta, accountant="prv")


def noise_for_epsilon(
    target_epsilon: float,
    delta: float,
    sample_rate: float,
    steps: int,
    *,
    accountant: str = "rdp",
) -> float:
    """The smallest noise multiplier ``σ`` (to 0.1 %) that spends at most ``target_epsilon``.

    Args:
        target_epsilon: the ε budget (> 0).
        delta, sample_rate, steps: as in :func:`epsilon`.
        accountant: ``"rdp"`` or ``"prv"``.

    Returns:
        σ as a float.

    Raises:
        ValueError: parameters out of range, or a budget no σ ≤ 1e4 reaches.
        ImportError: Opacus is not installed.

    Example:
        >>> from tying.train import epsilon, noise_for_epsilon
        >>> sigma = noise_for_epsilon(3.0, 1e-5, 0.01, 1000)
        >>> abs(epsilon(0.01, sigma, 1000, 1e-5) - 3.0) < 0.05
        True
    """
    if accountant not in ACCOUNTANTS:
        raise ValueError(f"accountant must be one of {ACCOUNTANTS}, got {accountant!r}")
    if not (target_epsilon > 0 and math.isfinite(target_epsilon)):
        raise ValueError(f"target_epsilon must be a finite number > 0, got {target_epsilon}")
    _check(sample_rate, 1.0, steps, delta)
    if steps == 0:
        raise ValueError("steps must be >= 1 to find a noise multiplier, got 0")
    # Bisection on log σ over our `epsilon` (Opacus' own search warns at its first
    # probe, σ = 10, where the best RDP order is beyond Opacus' default orders).
    lo, hi = 0.05, 1.0
    while epsilon(sample_rate, hi, steps, delta, accountant=accountant) > target_epsilon:
        lo, hi = hi, hi * 2
        if hi > 1e4:
            raise ValueError(
                f"no noise multiplier up to 1e4 reaches epsilon={target_epsilon} at delta={delta} "
                f"in {steps} steps of rate {sample_rate}; raise the budget or lower the rate"
            )
    for _ in range(40):
        mid = math.sqrt(lo * hi)
        if epsilon(sample_rate, mid, steps, delta, accountant=accountant) > target_epsilon:
            lo = mid
        else:
            hi = mid
        if hi / lo < 1 + 1e-3:
            break
    return hi
