"""C9 `smirks-typing` at quick size: the check holds and the numbers behind it are sane."""

from __future__ import annotations

import pytest

pytest.importorskip("rdkit")
pytest.importorskip("openforcefields")

from tying.experiments.registry import REGISTRY  # noqa: E402
from tying.experiments.smirks_typing import smirks_typing  # noqa: E402


def test_registered():
    spec = REGISTRY["smirks-typing"]
    assert spec.fn is smirks_typing and spec.chapter == "002"
    assert "rdkit" in spec.requires


def test_quick_check_holds():
    result = smirks_typing("quick", 0)
    m = result.measured
    assert result.passed, result.key_figure
    assert m["molecules"] == 150
    assert m["typed_tuples"] >= 3 * m["smirks_parameters"]
    assert m["last_quarter_growth_typed"] > m["last_quarter_growth_smirks"]
    total = result.tables[0].rows[-1]
    assert total["section"] == "total"
    assert total["SMIRKS parameters used"] <= total["SMIRKS parameters in file"]
    assert "growth" in result.figures


def test_deterministic_for_a_seed():
    assert smirks_typing("quick", 3).measured == smirks_typing("quick", 3).measured


def test_bad_size():
    with pytest.raises(ValueError, match="size must be one of"):
        smirks_typing("huge", 0)


@pytest.mark.slow
def test_report_size():
    result = smirks_typing("report", 0)
    assert result.passed and result.measured["molecules"] >= 200
