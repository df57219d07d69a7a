"""Stop 56: ``tying run ID --timeout SECONDS``, with the semantics of ``tying report``'s.

``tying report`` had ``--timeout`` (stop 55) but ``tying run`` did not: a hung
experiment run alone could only be stopped with Ctrl-C. Now ``run`` takes the same
option: the experiment runs in a worker process, one that runs past the limit is an
error ("timed out after N s", exit 1), its worker is stopped and the half-written
figure it left is removed, so the folder is still ours for the next run.
"""

from __future__ import annotations

import json

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


def test_run_timeout_stops_a_hung_experiment_and_keeps_the_folder_ours(
    fake_experiments, tmp_path, capsys
):
    out = tmp_path / "run out"
    (out / "figures").mkdir(parents=True)
    argv = ["run", fakes.HANG_IN_FIGURE, "--timeout", "1.5", "--out", str(out)]
    assert main(argv) == 1  # an error: no verdict
    said = capsys.readouterr().out
    assert "timed out after 1.5 s" in said and "ERROR" in said
    # the half-written PNG went with its stopped worker; the manifest lists nothing
    assert list((out / "figures").iterdir()) == []
    manifest = json.loads((out / ".tying-report.json").read_text())
    assert (manifest["files"], manifest["pending"]) == ({}, [])
    # a run without --timeout into the same folder is not refused (nothing foreign left)
    assert main(["run", fakes.OK, "--out", str(out)]) == 0


def test_run_and_report_document_the_same_timeout(capsys):
    helps = {}
    for cmd in ("run", "report"):
        assert main([cmd, "--help"]) == 0
        helps[cmd] = " ".join(capsys.readouterr().out.split())
    for text in helps.values():
        assert "--timeout SECONDS" in text and "('timed out after N s')" in text
