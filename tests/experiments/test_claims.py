"""One table of claims (claims.py), in step with CLAIMS.md and with the registry."""

from __future__ import annotations

import doctest
import pathlib
import re

import pytest

import tying.experiments.claims as claims_module
from tying.experiments import load_all
from tying.experiments.claims import CHAPTER_FILES, CLAIMS, EXTRA_CLAIMS, claim_for, in_claim_order

SHARED = pathlib.Path(__file__).resolve().parents[3] / "shared"
CLAIMS_MD = SHARED / "CLAIMS.md"
ROW = re.compile(r"^\| ([A-D]\d+) `([a-z0-9-]+)` \| (.*?) \| (.*?) \|$")
SECTION = re.compile(r"^## ([A-D]\. .*?) \(seeds? ([0-9, ]+)\)$")


def _claims_md() -> list[tuple[str, str, str, tuple[str, ...], str, str]]:
    """(code, id, section, chapters, claim, shows) per row; a claim-like row that does not
    parse is an error, so no row can drop out of the comparison unnoticed."""
    rows, section, chapters = [], None, ()
    for line in CLAIMS_MD.read_text(encoding="utf-8").splitlines():
        if m := SECTION.match(line):
            section, chapters = m.group(1), tuple(x.strip() for x in m.group(2).split(","))
        elif re.match(r"^\| [A-D]\d+ ", line):
            m = ROW.match(line)
            assert m, f"CLAIMS.md row does not parse: {line[:80]}"
            code, id_, claim, shows = m.groups()
            rows.append((code, id_, section, chapters, claim, shows))
    return rows


def test_ids_and_codes_are_unique():
    rows = (*CLAIMS, *EXTRA_CLAIMS)
    assert len({c.id for c in rows}) == len(rows) == len({c.code for c in rows})


def test_extensions_sit_beside_the_claim_they_extend():
    order = in_claim_order([c.id for c in (*EXTRA_CLAIMS, *CLAIMS)])
    assert order.index("hashed-recsys") == order.index("hashednets") + 1
    assert all(c.claim.startswith("Beyond CLAIMS.md") for c in EXTRA_CLAIMS)


def test_first_claims():
    a1 = claim_for("param-counts")
    assert a1.code == "A1" and a1.chapters == ("003",) and a1.chapter == "003"
    assert "448" in a1.claim and claim_for("dp-sgd").code == "D10"


def test_every_chapter_is_one_of_its_sections_chapters():
    for c in CLAIMS:
        assert c.chapter in c.chapters, f"{c.id}: chapter {c.chapter} not in {c.chapters}"
        assert c.chapter in CHAPTER_FILES and c.title.strip()
    # the two that were wrong (issue 16): stated in section B/C chapters, not in 003
    assert claim_for("smirks-typing").chapter == "002"
    assert claim_for("translation-equivariance").chapter == "000"


@pytest.mark.skipif(not CLAIMS_MD.exists(), reason=f"{CLAIMS_MD} not present (clean checkout)")
def test_table_is_claims_md_word_for_word():
    rows = _claims_md()
    assert len(rows) == len(CLAIMS) == 40
    for (code, id_, section, chapters, claim, shows), c in zip(rows, CLAIMS, strict=True):
        got = (c.code, c.id, c.section, c.chapters, c.claim, c.shows)
        assert got == (code, id_, section, chapters, claim, shows), f"{c.id} differs from CLAIMS.md"


@pytest.mark.skipif(not SHARED.joinpath("seeds").is_dir(), reason="seed chapters not present")
def test_chapter_files_exist():
    for name in CHAPTER_FILES.values():
        assert (SHARED / "seeds" / name).is_file(), name


def test_registry_reads_the_table():
    """A registered experiment's title, claim and chapter are its claim row's, exactly."""
    registry = load_all()
    # every claim has its experiment, and so has every extension the issues asked for
    assert set(registry) == {c.id for c in (*CLAIMS, *EXTRA_CLAIMS)}
    for exp_id, spec in registry.items():
        row = claim_for(exp_id)
        assert (spec.title, spec.claim, spec.chapter) == (row.title, row.claim, row.chapter)
        path, line = spec.source.rsplit(":", 1)
        assert path.startswith("tying/experiments/") and int(line) > 0


def test_in_claim_order():
    assert in_claim_order(["dp-sgd", "param-counts"]) == ["param-counts", "dp-sgd"]


def test_claims_doctest():
    result = doctest.testmod(claims_module)
    assert result.attempted > 0 and result.failed == 0
