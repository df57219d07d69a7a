"""Shared checks for the spatial experiment tests."""

from __future__ import annotations

from matplotlib.figure import Figure

from tying.experiments.registry import Result


def check_result(result: Result) -> None:
    """A result the report can render: a figure, a table, numbers and a key line."""
    assert result.figures and all(isinstance(f, Figure) for f in result.figures.values())
    assert result.tables and all(t.rows for t in result.tables)
    assert result.measured and result.key_figure
