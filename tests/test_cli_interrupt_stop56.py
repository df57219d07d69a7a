"""Stop 56: a report interrupted while it moves into place is replaced whole or kept whole.

``install_build`` held Ctrl-C while it moved the new report in, but not SIGTERM, which
``tying`` turns into a Ctrl-C: a ``kill`` that came between the moves of ``index.html``
and ``results.json`` left the new page beside the old results, and the command said
"no report page was written ... the earlier report there is left as it was". The same
gap was in :func:`tying.report.write_report`'s own pair of moves; and a Ctrl-C after
those moves, before the manifest listed the new pages' hashes, left a folder that every
later run refused ("index.html, which was changed since tying wrote it").
"""

from __future__ import annotations

import json
import os
import pathlib
import signal

import pytest

import tying.experiments.output as output_module
import tying.report as report_module
from tying.cli import main
from tying.experiments import REGISTRY
from tying.experiments import claims as claims_module
from tying.experiments.runner import run_many
from tying.report import claim_folder, write_report

from .experiments import fake_timeout_stop55 as fakes


@pytest.fixture
def fake_experiments():
    fakes.register()  # in this process only: these tests run with --jobs 1, no timeout
    yield
    for exp_id in fakes.FAKES:
        REGISTRY.pop(exp_id, None)
        claims_module._BY_ID.pop(exp_id, None)


def _signal_after(module, monkeypatch, name: str, signum: int, where: pathlib.Path) -> None:
    """Send ``signum`` to this process right after ``where/name`` is moved into place."""
    real = os.replace

    def replace(src, dst):
        real(src, dst)
        if pathlib.Path(dst) == where / name:
            os.kill(os.getpid(), signum)

    monkeypatch.setattr(module.os, "replace", replace)


def _page(out: pathlib.Path) -> tuple[list[str], str]:
    ids = [e["id"] for e in json.loads((out / "results.json").read_text())["experiments"]]
    return ids, (out / "index.html").read_text(encoding="utf-8")


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_while_the_report_moves_in_leaves_one_whole_report(
    signum, fake_experiments, tmp_path, monkeypatch, capsys
):
    out = tmp_path / "rep"
    assert main(["report", "--size", "quick", "--only", fakes.OK, "--out", str(out)]) == 0
    _signal_after(output_module, monkeypatch, "index.html", signum, out)
    argv = ["report", "--size", "quick", "--only", f"{fakes.OK},{fakes.OK2}", "--out", str(out)]
    assert main(argv) == 130
    monkeypatch.undo()
    ids, page = _page(out)
    # the new page and the new results, not the new page beside the old results
    assert ids == [fakes.OK, fakes.OK2] and fakes.OK2 in page
    err = capsys.readouterr().err
    assert "the new report was written in" in err and "left as it was" not in err
    # and the folder is still ours
    assert main(["report", "--size", "quick", "--only", fakes.OK, "--out", str(out)]) == 0


def test_write_report_moves_both_page_files_or_neither_on_ctrl_c(
    fake_experiments, tmp_path, monkeypatch
):
    out = tmp_path / "rep"
    claim_folder(out, [fakes.OK, fakes.OK2], fresh=True)
    first = run_many([fakes.OK], size="quick", out_dir=out)
    write_report(first, out, size="quick", seed=0, jobs=1, runtime_s=1.0)
    both = run_many([fakes.OK, fakes.OK2], size="quick", out_dir=out)
    _signal_after(report_module, monkeypatch, "index.html", signal.SIGINT, out)
    with pytest.raises(KeyboardInterrupt):
        write_report(both, out, size="quick", seed=0, jobs=1, runtime_s=1.0)
    monkeypatch.undo()
    ids, page = _page(out)
    assert ids == [fakes.OK, fakes.OK2] and fakes.OK2 in page


def test_write_report_interrupted_after_its_moves_leaves_the_folder_ours(
    fake_experiments, tmp_path, monkeypatch
):
    out = tmp_path / "rep"
    claim_folder(out, [fakes.OK, fakes.OK2], fresh=True)
    first = run_many([fakes.OK], size="quick", out_dir=out)
    write_report(first, out, size="quick", seed=0, jobs=1, runtime_s=1.0)
    both = run_many([fakes.OK, fakes.OK2], size="quick", out_dir=out)
    _signal_after(report_module, monkeypatch, "results.json", signal.SIGINT, out)
    with pytest.raises(KeyboardInterrupt):
        write_report(both, out, size="quick", seed=0, jobs=1, runtime_s=1.0)
    monkeypatch.undo()
    assert _page(out)[0] == [fakes.OK, fakes.OK2]
    # the new pages are tying's: the same call again is not refused, and lists them
    write_report(both, out, size="quick", seed=0, jobs=1, runtime_s=1.0)
    manifest = json.loads((out / output_module.MANIFEST).read_text())
    assert sorted(manifest["files"]) == ["index.html", "results.json"]
    assert manifest["pending"] == []
