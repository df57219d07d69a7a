"""Stop 55: ``tying report --timeout SECONDS`` records a hung experiment as an error and
goes on (``--jobs 1``: experiments then run in a worker process that can be stopped).

The hung experiment here hangs while saving its figure, after writing part of the PNG:
the stopped run leaves no file behind that the next report into the folder would
refuse as a user's.
"""

from __future__ import annotations

import json
import re

import pytest

import tying.experiments.runner as runner_module
from tying.cli import main
from tying.experiments import REGISTRY
from tying.experiments import claims as claims_module

from .experiments import fake_timeout_stop55 as fakes


@pytest.fixture
def fake_experiments(monkeypatch):
    fakes.register()
    monkeypatch.setattr(runner_module, "_WORKER_IMPORTS", (fakes.__name__,))
    yield
    for exp_id in fakes.FAKES:
        REGISTRY.pop(exp_id, None)
        claims_module._BY_ID.pop(exp_id, None)


def test_report_timeout_with_one_job_records_the_hung_one_and_goes_on(
    fake_experiments, tmp_path, capsys
):
    out = tmp_path / "my report"  # a space in the path, as a fresh clone may have
    only = f"{fakes.HANG_IN_FIGURE},{fakes.OK}"
    argv = ["report", "--size", "quick", "--only", only, "--jobs", "1", "--timeout", "1.5"]
    assert main([*argv, "--out", str(out)]) == 0
    said = capsys.readouterr().out
    results = {r["id"]: r for r in json.loads((out / "results.json").read_text())["experiments"]}
    hung, ok = results[fakes.HANG_IN_FIGURE], results[fakes.OK]
    assert (hung["status"], ok["status"]) == ("error", "pass")
    assert hung["error"].startswith("timed out after 1.5 s") and hung["figures"] == []
    assert f"error: {fakes.HANG_IN_FIGURE}" in said
    assert "timed out after 1.5 s" in (out / "index.html").read_text(encoding="utf-8")
    # the half-written figure went with its stopped worker; no build folder is left
    assert sorted(p.name for p in out.iterdir()) == [
        ".tying-report.json",
        "figures",
        "index.html",
        "results.json",
    ]
    assert list((out / "figures").iterdir()) == []
    # and the folder is still ours: a second report into it is not refused
    assert main(["report", "--size", "quick", "--only", fakes.OK, "--out", str(out)]) == 0


@pytest.mark.parametrize(
    ("value", "match"),
    [
        ("0", "expected a number of seconds > 0, got 0"),
        (
            "-5",
            r"expected a number of seconds > 0 such as 600 or 1.5 \(digits 0-9 only\), got '-5'",
        ),
        ("1e3", "got '1e3'"),
        ("nan", "got 'nan'"),
        ("1_0", "got '1_0'"),
        ("9" * 400, "got 9999"),
    ],
)
def test_a_bad_timeout_is_a_usage_error(value, match, tmp_path, capsys):
    out = tmp_path / "out"
    argv = ["report", "--only", "param-counts", "--timeout", value, "--out", str(out)]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "argument --timeout" in err
    assert re.search(match, err)
    assert not out.exists()
