"""The check of a torch model's first autograd Jacobian costs few model calls (stop 54).

Without the complex step (a problem too large for it, or ``vectorized=False``) the first
autograd Jacobian is checked against central differences with two step sizes. Before stop
54 that took four model calls per parameter (2 steps x up/down) plus two: 24 % of the CPU
time of a 20-parameter, 10-data-set fit. The second step is now taken only on a column the
first disagrees with, and a vectorized model's first step is one stacked call, confirmed
one call at a time where it flags a column. Catching a wrong backward is unchanged
(``test_wrong_autograd_stop53.py``).
"""

import numpy as np
import pytest

import tying.fit.derivatives as derivatives
from tying.fit import GlobalFit

torch = pytest.importorskip("torch")


def _data(k):
    rng = np.random.default_rng(4)
    x = np.linspace(0, 4, 80)
    return [
        (x, a * np.exp(-0.7 * x) + 0.2 * np.sin(1.3 * x) + 0.1 + rng.normal(0, 0.02, 80), 0.02)
        for a in rng.uniform(1, 3, k)
    ]


def _calls(monkeypatch, vectorized, check):
    calls = []

    def model(x, a, k, s, c):
        calls.append(1)
        return a * torch.exp(-k * x) + s * torch.sin(1.3 * x) + c

    if not check:
        monkeypatch.setattr(derivatives.Derivatives, "_check_autograd_alone", lambda *a: None)
    fit = GlobalFit(model, _data(30 if vectorized else 3), shared=["k", "s"], local=["a", "c"],
                    init={"a": 1.0, "k": 1.0, "s": 0.0, "c": 0.0}, vectorized=vectorized)  # fmt: skip
    res = fit.run()
    monkeypatch.undo()
    return len(calls), res


@pytest.mark.parametrize("vectorized", ["auto", False])
def test_the_autograd_check_adds_a_few_model_calls_not_four_per_parameter(monkeypatch, vectorized):
    with_check, res = _calls(monkeypatch, vectorized, check=True)
    without, ref = _calls(monkeypatch, vectorized, check=False)
    assert res.success and res.values["k"] == ref.values["k"]
    per_eval = 1 if vectorized == "auto" else 3  # one call, or one per data set
    # P = 4 free names: 4P + 2 = 18 evaluations before; now the value for the rounding
    # allowance and one stacked call (vectorized), or 2P + 1 = 9 evaluations (looped)
    allowed = 2 if vectorized == "auto" else 9 * per_eval
    assert with_check - without <= allowed, (with_check, without)


def test_a_model_that_mixes_stacked_copies_is_confirmed_call_by_call():
    # the stacked screen sees other values (this model doubles itself on more rows than
    # its 110 data sets); the columns it flags are differenced again one call at a time, where
    # autograd is right: no refusal
    def model(x, a, k):
        return a * torch.exp(-k * x) * (1 + (x.shape[0] > 110))

    rng = np.random.default_rng(5)
    x = np.linspace(0, 4, 40)
    data = [
        (x, a * np.exp(-0.7 * x) + rng.normal(0, 0.02, 40), 0.02) for a in rng.uniform(1, 3, 110)
    ]
    res = GlobalFit(model, data, shared=["k"], local=["a"], init={"a": 1.0, "k": 1.0}).run()
    assert res.success and res.values["k"] == pytest.approx(0.7, abs=0.01)
