"""Stop 60: ``claim_folder`` refuses ids given as one string and flags that are not bools.

``claim_folder(out, "param-counts", fresh=False)`` read the id as its letters, so the
check that a run would replace a figure the folder's report page shows was skipped
(the figure was then overwritten beside a page of another run); ``fresh="no"`` was
read as True and removed the folder's earlier output.
"""

from __future__ import annotations

import pytest

from tying.experiments.output import OutputFolderError, claim_folder
from tying.experiments.runner import RunRecord
from tying.report import write_report


def _report(out):
    """A report folder whose page shows figures/param-counts--counts.png."""
    claim_folder(out, ["param-counts"], fresh=True)
    (out / "figures").mkdir(exist_ok=True)
    (out / "figures" / "param-counts--counts.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"0" * 8)
    rec = RunRecord(
        "param-counts",
        "t",
        "c.",
        "003",
        "quick",
        0,
        "pass",
        measured={"x": 1.0},
        figures=["figures/param-counts--counts.png"],
    )
    write_report([rec], out, size="quick", seed=0, jobs=1, runtime_s=1.0)


def test_one_id_as_a_string_is_refused(tmp_path):
    out = tmp_path / "rep"
    _report(out)
    before = sorted(p.name for p in out.rglob("*"))
    with pytest.raises(
        TypeError, match=r"ids must be a list of experiment ids, got 'param-counts'"
    ):
        claim_folder(out, "param-counts", fresh=False)
    assert sorted(p.name for p in out.rglob("*")) == before
    with pytest.raises(OutputFolderError, match=r"would replace that figure"):
        claim_folder(out, ["param-counts"], fresh=False)  # the advice, followed: refused


@pytest.mark.parametrize(("kw", "value"), [("fresh", "no"), ("fresh", 0), ("writes_page", None)])
def test_flags_must_be_bools(tmp_path, kw, value):
    out = tmp_path / "rep"
    _report(out)
    before = sorted(p.name for p in out.rglob("*"))
    kwargs = {"fresh": False, kw: value}
    with pytest.raises(TypeError, match=rf"claim_folder\(\): {kw} must be True or False"):
        claim_folder(out, ["other"], **kwargs)
    assert sorted(p.name for p in out.rglob("*")) == before


def test_ids_must_be_strings(tmp_path):
    with pytest.raises(TypeError, match=r"ids must be experiment ids \(str\), got 3 \(int\)"):
        claim_folder(tmp_path / "rep", ["a", 3], fresh=True)
    assert not (tmp_path / "rep").exists()
