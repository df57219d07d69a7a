"""PRV's refusals seen through the callers that do not take ``accountant=`` (stop 58).

PRV cannot compute ε at a δ below its grid's rounding (about 1e-13 at q = 0.01, σ = 1,
10,000 steps). Its refusal says "use accountant='rdp', which gives X". Before:

- ``naive_epsilon(0.01, 1.0, 1000, 1e-13, rule="sequential")`` raised it for δ/steps =
  1e-16, a δ the caller never passed, with RDP's figure of one step (3.72) for a run
  whose real ε is 4.66, and ``accountant='rdp'``, which ``naive_epsilon`` does not take;
- ``noise_for_epsilon(4.0, 1e-16, 0.01, 1)``, RDP by default, raised it too: the caller
  was told to use the accountant already named, and no σ came back (RDP's σ is 0.964);
- ``DPSGD.epsilon`` with ``accountant="prv"`` said ``accountant='rdp'``, a keyword that
  ``dp.epsilon`` refuses with a TypeError.
"""

import pytest
import torch

from tying.train import DPSGD, epsilon, naive_epsilon, noise_for_epsilon
from tying.train.accounting import epsilon_of_history


def test_naive_epsilon_names_its_own_arguments_and_advice_that_runs():
    with pytest.raises(ValueError) as info:
        naive_epsilon(0.01, 1.0, 1000, 1e-13, rule="sequential")
    text = str(info.value)
    assert text.startswith(
        "naive_epsilon(sample_rate=0.01, noise_multiplier=1.0, steps=1000, delta=1e-13, "
        "rule='sequential') takes its per-step epsilon from the PRV accountant's one step "
        "at delta=1e-16 (delta/steps)"
    )
    assert "rounding error is larger than that delta" in text
    real = epsilon(0.01, 1.0, 1000, 1e-13, accountant="rdp")  # the advice, run
    assert f"accountant='rdp') = {real:.6g}" in text
    assert real == pytest.approx(4.6647, abs=1e-4)
    assert "use accountant='rdp'" not in text  # naive_epsilon takes no such keyword
    # a legitimate call next to it still answers
    assert naive_epsilon(0.01, 1.0, 1000, 1e-5, rule="sequential") > real


def test_noise_for_epsilon_by_rdp_answers_where_prv_cannot():
    sigma = noise_for_epsilon(4.0, 1e-16, 0.01, 1)  # raised PRV's refusal before
    assert epsilon(0.01, sigma, 1, 1e-16) <= 4.0
    assert epsilon(0.01, sigma / 1.002, 1, 1e-16) > 4.0  # the smallest, to 0.1 %
    assert sigma == pytest.approx(0.9641, abs=1e-3)


def test_dpsgd_epsilon_says_to_set_its_accountant_and_that_works():
    model = torch.nn.Linear(3, 2)
    dp = DPSGD(
        model,
        torch.optim.SGD(model.parameters(), lr=0.1),
        noise_multiplier=1.0,
        max_grad_norm=1.0,
        sample_rate=0.01,
        accountant="prv",
        generator=torch.Generator().manual_seed(0),
    )
    dp.history, dp.steps = [(0.01, 1.0, 3)], 3  # three steps run (a resumed run's record)
    with pytest.raises(ValueError, match=r"set dp\.accountant = 'rdp' and call dp\.epsilon"):
        dp.epsilon(1e-16)
    assert dp.steps == 3 and dp.accountant == "prv"  # a refused call changed nothing
    dp.accountant = "rdp"
    assert dp.epsilon(1e-16) == epsilon_of_history(dp.history, 1e-16)
