"""Stop 60: an id typed in another case or with spaces names the id it spells.

``tying run PARAM-COUNTS`` said "did you mean 'dp-sgd'?" (difflib is case-sensitive),
advice that ran another experiment.
"""

from __future__ import annotations

import pytest

from tying.experiments import load_all
from tying.experiments.registry import get


@pytest.mark.parametrize(
    "typed", ["PARAM-COUNTS", "Param-Counts", " param-counts", "param-counts\n"]
)
def test_other_case_names_the_id(typed):
    load_all()
    with pytest.raises(KeyError, match=r"ids are lower-case, without spaces; pass 'param-counts'"):
        get(typed)
    assert get("param-counts").id == "param-counts"  # the advice followed works


def test_a_far_id_still_gets_a_guess():
    load_all()
    with pytest.raises(
        KeyError, match=r"unknown experiment id 'param-count'; did you mean 'param-counts'"
    ):
        get("param-count")
