"""Stop 60: ``out_dir`` as bytes and ``jobs`` as a NumPy integer are taken as documented.

``run_experiment(..., out_dir=b"rep")`` claimed the folder (a manifest written) and then
raised pathlib's "argument should be a str object" with no figure saved;
``run_many(..., jobs=np.int64(1))`` said "jobs must be an int >= 1, got np.int64(1)"
(``seed`` and ``write_report(jobs=...)`` take NumPy integers).
"""

from __future__ import annotations

import os

import numpy as np
import pytest

from tying.experiments.runner import run_experiment, run_many


def test_run_experiment_bytes_out_dir(tmp_path):
    rec = run_experiment("param-counts", size="quick", out_dir=os.fsencode(tmp_path / "rep"))
    assert rec.status == "pass", rec.error
    assert rec.figures and all((tmp_path / "rep" / f).is_file() for f in rec.figures)


def test_run_many_bytes_out_dir_and_numpy_jobs(tmp_path):
    (rec,) = run_many(
        ["param-counts"], size="quick", out_dir=os.fsencode(tmp_path / "rep"), jobs=np.int64(1)
    )
    assert rec.status == "pass", rec.error
    assert all((tmp_path / "rep" / f).is_file() for f in rec.figures)


@pytest.mark.parametrize("jobs", [np.int64(0), np.True_, 1.0])
def test_run_many_bad_jobs_still_refused(jobs):
    with pytest.raises(ValueError, match=r"jobs must be an int >= 1, got"):
        run_many(["param-counts"], size="quick", jobs=jobs)
