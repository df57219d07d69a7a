"""A claim's number from CLAIMS.md (``A1``, ``b10``) names its experiment on the command line.

Stop 53: ``tying run A1`` and ``--only A1`` were refused as unknown ids, with the hint
"did you mean 'translation-equivariance'?", although CLAIMS.md numbers every claim so.
"""

from __future__ import annotations

import json

import pytest

from tying.cli import _check_ids, main
from tying.experiments.claims import CLAIMS, EXTRA_CLAIMS


@pytest.mark.parametrize("claim", CLAIMS + EXTRA_CLAIMS, ids=lambda c: c.code)
def test_every_claim_number_names_its_experiment_in_any_case(claim):
    assert _check_ids([claim.code]) == [claim.id]
    assert _check_ids([claim.code.lower()]) == [claim.id]


def test_a_number_and_its_id_together_run_once_in_the_order_given():
    assert _check_ids(["A2", "param-counts", "a1", "conv-is-tied-lc"]) == [
        "conv-is-tied-lc",
        "param-counts",
    ]


def test_run_by_claim_number_runs_that_claims_experiment(capsys):
    assert main(["run", "a1"]) == 0
    out = capsys.readouterr().out
    assert "A1 param-counts" in out and "PASS" in out


def test_report_only_by_claim_numbers_runs_those_experiments(tmp_path, capsys):
    out = tmp_path / "rep"
    assert main(["report", "--size", "quick", "--only", "A1,a2", "--out", str(out)]) == 0
    ran = json.loads((out / "results.json").read_text())
    ids = [r["id"] for r in ran["experiments"]]
    assert ids == ["param-counts", "conv-is-tied-lc"]


def test_a_number_no_claim_has_is_still_an_unknown_id(capsys):
    assert main(["run", "Z9"]) == 2
    assert "unknown experiment id 'Z9'" in capsys.readouterr().err
