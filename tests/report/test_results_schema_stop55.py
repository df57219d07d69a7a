"""Stop 55: ``results.json`` states its layout (``schema_version``), and
:func:`tying.report.read_results` reads this version, migrates version 0 (the same
layout, written before the version was stated) and refuses any other by name.

The keys of version 1 are pinned here: renaming or removing one without raising
``SCHEMA_VERSION`` (and teaching ``read_results`` the old layout) fails this test.
"""

from __future__ import annotations

import json

import pytest

from tying.experiments.runner import run_many
from tying.report import SCHEMA_VERSION, claim_folder, read_results, write_report

TOP_KEYS_V1 = {
    "schema_version",
    "passed",
    "total",
    "runtime_s",
    "environment",
    "experiments",
    "not_run",
    "not_implemented",
    "import_failed",
    "import_errors",
}
EXPERIMENT_KEYS_V1 = {
    "id",
    "title",
    "claim",
    "chapter",
    "size",
    "seed",
    "status",
    "measured",
    "key_figure",
    "notes",
    "tables",
    "figures",
    "runtime_s",
    "error",
    "missing",
    "threads",
    "source",
    "passed",
    "code",
    "shows",
}


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    out = tmp_path_factory.mktemp("rep")
    claim_folder(out, ["param-counts"], fresh=True)
    records = run_many(["param-counts"], size="quick", out_dir=out)
    write_report(records, out, size="quick", seed=0, jobs=1, runtime_s=1.0)
    return out, json.loads((out / "results.json").read_text(encoding="utf-8"))


def test_results_json_states_its_schema_version_and_keys(written):
    _, data = written
    assert SCHEMA_VERSION == 1
    assert next(iter(data)) == "schema_version" and data["schema_version"] == 1
    assert set(data) == TOP_KEYS_V1
    assert [set(e) for e in data["experiments"]] == [EXPERIMENT_KEYS_V1]


def test_read_results_reads_the_folder_or_the_file(written):
    out, data = written
    assert read_results(out) == data == read_results(out / "results.json")


def test_version_0_is_migrated(written, tmp_path):
    _, data = written
    old = {k: v for k, v in data.items() if k != "schema_version"}
    path = tmp_path / "results.json"
    path.write_text(json.dumps(old))
    assert read_results(path) == data


@pytest.mark.parametrize(
    ("version", "match"),
    [
        (2, r"schema_version 2 is newer than this tying reads \(1\); read it with the tying"),
        ("1", r"schema_version '1' is not a version tying writes \(a whole number, 1 for"),
        (True, "schema_version True is not a version"),
        (-1, "schema_version -1 is not a version"),
        (1.0, "schema_version 1.0 is not a version"),
    ],
)
def test_another_version_is_refused_by_name(written, tmp_path, version, match):
    _, data = written
    path = tmp_path / "results.json"
    path.write_text(json.dumps({**data, "schema_version": version}))
    with pytest.raises(ValueError, match=f"{tmp_path}.*{match}"):
        read_results(path)


def test_a_file_of_another_layout_is_refused(tmp_path):
    path = tmp_path / "results.json"
    path.write_text(json.dumps({"schema_version": 1, "passed": 3}))
    with pytest.raises(ValueError, match=r"the key\(s\) 'total', 'runtime_s', 'environment'"):
        read_results(path)
    path.write_text("[1, 2]")
    with pytest.raises(ValueError, match="a JSON list, expected an object"):
        read_results(path)
    path.write_text("{")
    with pytest.raises(ValueError, match="not JSON"):
        read_results(path)
