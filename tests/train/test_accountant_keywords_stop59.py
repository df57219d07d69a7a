"""Opacus' accountant keywords name ours, and the call advised gives Opacus' σ (stop 59)."""

import re
import warnings

import pytest

pytest.importorskip("opacus")

from opacus.accountants.utils import get_noise_multiplier  # noqa: E402

from tying.train import epsilon, noise_for_epsilon  # noqa: E402


def _advised(err: pytest.ExceptionInfo) -> str:
    return re.search(r"; pass (.*)$", str(err.value)).group(1)


def test_epochs_names_steps_and_the_advice_gives_opacus_sigma():
    # before: "noise_for_epsilon() got an unexpected keyword argument 'epochs'"
    with pytest.raises(
        TypeError,
        match=r"'epochs': ours is steps= \(as Opacus' get_noise_multiplier, steps = "
        r"int\(epochs / sample_rate\) = int\(10 / 0.01\) = 1000\); pass noise_for_epsilon\("
        r"target_epsilon=3, delta=1e-05, sample_rate=0.01, steps=1000\)$",
    ) as err:
        noise_for_epsilon(3, 1e-5, 0.01, epochs=10)
    ours = eval(_advised(err))  # the call as written in the message
    with warnings.catch_warnings():  # Opacus' own search warns at σ = 20
        warnings.filterwarnings("ignore", message="Optimal order is the largest alpha")
        theirs = get_noise_multiplier(
            target_epsilon=3, target_delta=1e-5, sample_rate=0.01, epochs=10
        )
    # Opacus stops within 0.01 in ε, ours within 0.1 % of σ: 0.86518 vs 0.86548
    assert ours == pytest.approx(theirs, rel=2e-3)


def test_opacus_literal_call_with_target_delta():
    with pytest.raises(
        TypeError, match=r"'target_delta': ours is delta=; 'epochs': ours is steps="
    ) as err:
        noise_for_epsilon(
            target_epsilon=3, target_delta=1e-5, sample_rate=0.01, epochs=10, accountant="rdp"
        )
    assert _advised(err).endswith("steps=1000, accountant='rdp')")


def test_float_division_counts_opacus_steps_and_says_so():
    with pytest.raises(
        TypeError,
        match=r"int\(7 / 0.07\) = 99; 7 / 0.07 is 99.99999999999999 in floating point, so "
        r"Opacus counts 99 steps where a loop of 7 epochs takes 100\)",
    ):
        noise_for_epsilon(8, 1e-6, 0.07, epochs=7)


def test_epsilon_takes_the_same_names_and_none_for_orders():
    with pytest.raises(TypeError, match=r"'q': ours is sample_rate=; pass epsilon\(") as err:
        epsilon(q=0.01, noise_multiplier=1.0, steps=1000, delta=1e-5)
    assert eval(_advised(err)) == epsilon(0.01, 1.0, 1000, 1e-5)
    with pytest.raises(TypeError, match=r"'alphas': there is none: the RDP orders"):
        epsilon(0.01, 1.0, 1000, 1e-5, alphas=[2, 3])
    with pytest.raises(TypeError, match=r"'epsilon_tolerance': there is none: σ is found to 0.1"):
        noise_for_epsilon(3, 1e-5, 0.01, 1000, epsilon_tolerance=0.01)
    with pytest.raises(TypeError, match=r"'epochs': give steps only"):
        noise_for_epsilon(3, 1e-5, 0.01, 1000, epochs=10)


def test_our_own_keywords_are_untouched():
    assert epsilon(sample_rate=0.01, noise_multiplier=1.0, steps=0, delta=1e-5) == 0.0
    with pytest.raises(TypeError, match=r"unexpected keyword argument 'foo'"):
        epsilon(0.01, 1.0, 10, 1e-5, foo=1)
