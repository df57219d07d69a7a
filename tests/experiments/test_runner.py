"""The runner: seeding, timing, PNG figures, captured failures, parallel runs."""

from __future__ import annotations

import doctest
import json

import numpy as np
import pytest
import torch

import tying.experiments.common as common_module
import tying.experiments.runner as runner_module
from tying.experiments import Result, Table
from tying.experiments.common import new_figure
from tying.experiments.runner import jsonable, run_experiment, run_many

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _with_figure(size, seed):
    fig, (ax,) = new_figure()
    ax.plot([0, 1], [0, 1])
    g = torch.Generator().manual_seed(seed)
    value = float(torch.randn(1, generator=g))
    glob = float(torch.randn(1))  # the runner seeds the global RNG too
    return Result(
        tables=[Table("t", [{"x": np.float32(1.5), "n": np.int64(3)}])],
        figures={"my figure/1": fig},
        passed=True,
        measured={"value": value, "global": glob, "arr": np.arange(2)},
        key_figure="k",
    )


def test_pass_with_figure_saved_as_png(temp_experiment, tmp_path):
    temp_experiment("runner-figure", _with_figure)
    rec = run_experiment("runner-figure", size="quick", seed=3, out_dir=tmp_path)
    assert rec.status == "pass" and rec.passed and rec.error is None
    assert rec.figures == ["figures/runner-figure--my-figure-1.png"]
    assert (tmp_path / rec.figures[0]).read_bytes()[:8] == PNG_MAGIC
    assert rec.seed == 3 and rec.size == "quick" and rec.runtime_s >= 0
    # numpy values became plain Python, so the record is JSON as it stands
    assert rec.tables[0].rows == [{"x": 1.5, "n": 3}]
    assert rec.measured["arr"] == [0, 1]
    json.dumps(rec.to_dict())


def test_same_seed_same_numbers_other_seed_other_numbers(temp_experiment):
    temp_experiment("runner-seed", _with_figure)
    a, b = (run_experiment("runner-seed", seed=5) for _ in range(2))
    c = run_experiment("runner-seed", seed=6)
    assert a.measured == b.measured
    assert a.measured["value"] != c.measured["value"]
    assert a.measured["global"] != c.measured["global"]
    assert a.figures == []  # no out_dir: figures are closed, not saved


def test_failed_check_is_fail(temp_experiment):
    temp_experiment("runner-fail", lambda size, seed: Result(passed=False, measured={"x": 1}))
    rec = run_experiment("runner-fail")
    assert rec.status == "fail" and not rec.passed and rec.measured == {"x": 1}


def test_exception_is_captured_with_traceback(temp_experiment):
    def boom(size, seed):
        raise RuntimeError("the experiment blew up")

    temp_experiment("runner-raise", boom)
    rec = run_experiment("runner-raise")
    assert rec.status == "error" and not rec.passed
    assert "RuntimeError: the experiment blew up" in rec.error
    assert "Traceback" in rec.error and "in boom" in rec.error


def test_wrong_return_type_is_an_error(temp_experiment):
    temp_experiment("runner-type", lambda size, seed: {"passed": True})
    rec = run_experiment("runner-type")
    assert rec.status == "error" and "returned dict, expected a Result" in rec.error


def test_missing_extra_is_reported_by_name(temp_experiment):
    temp_experiment(
        "runner-extra",
        lambda size, seed: Result(passed=True, measured={"x": 1.0}),
        requires=("rdkit_not_here_xyz",),
    )
    rec = run_experiment("runner-extra")
    assert rec.status == "missing-extra" and rec.missing == ["rdkit_not_here_xyz"]
    assert "needs the optional package(s) rdkit_not_here_xyz" in rec.error


def test_import_inside_the_experiment_that_fails_is_a_missing_extra(temp_experiment):
    def needs_opacus(size, seed):
        import opacus_not_installed_xyz  # noqa: F401

    temp_experiment("runner-import", needs_opacus)
    rec = run_experiment("runner-import")
    assert rec.status == "missing-extra" and rec.missing == ["opacus_not_installed_xyz"]


def test_missing_module_of_our_own_is_an_error_not_an_extra(temp_experiment):
    def buggy(size, seed):
        import tying.no_such_module  # noqa: F401

    temp_experiment("runner-own-import", buggy)
    rec = run_experiment("runner-own-import")
    assert rec.status == "error" and rec.missing == [] and "tying.no_such_module" in rec.error


def test_extra_named_in_the_hint(temp_experiment, monkeypatch):
    monkeypatch.setitem(runner_module.EXTRAS, "fake_chem_mod", "chem")
    temp_experiment(
        "runner-hint",
        lambda size, seed: Result(passed=True, measured={"x": 1.0}),
        requires=("fake_chem_mod",),
    )
    assert "pip install -e '.[chem]'" in run_experiment("runner-hint").error


def test_unknown_id_and_bad_size_raise():
    with pytest.raises(KeyError, match="did you mean 'bptt-sum'"):
        run_experiment("bptt-summ")
    with pytest.raises(ValueError, match="size must be one of"):
        run_experiment("param-counts", size="huge")
    with pytest.raises(ValueError, match="jobs must be an int >= 1"):
        run_many(["param-counts"], jobs=0)


def test_run_many_in_process_keeps_order_and_calls_back(temp_experiment):
    temp_experiment("runner-a", lambda size, seed: Result(passed=True, measured={"x": 1.0}))
    temp_experiment("runner-b", lambda size, seed: Result(passed=False))
    started, done = [], []
    recs = run_many(
        ["runner-b", "runner-a"], on_start=started.append, on_done=lambda r: done.append(r.id)
    )
    assert [r.id for r in recs] == ["runner-b", "runner-a"]
    assert started == done == ["runner-b", "runner-a"]
    assert [r.status for r in recs] == ["fail", "pass"]


def test_run_many_parallel_workers_use_one_thread(tmp_path):
    ids = ["param-counts", "rnn-unrolled", "bptt-sum"]
    started = []
    recs = run_many(ids, size="quick", out_dir=tmp_path, jobs=2, on_start=started.append)
    assert [r.id for r in recs] == ids and sorted(started) == sorted(ids)
    assert all(r.status == "pass" for r in recs), [r.error for r in recs]
    assert all(r.threads == 1 for r in recs)
    for r in recs:
        assert (tmp_path / r.figures[0]).read_bytes()[:8] == PNG_MAGIC


def test_jsonable():
    assert jsonable({"a": (np.float64(1.0), torch.tensor([1, 2]))}) == {"a": [1.0, [1, 2]]}
    assert jsonable([float("nan"), float("-inf")]) == ["nan", "-inf"]
    assert jsonable(object).startswith("<class")


@pytest.mark.parametrize("module", [runner_module, common_module])
def test_doctests(module):
    result = doctest.testmod(module)
    assert result.attempted > 0 and result.failed == 0


def test_run_many_starts_no_more_workers_than_experiments(monkeypatch):
    """--jobs 1000 with two ids must not start 1000 processes."""
    import concurrent.futures as cf

    import tying.experiments.runner as runner_module

    sizes = []

    class Inline(cf.Executor):  # runs each job at once, records the pool size asked for
        def __init__(self, max_workers, **kwargs):
            sizes.append(max_workers)

        def submit(self, fn, *args):
            fut = cf.Future()
            fut.set_result(fn(*args))
            return fut

    monkeypatch.setattr(runner_module.cf, "ProcessPoolExecutor", Inline)
    records = runner_module.run_many(["param-counts", "rnn-unrolled"], jobs=1000)
    assert [r.status for r in records] == ["pass", "pass"] and sizes == [2]


def test_experiments_run_on_one_thread_and_the_callers_count_is_restored(temp_experiment):
    """Same threads in-process as in workers (same numbers whatever --jobs is)."""
    import torch

    from tying.experiments.runner import THREADS_PER_EXPERIMENT, run_experiment

    seen = []

    def probe(size, seed):
        seen.append(torch.get_num_threads())
        return Result(passed=True, measured={"x": 1.0})

    temp_experiment("threads-probe", probe)
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        record = run_experiment("threads-probe")
        assert seen == [THREADS_PER_EXPERIMENT] == [1] and record.threads == 1
        assert torch.get_num_threads() == 2  # the caller's setting is back
    finally:
        torch.set_num_threads(before)


# A verdict must come from comparisons that saw every number (stop 31).


@pytest.mark.parametrize(
    "measured",
    [
        {"worst error": float("nan")},
        {"errors": [1e-16, float("nan")]},
        {"per seed": np.array([0.5, np.nan])},
        {"tensor": torch.tensor([0.0, float("nan")])},
        {"nested": {"a": np.float32("nan")}},
    ],
)
def test_a_pass_whose_measured_numbers_hold_nan_is_no_verdict(temp_experiment, measured):
    temp_experiment("runner-nan", lambda size, seed: Result(passed=True, measured=measured))
    rec = run_experiment("runner-nan")
    assert rec.status == "error" and not rec.passed
    assert "reported a pass, but the measured value(s)" in rec.error
    assert repr(next(iter(measured))) in rec.error and "largest/smallest" in rec.error


def test_a_fail_with_nan_or_inf_stays_a_fail(temp_experiment):
    temp_experiment(
        "runner-nan-fail", lambda size, seed: Result(passed=False, measured={"x": float("nan")})
    )
    temp_experiment(
        "runner-inf-fail", lambda size, seed: Result(passed=False, measured={"x": float("inf")})
    )
    assert run_experiment("runner-nan-fail").status == "fail"
    assert run_experiment("runner-inf-fail").status == "fail"


# Stop 37: `inf > 3` and `x / inf < 0.5` are True, so an overflow or a 0 division passed.


@pytest.mark.parametrize(
    "measured",
    [
        {"ratio": float("inf")},
        {"log p": float("-inf")},
        {"errors": [1e-16, float("inf")]},
        {"per seed": np.array([0.5, np.inf])},
        {"tensor": torch.tensor([0.0, float("-inf")])},
        {"nested": {"a": np.float32("inf")}},
        {"complex": complex(float("inf"), 0.0)},
    ],
)
def test_a_pass_whose_measured_numbers_hold_inf_is_no_verdict(temp_experiment, measured):
    temp_experiment("runner-inf", lambda size, seed: Result(passed=True, measured=measured))
    rec = run_experiment("runner-inf")
    assert rec.status == "error" and not rec.passed
    key = repr(next(iter(measured)))
    assert f"measured value(s) {key} are infinite" in rec.error
    assert "belongs in a table, or in measured as None" in rec.error


def test_an_infinity_in_a_table_or_as_words_still_passes(temp_experiment):
    """An infinite answer (dp-sgd's ε at σ = 0) is shown in a table, not checked."""
    temp_experiment(
        "runner-inf-table",
        lambda size, seed: Result(
            passed=True,
            tables=[Table("runs", [{"σ": 0.0, "ε": float("inf")}])],
            measured={"ε at σ = 1": 2.5, "ε at σ = 0": None, "note": "inf"},
        ),
    )
    rec = run_experiment("runner-inf-table")
    assert rec.status == "pass" and rec.tables[0].rows == [{"σ": 0.0, "ε": "inf"}]


@pytest.mark.parametrize("verdict", ["no", float("nan"), 1, np.array([True]), None])
def test_passed_that_is_not_a_bool_is_no_verdict(temp_experiment, verdict):
    temp_experiment("runner-verdict", lambda size, seed: Result(passed=verdict))
    rec = run_experiment("runner-verdict")
    assert rec.status == "error" and not rec.passed
    assert "expected True or False" in rec.error and "passed=" in rec.error


def test_numpy_bool_verdict_is_accepted(temp_experiment):
    temp_experiment(
        "runner-npbool", lambda size, seed: Result(passed=np.bool_(True), measured={"x": 1.0})
    )
    assert run_experiment("runner-npbool").status == "pass"
