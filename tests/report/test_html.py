"""The report page and results.json, from synthetic records (no browser)."""

from __future__ import annotations

import doctest
import html.parser
import json

import pytest

import tying.report as report_module
import tying.report.environment as env_module
import tying.report.format as format_module
from tying.experiments import REGISTRY, Table, load_all
from tying.experiments.claims import CLAIMS
from tying.experiments.runner import RunRecord
from tying.report import results_dict, write_report
from tying.report.html import render_page, summary_rows


def _rec(exp_id: str, status: str, **kw) -> RunRecord:
    spec = REGISTRY[exp_id]
    return RunRecord(
        id=exp_id,
        title=spec.title,
        claim=spec.claim,
        chapter=spec.chapter,
        source=spec.source,
        size="quick",
        seed=0,
        status=status,
        **kw,
    )


@pytest.fixture
def records():
    load_all()
    return [
        _rec(
            "param-counts",
            "pass",
            measured={"n": 448},
            key_figure="448 <params>",
            tables=[Table("counts & more", [{"layer": "<conv>", "n": 9437184}])],
            figures=["figures/param-counts--counts.png"],
            runtime_s=0.5,
        ),
        _rec("bptt-sum", "error", error="Traceback (most recent call last):\nRuntimeError: x<y"),
        _rec("tied-init", "fail", measured={"ratio": 0.1}),
        _rec(
            "rnn-unrolled",
            "missing-extra",
            error="needs the optional package(s) foo",
            missing=["foo"],
        ),
    ]


class _Rows(html.parser.HTMLParser):
    def __init__(self):
        super().__init__()
        self.rows, self.sections, self.imgs = [], [], []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "tr" and "claim-row" in a.get("class", ""):
            self.rows.append(a)
        if tag == "section" and "claim" in a.get("class", ""):
            self.sections.append(a.get("id"))
        if tag == "img":
            self.imgs.append(a["src"])


def _parse(page: str) -> _Rows:
    p = _Rows()
    p.feed(page)
    return p


def test_summary_has_a_row_per_claim_and_registered_experiment(records):
    page = render_page(records, REGISTRY, {"size": "quick", "seed": 0}, 3.0)
    p = _parse(page)
    ids = [r["data-id"] for r in p.rows]
    assert len(ids) == len(set(ids))
    assert {c.id for c in CLAIMS} | set(REGISTRY) == set(ids)
    status = {r["data-id"]: r["data-status"] for r in p.rows}
    assert status["param-counts"] == "pass" and status["bptt-sum"] == "error"
    assert status["tied-init"] == "fail" and status["rnn-unrolled"] == "missing-extra"
    assert status["symmetry-breaking"] == "not-run"  # registered but not selected
    registered = {r["data-id"] for r in p.rows if r["data-registered"] == "1"}
    assert registered == set(REGISTRY)
    experiment_rows = [r["data-id"] for r in p.rows if "experiment-row" in r["class"]]
    assert sorted(experiment_rows) == sorted(r.id for r in records)


def test_every_run_gets_a_section_in_claim_order_even_when_it_raised(records):
    page = render_page(records, REGISTRY, {"size": "quick"}, 3.0)
    p = _parse(page)
    assert p.sections == ["param-counts", "rnn-unrolled", "bptt-sum", "tied-init"]
    assert "RuntimeError: x&lt;y" in page  # the traceback, escaped
    assert "The experiment raised" in page and "Missing optional extra" in page


def test_text_is_escaped_and_figures_are_relative(records):
    page = render_page(records, REGISTRY, {"size": "quick"}, 3.0)
    assert "&lt;conv&gt;" in page and "<conv>" not in page
    assert "448 &lt;params&gt;" in page
    p = _parse(page)
    assert p.imgs and all(src == "figures/param-counts--counts.png" for src in p.imgs)
    assert "9,437,184" in page  # numbers formatted like the terminal's
    assert "1</b> of 4 claims passed" in page


def test_environment_at_the_bottom(records):
    page = render_page(records, REGISTRY, {"python": "3.x", "torch": "2.y", "CPU": "z"}, 1.0)
    assert page.index('id="environment"') > page.index('id="param-counts"')
    assert "<th>torch</th><td>2.y</td>" in page


def test_import_errors_are_shown(records):
    page = render_page(records, REGISTRY, {}, 1.0, {"broken_mod": "SyntaxError: bad"})
    assert 'id="import-errors"' in page and "SyntaxError: bad" in page


def test_write_report_files_and_json(records, tmp_path):
    # the page refuses a figure that is not in the folder (stop 54): the run wrote it
    from tying.experiments.output import claim_folder, record_files

    claim_folder(tmp_path, ["param-counts"], fresh=True)
    (tmp_path / "figures").mkdir(exist_ok=True)
    (tmp_path / "figures" / "param-counts--counts.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    record_files(tmp_path, ["figures/param-counts--counts.png"])
    paths = write_report(records, tmp_path, size="quick", seed=0, jobs=1, runtime_s=2.5)
    data = json.loads(paths["json"].read_text())
    assert data["passed"] == 1 and data["total"] == 4 and data["runtime_s"] == 2.5
    first = data["experiments"][0]
    assert first["id"] == "param-counts" and first["code"] == "A1" and first["passed"]
    assert first["figures"] == ["figures/param-counts--counts.png"]
    assert first["tables"][0]["columns"] == ["layer", "n"]
    assert data["environment"]["size"] == "quick" and "torch" in data["environment"]
    assert "symmetry-breaking" in data["not_run"]
    not_impl = {row["id"] for row in data["not_implemented"]}
    assert not_impl == {c.id for c in CLAIMS} - set(REGISTRY)
    assert paths["html"].read_text().startswith("<!DOCTYPE html>")


def test_results_dict_matches_summary_rows(records):
    data = results_dict(records, {}, 1.0)
    rows = summary_rows(records, REGISTRY)
    assert len(data["not_implemented"]) == sum(r["status"] == "not-implemented" for r in rows)


@pytest.mark.parametrize("module", [report_module, env_module, format_module])
def test_doctests(module, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = doctest.testmod(module)
    assert result.attempted > 0 and result.failed == 0


def test_each_section_names_its_chapter_and_links_its_code(records):
    page = render_page(records, REGISTRY, {"size": "quick"}, 1.0)
    spec = REGISTRY["param-counts"]
    section = page[
        page.index('id="param-counts"') : page.index("</section>", page.index('id="param-counts"'))
    ]
    assert f"code: <code>{spec.source}</code>" in section
    assert spec.source.startswith("tying/experiments/principles.py:")
    assert 'href="file://' in section and "principles.py" in section  # linked in a checkout
    assert "chapter 003 (003_b6d2e640cf93b843.txt)" in section and "seed 003" not in section


def test_a_run_that_finished_without_a_verdict_is_not_said_to_have_raised():
    """Stop 31: the runner refuses a pass whose measured numbers hold NaN; its section
    says why, under its own heading, not "The experiment raised" with no traceback."""
    load_all()
    why = "experiment 'bptt-sum' reported a pass, but the measured value(s) 'x' hold NaN"
    rec = _rec("bptt-sum", "error", measured={"x": "nan"}, error=why)
    page = render_page([rec], REGISTRY, {"size": "quick"}, 1.0)
    assert "Why this run gives no verdict" in page and "The experiment raised" not in page
    assert "hold NaN" in page
