"""A narrower float is recorded as the shortest decimal of its precision (stop 61)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from tying.experiments.registry import Result
from tying.experiments.runner import run_experiment
from tying.experiments.values import jsonable, plain
from tying.report.format import format_value


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (np.float32(0.1), 0.1),  # recorded 0.10000000149011612, printed 0.100000001
        (np.array(0.1, dtype=np.float32), 0.1),
        (np.float16(0.1), 0.1),  # 0.0999755859375
        (torch.tensor(0.1), 0.1),
        (torch.tensor(0.1, dtype=torch.bfloat16), 0.1),  # 0.10009765625
        (torch.tensor([0.1, 0.3]), [0.1, 0.3]),
        (np.array([[0.1], [np.nan]], dtype=np.float32), [[0.1], [np.nan]]),
        (np.float32(3.4025e38), float(np.float32(3.4025e38))),  # a whole number: itself
        (np.float64(0.1), 0.1),
        (np.zeros((0, 2), np.float32), []),
    ],
)
def test_a_narrower_float_reads_as_its_library_prints_it(value, expected):
    got = plain(value)
    assert np.array_equal(np.asarray(got, dtype=float), np.asarray(expected), equal_nan=True)


def test_the_page_and_results_json_show_the_float32s_digits(temp_experiment):
    temp_experiment(
        "stop61-f32",
        lambda size, seed: Result(
            passed=True, measured={"gap": np.float32(0.1), "curve": torch.tensor([0.2, 0.7])}
        ),
    )
    rec = run_experiment("stop61-f32")
    assert rec.measured == {"gap": 0.1, "curve": [0.2, 0.7]}
    assert format_value(rec.measured["gap"]) == "0.1"  # was 0.100000001
    assert json.loads(json.dumps(jsonable(rec.measured))) == {"gap": 0.1, "curve": [0.2, 0.7]}


@settings(derandomize=True, deadline=None, max_examples=100)
@given(
    hnp.arrays(
        st.sampled_from([np.float16, np.float32]),
        hnp.array_shapes(min_dims=0, max_dims=2, max_side=4),
        elements={"allow_nan": True, "allow_infinity": True},
    )
)
def test_nothing_is_lost_the_recorded_decimal_is_the_same_float(arr):
    # reference: NumPy's own conversion back to the array's type
    back = np.asarray(plain(arr), dtype=np.float64).astype(arr.dtype)
    assert np.array_equal(back, arr, equal_nan=True)
    numbers = ~np.isnan(arr)  # -0.0 stays -0.0 (a NaN is spelt 'nan' in results.json)
    assert np.array_equal(np.signbit(back)[numbers], np.signbit(arr)[numbers])


@settings(derandomize=True, deadline=None, max_examples=60)
@given(st.lists(st.floats(-1e38, 1e38), min_size=1, max_size=5))
def test_a_bfloat16_tensor_is_the_same_bfloat16_again(xs):
    t = torch.tensor(xs, dtype=torch.bfloat16)
    back = torch.tensor(plain(t), dtype=torch.float64).to(torch.bfloat16)
    assert torch.equal(back, t)


@pytest.mark.parametrize(
    ("value", "number", "text"),
    [
        (torch.tensor(1032.0, dtype=torch.bfloat16), 1032.0, "1,032"),  # was 1030, "1,030"
        (torch.tensor([1032.0, 2064.0], dtype=torch.bfloat16).sum(), 3104.0, "3,104"),
        (np.float16(8208), 8208.0, "8,208"),  # was 8210, "8,210"
        (np.float16(65504), 65504.0, "65,504"),  # was 65500
        (torch.tensor(8208.0, dtype=torch.float16), 8208.0, "8,208"),
        (torch.tensor(288.0).to(torch.float8_e4m3fn), 288.0, "288"),  # was 300
        (np.float32(38561792), 38561792.0, "38,561,792"),  # was 38561790
    ],
)
def test_a_whole_narrower_float_is_the_whole_number_it_holds(value, number, text):
    # reference: the integer the float holds, as torch prints it (tensor(1032.)); its
    # shortest decimal is another integer (stop 61 review)
    assert plain(value) == number
    assert plain([value]) == [number]
    assert format_value(value) == text
