"""Stop 54: a claim whose experiment module failed to import is named as such.

The module registered nothing, so ``tying run C4`` said "unknown experiment id
'pair-hmm-symmetry'; did you mean 'lstm-tied-gates'?" for an id CLAIMS.md lists, and
the report page and results.json called the claim NOT YET IMPLEMENTED. Both now name
the module that failed and its error.
"""

from __future__ import annotations

import pytest

from tying.cli import main
from tying.experiments import IMPORT_ERRORS, REGISTRY, load_all
from tying.experiments.registry import failed_module, get
from tying.report import results_dict
from tying.report.html import render_page, summary_rows

_ERROR = "Traceback (most recent call last):\nModuleNotFoundError: No module named 'stop54_gone'"


@pytest.fixture
def hmm_broken(monkeypatch):
    """As if tying/experiments/hmm.py had failed to import: its two claims unregistered."""
    load_all()
    for exp_id in ("hmm-tied-emissions", "pair-hmm-symmetry"):
        monkeypatch.delitem(REGISTRY, exp_id, raising=False)
    monkeypatch.setitem(IMPORT_ERRORS, "hmm", _ERROR)


def test_run_names_the_module_that_failed_not_another_id(hmm_broken, capsys):
    assert main(["run", "C4"]) == 2
    err = capsys.readouterr().err
    assert "claim C4 ('pair-hmm-symmetry') has no experiment here" in err
    assert "tying.experiments.hmm failed to import (ModuleNotFoundError: No module" in err
    assert "unknown experiment id" not in err and "did you mean" not in err
    assert main(["report", "--only", "hmm-tied-emissions", "--out", "unused"]) == 2
    assert "tying.experiments.hmm failed to import" in capsys.readouterr().err


def test_a_claim_with_no_experiment_and_no_failed_module_reads_not_yet_implemented(monkeypatch):
    load_all()
    monkeypatch.delitem(REGISTRY, "bptt-sum")
    assert failed_module("bptt-sum") is None
    with pytest.raises(
        KeyError, match=r"claim B5 \('bptt-sum'\) has no experiment here: it is not"
    ):
        get("bptt-sum")


def test_the_page_and_results_json_say_import_failed(hmm_broken):
    rows = {row["id"]: row for row in summary_rows([], REGISTRY)}
    for exp_id in ("hmm-tied-emissions", "pair-hmm-symmetry"):
        assert rows[exp_id]["status"] == "import-failed" and rows[exp_id]["module"] == "hmm"
    assert rows["param-counts"]["status"] == "not-run"
    page = render_page([], REGISTRY, {"size": "quick", "seed": 0}, 1.0, dict(IMPORT_ERRORS))
    assert 'data-id="pair-hmm-symmetry" data-status="import-failed"' in page
    assert "IMPORT FAILED" in page and "module tying.experiments.hmm failed to import" in page
    data = results_dict([], {}, 1.0)
    assert {(r["id"], r["module"]) for r in data["import_failed"]} == {
        ("hmm-tied-emissions", "hmm"),
        ("pair-hmm-symmetry", "hmm"),
    }
    assert "pair-hmm-symmetry" not in {r["id"] for r in data["not_implemented"]}


def test_an_extra_claim_whose_module_failed_stays_on_the_page(monkeypatch):
    load_all()
    monkeypatch.delitem(REGISTRY, "hashed-recsys")
    monkeypatch.setitem(IMPORT_ERRORS, "hashed_recsys", _ERROR)
    rows = [row for row in summary_rows([], REGISTRY) if row["id"] == "hashed-recsys"]
    assert [(r["status"], r["module"], r["code"]) for r in rows] == [
        ("import-failed", "hashed_recsys", "C8+")
    ]
