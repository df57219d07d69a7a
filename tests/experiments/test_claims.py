"""The copy of CLAIMS.md in claims.py stays in step with CLAIMS.md."""

from __future__ import annotations

import doctest
import pathlib
import re

import pytest

import tying.experiments.claims as claims_module
from tying.experiments.claims import CLAIMS, claim_for, in_claim_order

SHARED = pathlib.Path(__file__).resolve().parents[3] / "shared" / "CLAIMS.md"


def test_ids_and_codes_are_unique():
    assert len({c.id for c in CLAIMS}) == len(CLAIMS) == len({c.code for c in CLAIMS})


def test_first_claims():
    a1 = claim_for("param-counts")
    assert a1.code == "A1" and a1.seeds == ("003",) and "448" in a1.claim
    assert claim_for("dp-sgd").code == "D10"


@pytest.mark.skipif(not SHARED.exists(), reason=f"{SHARED} not present (clean checkout)")
def test_matches_shared_claims_md():
    text = SHARED.read_text(encoding="utf-8")
    rows = re.findall(r"^\| ([A-D]\d+) `([a-z0-9-]+)` \| (.*?) \| (.*?) \|$", text, re.M)
    assert [(code, id_) for code, id_, _, _ in rows] == [(c.code, c.id) for c in CLAIMS]
    for (_, _, claim, shows), c in zip(rows, CLAIMS):
        assert (claim, shows) == (c.claim, c.shows), f"{c.id} differs from CLAIMS.md"


def test_in_claim_order():
    assert in_claim_order(["dp-sgd", "param-counts"]) == ["param-counts", "dp-sgd"]


def test_claims_doctest():
    result = doctest.testmod(claims_module)
    assert result.attempted > 0 and result.failed == 0
