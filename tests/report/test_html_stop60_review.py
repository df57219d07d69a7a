"""Stop 60 review: ``render_page`` names records that are not a list, as ``write_report`` does.

``render_page(record, ...)`` said "'RunRecord' object is not iterable", a generator
"has no len()", and a status no run gives ``KeyError: 'weird'``.
"""

from __future__ import annotations

import dataclasses

import pytest

from tying.experiments import REGISTRY, load_all
from tying.experiments.runner import RunRecord
from tying.report.html import render_page


def _record(status="pass") -> RunRecord:
    return RunRecord("param-counts", "t", "c.", "003", "quick", 0, status, measured={"x": 1.0})


@pytest.mark.parametrize(
    ("records", "error", "match"),
    [
        (_record(), TypeError, r"render_page\(\) takes a list of RunRecords, got one RunRecord"),
        ([_record().to_dict()], TypeError, r"render_page\(\): records\[0\] is a dict"),
        (
            [_record("weird")],
            ValueError,
            r"render_page\(\): record 'param-counts' has status 'weird'",
        ),
    ],
)
def test_render_page_names_records_that_are_not_a_list(records, error, match):
    load_all()
    with pytest.raises(error, match=match):
        render_page(records, REGISTRY, {}, 1.0)


def test_render_page_reads_a_generator_once():
    load_all()
    page = render_page((r for r in [_record()]), REGISTRY, {}, 1.0)
    assert 'data-id="param-counts" data-status="pass"' in page
    assert page == render_page([dataclasses.replace(_record())], REGISTRY, {}, 1.0)
