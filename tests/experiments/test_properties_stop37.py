"""Stop 37 property tests: a verdict never stands beside a number its check cannot have used.

Whatever an experiment's ``measured`` dict holds (floats, NumPy arrays and scalars, torch
tensors, nested lists and dicts, counts in words, None), the runner's outcome is one of
two things, never a silent third: the experiment's own verdict, or no verdict ("error")
naming the measured entry that holds a NaN or ±inf. The oracle below walks the values
with plain Python (``tolist()`` and ``math``), independently of the runner's NumPy walk.
Real experiments (the cheapest dozen at quick size) are poisoned one measured number at
a time: none may still pass.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tying.experiments import REGISTRY, Result, load_all
from tying.experiments.runner import run_experiment

SETTINGS = settings(
    max_examples=40,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)

POISON = (float("nan"), float("inf"), float("-inf"))

# ------------------------------------------------------------------ random measured dicts

_floats = st.floats(allow_nan=True, allow_infinity=True, width=64)
_floats32 = st.floats(allow_nan=True, allow_infinity=True, width=32)  # no overflow on the cast
_leaf = st.one_of(
    _floats,
    st.integers(-(10**6), 10**6),
    st.booleans(),
    st.none(),
    # words, not numbers; but a NaN written as text is one no check used (stop 58)
    st.sampled_from(["3 of 12", "4/4", "contradicted", "nan", "inf", "banana", "[0.5, nan]"]),
    st.lists(_floats, min_size=1, max_size=4).map(np.array),
    st.lists(_floats32, min_size=1, max_size=4).map(lambda v: torch.tensor(v, dtype=torch.float32)),
    _floats32.map(np.float32),
    st.builds(complex, _floats, _floats),
    st.integers(0, 5).map(lambda n: np.arange(n)),  # an integer array holds no NaN
)
_value = st.recursive(
    _leaf,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3),
        st.dictionaries(st.sampled_from(["a", "b", "c"]), inner, max_size=3),
    ),
    max_leaves=6,
)
_measured = st.dictionaries(
    st.text("abcdefgh xyz/()<>=", min_size=1, max_size=12), _value, max_size=5
)


def _numbers(value: Any) -> list[float | complex]:
    """Every float or complex inside ``value``, walked with plain Python."""
    if isinstance(value, dict):
        return [x for v in value.values() for x in _numbers(v)]
    if isinstance(value, list | tuple):
        return [x for v in value for x in _numbers(v)]
    if isinstance(value, torch.Tensor | np.ndarray | np.generic):
        return _numbers(value.tolist())
    if isinstance(value, float | complex):
        return [value]
    return []  # int, bool, None, str: nothing a check compared as a float


def _texts(value: Any) -> list[str]:
    """Every text inside ``value``, walked with plain Python."""
    if isinstance(value, dict):
        return [x for v in value.values() for x in _texts(v)]
    if isinstance(value, list | tuple):
        return [x for v in value for x in _texts(v)]
    return [value] if isinstance(value, str) else []


def _nan_word(value: Any) -> bool:
    """Whether a text in ``value`` writes a NaN as Python does: the word ``nan``."""
    words = (w.strip("[](),;%+-") for t in _texts(value) for w in t.split())
    return any(w == "nan" for w in words)


def _shows_nothing(value: Any) -> bool:
    """Whether ``value`` is None, blank text, or only holds such (an empty array too)."""
    if isinstance(value, dict):
        return all(_shows_nothing(v) for v in value.values())
    if isinstance(value, list | tuple):
        return all(_shows_nothing(v) for v in value)
    if isinstance(value, torch.Tensor | np.ndarray):
        return value.ndim > 0 and _shows_nothing(value.tolist())
    return value is None or (isinstance(value, str) and not value.strip())


def _bad(value: Any, test) -> bool:
    return any(test(complex(x).real) or test(complex(x).imag) for x in _numbers(value))


def _expected(passed: bool, measured: dict) -> tuple[str, list[str], str]:
    """(status, offending keys, phrase of the error) the runner must give."""
    if not passed:
        return "fail", [], ""
    if not measured:  # a pass with no number that decided it (stop 54)
        return "error", [], "with no measured value"
    if _shows_nothing(measured):  # or only None and empty values (stop 61)
        return "error", [], "with no measured value"
    nan = [k for k, v in measured.items() if _bad(v, math.isnan)]
    if nan:
        return "error", nan, "hold NaN"
    worded = [k for k, v in measured.items() if _nan_word(v)]
    if worded:
        return "error", worded, "write a NaN"
    inf = [k for k, v in measured.items() if _bad(v, math.isinf)]
    if inf:
        return "error", inf, "are infinite"
    return "pass", [], ""


@pytest.fixture
def swappable(temp_experiment):
    """One registered experiment whose Result each hypothesis example sets."""
    holder: dict[str, Result] = {}
    temp_experiment("stop37-measured", lambda size, seed: holder["result"])
    return holder


@SETTINGS
@given(passed=st.booleans(), measured=_measured)
def test_a_verdict_is_the_checks_or_none_naming_the_non_finite_entry(swappable, passed, measured):
    swappable["result"] = Result(passed=passed, measured=measured)
    rec = run_experiment("stop37-measured")
    status, keys, phrase = _expected(passed, measured)
    assert rec.status == status, (measured, rec.error)
    if status == "error" and not keys:
        assert phrase in rec.error
    elif status == "error":
        assert phrase in rec.error and repr(keys[0]) in rec.error
        assert "reported a pass, but the measured " in rec.error
    else:
        assert rec.error is None


@SETTINGS
@given(
    value=_floats.filter(math.isfinite),
    where=st.sampled_from(["float", "list", "array", "tensor", "dict"]),
    poison=st.sampled_from(POISON),
)
def test_one_non_finite_number_anywhere_in_a_pass_is_no_verdict(swappable, value, where, poison):
    wrap = {
        "float": lambda v: v,
        "list": lambda v: [value, v],
        "array": lambda v: np.array([value, v]),
        "tensor": lambda v: torch.tensor([value, v], dtype=torch.float64),
        "dict": lambda v: {"inner": [v]},
    }[where]
    swappable["result"] = Result(passed=True, measured={"clean": value, "checked": wrap(poison)})
    rec = run_experiment("stop37-measured")
    assert rec.status == "error" and not rec.passed
    assert "'checked'" in rec.error and "'clean'" not in rec.error


# --------------------------------------------------- real experiments, one number poisoned

CHEAP = (
    "cnn-as-pgm",
    "translation-equivariance",
    "bptt-sum",
    "param-counts",
    "landscape-symmetry",
    "c4-equivariance",
    "tied-init",
    "symmetry-breaking",
    "rnn-unrolled",
)
_REAL: dict[str, Result] = {}


def _real(exp_id: str) -> Result:
    """The experiment's own quick-size result at seed 0, computed once per session."""
    if exp_id not in _REAL:
        load_all()
        _REAL[exp_id] = REGISTRY[exp_id].fn("quick", 0)
    return _REAL[exp_id]


def _numeric_keys(measured: dict) -> list[str]:
    return [
        k
        for k, v in measured.items()
        if not isinstance(v, bool) and isinstance(v, int | float | list | np.generic)
    ]


def test_the_cheap_experiments_pass_as_they_stand():
    load_all()
    for exp_id in CHEAP:
        result = _real(exp_id)
        assert result.passed is True or result.passed == np.bool_(True), exp_id
        assert _numeric_keys(result.measured), f"{exp_id} measures no number"
        assert _expected(True, result.measured)[0] == "pass", exp_id


@SETTINGS
@given(data=st.data())
def test_a_real_experiment_with_one_number_poisoned_does_not_pass(swappable, data):
    exp_id = data.draw(st.sampled_from(CHEAP), label="experiment")
    real = _real(exp_id)
    key = data.draw(st.sampled_from(_numeric_keys(real.measured)), label="measured entry")
    poison = data.draw(st.sampled_from(POISON), label="poison")
    value = real.measured[key]
    if isinstance(value, list):  # poison one element: the others stay finite
        i = data.draw(st.integers(0, max(len(value) - 1, 0)), label="element")
        value = [poison if j == i else v for j, v in enumerate(value)] or [poison]
    else:
        value = poison
    swappable["result"] = dataclasses.replace(
        real, figures={}, measured={**real.measured, key: value}
    )
    rec = run_experiment("stop37-measured")
    assert rec.status == "error" and not rec.passed, (exp_id, key, poison)
    assert repr(key) in rec.error
