"""Stop 58: a NaN formatted into text, a claim's number given to the Python API, and
``still_gaining`` on negative losses.

- A pass whose measured value held ``f"[{low:.3f}, {high:.3f}]"`` with a NaN read
  "PASS" beside ``[nan, nan]``: the NaN checks look at numbers only.
- ``run_experiment("A1")`` said "did you mean 'translation-equivariance'?" (another
  claim's experiment); ``tying run A1`` runs param-counts (stop 53), the API did not say so.
- ``still_gaining`` moved a negative best loss up by ``by``: a flat run of a negative
  log-likelihood read as still gaining, and its claim would fail for it.
"""

from __future__ import annotations

import sys

import pytest

from tying.experiments import Result, get
from tying.experiments.common import still_gaining
from tying.experiments.runner import run_experiment, run_many


@pytest.mark.parametrize(
    "text", ["[nan, 0.31]", "ratio nan", "-nan", "nan%", {"inner": ["ok", "gap nan"]}]
)
def test_a_pass_beside_a_nan_written_as_text_is_no_verdict(temp_experiment, text):
    temp_experiment("stop58-text", lambda size, seed: Result(passed=True, measured={"ci": text}))
    rec = run_experiment("stop58-text")
    assert rec.status == "error" and not rec.passed
    assert "measured text(s) of 'ci' write a NaN" in rec.error


@pytest.mark.parametrize(
    "text", ["ε = inf (no noise)", "banana", "NaN-free", "finance", "0.5 ± 0.1", "7/8 seeds"]
)
def test_words_and_an_infinity_in_text_still_pass(temp_experiment, text):
    temp_experiment(
        "stop58-words", lambda size, seed: Result(passed=True, measured={"x": 1.0, "t": text})
    )
    assert run_experiment("stop58-words").status == "pass"


def test_a_fail_beside_a_nan_text_stays_a_fail(temp_experiment):
    temp_experiment("stop58-fail", lambda size, seed: Result(passed=False, measured={"ci": "nan"}))
    assert run_experiment("stop58-fail").status == "fail"


@pytest.mark.parametrize("given", ["A1", "a1", " A1 "])
def test_a_claims_number_names_its_own_experiment(given):
    with pytest.raises(
        KeyError, match=r"number of claim A1 .* its experiment id is 'param-counts'"
    ):
        run_experiment(given)
    with pytest.raises(KeyError, match="translation-equivariance") as info:
        get("translation-equivariance-x")  # a misspelt id still gets its closest id
    assert "number of claim" not in str(info.value)
    assert get("param-counts").id == "param-counts"  # the advice, followed


def test_run_many_names_the_claims_experiment_too():
    with pytest.raises(KeyError, match="its experiment id is 'hashed-recsys'"):
        run_many(["C8+"], size="quick")


@pytest.mark.parametrize(
    ("losses", "gaining"),
    [
        ([-10.0] * 10, False),  # flat: was True
        ([-10.0] * 8 + [-10.5, -10.6], False),  # 6% lower: less than by=10%
        ([-10.0] * 8 + [-11.5, -11.6], True),  # 16% lower
        ([-1.0, -2.0, -4.0, -8.0, -16.0], True),
        ([1.0, 0.5, 0.5, 0.49, 0.5], False),  # positive losses: as before
        ([1.0, 0.5, 0.25, 0.12, 0.06], True),
    ],
)
def test_still_gaining_is_relative_to_the_size_of_a_negative_loss(losses, gaining):
    assert still_gaining(losses) is gaining


@pytest.mark.parametrize("code", ["sys.exit()", "sys.exit('no GPU here')", "raise SystemExit(3)"])
def test_a_module_that_exits_on_import_is_an_import_error(tmp_path, monkeypatch, code):
    import tying.experiments as package

    package.load_all()
    (tmp_path / "exits_stop58.py").write_text(f"import sys\n{code}\n")
    monkeypatch.setattr(package, "__path__", [str(tmp_path)])
    monkeypatch.setattr(package, "_LOADED", [])
    monkeypatch.delitem(package.IMPORT_ERRORS, "exits_stop58", raising=False)
    try:
        assert package.load_all() is package.REGISTRY  # no SystemExit out of it
        assert "SystemExit" in package.IMPORT_ERRORS["exits_stop58"]
    finally:
        package.IMPORT_ERRORS.pop("exits_stop58", None)
        sys.modules.pop("tying.experiments.exits_stop58", None)
