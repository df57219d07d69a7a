"""Stop 59: arguments of the Python API that read as something else.

- ``run_many("param-counts")`` iterated the string's letters and said "unknown
  experiment id 'p'; did you mean 'dp-sgd'?", advice that names another experiment.
- ``out_dir=""`` (an unset variable: ``os.environ.get("OUT", "")``) is
  ``pathlib.Path("")``, the current folder: in an empty folder the run wrote its
  manifest and figures there, where ``tying report --out ""`` is refused.
"""

from __future__ import annotations

import pytest

from tying.experiments.output import OutputFolderError, claim_folder, out_path
from tying.experiments.runner import run_experiment, run_many
from tying.report import write_report


def test_run_many_given_one_string_names_the_list_it_wants():
    with pytest.raises(TypeError, match=r"takes a list of experiment ids, got the string "):
        run_many("param-counts", size="quick")
    with pytest.raises(TypeError, match=r"pass \['param-counts'\]"):
        run_many("param-counts", size="quick")


@pytest.mark.parametrize("given", ["", "  ", b""])
def test_an_empty_out_dir_is_refused_and_nothing_is_written(tmp_path, monkeypatch, given):
    monkeypatch.chdir(tmp_path)  # an empty current folder: the old code reported into it
    for call in (
        lambda: run_experiment("param-counts", size="quick", out_dir=given),
        lambda: run_many(["param-counts"], size="quick", out_dir=given),
        lambda: write_report([], given, size="quick", seed=0, jobs=1, runtime_s=0.0),
        lambda: claim_folder(given, ["x"], fresh=True),
    ):
        with pytest.raises(OutputFolderError, match=r"an empty or blank folder name is most"):
            call()
    assert list(tmp_path.iterdir()) == []


def test_the_current_folder_said_as_a_dot_is_still_taken(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert str(out_path(".")) == "." and str(out_path(tmp_path)) == str(tmp_path)
    claim_folder(".", ["x"], fresh=True)  # the advice, followed
    assert (tmp_path / ".tying-report.json").is_file()
