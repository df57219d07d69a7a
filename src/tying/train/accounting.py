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
import numbers
import warnings
from collections.abc import Iterable, Sequence

import numpy as np

from tying.train._accountant_keywords import refuse_opacus_keywords

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


# the smallest σ the accountants are asked about (see _check)
_SIGMA_FLOOR = 1e-150


def _check(sample_rate: float, noise_multiplier: float, steps: int, delta: float) -> None:
    for name, v in (
        ("sample_rate", sample_rate),
        ("noise_multiplier", noise_multiplier),
        ("delta", delta),
    ):
        if isinstance(v, bool) or not isinstance(v, numbers.Real):  # True was read as 1.0
            raise ValueError(
                f"{name} must be a real number, got {type(v).__name__} {v!r}{_hint(name, v)}"
            )
    if not 0 < sample_rate <= 1:  # NaN fails every comparison, so it lands here too
        raise ValueError(f"sample_rate must be in (0, 1], got {sample_rate}")
    if not (noise_multiplier > 0 and math.isfinite(noise_multiplier)):
        # σ = inf would hang inside Opacus' series for minutes; σ = NaN would answer NaN.
        raise ValueError(
            f"noise_multiplier must be a finite number > 0 for a finite epsilon, "
            f"got {noise_multiplier}"
        )
    if noise_multiplier < _SIGMA_FLOOR:
        # stop 56: below ~1.5e-154 σ² leaves float64's normal range, and Opacus' RDP series
        # never ended (epsilon(0.01, 1e-155, 1, 1e-5) hung) while PRV divided by zero
        # (ZeroDivisionError) or sized its grid from inf (OverflowError at σ = 1e-153)
        raise ValueError(
            f"noise_multiplier={noise_multiplier} is below {_SIGMA_FLOOR:g}, where the "
            f"accountants' arithmetic leaves float64 (1/σ² overflows); such a σ releases the "
            f"gradient almost unchanged (ε is about 5.5e299 at σ = 1e-150, q = 0.01, one "
            f"step): use a noise_multiplier of a useful size (noise_for_epsilon finds one)"
        )
    if isinstance(steps, bool) or not isinstance(steps, numbers.Integral) or steps < 0:
        raise ValueError(f"steps must be an int >= 0, got {steps!r}{_hint('steps', steps)}")
    if not 0 < delta < 1:
        raise ValueError(f"delta must be in (0, 1), got {delta}")


def _hint(name: str, value) -> str:
    """The fix for a number given in another type (stop 61: a one-element tensor read off
    a schedule, or steps worked out as epochs / sample_rate, named no fix)."""
    size = getattr(value, "size", None)  # a NumPy array's size, a tensor's size()
    size = value.numel() if callable(getattr(value, "numel", None)) else size
    if size == 1 and hasattr(value, "dtype"):  # a one-element tensor or array
        if name == "steps" and str(value.dtype).startswith(("float", "torch.float")):
            return (
                f"; pass a Python int: {name}=int(value.item()) (Opacus' int(epochs / sample_rate))"
            )
        return f"; pass a Python number: {name}=value.item()"
    if name == "steps" and isinstance(value, float) and value >= 0 and math.isfinite(value):
        return (
            "; a count of steps is an int: from epochs, steps = int(epochs / sample_rate), "
            "as Opacus counts them"
        )
    return ""


# Opacus evaluates an integer order α with a sum of α + 1 binomial terms: exact in
# float64 up to α ≈ 1029, where binom(α, α/2) overflows and the RDP comes back NaN.
# Its fractional-order series cancels catastrophically at large α (RDP < 0 from
# α ≈ 300 at σ = 30), so orders beyond Opacus' defaults are integers up to this cap.
MAX_RDP_ORDER = 1024


# Opacus' RDP of one step is exact to about 1e-16 (a log-sum of terms near 1); where the
# divergence itself is below that (q = 1e-7, σ >= 100: about q²/σ²) every order reads
# ±1e-16 of noise. A value this close under the floor is rounding, not a failed series.
_RDP_ROUNDING = 1e-12  # per step; Opacus multiplies the one-step value by steps


def _valid_rdp(sample_rate: float, noise_multiplier: float, steps: int, orders):
    """``(orders, rdp)`` restricted to the orders whose RDP value can be trusted.

    Rényi divergence is >= 0 and non-decreasing in the order, so a value that is
    NaN, infinite, negative, or below a trusted value at a smaller order is a
    numerical failure of the series, not a bound: it is left out. Leaving an order
    out can only make ε larger (the minimum runs over fewer orders), never smaller.
    A value below by no more than rounding (``_RDP_ROUNDING`` per step) is kept,
    raised by that margin, so that it is still an upper bound.
    """
    kept_orders, kept_rdp, _ = _valid_rdp_from(
        sample_rate, noise_multiplier, steps, orders, floor=0.0
    )
    return kept_orders, kept_rdp


def _valid_rdp_from(sample_rate: float, noise_multiplier: float, steps: int, orders, floor):
    """:func:`_valid_rdp` continuing from a trusted value ``floor`` at a smaller order;
    returns ``(orders, rdp, floor)`` with the floor the last order sets."""
    from opacus.accountants.analysis.rdp import compute_rdp

    rounding = _RDP_ROUNDING * steps
    kept_orders, kept_rdp = [], []
    for alpha in orders:
        try:
            with np.errstate(all="ignore"):
                value = float(
                    compute_rdp(
                        q=sample_rate,
                        noise_multiplier=noise_multiplier,
                        steps=steps,
                        orders=[alpha],
                    )[0]
                )
        except (ValueError, OverflowError, ZeroDivisionError):  # Opacus' _log_sub refuses
            continue
        if not math.isfinite(value) or value < floor - rounding:
            continue
        if value < floor:
            # the true value is at most value + rounding: keep that bound. Dropping these
            # orders left only α <= 1.9 at q = 1e-7, σ = 300: ε = 111.8 where Opacus
            # gives 0.103 (stop 31)
            kept_orders.append(alpha)
            kept_rdp.append(value + rounding)
            continue
        floor = value
        kept_orders.append(alpha)
        kept_rdp.append(value)
    return kept_orders, kept_rdp, floor


def _rdp_curve(segments, orders, floors):
    """The orders every segment trusts, with the composed RDP (the sum over segments,
    in order, as Opacus' accountant adds them); ``floors`` is updated per segment."""
    per_segment = []
    for i, (q, sigma, steps) in enumerate(segments):
        kept, values, floors[i] = _valid_rdp_from(q, sigma, steps, orders, floors[i])
        per_segment.append(dict(zip(kept, values)))
    common = [a for a in orders if all(a in seg for seg in per_segment)]
    return common, [sum(seg[a] for seg in per_segment) for a in common]


def _rdp_epsilon(segments, delta: float):
    """ε of ``[(sample_rate, noise_multiplier, steps), ...]`` composed by RDP at ``delta``:
    Opacus' default orders, widened (integer orders up to ``MAX_RDP_ORDER``) while the
    best is the largest, as one segment or many (stop 31: a history left Opacus' orders
    unwidened, 0.104 for two halves of a run whose one-segment figure is 0.0135)."""
    from opacus.accountants import RDPAccountant
    from opacus.accountants.analysis.rdp import get_privacy_spent

    floors = [0.0] * len(segments)
    orders, values = _rdp_curve(segments, list(RDPAccountant.DEFAULT_ALPHAS), floors)
    top = int(RDPAccountant.DEFAULT_ALPHAS[-1])
    while True:
        if not orders:  # pragma: no cover - every order failed: nothing to bound with
            raise ValueError(
                f"no RDP order gives a finite, valid value for the segments "
                f"(sample_rate, noise_multiplier, steps) {segments}; use accountant='prv'"
            )
        with warnings.catch_warnings():
            # Opacus warns when the best order is at an end of the list: we widen below.
            warnings.filterwarnings("ignore", message="Optimal order is the")
            eps, best = get_privacy_spent(orders=orders, rdp=values, delta=delta)
        if best < orders[-1] or top >= MAX_RDP_ORDER:
            return float(eps)
        # The best order is the largest one tried: try larger integer orders.
        more = sorted({min(MAX_RDP_ORDER, round(top * 2 ** (k / 4))) for k in range(1, 9)})
        top = more[-1]
        more_orders, more_values = _rdp_curve(segments, more, floors)
        orders += more_orders
        values += more_values


@refuse_opacus_keywords  # epochs=, target_delta=: name ours (stop 59)
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
        ε as a float, never below 0: 0.0 for zero steps, and 0.0 when the mechanism
        already meets ``δ`` at ε = 0 (a large ``δ`` against the noise), where the
        conversions would give a meaningless negative figure.

    Raises:
        ValueError: parameters out of range (``noise_multiplier`` must be finite and at
            least 1e-150, where 1/σ² still fits float64), an unknown accountant, (PRV) a ``δ``
            Opacus' grid cannot place while RDP's bound is above 0, or (PRV) a case
            whose grid would exceed ``PRV_MAX_POINTS`` points: small ``σ`` with many
            steps, where PRV would run for minutes in gigabytes; RDP answers those; (PRV)
            a noise so small that Opacus' grid overflows float64 (ε in the hundreds, where
            its figure stopped near 705), with RDP's figure in the message.
        ImportError: Opacus is not installed (names the extra to install).
        TypeError: Opacus' keywords (``q=``, ``target_delta=``, ``epochs=``, ``alphas=``,
            ...), naming ours and the call in our names (``epochs`` as Opacus' ``steps =
            int(epochs / sample_rate)``).

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
    if accountant == "rdp":
        _opacus_accountant("rdp")  # names the extra to install when Opacus is missing
        return _at_least_zero(
            _rdp_epsilon([(float(sample_rate), float(noise_multiplier), int(steps))], delta)
        )
    acc = _opacus_accountant(accountant)
    acc.history = [(float(noise_multiplier), float(sample_rate), int(steps))]
    # Opacus would size the same domain again, with two more RDP series (stop 53)
    _reuse_domain(acc, float(sample_rate), float(noise_multiplier), int(steps), delta)
    # at q = 1 Opacus' PRV takes log(1 - q) = -inf on purpose (every step sees the whole
    # data set) and NumPy would warn "divide by zero" from inside it
    with warnings.catch_warnings(), np.errstate(divide="ignore" if sample_rate == 1 else "warn"):
        # The PRV accountant sizes its domain with Opacus' RDP at its default orders,
        # which warns when the best is the largest; that only widens the domain.
        warnings.filterwarnings("ignore", message="Optimal order is the (largest|smallest) alpha")
        points = _prv_grid_points(float(sample_rate), float(noise_multiplier), int(steps), delta)
        if points > PRV_MAX_POINTS:
            # 58 million points took 70 s and 9.6 GB here; 194 million (σ=0.1, q=0.01,
            # 1,000 steps) ran for more than 10 minutes: refuse before Opacus starts.
            raise _PRVGridTooLarge(
                f"the PRV accountant would discretise its privacy loss over {points:,} "
                f"points (about {points * _PRV_BYTES_PER_POINT / 2**30:.0f} GB and minutes "
                f"of work; the limit is {PRV_MAX_POINTS:,}) for sample_rate={sample_rate}, "
                f"noise_multiplier={noise_multiplier}, steps={steps}, delta={delta}: its grid "
                f"grows with ε and with √steps; use accountant='rdp' (a valid upper bound) "
                f"or a larger noise_multiplier"
            )
        return _at_least_zero(_prv_get_epsilon(acc, delta))


def epsilon_of_history(history, delta: float, *, accountant: str = "rdp") -> float:
    """ε of DP-SGD steps whose noise or sampling rate changed along the way.

    Args:
        history: ``[(sample_rate, noise_multiplier, steps), ...]`` in the order run.
        delta: the target ``δ``.
        accountant: ``"rdp"`` or ``"prv"``.

    Returns:
        ε at ``delta``; :func:`epsilon` itself for one segment (the same figure), else
        the segments composed (stop 30 review: ``DPSGD.epsilon`` charged every step at the
        current σ and q, 0.366 where Opacus gives 14.42). RDP adds each order's
        divergence over the segments, with :func:`epsilon`'s orders (Opacus' figure
        whenever its orders suffice, tighter and still valid when they do not); PRV is
        Opacus' accountant, which convolves the privacy-loss distributions. 0.0 for an
        empty history.

    Raises:
        ValueError: ``delta`` outside (0, 1), an unknown accountant, or a segment that
            is not a ``(sample_rate, noise_multiplier, steps)`` tuple :func:`epsilon`
            accepts (the message names ``history[i]``); (PRV) a grid too large, or a
            ``delta`` its grid cannot place while RDP's bound is above 0.
        TypeError: ``history`` that is not an iterable of tuples.

    Example:
        >>> from tying.train.accounting import epsilon_of_history
        >>> one = epsilon_of_history([(0.01, 1.0, 500), (0.01, 1.0, 500)], 1e-5)
        >>> round(one, 2), round(epsilon(0.01, 1.0, 1000, 1e-5), 2)
        (2.1, 2.1)
        >>> epsilon_of_history([(0.1, 5.0, 10), (0.1, 0.5, 10)], 1e-5) > 10
        True
    """
    if accountant not in ACCOUNTANTS:
        raise ValueError(f"accountant must be one of {ACCOUNTANTS}, got {accountant!r}")
    # δ is checked before the history: an empty one answered 0.0 for delta=0, 1, -1 or NaN
    _check(0.5, 1.0, 0, delta)
    if isinstance(history, (str, bytes)) or not isinstance(history, Iterable):
        raise TypeError(
            f"history must be a list of (sample_rate, noise_multiplier, steps) tuples, "
            f"got {type(history).__name__} {history!r}"
        )
    merged: list[list] = []
    for i, segment in enumerate(history):
        if isinstance(segment, (str, bytes)) or not (
            isinstance(segment, Sequence) and len(segment) == 3
        ):
            raise ValueError(
                f"history[{i}] must be a (sample_rate, noise_multiplier, steps) tuple, "
                f"got {segment!r}"
            )
        q, sigma, steps = segment
        try:
            _check(q, sigma, steps, delta)
        except ValueError as err:
            raise ValueError(
                f"history[{i}] = {tuple(segment)!r} (sample_rate, noise_multiplier, steps): {err}"
            ) from None
        if steps == 0:
            continue
        if merged and merged[-1][0] == q and merged[-1][1] == sigma:
            merged[-1][2] += int(steps)
        else:
            merged.append([float(q), float(sigma), int(steps)])
    if not merged:
        return 0.0
    if len(merged) == 1:
        return epsilon(*merged[0], delta, accountant=accountant)
    if accountant == "rdp":
        return _at_least_zero(_rdp_epsilon([tuple(seg) for seg in merged], delta))
    total = sum(n for _, _, n in merged)
    points = max(_prv_grid_points(q, sigma, total, delta) for q, sigma, _ in merged)
    if points > PRV_MAX_POINTS:
        raise _PRVGridTooLarge(
            f"the PRV accountant would discretise its privacy loss over {points:,} points "
            f"for this history of {len(merged)} segments ({total} steps); use "
            f"accountant='rdp' (a valid upper bound)"
        )
    acc = _opacus_accountant(accountant)
    acc.history = [(sigma, q, n) for q, sigma, n in merged]  # Opacus' (σ, q, steps)
    with warnings.catch_warnings(), np.errstate(divide="ignore"):
        warnings.filterwarnings("ignore", message="Optimal order is the (largest|smallest) alpha")
        return _at_least_zero(_prv_get_epsilon(acc, delta))


def _prv_get_epsilon(acc, delta: float) -> float:
    """Opacus' PRV ε, its refusal of a tiny δ said in our words with the RDP figure (stop 38).

    Opacus raised "Floating point errors will dominate for such small values of delta.
    Increase delta or reduce domain size." (δ <= 1e-15 at σ=1, q=0.1, 10 steps), naming
    neither the argument's value nor that RDP answers it.
    """
    segments = [(float(q), float(sigma), int(n)) for sigma, q, n in acc.history]
    try:
        with (
            warnings.catch_warnings(record=True) as caught,
            np.errstate(over="warn", invalid="warn", divide="ignore"),
        ):
            # every warning is recorded, then sorted below: under ``-W error`` a scipy
            # IntegrationWarning (its mean's integral did not converge) raised out of
            # Opacus' internals, naming nothing (stop 39 review)
            warnings.simplefilter("always")
            eps = float(acc.get_epsilon(delta=delta))
    except ValueError as err:
        if "Floating point errors will dominate" not in str(err):
            raise
        rdp = _rdp_epsilon(segments, delta)
        raise _PRVDeltaTooSmall(
            f"the PRV accountant cannot compute epsilon at delta={delta}: its grid's "
            f"rounding error is larger than delta (Opacus: {err}); use accountant='rdp', "
            f"which gives {max(rdp, 0.0):.6g}, or a larger delta"
        ) from err
    except RuntimeError as err:
        if "Cannot compute epsilon" in str(err):
            # Opacus' grid starts at ε = -L < 0 and δ(ε) is already below the target
            # there. RDP (a valid upper bound) confirms ε <= 0 before we answer 0. Here, not
            # in epsilon() alone (stop 58 review: a history of two segments at δ = 0.99
            # raised Opacus' bare RuntimeError), and as _PRVUnusable, so that
            # noise_for_epsilon(..., accountant="rdp"), naive_epsilon and DPSGD.epsilon
            # answer or refuse in their own words (noise_for_epsilon(2.0, 0.999, 1.0, 10)
            # raised it, naming a sigma the caller never passed and accountant='rdp')
            rdp = _rdp_epsilon(segments, delta)
            if rdp <= 0:
                return 0.0
            said = _segments_text(segments)
            raise _PRVDeltaUnplaceable(
                f"the PRV accountant cannot place delta={delta} on its grid for "
                f"{said[1:-1] if len(segments) == 1 else said} (Opacus: {err}); use "
                f"accountant='rdp', which gives {rdp:.6g}, or a smaller delta"
            ) from err
        # stop 39: at a tiny noise (σ = 0.02 at q = 0.5 or 1) Opacus' discretisation of the
        # privacy loss fails its own check and raised this RuntimeError from its internals,
        # naming no argument and no way out
        if "Discrete mean differs significantly" not in str(err):
            raise
        rdp = _rdp_epsilon(segments, delta)
        said = _segments_text(segments)
        raise _PRVUnusable(
            f"the PRV accountant cannot discretise the privacy loss of {said} at "
            f"delta={delta}: the noise is too small for its grid (Opacus: {err}); use "
            f"accountant='rdp', which gives {max(rdp, 0.0):.6g}, or a larger noise_multiplier"
        ) from err
    broke = []
    for w in caught:
        text = str(w.message)
        numeric = issubclass(w.category, RuntimeWarning) and (
            "overflow" in text or "invalid" in text
        )
        if numeric or w.category.__name__ == "IntegrationWarning":
            # NumPy's overflow or invalid value in the grid, or scipy's quad not
            # converging on the loss's mean: the grid's ε cannot be trusted. (A divide by
            # zero is not counted, and not raised: the errstate above silences it, as
            # log(0) = -inf is how Opacus writes an impossible outcome, at q = 1 and in
            # ordinary cases alike.)
            broke.append(text.splitlines()[0])
        else:
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    if broke:
        # stop 39: where the privacy loss passes ~709 (exp overflows float64), Opacus' PRV
        # grid holds inf and NaN and its ε is capped near 705 with no error: q=0.01,
        # σ=0.0125, one step read 705.18 where the exact ε is about 3,440 (RDP: 3,581)
        rdp = _rdp_epsilon(segments, delta)
        said = _segments_text(segments)
        raise _PRVUnusable(
            f"the PRV accountant's grid breaks down for {said} at delta={delta} "
            f"({broke[0]}): at so little noise its privacy loss passes what float64 can "
            f"exponentiate, so its ε ({eps:.6g}) cannot be trusted; use accountant='rdp', "
            f"which gives {max(rdp, 0.0):.6g}, or a larger noise_multiplier"
        )
    return eps


def _segments_text(segments) -> str:
    """``(q, σ, steps)`` segments as the arguments a user passed, for a refusal."""
    return ", ".join(
        f"(sample_rate={q}, noise_multiplier={sigma}, steps={n})" for q, sigma, n in segments
    )


def _at_least_zero(eps: float) -> float:
    """ε is a bound, and a negative one means nothing: a mechanism that is (ε, δ)-DP with
    ε < 0 is (0, δ)-DP. The conversions (RDP's and PRV's upper bound) go below 0 when δ
    is large against the noise (ε(q=1, σ=3, 1 step, δ=0.3) read -0.189 by RDP, -0.311 by
    PRV; its exact δ(0) is 0.132 < 0.3): the bound they give is 0."""
    return max(eps, 0.0)


class _PRVUnusable(ValueError):
    """PRV cannot compute this case (a ``ValueError`` for the user); RDP can."""


class _PRVGridTooLarge(_PRVUnusable):
    """PRV's grid would be too large to compute (a ``ValueError`` for the user)."""


class _PRVDeltaTooSmall(_PRVUnusable):
    """PRV's grid rounds by more than ``δ`` (a ``ValueError`` for the user; stop 58: as a
    plain ``ValueError`` it escaped ``noise_for_epsilon(..., accountant="rdp")``, whose
    refusal told the caller to use ``accountant='rdp'``)."""


class _PRVDeltaUnplaceable(_PRVUnusable):
    """δ lies beyond the start of PRV's grid (Opacus' "Cannot compute epsilon") while RDP's
    bound is above 0 (a ``ValueError`` for the user)."""


def _prv_reason(err: _PRVUnusable) -> str:
    """Why PRV could not answer, in a few words, for a caller's own refusal."""
    if isinstance(err, _PRVDeltaUnplaceable):
        return "that delta is already met before its grid's first point"
    if isinstance(err, _PRVDeltaTooSmall):
        return "its grid's rounding error is larger than that delta"
    if isinstance(err, _PRVGridTooLarge):
        return "its grid would be too large to compute"
    return "the noise is too small for its grid"


# The PRV grid's size limit: 12 million points took 11 s and 2.3 GB on a 2-core machine.
PRV_MAX_POINTS = 2**24
_PRV_BYTES_PER_POINT = 200  # peak memory per grid point, measured (2.3 GB / 12.1 M points)


@functools.lru_cache(maxsize=256)  # noise_for_epsilon asks it again for the same σ
def _prv_grid_points(sample_rate: float, noise_multiplier: float, steps: int, delta: float) -> int:
    """How many points Opacus' ``PRVAccountant.get_epsilon`` (its default errors) grids over.

    The same rule as Opacus (Gopi et al. 2021, remark 5.6): a domain ``[-L, L]``
    from RDP bounds and a mesh of ``eps_error / sqrt(steps * log(12 / delta_error) / 2)``.
    """
    eps_error, delta_error = _PRV_EPS_ERROR, delta / 1000  # PRVAccountant.get_epsilon's
    half = _prv_domain_half(sample_rate, noise_multiplier, steps, delta)
    mesh = eps_error / math.sqrt(steps * math.log(12 / delta_error) / 2)
    return int(math.ceil(2 * half / mesh)) + 1


_PRV_EPS_ERROR = 0.01  # PRVAccountant.get_epsilon's default eps_error


@functools.lru_cache(maxsize=256)
def _prv_domain_half(sample_rate: float, noise_multiplier: float, steps: int, delta: float):
    """Opacus' ``compute_safe_domain_size`` for one ``(q, σ, steps)`` segment at
    ``PRVAccountant.get_epsilon``'s default errors: :func:`_one_series_domain_half`
    where that rule is the installed Opacus' own (:func:`_domain_rule_holds`), else
    Opacus' function itself."""
    if _domain_rule_holds():
        return _one_series_domain_half(sample_rate, noise_multiplier, steps, delta)
    return _opacus_domain_half(sample_rate, noise_multiplier, steps, delta)


def _opacus_domain_half(sample_rate: float, noise_multiplier: float, steps: int, delta: float):
    from opacus.accountants.analysis.prv import PoissonSubsampledGaussianPRV
    from opacus.accountants.analysis.prv.domain import compute_safe_domain_size

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Optimal order is the (largest|smallest) alpha")
        return compute_safe_domain_size(
            prvs=[PoissonSubsampledGaussianPRV(sample_rate, noise_multiplier)],
            max_self_compositions=[steps],
            eps_error=_PRV_EPS_ERROR,
            delta_error=delta / 1000,
        )


@functools.lru_cache(maxsize=1)
def _domain_rule_holds() -> bool:
    """Whether :func:`_one_series_domain_half` equals the installed Opacus'
    ``compute_safe_domain_size`` (checked once per process, on a small segment and at
    q = 1): the shortcut restates a private rule of Opacus, so another Opacus version
    that sizes the domain otherwise gets its own rule, never a silently other ε."""
    cases = ((0.01, 1.1, 100, 1e-5), (1.0, 2.0, 3, 1e-6))
    try:
        return all(_one_series_domain_half(*c) == _opacus_domain_half(*c) for c in cases)
    except Exception:  # an Opacus without these names: its own accountant decides
        return False


def _one_series_domain_half(
    sample_rate: float, noise_multiplier: float, steps: int, delta: float
) -> float:
    """Opacus' ``compute_safe_domain_size`` for one ``(q, σ, steps)`` segment at
    ``PRVAccountant.get_epsilon``'s default errors, bit for bit, from one RDP series.

    Opacus computes the RDP of the segment twice (``steps`` compositions at
    ``δ_err/4``, one at ``δ_err/(8·steps)``), and its accountant then sizes the domain
    again after our size check: four series at Opacus' 60 orders, most of them
    fractional, were half the time of a PRV ε (stop 53: 53 s of
    ``noise_for_epsilon(3.0, 1e-5, 0.01, 1000, accountant="prv")``'s 115 s). An order's
    RDP over ``steps`` is Opacus' one-step value times ``steps`` (its own
    ``compute_rdp``), so one series gives both figures exactly.
    """
    from opacus.accountants import RDPAccountant
    from opacus.accountants.analysis.rdp import compute_rdp, get_privacy_spent

    delta_error = delta / 1000
    alphas = RDPAccountant.DEFAULT_ALPHAS
    one = compute_rdp(q=sample_rate, noise_multiplier=noise_multiplier, steps=1, orders=alphas)
    with warnings.catch_warnings():
        # Opacus sizes the domain with RDP at its default orders and warns when the
        # best order is at an end of them; that only widens the domain.
        warnings.filterwarnings("ignore", message="Optimal order is the (largest|smallest) alpha")
        # sum([...]) as RDPAccountant.get_privacy_spent adds its history's segments
        over_all, _ = get_privacy_spent(
            orders=alphas, rdp=sum([one * steps]), delta=delta_error / 4
        )
        over_one, _ = get_privacy_spent(
            orders=alphas, rdp=sum([one]), delta=delta_error / (8 * steps)
        )
    return max(max(float(over_all), float(over_one)), _PRV_EPS_ERROR) + 3


def _reuse_domain(acc, sample_rate: float, noise_multiplier: float, steps: int, delta: float):
    """Hands ``acc`` (Opacus' PRVAccountant, history of one segment) the domain
    :func:`_prv_domain_half` already sized, built as its ``_get_domain`` builds it."""
    from opacus.accountants.analysis.prv.domain import Domain

    if not _domain_rule_holds():  # the installed Opacus sizes its domain its own way
        return
    half = _prv_domain_half(sample_rate, noise_multiplier, steps, delta)

    def get_domain(prvs, num_self_compositions, eps_error, delta_error):
        if eps_error != _PRV_EPS_ERROR or delta_error != delta / 1000:  # pragma: no cover
            raise RuntimeError("the PRV domain was sized for other errors")
        total = sum(num_self_compositions)
        mesh_size = eps_error / np.sqrt(total * np.log(12 / delta_error) / 2)
        return Domain.create_aligned(-half, half, mesh_size)

    acc._get_domain = get_domain


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
        ValueError: parameters out of range or an unknown rule; a per-step ε₁ that PRV
            cannot compute (a per-step δ below its grid's rounding, ``δ/steps`` for
            ``"sequential"``; a noise too small for its grid), naming the arguments and
            giving the run's real ε by RDP.
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
    per_step = float(delta) if rule == "parallel" else delta / steps
    try:
        one = _one_step(float(sample_rate), float(noise_multiplier), per_step)
    except _PRVUnusable as err:
        # stop 58: PRV's own refusal escaped, naming a delta the caller never passed
        # (delta/steps), RDP's figure for one step (3.72 at δ = 1e-16 for
        # naive_epsilon(0.01, 1.0, 1000, 1e-13, rule="sequential"), whose run costs 4.66)
        # and accountant='rdp', which naive_epsilon does not take (a TypeError)
        at = f"delta={per_step:g}" + (" (delta/steps)" if rule == "sequential" else "")
        real = _at_least_zero(
            _rdp_epsilon([(float(sample_rate), float(noise_multiplier), int(steps))], delta)
        )
        raise ValueError(
            f"naive_epsilon(sample_rate={sample_rate}, noise_multiplier={noise_multiplier}, "
            f"steps={steps}, delta={delta}, rule={rule!r}) takes its per-step epsilon from "
            f"the PRV accountant's one step at {at}, which PRV cannot compute here "
            f"({_prv_reason(err)}), so there is no naive figure to give; the run's real "
            f"epsilon is epsilon({sample_rate}, {noise_multiplier}, {steps}, {delta}, "
            f"accountant='rdp') = {real:.6g}"
        ) from err
    return one if rule == "parallel" else steps * one


@functools.lru_cache(maxsize=256)
def _one_step(sample_rate: float, noise_multiplier: float, delta: float) -> float:
    return epsilon(sample_rate, noise_multiplier, 1, delta, accountant="prv")


@refuse_opacus_keywords  # epochs=, target_delta=: name ours (stop 59)
def noise_for_epsilon(
    target_epsilon: float,
    delta: float,
    sample_rate: float,
    steps: int,
    *,
    accountant: str = "rdp",
) -> float:
    """The smallest noise multiplier ``σ`` (to 0.1 %) that spends at most ``target_epsilon``.

    The returned ``σ`` meets the budget under the accountant named **and** under
    PRV (the tight one): ``epsilon(..., accountant=accountant) <= target_epsilon``
    and ``epsilon(..., accountant="prv") <= target_epsilon``. PRV's figure is an
    upper bound that carries Opacus' error margin (``eps_error=0.01``), so budgets
    near 0.01 need much noise and budgets below it cannot be certified. Where PRV's
    grid would be too large (see :func:`epsilon`), only RDP is asked when it is the
    accountant named; with ``accountant="prv"`` such a σ counts as not meeting the
    budget, and the answer is the smallest σ that PRV can compute and certify.

    Args:
        target_epsilon: the ε budget (> 0).
        delta, sample_rate, steps: as in :func:`epsilon`.
        accountant: ``"rdp"`` or ``"prv"``.

    Returns:
        σ as a float.

    Raises:
        ValueError: parameters out of range (``target_epsilon`` not a finite real
            number > 0, ``True`` included), or a budget no σ ≤ 1e4 reaches (with
            ``accountant="prv"`` also where PRV cannot compute any of them, a ``delta``
            below its grid's rounding, naming ``accountant='rdp'``). With
            ``accountant="rdp"``, a σ that PRV cannot compute (its grid too large, a
            ``delta`` below its rounding) is decided by RDP alone.
        ImportError: Opacus is not installed.
        TypeError: ``get_noise_multiplier``'s keywords (``target_delta=``, ``epochs=``,
            ``epsilon_tolerance=``, ...), naming ours and the call in our names, with
            Opacus' ``steps = int(epochs / sample_rate)`` worked out (its σ, within its
            tolerance).

    Example:
        >>> from tying.train import epsilon, noise_for_epsilon
        >>> sigma = noise_for_epsilon(3.0, 1e-5, 0.01, 1000)
        >>> abs(epsilon(0.01, sigma, 1000, 1e-5) - 3.0) < 0.05
        True
        >>> epsilon(0.01, sigma, 1000, 1e-5, accountant="prv") <= 3.0
        True
    """
    if accountant not in ACCOUNTANTS:
        raise ValueError(f"accountant must be one of {ACCOUNTANTS}, got {accountant!r}")
    if isinstance(target_epsilon, (bool, str, bytes)) or not hasattr(target_epsilon, "__float__"):
        # True was read as a budget of 1.0, as _check refuses for the other arguments
        raise ValueError(
            f"target_epsilon must be a real number, got "
            f"{type(target_epsilon).__name__} {target_epsilon!r}"
        )
    if not (target_epsilon > 0 and math.isfinite(target_epsilon)):
        raise ValueError(f"target_epsilon must be a finite number > 0, got {target_epsilon}")
    _check(sample_rate, 1.0, steps, delta)
    if steps == 0:
        raise ValueError("steps must be >= 1 to find a noise multiplier, got 0")

    q, n = float(sample_rate), int(steps)
    rdp_seen: dict[float, bool] = {}  # σ -> RDP's ε meets the budget (each asked once)
    prv_seen: dict[float, bool | None] = {}  # ... PRV's; None: PRV cannot compute it

    def rdp_ok(sigma: float) -> bool:
        if sigma not in rdp_seen:
            rdp_seen[sigma] = epsilon(q, sigma, n, delta, accountant="rdp") <= target_epsilon
        return rdp_seen[sigma]

    def prv_ok(sigma: float) -> bool | None:
        if sigma not in prv_seen:
            try:
                prv_seen[sigma] = epsilon(q, sigma, n, delta, accountant="prv") <= target_epsilon
            except _PRVUnusable:
                prv_seen[sigma] = None
        return prv_seen[sigma]

    def within(sigma: float) -> bool:
        if accountant == "rdp":
            # RDP first: when it already fails, PRV is not asked (and a small σ, whose
            # PRV domain can be huge, is never handed to it). Where PRV cannot be
            # computed, RDP's ε (a valid upper bound) met the budget.
            return rdp_ok(sigma) and prv_ok(sigma) is not False
        # PRV, the accountant named, cannot certify this σ (None); its grid shrinks as
        # σ grows, so the search goes on above it. Raising here refused a budget a larger
        # σ meets, naming a σ the caller never passed (stop 33:
        # noise_for_epsilon(0.2, 1e-5, 1e-4, 100_000, accountant="prv") failed at
        # σ = 0.224 though σ = 0.829 meets it).
        return prv_ok(sigma) is True

    # The bracket: the smallest σ = 2**k (k = 0..13) that meets the budget, with lo the
    # one below it (0.05 below 1). ε falls as σ grows, so the walk starts at a guess from
    # RDP at integer orders (milliseconds) and checks 2**k and 2**(k-1) only: the same
    # bracket as doubling from 1, without its RDP series at every power below the answer
    # (stop 52: 8 of the 30 accountant calls noise_for_epsilon(8, 1e-8, 0.5, 100_000) made).
    k = _bracket_guess(q, n, delta, target_epsilon)
    if within(2.0**k):
        while k > 0 and within(2.0 ** (k - 1)):
            k -= 1
    else:
        k += 1
        while k <= _MAX_POWER and not within(2.0**k):
            k += 1
        if k > _MAX_POWER:
            # where PRV cannot answer even at σ = 1e4 (a δ below its grid's rounding), its
            # own refusal escaped from here, naming σ = 1e4 as if the caller had passed it
            prv = _figure_at(sample_rate, 1e4, steps, delta, "prv")
            said = (
                ""
                if accountant == "prv"
                else (
                    f"{accountant!r} gives {_figure_at(sample_rate, 1e4, steps, delta, accountant)} and "
                )
            )
            fix = (
                "PRV can certify no sigma here: use accountant='rdp' (or a larger delta)"
                if accountant == "prv" and prv.startswith("no figure")
                else "raise the budget or lower the rate"
            )
            raise ValueError(
                f"no noise multiplier up to 1e4 reaches epsilon={target_epsilon} at "
                f"delta={delta} in {steps} steps of rate {sample_rate}: at sigma=1e4 "
                f"{said}'prv' (with its 0.01 error margin) gives {prv}; {fix}"
            )
    lo, hi = (0.05 if k == 0 else 2.0 ** (k - 1)), 2.0**k
    if accountant == "rdp":
        # Bisection on RDP alone first (PRV's ε is the expensive one: ~20 s a call at
        # q = 0.5, 100,000 steps). If PRV meets the budget at the last σ RDP refused,
        # it does at every σ above it, so the search on both accountants would take the
        # same steps: its answer is RDP's, for one PRV call instead of one per step taken
        # downward (stop 52). Otherwise the full search, RDP's verdicts reused.
        lo_r, hi_r = _bisect(lo, hi, rdp_ok)
        if prv_ok(lo_r) is True:
            return hi_r
        if prv_ok(lo_r) is None and prv_ok(hi_r) is not False:
            # PRV cannot answer at lo_r (a δ below its grid's rounding, a tiny σ): hi_r
            # meets RDP, PRV does not object, and no σ below lo_r meets RDP; the full
            # search would ask PRV (seconds a call) at every σ it takes (stop 58)
            return hi_r
    return _bisect(lo, hi, within)[1]


_MAX_POWER = 13  # 2**13 = 8192: the last power of 2 at most 1e4


def _figure_at(sample_rate: float, sigma: float, steps: int, delta: float, accountant: str) -> str:
    """ε as text for a refusal, or why PRV cannot give one."""
    try:
        return f"{epsilon(sample_rate, sigma, steps, delta, accountant=accountant):.4g}"
    except _PRVUnusable as err:
        return f"no figure ({_prv_reason(err)})"


def _bisect(lo: float, hi: float, ok) -> tuple[float, float]:
    """Bisection on log σ to 0.1 %; ``hi`` only ever holds a σ that meets the budget."""
    for _ in range(40):
        mid = math.sqrt(lo * hi)
        if ok(mid):
            hi = mid
        else:
            lo = mid
        if hi / lo < 1 + 1e-3:
            break
    return lo, hi


def _bracket_guess(q: float, steps: int, delta: float, target: float) -> int:
    """The smallest ``k`` in 0..13 whose σ = 2**k meets ``target`` by RDP at integer
    orders only: Opacus' series for an integer order is a finite sum (fast), and fewer
    orders give a larger ε, so the answer's power is at most this one, usually equal.
    Only a starting point: :func:`noise_for_epsilon` checks the bracket it gives."""
    from opacus.accountants.analysis.rdp import compute_rdp, get_privacy_spent

    orders = [*range(2, 64), 80, 96, 128, 192, 256]
    for k in range(_MAX_POWER + 1):
        try:
            with np.errstate(all="ignore"), warnings.catch_warnings():
                warnings.simplefilter("ignore")
                rdp = compute_rdp(q=q, noise_multiplier=2.0**k, steps=steps, orders=orders)
                kept = [(a, r) for a, r in zip(orders, rdp) if math.isfinite(r) and r >= 0]
                eps, _ = get_privacy_spent(
                    orders=[a for a, _ in kept], rdp=[r for _, r in kept], delta=delta
                )
        except (ValueError, OverflowError, ZeroDivisionError):
            continue
        if eps <= target:
            return k
    return _MAX_POWER
