"""Stop 38: ``write_report`` states one size and seed, and a refusal writes nothing.

The page's header said the ``size``/``seed`` passed to ``write_report`` whatever the
records were run with (records of seed 1 under "seed 0"); an id twice was counted
twice ("2 of 2 claims passed" for one claim); a NumPy integer seed wrote
``index.html`` and then crashed on ``results.json``, leaving a new page beside the old
results.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tying.experiments.runner import RunRecord
from tying.report import claim_folder, write_report


def _record(exp_id="param-counts", *, size="quick", seed=0, status="pass") -> RunRecord:
    return RunRecord(exp_id, exp_id, "c.", "003", size, seed, status, measured={"x": 1.0})


@pytest.fixture
def folder(tmp_path):
    """A report folder holding an earlier report (seed 0) of ours."""
    out = tmp_path / "rep"
    claim_folder(out, ["param-counts"], fresh=True)
    write_report([_record()], out, size="quick", seed=0, jobs=1, runtime_s=1.0)
    return out


def _files(out):
    return {p.relative_to(out).as_posix(): p.read_bytes() for p in out.rglob("*") if p.is_file()}


@pytest.mark.parametrize(
    ("records", "kwargs", "match"),
    [
        ([_record(seed=1)], {}, r"record 'param-counts' was run at size 'quick', seed 1, but"),
        ([_record(size="report")], {}, r"run at size 'report', seed 0, but the page would say"),
        ([_record(), _record()], {}, r"records hold 'param-counts' more than once"),
        ([_record()], {"seed": -3}, r"seeds are not negative"),
        ([_record()], {"size": "quik"}, r"size must be one of"),
        ([_record()], {"jobs": 0}, r"jobs must be an int >= 1"),
        ([_record()], {"runtime_s": float("nan")}, r"runtime_s must be finite"),
    ],
)
def test_a_page_that_would_misstate_its_run_is_refused_and_nothing_changes(
    folder, records, kwargs, match
):
    before = _files(folder)
    args = {"size": "quick", "seed": 0, "jobs": 1, "runtime_s": 2.0} | kwargs
    with pytest.raises(ValueError, match=match):
        write_report(records, folder, **args)
    assert _files(folder) == before  # the earlier report, byte for byte


def test_a_numpy_integer_seed_writes_both_files(folder):
    paths = write_report([_record(seed=0)], folder, size="quick", seed=np.int64(0), jobs=1,
                         runtime_s=np.float64(2.0))  # fmt: skip
    results = json.loads(paths["json"].read_text())
    assert results["environment"]["seed"] == 0 and results["runtime_s"] == 2.0
    assert "seed\n<b>0</b>" in paths["html"].read_text()


@settings(derandomize=True, deadline=None, max_examples=15)
@given(
    run_seeds=st.lists(st.integers(0, 3), min_size=1, max_size=3),
    page_seed=st.integers(0, 3),
)
def test_the_page_says_the_seed_every_record_ran_with_or_is_refused(
    tmp_path_factory, run_seeds, page_seed
):
    ids = ["param-counts", "rnn-unrolled", "bptt-sum"][: len(run_seeds)]
    records = [_record(i, seed=s) for i, s in zip(ids, run_seeds, strict=True)]
    out = tmp_path_factory.mktemp("rep")
    claim_folder(out, ids, fresh=True)
    if set(run_seeds) == {page_seed}:
        paths = write_report(records, out, size="quick", seed=page_seed, jobs=1, runtime_s=1.0)
        results = json.loads(paths["json"].read_text())
        assert {e["seed"] for e in results["experiments"]} == {results["environment"]["seed"]}
        assert results["total"] == len(set(ids))
    else:
        with pytest.raises(ValueError, match="but the page would say"):
            write_report(records, out, size="quick", seed=page_seed, jobs=1, runtime_s=1.0)
        assert not (out / "index.html").exists()


def test_an_error_naming_a_non_utf8_file_is_written_not_a_crash(folder):
    # os.fsdecode of a file name that is not UTF-8 holds lone surrogates, which UTF-8
    # cannot encode: write_text raised after truncating index.html, and wrote no JSON
    error = "FileNotFoundError: /data/\udcff.bin <b>&"
    rec = RunRecord("param-counts", "t", "c.", "003", "quick", 0, "error", error=error)
    paths = write_report([rec], folder, size="quick", seed=0, jobs=1, runtime_s=1.0)
    results = json.loads(paths["json"].read_text(encoding="utf-8"))
    assert results["experiments"][0]["error"] == error  # the same string, read back
    page = paths["html"].read_text(encoding="utf-8")
    assert "FileNotFoundError: /data/\\udcff.bin &lt;b&gt;&amp;" in page
