"""Refusals after a chain of calls: the advice must fit what the user actually passed."""

from __future__ import annotations

import pytest

pytest.importorskip("rdkit")
pytest.importorskip("openforcefields")

from tying.chem import SmirksAssigner, count_unique_parameters  # noqa: E402


def test_counting_skipped_results_says_to_drop_the_nones():
    # assign_many(errors="skip") puts None where a molecule failed; counting those results
    # said "pass what assign_many returns", which is exactly what had been passed.
    sage = SmirksAssigner("openff-2.3.0")
    with pytest.warns(UserWarning, match="skipped 1 of 3"):
        results = sage.assign_many(["CCO", "C1CC", "CC"], errors="skip")
    with pytest.raises(
        TypeError,
        match=r"item 1 is a NoneType, not an Assignment; a molecule assign_many\(errors='skip'\) "
        r"skipped; count the labelled ones: \[a for a in results if a is not None\]",
    ):
        count_unique_parameters(results)
    labelled = count_unique_parameters([a for a in results if a is not None])
    assert labelled == count_unique_parameters(sage.assign_many(["CCO", "CC"]))
    with pytest.raises(TypeError, match=r"item 0 is a str, not an Assignment; pass what"):
        count_unique_parameters(["CCO"])
