"""Stop 60: ``write_report``/``results_dict`` name the fix for records that are not a list.

``write_report(record)`` (one record) said "object of type 'RunRecord' has no len()", a
generator of records the same, and a list of ``to_dict()`` entries "'dict' object has
no attribute 'id'"; ``format_number(5000.5, 5)`` printed ``5000.5`` beside ``5,001``.
"""

from __future__ import annotations

import pytest

from tying.experiments.runner import RunRecord
from tying.report import claim_folder, results_dict, write_report
from tying.report.format import format_number, format_runtime


def _record(exp_id="param-counts") -> RunRecord:
    return RunRecord(exp_id, exp_id, "c.", "003", "quick", 0, "pass", measured={"x": 1.0})


@pytest.fixture
def folder(tmp_path):
    out = tmp_path / "rep"
    claim_folder(out, ["param-counts"], fresh=True)
    return out


def _write(records, out):
    return write_report(records, out, size="quick", seed=0, jobs=1, runtime_s=1.0)


def test_one_record_names_the_list(folder):
    with pytest.raises(TypeError, match=r"got one RunRecord \('param-counts'\); pass \[record\]"):
        _write(_record(), folder)
    assert not (folder / "index.html").exists()


def test_a_generator_of_records_is_read_once(folder):
    paths = _write((r for r in [_record()]), folder)
    assert "param-counts" in paths["html"].read_text(encoding="utf-8")


@pytest.mark.parametrize(
    ("records", "match"),
    [
        ([_record().to_dict()], r"records\[0\] is a dict .*expected a RunRecord"),
        (["param-counts"], r"records\[0\] is a str .*expected a RunRecord"),
        ("param-counts", r"got str 'param-counts'; run the experiments with"),
        (None, r"got NoneType None; run the experiments"),
    ],
)
def test_not_records_named(folder, records, match):
    with pytest.raises(TypeError, match=match):
        _write(records, folder)
    assert not (folder / "index.html").exists()


def test_results_dict_one_record():
    with pytest.raises(TypeError, match=r"results_dict\(\) takes a list of RunRecords"):
        results_dict(_record(), {}, 1.0)


@pytest.mark.parametrize(
    ("value", "digits", "text"),
    [
        (5000.5, 5, "5,000.5"),
        (-5000.5, 5, "-5,000.5"),
        (1234.5, 6, "1,234.5"),
        (999999.5, 7, "999,999.5"),
        (1000.25, 6, "1,000.25"),
        (12.5, 6, "12.5"),
    ],
)
def test_thousands_separator_at_any_digits(value, digits, text):
    assert format_number(value, digits) == text


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (9.994, "9.99 s"),
        (9.996, "10.0 s"),
        (59.94, "59.9 s"),
        (59.96, "1 min 00 s"),
        (float("inf"), "inf s"),
        (float("nan"), "nan s"),
    ],
)
def test_runtime_at_the_unit_boundaries(seconds, text):
    assert format_runtime(seconds) == text


@pytest.mark.parametrize("status", ["weird", "PASS", "not-run"])
def test_a_status_no_run_gives_is_named(folder, status):
    rec = _record()
    rec.status = status
    with pytest.raises(ValueError, match=rf"record 'param-counts' has status '{status}'; a run"):
        _write([rec], folder)
    assert not (folder / "index.html").exists()
