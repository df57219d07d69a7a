"""Other containers of measured values are read as their values (stop 62).

``d.values()``, a ``deque``, a ``range`` or a mapping proxy was read as its repr: a pass
beside ``dict_values([0.1, inf])`` was reported, its inf never checked. A generator or
``map`` (used up by its first reading) is refused by name.
"""

from __future__ import annotations

import collections
import types

import pytest

from tying.experiments.registry import Result
from tying.experiments.runner import run_experiment
from tying.experiments.values import jsonable, plain
from tying.experiments.verdict import verdict_problem

INF, NAN = float("inf"), float("nan")


@pytest.mark.parametrize(
    ("value", "read"),
    [
        ({"a": 0.1, "b": 2}.values(), [0.1, 2]),
        ({"a": 0.1}.keys(), ["a"]),
        ({"a": 0.1}.items(), [["a", 0.1]]),
        (collections.deque([0.5, 1]), [0.5, 1]),
        (range(3), [0, 1, 2]),
        (types.MappingProxyType({"a": 0.5}), {"a": 0.5}),
        (collections.UserList([0.25]), [0.25]),
        (b"ab", "b'ab'"),  # bytes stay text
        (collections.UserString("ab"), "ab"),  # a Sequence of letters: text
    ],
)
def test_a_container_is_read_as_its_values(value, read):
    assert plain(value) == read


@pytest.mark.parametrize(
    ("value", "why"),
    [
        ({"a": 0.1, "b": INF}.values(), "are infinite"),
        (collections.deque([INF]), "are infinite"),
        (types.MappingProxyType({"a": NAN}), "hold NaN"),
        ({"a": INF}.items(), "are infinite"),
    ],
)
def test_a_pass_beside_inf_or_nan_in_a_container_is_no_verdict(value, why):
    problem = verdict_problem("x", Result(passed=True, measured={"m": value}))
    assert problem is not None and why in problem  # was None: a PASS beside the inf


@pytest.mark.parametrize("make", [lambda: map(float, ["1"]), lambda: (x for x in [1.0])])
def test_a_one_shot_iterator_is_refused_by_name(make):
    with pytest.raises(TypeError, match=r"one-shot iterator \((map|generator)\).*pass list"):
        jsonable({"m": make()})
    assert jsonable({"m": list(make())}) == {"m": [1.0]}  # the advice, followed


def test_a_run_returning_dict_values_with_inf_is_an_error(temp_experiment):
    errors = {"a": 0.1, "b": INF}
    temp_experiment(
        "stop62-view", lambda size, seed: Result(passed=True, measured={"e": errors.values()})
    )
    rec = run_experiment("stop62-view")  # was PASS beside "dict_values([0.1, inf])"
    assert rec.status == "error" and "are infinite" in rec.error
    assert rec.measured == {"e": [0.1, "inf"]}


def test_a_run_returning_a_generator_is_an_error(temp_experiment):
    temp_experiment(
        "stop62-gen", lambda size, seed: Result(passed=True, measured={"e": (x for x in [1.0])})
    )
    rec = run_experiment("stop62-gen")  # was PASS beside "<generator object ...>"
    assert rec.status == "error" and "one-shot iterator (generator)" in rec.error


def test_a_key_figure_or_notes_of_none_is_no_text(temp_experiment):
    temp_experiment(
        "stop62-none",
        lambda size, seed: Result(passed=True, measured={"a": 1}, key_figure=None, notes=None),
    )
    rec = run_experiment("stop62-none")  # the summary row read "None"
    assert rec.status == "pass" and rec.key_figure == "" and rec.notes == ""
