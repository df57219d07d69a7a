"""Stop 38: whatever an experiment returns, the runner gives a record, never a crash.

A bfloat16 (or float8, complex32, sparse, conjugated) tensor in ``measured`` or in a
table raised ``TypeError: Got unsupported ScalarType BFloat16`` out of
``run_experiment`` (which promises a record), taking a whole ``--jobs 1`` report down;
a NaN inside a set or an object array passed; figure stems that differ only in
characters a file name drops overwrote each other; a seed of the wrong type failed deep
inside ``random.seed``; ``run_many`` ran an id given twice twice and counted it twice.
"""

from __future__ import annotations

import pathlib

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from matplotlib.figure import Figure

from tying.experiments import Result, Table
from tying.experiments.runner import jsonable, run_experiment, run_many

NAN, INF = float("nan"), float("inf")


def _returning(temp_experiment, exp_id, **result):
    temp_experiment(exp_id, lambda size, seed: Result(**result))
    return run_experiment(exp_id)


@pytest.mark.parametrize(
    "dtype", [torch.bfloat16, torch.float16, torch.float8_e4m3fn, torch.float8_e5m2]
)
def test_a_low_precision_tensor_in_measured_is_recorded_not_a_crash(temp_experiment, dtype):
    rec = _returning(
        temp_experiment, "stop38-lowp", passed=True, measured={"x": torch.tensor(0.5, dtype=dtype)}
    )
    assert rec.status == "pass" and rec.measured == {"x": 0.5}


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float8_e5m2])
@pytest.mark.parametrize("value", [NAN, INF, -INF])
def test_a_non_finite_low_precision_tensor_is_no_verdict(temp_experiment, dtype, value):
    measured = {"err": torch.tensor([0.0, value], dtype=dtype)}
    rec = _returning(temp_experiment, "stop38-lowp-nan", passed=True, measured=measured)
    assert rec.status == "error"
    assert "'err'" in rec.error and ("NaN" in rec.error or "infinite" in rec.error)


def test_a_bfloat16_table_and_other_tensor_kinds_are_recorded(temp_experiment):
    conj = torch.tensor([1 + 2j]).conj()  # a conjugate view: .numpy() refuses it
    sparse = torch.tensor([[0.0, 2.0]]).to_sparse()
    rec = _returning(
        temp_experiment,
        "stop38-kinds",
        passed=True,
        measured={"conj": conj, "sparse": sparse},
        tables=[Table("t", [{"a": torch.tensor([1.5, 2.0], dtype=torch.bfloat16)}])],
    )
    assert rec.status == "pass", rec.error
    assert rec.tables[0].rows == [{"a": [1.5, 2.0]}]
    assert rec.measured["sparse"] == [[0.0, 2.0]]
    assert rec.measured["conj"] == ["(1-2j)"]


@pytest.mark.parametrize(
    ("result", "match"),
    [
        ({"passed": True, "measured": {"x": torch.empty(2, device="meta")}}, "meta device"),
        ({"passed": True, "measured": None}, "cannot record"),
        ({"passed": True, "tables": [Table("t", [[1, 2]])]}, "row 0 is list, expected a dict"),
    ],
)
def test_a_result_the_report_cannot_hold_is_an_error_record(temp_experiment, result, match):
    rec = _returning(temp_experiment, "stop38-bad", **result)
    assert rec.status == "error" and not rec.passed
    assert match in rec.error


@pytest.mark.parametrize(
    "value",
    [
        {NAN},
        frozenset([1.0, INF]),
        np.array([NAN, None], dtype=object),
        [np.array([1.0, INF], dtype=object)],
    ],
)
def test_a_nan_or_inf_in_a_set_or_object_array_is_no_verdict(temp_experiment, value):
    rec = _returning(temp_experiment, "stop38-nested", passed=True, measured={"v": value})
    assert rec.status == "error" and "'v'" in rec.error


def test_figure_stems_that_sanitise_alike_are_all_kept(temp_experiment, tmp_path):
    def two_figures(size, seed):
        figs = {}
        for stem, colour in (("a b", "red"), ("a/b", "blue"), ("a-b", "green")):
            fig = Figure(figsize=(1, 1))
            fig.patch.set_facecolor(colour)
            figs[stem] = fig
        return Result(passed=True, measured={"x": 1.0}, figures=figs)

    temp_experiment("stop38-figs", two_figures)
    rec = run_experiment("stop38-figs", out_dir=tmp_path)
    assert rec.figures == [
        "figures/stop38-figs--a-b.png",
        "figures/stop38-figs--a-b-2.png",
        "figures/stop38-figs--a-b-3.png",
    ]
    contents = {(tmp_path / f).read_bytes() for f in rec.figures}
    assert len(contents) == 3  # three different pictures, none overwritten


def test_a_numpy_integer_seed_is_the_same_seed(temp_experiment):
    def draw(size, seed):
        g = torch.Generator().manual_seed(seed)
        return Result(passed=True, measured={"x": float(torch.rand(1, generator=g))})

    temp_experiment("stop38-seed", draw)
    by_int = run_experiment("stop38-seed", seed=3)
    by_np = run_experiment("stop38-seed", seed=np.int64(3))
    assert by_np.measured == by_int.measured and type(by_np.seed) is int
    assert run_experiment("stop38-seed", seed=4).measured != by_int.measured


@pytest.mark.parametrize(
    ("seed", "error", "match"),
    [
        (-1, ValueError, r"got -1; seeds are not negative"),
        (2**32, ValueError, r"got 4294967296; pick a smaller seed"),
        (1.5, TypeError, r"got 1\.5 \(float\)"),
        (True, TypeError, r"got True \(bool\)"),
        ("3", TypeError, r"got '3' \(str\)"),
    ],
)
def test_a_bad_seed_is_refused_before_anything_runs(temp_experiment, tmp_path, seed, error, match):
    ran = []
    temp_experiment(
        "stop38-never", lambda size, s: ran.append(s) or Result(passed=True, measured={"x": 1.0})
    )
    out = tmp_path / "out"
    with pytest.raises(error, match=match):
        run_experiment("stop38-never", seed=seed, out_dir=out)
    with pytest.raises(error, match=match):
        run_many(["stop38-never"], seed=seed, out_dir=out)
    assert ran == [] and not out.exists()


def test_run_many_refuses_an_id_given_twice(temp_experiment):
    ran = []
    temp_experiment(
        "stop38-once", lambda size, seed: ran.append(1) or Result(passed=True, measured={"x": 1.0})
    )
    with pytest.raises(ValueError, match=r"got the id\(s\) 'stop38-once' more than once"):
        run_many(["stop38-once", "param-counts", "stop38-once"])
    assert ran == []


_DTYPES = [torch.float16, torch.bfloat16, torch.float32, torch.float64, torch.complex64]
_VALUES = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True, width=16),
    st.sampled_from([NAN, INF, -INF, 0.0, -0.0, 1e-3, 65504.0]),
)


def _object_array(items: list) -> np.ndarray:
    arr = np.empty(len(items), dtype=object)  # np.array() would convert the tensors
    for i, item in enumerate(items):
        arr[i] = item
    return arr


@settings(derandomize=True, deadline=None, max_examples=40)
@given(
    dtype=st.sampled_from(_DTYPES),
    values=st.lists(_VALUES, min_size=1, max_size=4),
    wrap=st.sampled_from(["tensor", "list of scalars", "set", "object array", "dict"]),
)
def test_any_tensor_result_is_recorded_and_non_finite_is_never_a_pass(dtype, values, wrap):
    """Brute-force reference: float64 copies of the same numbers decide what the record holds."""
    import tying.experiments.claims as claims_module
    from tying.experiments import REGISTRY, load_all
    from tying.experiments.claims import Claim
    from tying.experiments.registry import experiment

    load_all()
    t = torch.tensor(values, dtype=torch.float32).to(dtype)
    ref = t.to(torch.complex128 if dtype.is_complex else torch.float64).tolist()
    value = {
        "tensor": t,
        "list of scalars": list(t.unbind()),
        "set": set(t.unbind()) if not dtype.is_complex else list(t.unbind()),
        "object array": _object_array([*t.unbind(), None]),
        "dict": {"inner": t},
    }[wrap]
    row = Claim("", "stop38-prop", "test", ("003",), "003", "t", "c.", "")
    claims_module._BY_ID["stop38-prop"] = row
    try:
        experiment("stop38-prop")(lambda size, seed: Result(passed=True, measured={"v": value}))
        rec = run_experiment("stop38-prop")  # never raises
    finally:
        REGISTRY.pop("stop38-prop", None)
        claims_module._BY_ID.pop("stop38-prop", None)
    finite = all(np.isfinite(complex(v)) for v in ref)
    assert rec.status == ("pass" if finite else "error"), (rec.status, rec.error)
    if wrap == "tensor":
        # the numbers, exactly: each recorded value (a narrow float's or complex64's
        # shortest decimal, stops 61 and 62) is the same value of its dtype again
        read = complex if dtype.is_complex else float
        wide = torch.complex128 if dtype.is_complex else torch.float64
        again = torch.tensor([read(v) for v in rec.measured["v"]], dtype=wide).to(dtype)
        torch.testing.assert_close(again, t, rtol=0, atol=0, equal_nan=True)
        assert len(rec.measured["v"]) == len(jsonable(ref))


def _draw(size, seed):
    x = torch.rand(3, generator=torch.Generator().manual_seed(seed), requires_grad=True)
    return Result(
        passed=True,
        measured={"dtype": str(x.dtype), "grad": torch.is_grad_enabled(), "sum": x.sum().item()},
    )


@settings(derandomize=True, deadline=None, max_examples=8)
@given(
    leaked_dtype=st.sampled_from([torch.float64, torch.bfloat16, torch.float32]),
    leaked_grad=st.booleans(),
    callers_dtype=st.sampled_from([torch.float64, torch.float32]),
)
def test_an_experiment_sees_the_same_torch_defaults_whatever_ran_before(
    leaked_dtype, leaked_grad, callers_dtype
):
    """Reference: the experiment run alone in a fresh worker process (float32, grad on)."""
    import tying.experiments.claims as claims_module
    from tying.experiments import REGISTRY, load_all
    from tying.experiments.claims import Claim
    from tying.experiments.registry import experiment

    def leaky(size, seed):
        torch.set_default_dtype(leaked_dtype)
        torch.set_grad_enabled(leaked_grad)
        return Result(passed=True, measured={"x": 1.0})

    load_all()
    for exp_id, fn in (("stop38-leaky", leaky), ("stop38-draw", _draw)):
        claims_module._BY_ID[exp_id] = Claim("", exp_id, "t", ("003",), "003", "t", "c.", "")
        experiment(exp_id)(fn)
    torch.set_default_dtype(callers_dtype)
    try:
        after = run_many(["stop38-leaky", "stop38-draw"])[1]
        callers = (torch.get_default_dtype(), torch.is_grad_enabled())
    finally:
        torch.set_default_dtype(torch.float32)
        torch.set_grad_enabled(True)
        for exp_id in ("stop38-leaky", "stop38-draw"):
            REGISTRY.pop(exp_id, None)
            claims_module._BY_ID.pop(exp_id, None)
    fresh = _draw("quick", 0).measured  # what a fresh process computes
    assert after.measured == fresh and fresh["dtype"] == "torch.float32"
    assert callers == (callers_dtype, True)  # the caller's own settings are back


def test_workers_that_die_from_an_unguarded_script_say_how_to_fix_it(tmp_path):
    import subprocess
    import sys

    script = tmp_path / "unguarded.py"  # no `if __name__ == "__main__":`: workers re-run it
    script.write_text(
        "from tying.experiments.runner import run_many\n"
        "recs = run_many(['param-counts', 'bptt-sum'], jobs=2)\n"
        "print('STATUS', [r.status for r in recs], all('__main__' in r.error for r in recs))\n"
    )
    done = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=240, cwd=tmp_path
    )
    assert "STATUS ['error', 'error'] True" in done.stdout, done.stdout + done.stderr


def test_a_failed_figure_save_leaves_no_file_that_blocks_the_next_run(temp_experiment, tmp_path):
    from tying.experiments.output import claim_folder

    class DiskFull:  # writes part of a PNG, then fails, as a full disk would
        def savefig(self, path, **kwargs):
            pathlib.Path(path).write_bytes(b"\x89PNG partial")
            raise OSError(28, "No space left on device")

    temp_experiment(
        "stop38-disk",
        lambda size, seed: Result(
            passed=True, figures={"a": Figure(figsize=(1, 1)), "b": DiskFull()}
        ),
    )
    claim_folder(tmp_path, ["stop38-disk"], fresh=True)
    rec = run_many(["stop38-disk"], out_dir=tmp_path)[0]
    assert rec.status == "error" and "No space left on device" in rec.error
    assert rec.figures == [] and list((tmp_path / "figures").iterdir()) == []
    claim_folder(tmp_path, ["stop38-disk"], fresh=True)  # the folder is still ours: no refusal
