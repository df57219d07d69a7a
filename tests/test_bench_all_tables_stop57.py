"""docs/benchmarks.md's `<!-- bench: all -->` shows every results file a benchmark wrote.

Before stop 57 the hook looked results up by script name (``bench_chem_sets.py`` ->
``chem_sets.json``), but benchmarks write under names of their own (``chem-sets.json``,
``hmm-default.json``): the page said "No results ... yet" for results that were there.
"""

from __future__ import annotations

import importlib.util
import json
import pathlib

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _hooks():
    spec = importlib.util.spec_from_file_location("docs_hooks", ROOT / "docs" / "hooks.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_all_tables_shows_files_written_under_other_names(tmp_path, monkeypatch):
    hooks = _hooks()
    benches, results = tmp_path / "benchmarks", tmp_path / "bench-results"
    benches.mkdir()
    results.mkdir()
    for script in ("chem_sets", "hmm", "core"):
        (benches / f"bench_{script}.py").write_text("")
    (results / "chem-sets.json").write_text(json.dumps([{"case": "sets", "ratio": 1.25}]))
    (results / "hmm-default.json").write_text(json.dumps([{"case": "default", "ratio": 2.5}]))
    monkeypatch.chdir(tmp_path)  # both folders are read relative to the current one
    page = hooks.all_tables()
    assert "| sets | 1.25 |" in page and "| default | 2.5 |" in page
    assert "No results of benchmark `chem_sets`" not in page
    assert "No results of benchmark `hmm`" not in page
    assert "No results of benchmark `core`" in page  # a script with no file yet: how to run it
